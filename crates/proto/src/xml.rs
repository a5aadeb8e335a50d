//! The WebDAV-Push `push-message` (namespace `https://bitfire.at/webdav-push`), the payload that
//! clients of the WebDAV-Push spec (DAVx⁵) decrypt.

use crate::Trigger;

/// The spec's XML namespace.
pub const NS: &str = "https://bitfire.at/webdav-push";

/// Escapes text for an XML element.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A `push-message` for a change of `topic`: a `content-update` (with the sync-token when known)
/// or, for a property change, a `property-update`.
pub fn push_message(topic: &str, sync_token: Option<&str>, trigger: Option<Trigger>) -> String {
    let update = match (trigger, sync_token) {
        (Some(Trigger::Property), _) => "<property-update/>".to_owned(),
        (_, Some(t)) => format!("<content-update><D:sync-token>{}</D:sync-token></content-update>", escape(t)),
        (_, None) => "<content-update/>".to_owned(),
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<push-message xmlns=\"{NS}\" xmlns:D=\"DAV:\"><topic>{}</topic>{update}</push-message>",
        escape(topic)
    )
}

/// The VAPID key-rotation message (the spec's `xml/push-message-vapid-key.xml`): no topic, a
/// `property-update` naming `transports`, which the client reads again to get the new key.
pub fn key_rotation_message() -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<push-message xmlns=\"{NS}\" xmlns:D=\"DAV:\"><property-update><D:prop><transports/></D:prop></property-update></push-message>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(
            push_message("O7M1nQ7cKkKTKsoS_j6Z3w", Some("http://example.com/sync/10"), None),
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<push-message xmlns=\"https://bitfire.at/webdav-push\" xmlns:D=\"DAV:\"><topic>O7M1nQ7cKkKTKsoS_j6Z3w</topic><content-update><D:sync-token>http://example.com/sync/10</D:sync-token></content-update></push-message>"
        );
        assert!(
            push_message("t", Some("x"), Some(Trigger::Property))
                .ends_with("<topic>t</topic><property-update/></push-message>")
        );
        assert_eq!(
            key_rotation_message(),
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<push-message xmlns=\"https://bitfire.at/webdav-push\" xmlns:D=\"DAV:\"><property-update><D:prop><transports/></D:prop></property-update></push-message>"
        );
        assert!(push_message("a<b", None, None).contains("<topic>a&lt;b</topic><content-update/>"));
    }
}
