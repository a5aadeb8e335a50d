//! The methods the gateway does more for than pass through: `OPTIONS` and `PROPFIND` (push
//! discovery), `POST` (registrations, else a write) and the writes, after which it tells the
//! Director which collections changed.

use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use davpush_proto::Trigger;

use crate::dav::{self, PropfindKind, PushValues};
use crate::error::GatewayError;
use crate::notifier::{Change, Job};
use crate::registration::{self, DontNotify, Registration};
use crate::state::GatewayState;
use crate::topic::{canonical_path, parent_path};
use crate::upstream::{check_read, copy_headers, read_body, streamed};

/// The request methods the gateway tells apart, parsed once: for dispatch and for which
/// collections a successful write changed ([`affected`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DavMethod {
    /// Push discovery (`DAV: webdav-push`).
    Options,
    /// Push discovery (the push properties).
    Propfind,
    /// A registration, or a write.
    Post,
    /// Writes.
    Put,
    /// A write.
    Delete,
    /// A write.
    Mkcol,
    /// A write (CalDAV).
    Mkcalendar,
    /// A write.
    Move,
    /// A write.
    Copy,
    /// A write (properties).
    Proppatch,
    /// A write when it creates the resource (a `LOCK` of an unmapped URL, RFC 4918 §7.3).
    Lock,
    /// Everything else: passed through.
    Other,
}

impl DavMethod {
    /// Parses a request's method.
    pub fn parse(m: &Method) -> DavMethod {
        match m.as_str() {
            "OPTIONS" => DavMethod::Options,
            "PROPFIND" => DavMethod::Propfind,
            "POST" => DavMethod::Post,
            "PUT" => DavMethod::Put,
            "DELETE" => DavMethod::Delete,
            "MKCOL" => DavMethod::Mkcol,
            "MKCALENDAR" => DavMethod::Mkcalendar,
            "MOVE" => DavMethod::Move,
            "COPY" => DavMethod::Copy,
            "PROPPATCH" => DavMethod::Proppatch,
            "LOCK" => DavMethod::Lock,
            _ => DavMethod::Other,
        }
    }
}

/// Handles a request to `up_path` (the upstream's path) by its method.
pub(crate) async fn handle(st: &GatewayState, req: Request, up_path: &str) -> Result<Response, GatewayError> {
    if let Some(root_path) = well_known_at_root(st, up_path) {
        return well_known(st, req, &root_path).await;
    }
    match DavMethod::parse(req.method()) {
        DavMethod::Propfind => propfind(st, req, up_path).await,
        DavMethod::Options => options(st, req, up_path).await,
        DavMethod::Post => post(st, req, up_path).await,
        DavMethod::Put
        | DavMethod::Delete
        | DavMethod::Mkcol
        | DavMethod::Mkcalendar
        | DavMethod::Move
        | DavMethod::Copy
        | DavMethod::Proppatch => write(st, req, up_path).await,
        DavMethod::Lock => lock(st, req, up_path).await,
        DavMethod::Other => {
            let (parts, body) = req.into_parts();
            let resp = st.forward(&parts, up_path, streamed(&parts, body), &[]).await?;
            Ok(st.respond(resp).await)
        }
    }
}

async fn options(st: &GatewayState, req: Request, up_path: &str) -> Result<Response, GatewayError> {
    let (parts, body) = req.into_parts();
    let resp = st.forward(&parts, up_path, streamed(&parts, body), &[]).await?;
    let ok = resp.status().is_success();
    let mut out = st.respond(resp).await;
    let dav: Vec<HeaderValue> = out.headers().get_all("dav").iter().cloned().collect();
    if ok && up_path.ends_with('/') && !dav.is_empty() {
        let joined = dav.iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(", ");
        if !joined.split(',').any(|t| t.trim() == "webdav-push")
            && let Ok(v) = HeaderValue::from_str(&format!("{joined}, webdav-push"))
        {
            out.headers_mut().insert("dav", v);
        }
    }
    Ok(out)
}

