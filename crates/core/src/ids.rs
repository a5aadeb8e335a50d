//! Validated identifiers. Parsed once at the edge; everything inside holds these newtypes.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty string.
    #[error("must not be empty")]
    Empty,
    /// Longer than allowed.
    #[error("is {len} bytes long, at most {max} are allowed")]
    TooLong {
        /// Actual length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Contains whitespace, control or non-ASCII characters.
    #[error("may only contain visible ASCII characters (no spaces or control characters)")]
    BadChar,
}

fn check(s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > max {
        return Err(IdError::TooLong { len: s.len(), max });
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(IdError::BadChar);
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `s`: 1..=`max` visible ASCII characters.
            pub fn parse(s: &str, max: usize) -> Result<Self, IdError> {
                check(s, max)?;
                Ok(Self(Arc::from(s)))
            }
            /// The string form.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A topic: names something clients can subscribe to (a collection). Never a secret.
    Topic
);
/// Up to `N` bytes in place, longer ones shared.
#[derive(Clone)]
enum IdText<const N: usize> {
    Inline { len: u8, bytes: [u8; N] },
    Shared(Arc<str>),
}

impl<const N: usize> IdText<N> {
    /// `s`, already checked.
    fn new(s: &str) -> Self {
        match u8::try_from(s.len()) {
            Ok(len) if s.len() <= N => {
                let mut bytes = [0; N];
                bytes[..s.len()].copy_from_slice(s.as_bytes());
                IdText::Inline { len, bytes }
            }
            _ => IdText::Shared(Arc::from(s)),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Checked visible ASCII when made.
            IdText::Inline { len, bytes } => std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default(),
            IdText::Shared(s) => s,
        }
    }
}

macro_rules! inline_id_type {
    ($(#[$m:meta])* $name:ident, $inline:expr) => {
        $(#[$m])*
        #[derive(Clone)]
        pub struct $name(IdText<{ $inline }>);

        impl $name {
            /// Validates `s`: 1..=`max` visible ASCII characters.
            pub fn parse(s: &str, max: usize) -> Result<Self, IdError> {
                check(s, max)?;
                Ok(Self(IdText::new(s)))
            }

            /// The string form.
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.as_str() == other.as_str()
            }
        }

        impl Eq for $name {}

        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.as_str().hash(state);
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $name {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.as_str().cmp(other.as_str())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.as_str())
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                self.as_str()
            }
        }
    };
}

inline_id_type!(
    /// A subscription, chosen by the Director: 128 random bits, base64url (22 characters, held
    /// inline: no allocation per subscription). Ids of other lengths (from an older store) are
    /// held like the other identifiers.
    SubscriptionId,
    22
);

inline_id_type!(
    /// A client installation, chosen by the client (the draft's `client_id`). Up to 38
    /// characters (a UUID's 36) are held inline: a million durable subscriptions of as many
    /// clients need no allocation for their client ids (issue 11); longer ones are shared.
    ClientId,
    38
);

impl SubscriptionId {
    /// A new random id.
    pub fn random() -> Self {
        Self(IdText::new(&random_token(16)))
    }
}

/// `bytes` random bytes from the OS, base64url without padding.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random number generator failed");
    URL_SAFE_NO_PAD.encode(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_checked() {
        assert!(Topic::parse("f0ec984b-4b19-4652-91f2-92c6d81c3c09", 256).is_ok());
        assert_eq!(Topic::parse("", 256), Err(IdError::Empty));
        assert_eq!(Topic::parse("a b", 256), Err(IdError::BadChar));
        assert_eq!(Topic::parse("é", 256), Err(IdError::BadChar));
        assert_eq!(Topic::parse("abc", 2), Err(IdError::TooLong { len: 3, max: 2 }));
    }

    #[test]
    fn random_ids_differ_and_have_128_bits() {
        let a = SubscriptionId::random();
        let b = SubscriptionId::random();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 22);
    }

    #[test]
    fn issue_11_ids_inline_or_shared_compare_hash_and_order_by_their_text() {
        use std::hash::BuildHasher;
        let short = SubscriptionId::parse("abc", 64).unwrap();
        let full = SubscriptionId::parse("AAAAAAAAAAAAAAAAAAAAAA", 64).unwrap();
        let long = SubscriptionId::parse("a-longer-id-from-an-older-store-0123456789", 64).unwrap();
        assert!(matches!(short.0, IdText::Inline { .. }) && matches!(full.0, IdText::Inline { .. }));
        assert!(matches!(long.0, IdText::Shared(_)));
        assert_eq!(short.as_str(), "abc");
        assert_eq!(long.to_string(), "a-longer-id-from-an-older-store-0123456789");
        assert_eq!(format!("{full:?}"), "SubscriptionId(\"AAAAAAAAAAAAAAAAAAAAAA\")");
        assert!(full < long && long < short, "ordered as text");
        let h = std::hash::RandomState::new();
        assert_eq!(h.hash_one(&short), h.hash_one("abc"), "hashes as its text (Borrow<str>)");
        assert_eq!(SubscriptionId::parse("x", 64).unwrap(), SubscriptionId::parse("x", 64).unwrap());
        assert_eq!(SubscriptionId::parse("", 64).unwrap_err(), IdError::Empty);
    }

    #[test]
    fn issue_11_client_ids_of_uuid_size_are_inline() {
        let uuid = ClientId::parse("f0ec984b-4b19-4652-91f2-92c6d81c3c09", 256).unwrap();
        assert!(matches!(uuid.0, IdText::Inline { .. }));
        let long = ClientId::parse(&"c".repeat(39), 256).unwrap();
        assert!(matches!(long.0, IdText::Shared(_)));
        assert_eq!(long.as_str(), "c".repeat(39));
        assert_eq!(std::mem::size_of::<ClientId>(), 40, "no larger than a pointer pair plus the text");
        assert_eq!(uuid, ClientId::parse("f0ec984b-4b19-4652-91f2-92c6d81c3c09", 64).unwrap());
        assert_eq!(format!("{uuid:?}"), "ClientId(\"f0ec984b-4b19-4652-91f2-92c6d81c3c09\")");
    }
}
