//! The closed set of push services.

use std::fmt;
use std::str::FromStr;

/// A push service. Names are the keys of `push_services` in a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceKind {
    /// davpush's own WebSocket protocol.
    WebSocket,
    /// RFC 8030 Web Push.
    WebPush,
    /// UnifiedPush (RFC 8030 endpoints, the draft's `unified_push`).
    UnifiedPush,
    /// Google Firebase Cloud Messaging.
    Fcm,
    /// Apple Push Notification service.
    Apns,
    /// Huawei Push Kit.
    Hms,
}

impl ServiceKind {
    /// Every kind, in index order.
    pub const ALL: [ServiceKind; 6] = [
        ServiceKind::WebSocket,
        ServiceKind::WebPush,
        ServiceKind::UnifiedPush,
        ServiceKind::Fcm,
        ServiceKind::Apns,
        ServiceKind::Hms,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::WebSocket => "websocket",
            ServiceKind::WebPush => "web_push",
            ServiceKind::UnifiedPush => "unified_push",
            ServiceKind::Fcm => "fcm",
            ServiceKind::Apns => "apns",
            ServiceKind::Hms => "hms",
        }
    }

    /// Dense index for per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown push service name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown push service `{0}`")]
pub struct UnknownService(pub String);

impl FromStr for ServiceKind {
    type Err = UnknownService;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ServiceKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| UnknownService(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in ServiceKind::ALL {
            assert_eq!(k.as_str().parse::<ServiceKind>().unwrap(), k);
            assert_eq!(ServiceKind::ALL[k.index()], k);
        }
        assert!("gcm".parse::<ServiceKind>().is_err());
    }
}