async fn propfind(st: &GatewayState, req: Request, up_path: &str) -> Result<Response, GatewayError> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(body, st.cfg.max_body_bytes).await?;
    let kind = dav::analyze_propfind(&bytes);
    let Some(kind) = kind.filter(PropfindKind::wants_push) else {
        let resp = st.forward(&parts, up_path, (!bytes.is_empty()).then(|| bytes.into()), &[]).await?;
        return Ok(st.respond(resp).await);
    };
    // We rewrite the answer: ask for it uncompressed.
    let resp =
        st.forward(&parts, up_path, (!bytes.is_empty()).then(|| bytes.into()), &[header::ACCEPT_ENCODING]).await?;
    if resp.status().as_u16() != 207 {
        return Ok(st.respond(resp).await);
    }
    let status = resp.status().as_u16();
    let mut headers = HeaderMap::new();
    copy_headers(resp.headers(), &mut headers, true);
    let body = resp.bytes().await.map_err(|_| GatewayError::BadGateway("the upstream's answer broke off".into()))?;
    let Ok(text) = std::str::from_utf8(&body) else {
        return Ok((StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY), headers, body).into_response());
    };
    // Topics only for what the request asked about: the request path and what lies under it.
    // An href elsewhere (an upstream that was told another base path, or that lists other
    // users' collections) gets no push properties, so no topic of a collection the request
    // did not name.
    let Some(base) = canonical_path(up_path) else {
        return Ok((StatusCode::MULTI_STATUS, headers, body).into_response());
    };
    let authorization = parts.headers.get(header::AUTHORIZATION);
    let grant_ok = kind.wants_grant() && check_read(st, up_path, authorization).await.is_ok();
    let owner = registration::owner_hash(&registration::user_key(authorization.and_then(|a| a.to_str().ok())));
    let rewritten = dav::rewrite_multistatus(text, &kind, |href| {
        let path = match url::Url::parse(href) {
            Ok(u) if u.origin() == st.cfg.upstream.origin() => u.path().to_owned(),
            Ok(_) => return None,
            Err(_) => href.to_owned(),
        };
        let canonical = canonical_path(&path)?;
        if !canonical.starts_with(&base) {
            return None;
        }
        let topic = st.cfg.topic_key.topic_of_canonical(&canonical);
        let grant = (grant_ok && canonical == base).then(|| st.grant(&owner, &[&topic]));
        Some(PushValues { grant, ..st.push_values(topic) })
    });
    match rewritten {
        Ok(xml) => {
            let xml = if st.maps_hrefs() { st.map_body_hrefs(&xml).unwrap_or(xml) } else { xml };
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml; charset=utf-8"));
            Ok((StatusCode::MULTI_STATUS, headers, xml).into_response())
        }
        Err(e) => {
            tracing::warn!(error = %e, "upstream multistatus could not be parsed; passed through unchanged");
            Ok((StatusCode::MULTI_STATUS, headers, body).into_response())
        }
    }
}

fn is_xml(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            let m = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            m == "application/xml" || m == "text/xml"
        })
        .unwrap_or(false)
}

