//! VAPID keys kept in the store, so that every node of a cluster signs and advertises the same
//! ones without sharing a filesystem (`davpush vapid rotate` works while they run).

/// A VAPID key pair as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredVapidKey {
    /// The key's id (a hash of its public key).
    pub id: String,
    /// The private key, PKCS#8 PEM.
    pub pem: String,
    /// When it was added, unix seconds.
    pub created: i64,
    /// When it was retired, unix seconds; `None` for the advertised key.
    pub retired: Option<i64>,
}

impl std::fmt::Debug for StoredVapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("StoredVapidKey")
            .field("id", &self.id)
            .field("created", &self.created)
            .field("retired", &self.retired)
            .finish_non_exhaustive()
    }
}

/// The advertised key among `keys`: the newest one not retired (ties broken by id, so that two
/// nodes seeding an empty store at once agree on one).
pub fn advertised(keys: &[StoredVapidKey]) -> Option<&StoredVapidKey> {
    keys.iter().filter(|k| k.retired.is_none()).max_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(id: &str, created: i64, retired: Option<i64>) -> StoredVapidKey {
        StoredVapidKey { id: id.into(), pem: "secret".into(), created, retired }
    }

    #[test]
    fn the_newest_unretired_key_is_advertised_and_debug_hides_the_pem() {
        let keys = [k("a", 5, None), k("b", 9, Some(10)), k("c", 7, None), k("d", 7, None)];
        assert_eq!(advertised(&keys).unwrap().id, "d");
        assert!(advertised(&[k("x", 1, Some(2))]).is_none());
        assert!(!format!("{:?}", keys[0]).contains("secret"));
    }
}
