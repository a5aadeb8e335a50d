//! What can go wrong, classified so that callers (e.g. `davpush listen`) can tell the user which
//! part failed.

/// An error of discovery or of connecting to the Director.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The collection does not offer WebDAV Push (no `topic` property).
    #[error("{url} does not offer WebDAV Push ({detail})")]
    NoPush {
        /// The collection.
        url: String,
        /// What was missing.
        detail: String,
    },
    /// The WebDAV server or the Director refused the credentials (401/403).
    #[error("{what} refused the credentials (HTTP {status})")]
    Unauthorized {
        /// `the WebDAV server` or `the Director`.
        what: &'static str,
        /// The status.
        status: u16,
    },
    /// The WebDAV server or the Director could not be reached.
    #[error("{what} is unreachable: {message}")]
    Unreachable {
        /// `the WebDAV server` or `the Director`.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// An unexpected HTTP status.
    #[error("{what} answered HTTP {status}")]
    Http {
        /// Who answered.
        what: &'static str,
        /// The status.
        status: u16,
    },
    /// An answer that does not follow the protocol.
    #[error("unexpected answer from {what}: {message}")]
    Protocol {
        /// Who answered.
        what: &'static str,
        /// What was wrong.
        message: String,
    },
    /// The server wants a login (401) and no credentials were given.
    #[error("{what} requires a login (HTTP 401) and none was given")]
    LoginRequired {
        /// `the WebDAV server`.
        what: &'static str,
    },
    /// The Director authenticates with tokens (`subscription-auth` `token`) and none was given.
    #[error("the Director requires a subscription token (subscription-auth `token`)")]
    TokenRequired,
    /// The client was closed.
    #[error("the push client is closed")]
    Closed,
}

/// `e` and its causes, `: `-separated, repeats left out: what an operator needs from a network
/// error ("error sending request for url (…): client error (Connect): tcp connect error:
/// Connection refused (os error 111)"), which `Display` alone does not give.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}