async fn post(st: &GatewayState, req: Request, up_path: &str) -> Result<Response, GatewayError> {
    if !is_xml(req.headers()) {
        return write(st, req, up_path).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = read_body(body, st.cfg.max_body_bytes).await?;
    if let Some(root) = dav::is_push_register(&bytes) {
        return crate::register::register(st, &parts, up_path, &root).await;
    }
    let resp = st.forward(&parts, up_path, (!bytes.is_empty()).then(|| bytes.into()), &[]).await?;
    if resp.status().is_success() {
        notify_after_write(st, &parts, up_path, None);
    }
    Ok(st.respond(resp).await)
}

async fn write(st: &GatewayState, req: Request, up_path: &str) -> Result<Response, GatewayError> {
    let (parts, body) = req.into_parts();
    let dest = parts
        .headers
        .get("destination")
        .and_then(|v| v.to_str().ok())
        .and_then(|d| st.map_destination(d))
        .and_then(|u| url::Url::parse(&u).ok())
        .map(|u| u.path().to_owned());
    let resp = st.forward(&parts, up_path, streamed(&parts, body), &[]).await?;
    if resp.status().is_success() {
        notify_after_write(st, &parts, up_path, dest.as_deref());
    }
    Ok(st.respond(resp).await)
}

/// `/.well-known/caldav` and `/carddav` (RFC 6764) live at the root of a host. When the upstream
/// is mounted under a prefix (Xandikos at `/xandikos/`), a request for the gateway's
/// `/.well-known/caldav` would reach `<prefix>.well-known/caldav`, which such servers do not
/// serve: it goes to the upstream host's root instead (the upstream path returned here).
fn well_known_at_root(st: &GatewayState, up_path: &str) -> Option<String> {
    let prefix = st.cfg.upstream_prefix();
    if prefix == "/" {
        return None;
    }
    let rest = up_path.strip_prefix(prefix)?;
    matches!(rest, ".well-known/caldav" | ".well-known/carddav").then(|| format!("/{rest}"))
}

/// A well-known request of a server mounted under a prefix ([`well_known_at_root`]): the upstream
/// host's answer when it redirects (its `Location` mapped as always), else a redirect of the
/// gateway's own to the server's context path, the gateway's public URL (RFC 6764 §5).
async fn well_known(st: &GatewayState, req: Request, root_path: &str) -> Result<Response, GatewayError> {
    let (parts, body) = req.into_parts();
    let resp = st.forward(&parts, root_path, streamed(&parts, body), &[]).await?;
    if resp.status().is_redirection() {
        return Ok(st.respond(resp).await);
    }
    let location =
        HeaderValue::from_str(st.cfg.public_url.as_str()).map_err(|_| GatewayError::Internal("bad public URL"))?;
    Ok((StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, location)]).into_response())
}

/// `LOCK`: a new lock (one with a body) on an unmapped URL creates an empty resource, a change
/// of its parent. Servers answer that with 201 (RFC 4918 §9.10.4) or, like Apache mod_dav, 200;
/// so whether the resource existed is asked of the upstream first, with the client's
/// credentials. Refreshing a lock (no body) and `UNLOCK` change nothing.
async fn lock(st: &GatewayState, req: Request, up_path: &str) -> Result<Response, GatewayError> {
    let (parts, body) = req.into_parts();
    let new_lock = parts.headers.contains_key(header::TRANSFER_ENCODING)
        || parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > 0);
    let existed = if new_lock { exists(st, up_path, parts.headers.get(header::AUTHORIZATION)).await } else { true };
    let resp = st.forward(&parts, up_path, streamed(&parts, body), &[]).await?;
    let created = resp.status() == StatusCode::CREATED || (resp.status().is_success() && !existed);
    if created {
        notify_after_write(st, &parts, up_path, None);
    }
    Ok(st.respond(resp).await)
}

/// Whether the upstream has a resource at `up_path` (for the requester); when in doubt, yes.
async fn exists(st: &GatewayState, up_path: &str, auth: Option<&HeaderValue>) -> bool {
    let mut req = st
        .upstream
        .request(reqwest::Method::from_bytes(b"PROPFIND").expect("valid"), st.upstream_url(up_path, None))
        .header("Depth", "0")
        .header(header::CONTENT_TYPE, "application/xml; charset=utf-8")
        .body(
            r#"<?xml version="1.0" encoding="utf-8"?><propfind xmlns="DAV:"><prop><resourcetype/></prop></propfind>"#,
        );
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a.clone());
    }
    !matches!(req.send().await.map(|r| r.status().as_u16()), Ok(404))
}

