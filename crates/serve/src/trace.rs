//! Request spans for the HTTP trace: the method and the URI with credentials taken out, so that
//! `RUST_LOG=debug` never writes a token. Browsers must put theirs in the query
//! (`/ws?access_token=…`, `/.davpush/ws?ticket=…`); user information in a URI is dropped too.

use axum::http::{Request, Uri};

/// Query parameters whose values are credentials.
const SECRET_PARAMS: &[&str] = &["access_token", "token", "ticket", "grant", "key", "password", "secret"];

/// `uri` as it may be logged: path and query, every credential's value replaced by `***`.
/// A push endpoint's id (`/push/<id>`) is a capability, so it is replaced as well.
pub fn loggable_uri(uri: &Uri) -> String {
    let mut out = match uri.path().strip_prefix("/push/") {
        Some(rest) if !rest.is_empty() => "/push/***".to_owned(),
        _ => uri.path().to_owned(),
    };
    if let Some(q) = uri.query() {
        out.push('?');
        for (i, pair) in q.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((k, _)) if SECRET_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s)) => {
                    out.push_str(k);
                    out.push_str("=***");
                }
                _ => out.push_str(pair),
            }
        }
    }
    out
}

/// The span `tower_http::trace::TraceLayer` opens per request (`make_span_with`): the same
/// fields as its default, with [`loggable_uri`].
pub fn request_span<B>(req: &Request<B>) -> tracing::Span {
    tracing::debug_span!("request", method = %req.method(), uri = %loggable_uri(req.uri()), version = ?req.version())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_query_and_user_information_are_not_logged() {
        let uri: Uri = "http://alice:pw@h/ws?access_token=s3cr3t&x=1&Ticket=t1ck".parse().unwrap();
        let logged = loggable_uri(&uri);
        assert_eq!(logged, "/ws?access_token=***&x=1&Ticket=***");
        assert!(!logged.contains("pw") && !logged.contains("s3cr3t") && !logged.contains("t1ck"));
        assert_eq!(loggable_uri(&"/healthz".parse().unwrap()), "/healthz");
        assert_eq!(loggable_uri(&"/push/Abc123secretid".parse().unwrap()), "/push/***");
    }
}
