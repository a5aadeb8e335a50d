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
id_type!(
    /// A client installation, chosen by the client (the draft's `client_id`).
    ClientId
);
id_type!(
    /// A subscription, chosen by the Director: 128 random bits, base64url.
    SubscriptionId
);

impl SubscriptionId {
    /// A new random id.
    pub fn random() -> Self {
        Self(Arc::from(random_token(16)))
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
}