/// The collections a successful write changed, and what changed in them.
pub fn affected(method: DavMethod, path: &str, dest: Option<&str>) -> Vec<Change> {
    let content = |p: Option<String>| p.map(|path| Change { path, trigger: Trigger::Content });
    let property = |p: Option<String>| p.map(|path| Change { path, trigger: Trigger::Property });
    let mut v: Vec<Change> = match method {
        DavMethod::Put | DavMethod::Mkcol | DavMethod::Mkcalendar | DavMethod::Lock => {
            vec![content(parent_path(path))].into_iter().flatten().collect()
        }
        // Deleting a collection changes it and its parent; deleting a member, its parent.
        DavMethod::Delete => {
            [content(parent_path(path)), content(canonical_path(path))].into_iter().flatten().collect()
        }
        DavMethod::Move => {
            [content(parent_path(path)), content(canonical_path(path)), content(dest.and_then(parent_path))]
                .into_iter()
                .flatten()
                .collect()
        }
        DavMethod::Copy => [content(dest.and_then(parent_path))].into_iter().flatten().collect(),
        DavMethod::Proppatch => {
            [property(canonical_path(path)), property(parent_path(path))].into_iter().flatten().collect()
        }
        DavMethod::Post => [content(canonical_path(path))].into_iter().flatten().collect(),
        DavMethod::Options | DavMethod::Propfind | DavMethod::Other => Vec::new(),
    };
    let mut seen = std::collections::HashSet::new();
    v.retain(|c| seen.insert((c.path.clone(), c.trigger)));
    v
}

fn notify_after_write(st: &GatewayState, parts: &Parts, up_path: &str, dest: Option<&str>) {
    // Held for the sync-token lookup: never printed (a `Job`'s Debug shows `Sensitive`).
    let authorization = parts.headers.get(header::AUTHORIZATION).cloned().map(|mut v| {
        v.set_sensitive(true);
        v
    });
    let mut exclude = Vec::new();
    if let Some(v) = parts.headers.get("push-dont-notify").and_then(|v| v.to_str().ok()) {
        match registration::parse_dont_notify(v) {
            DontNotify::All => return,
            DontNotify::Urls(urls) => {
                let me = registration::owner_hash(&registration::user_key(
                    authorization.as_ref().and_then(|a| a.to_str().ok()),
                ));
                let prefix = st.registration_prefix();
                for u in urls {
                    let path = url::Url::parse(&u).map(|u| u.path().to_owned()).unwrap_or(u);
                    // Invalid values and other users' registrations are ignored (spec §1.5).
                    if let Some(reg) =
                        path.strip_prefix(&prefix).and_then(|t| Registration::decode(t, &st.cfg.topic_key))
                        && reg.owner == me
                    {
                        exclude.push(reg.subscription_id);
                    }
                }
            }
        }
    }
    let changes = affected(DavMethod::parse(&parts.method), up_path, dest);
    st.notifier.submit(Job { changes, exclude, authorization });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(v: Vec<Change>) -> Vec<(String, Trigger)> {
        v.into_iter().map(|c| (c.path, c.trigger)).collect()
    }

    #[test]
    fn affected_collections_per_method() {
        let method = |m: &str| DavMethod::parse(&Method::from_bytes(m.as_bytes()).unwrap());
        assert_eq!(paths(affected(method("PUT"), "/a/cal/e.ics", None)), vec![("/a/cal/".into(), Trigger::Content)]);
        assert_eq!(
            paths(affected(method("MOVE"), "/a/cal/e.ics", Some("/a/other/e.ics"))),
            vec![
                ("/a/cal/".into(), Trigger::Content),
                ("/a/cal/e.ics/".into(), Trigger::Content),
                ("/a/other/".into(), Trigger::Content)
            ]
        );
        assert_eq!(
            paths(affected(method("PROPPATCH"), "/a/cal/", None)),
            vec![("/a/cal/".into(), Trigger::Property), ("/a/".into(), Trigger::Property)]
        );
        assert!(affected(method("GET"), "/a/", None).is_empty());
        assert_eq!(method("MKCALENDAR"), DavMethod::Mkcalendar);
        assert_eq!(method("REPORT"), DavMethod::Other);
    }
}
