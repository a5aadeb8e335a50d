//! The transparent proxy: requests go to the upstream with the client's headers (hop-by-hop
//! ones and the client's routing and identity headers removed, the configured ones set,
//! `Destination` mapped), answers come back with `Location` and, where the URL spaces differ,
//! multistatus hrefs mapped; and the one permission check the gateway asks the upstream for.

use axum::body::{Body, Bytes};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;

use crate::config::GatewayConfig;
use crate::dav;
use crate::error::GatewayError;
use crate::state::GatewayState;

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

pub(crate) fn copy_headers(from: &HeaderMap, to: &mut HeaderMap, skip_length: bool) {
    let named_in_connection: Vec<String> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    for (k, v) in from {
        let name = k.as_str();
        if HOP_BY_HOP.contains(&name)
            || named_in_connection.iter().any(|c| c == name)
            || (skip_length && k == header::CONTENT_LENGTH)
        {
            continue;
        }
        to.append(k.clone(), v.clone());
    }
}

/// Request headers through which a client could tell the upstream where the request came from,
/// under which path or host the server is published, who the user is, or which method to run
/// instead. A client that could set them might make the upstream resolve paths or users
/// differently from the gateway (Radicale's `X-Script-Name` moved a PROPFIND's hrefs, and so its
/// topics, into another user's collection; a server trusting `X-Remote-User` from the gateway's
/// address would take the client's word for who it is), so the gateway removes them and sets its
/// own (`upstream_headers`).
const CLIENT_ROUTING: &[&str] = &[
    "forwarded",
    "x-script-name",
    "script-name",
    "x-remote-user",
    "remote-user",
    "x-remote-addr",
    "x-real-ip",
    "x-client-ip",
    "client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-original-host",
    "x-host",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-authenticated-user",
    "x-webauth-user",
    "x-user",
    "x-email",
];
/// Prefixes of such headers (`X-Forwarded-For`, `-Host`, `-Proto`, `-Prefix`, `-User`, …,
/// `X-Auth-Request-User`, `X-Remote-*`).
const CLIENT_ROUTING_PREFIXES: &[&str] = &["x-forwarded-", "x-auth-request-", "x-remote-", "x-proxy-"];

/// Whether `name` is a routing or identity header that only the gateway may set upstream.
pub(crate) fn is_client_routing(name: &str) -> bool {
    CLIENT_ROUTING.contains(&name) || CLIENT_ROUTING_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Removes the client's routing and identity headers and sets the configured ones.
fn upstream_identity(cfg: &GatewayConfig, headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers.keys().filter(|k| is_client_routing(k.as_str())).cloned().collect();
    for n in names {
        headers.remove(n);
    }
    for (n, v) in &cfg.upstream_headers {
        headers.insert(n.clone(), v.clone());
    }
}

impl GatewayState {
    /// Sends a request to the upstream with the client's headers (hop-by-hop removed,
    /// `Destination` mapped).
    pub(crate) async fn forward(
        &self,
        parts: &Parts,
        path: &str,
        body: Option<reqwest::Body>,
        skip: &[HeaderName],
    ) -> Result<reqwest::Response, GatewayError> {
        let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())
            .map_err(|_| GatewayError::MethodNotAllowed { message: "unsupported method", allow: None })?;
        let mut headers = HeaderMap::new();
        copy_headers(&parts.headers, &mut headers, false);
        upstream_identity(&self.cfg, &mut headers);
        for h in skip {
            headers.remove(h);
        }
        if self.maps_hrefs() {
            // Multistatus answers are rewritten then: they must come uncompressed.
            headers.remove(header::ACCEPT_ENCODING);
        }
        if let Some(dest) = parts.headers.get("destination") {
            let dest = dest.to_str().map_err(|_| GatewayError::BadRequest("Destination is not valid text".into()))?;
            match self.map_destination(dest) {
                Some(d) => {
                    headers.insert(
                        "destination",
                        HeaderValue::from_str(&d).map_err(|_| GatewayError::BadRequest("bad Destination".into()))?,
                    );
                }
                None => {
                    return Err(GatewayError::BadGateway(
                        "Destination is outside this server, or not a safe path".into(),
                    ));
                }
            }
        }
        if let Some(tagged) = parts.headers.get("if") {
            // The resource tags of an `If` header (RFC 4918 §10.4) name resources by URL, in the
            // client's URL space: the server compares them with its own (SabreDAV refuses a tag
            // outside its base URI, so litmus's `owner_modify` failed under `/dav.php/`).
            let tagged = tagged.to_str().map_err(|_| GatewayError::BadRequest("If is not valid text".into()))?;
            let mapped = map_if_tags(tagged, |tag| self.map_destination(tag))
                .ok_or_else(|| GatewayError::BadRequest("If names a resource outside this server".into()))?;
            headers
                .insert("if", HeaderValue::from_str(&mapped).map_err(|_| GatewayError::BadRequest("bad If".into()))?);
        }
        let mut req = self.upstream.request(method, self.upstream_url(path, parts.uri.query())).headers(headers);
        if let Some(body) = body {
            req = req.body(body);
        }
        let started = std::time::Instant::now();
        let resp = req.send().await.map_err(|e| {
            tracing::warn!(error = %e, "upstream request failed");
            GatewayError::BadGateway("the WebDAV server behind this gateway did not answer".into())
        })?;
        self.metrics.upstream(started.elapsed());
        Ok(resp)
    }

    /// The upstream form of a `Destination` header (absolute URL or path).
    pub(crate) fn map_destination(&self, dest: &str) -> Option<String> {
        let path = match url::Url::parse(dest) {
            Ok(u) => u.path().to_owned(),
            Err(_) => dest.to_owned(),
        };
        let up = self.cfg.to_upstream_path(&path)?;
        Some(self.upstream_url(&up, None).to_string())
    }

    /// Turns an upstream response into ours: status, headers (hop-by-hop removed, `Location`
    /// mapped back), body streamed.
    pub(crate) async fn respond(&self, resp: reqwest::Response) -> Response {
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut headers = HeaderMap::new();
        if status == StatusCode::MULTI_STATUS && self.maps_hrefs() {
            // The upstream's hrefs are in its URL space: map them to ours (whole body needed).
            copy_headers(resp.headers(), &mut headers, true);
            self.map_location(&mut headers);
            let body = match resp.bytes().await {
                Ok(b) => b,
                Err(_) => return GatewayError::BadGateway("the upstream's answer broke off".into()).into_response(),
            };
            let mapped = std::str::from_utf8(&body).ok().and_then(|t| self.map_body_hrefs(t));
            return match mapped {
                Some(m) => (status, headers, m).into_response(),
                None => (status, headers, body).into_response(),
            };
        }
        copy_headers(resp.headers(), &mut headers, false);
        self.map_location(&mut headers);
        let body = Body::from_stream(resp.bytes_stream().map_err(std::io::Error::other));
        let mut out = Response::new(body);
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        out
    }

    /// Whether the upstream's URL space differs from ours, so hrefs in bodies need mapping.
    pub(crate) fn maps_hrefs(&self) -> bool {
        self.cfg.public_prefix() != self.cfg.upstream_prefix()
    }

    /// The public form of an upstream href (a path, or an absolute URL of the upstream).
    fn public_href(&self, href: &str) -> Option<String> {
        match url::Url::parse(href) {
            Ok(u) if u.origin() == self.cfg.upstream.origin() => self.cfg.to_public_path(u.path()).map(|p| {
                let mut pu = self.cfg.public_url.clone();
                pu.set_path(&p);
                pu.set_query(u.query());
                pu.to_string()
            }),
            Ok(_) => None,
            Err(_) => self.cfg.to_public_path(href),
        }
    }

    pub(crate) fn map_body_hrefs(&self, body: &str) -> Option<String> {
        match dav::map_hrefs(body, |h| self.public_href(h)) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(error = %e, "upstream multistatus could not be parsed; hrefs not mapped");
                None
            }
        }
    }

    fn map_location(&self, headers: &mut HeaderMap) {
        let Some(loc) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) else { return };
        if let Some(m) = self.public_href(loc).and_then(|m| HeaderValue::from_str(&m).ok()) {
            headers.insert(header::LOCATION, m);
        }
    }
}

pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, GatewayError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| GatewayError::PayloadTooLarge("request body too large for this gateway"))
}

/// The request body for the upstream: streamed, or none at all when the client sent none (a
/// chunked empty body would make e.g. MKCOL a request "with a body", which servers refuse).
pub(crate) fn streamed(parts: &Parts, body: Body) -> Option<reqwest::Body> {
    let has_body = parts.headers.contains_key(header::TRANSFER_ENCODING)
        || parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > 0);
    has_body.then(|| reqwest::Body::wrap_stream(body.into_data_stream()))
}

/// May the requester read `up_path`? Asks the upstream with the requester's credentials.
///
/// A `207` counts only if it has the resource's `resourcetype` (every resource has one): some
/// servers answer a user who may not read with a multistatus without it (SabreDAV's ACL plugin:
/// no properties at all, or each one `403` in its propstat).
pub(crate) async fn check_read(
    st: &GatewayState,
    up_path: &str,
    auth: Option<&HeaderValue>,
) -> Result<(), GatewayError> {
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
    let started = std::time::Instant::now();
    let resp = req.send().await.map_err(|_| GatewayError::BadGateway("the WebDAV server did not answer".into()))?;
    st.metrics.upstream(started.elapsed());
    let refused = || GatewayError::precondition("push-not-available", "you may not read this collection");
    match resp.status().as_u16() {
        207 => {
            // A PROPFIND Depth 0 of one property: a small answer (at most 1 MiB read).
            let mut body = Vec::new();
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream
                .try_next()
                .await
                .map_err(|_| GatewayError::BadGateway("the WebDAV server's answer broke off".into()))?
            {
                if body.len() + chunk.len() > 1 << 20 {
                    return Err(GatewayError::BadGateway("the WebDAV server's PROPFIND answer is too large".into()));
                }
                body.extend_from_slice(&chunk);
            }
            if readable(&String::from_utf8_lossy(&body)) { Ok(()) } else { Err(refused()) }
        }
        200..=299 => Ok(()),
        401 => Err(GatewayError::Unauthorized {
            message: "authentication required",
            challenges: resp.headers().get_all(header::WWW_AUTHENTICATE).iter().cloned().collect(),
        }),
        403 | 404 => Err(refused()),
        // The upstream refused the request itself (a malformed path, a method it does not allow
        // there): the client's error, passed on as such.
        s @ 400..=499 => Err(GatewayError::UpstreamRefused(StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_REQUEST))),
        s => Err(GatewayError::BadGateway(format!("the WebDAV server answered {s}"))),
    }
}

/// An `If` header (RFC 4918 §10.4) with each resource tag — a `<URL>` outside the parenthesised
/// lists; inside them, `<…>` are state tokens (lock tokens), left alone, as are `[entity tags]` —
/// replaced by `map(URL)`; `None` if a tag does not map or the header is malformed.
pub(crate) fn map_if_tags(value: &str, map: impl Fn(&str) -> Option<String>) -> Option<String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    let mut depth = 0u32;
    while let Some(c) = rest.chars().next() {
        match c {
            '<' if depth == 0 => {
                let end = rest.find('>')?;
                out.push('<');
                out.push_str(&map(&rest[1..end])?);
                out.push('>');
                rest = &rest[end + 1..];
                continue;
            }
            '<' => {
                // A state token: copied as is, whatever it contains.
                let end = rest.find('>')?;
                out.push_str(&rest[..=end]);
                rest = &rest[end + 1..];
                continue;
            }
            '[' => {
                // An entity tag (a quoted string, which may hold any of `<>()[]`).
                let close = rest[1..].trim_start().strip_prefix("W/").unwrap_or(rest[1..].trim_start());
                let skipped = rest.len() - close.len();
                let q = close.strip_prefix('"')?;
                let end = q.find('"')?;
                let after = &q[end + 1..];
                let bracket = after.find(']')?;
                let len = skipped + 1 + end + 1 + bracket + 1;
                out.push_str(&rest[..len]);
                rest = &rest[len..];
                continue;
            }
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1)?,
            _ => {}
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    (depth == 0).then_some(out)
}

/// Whether a multistatus answer to `PROPFIND resourcetype` has the property with status 200.
fn readable(multistatus: &str) -> bool {
    use crate::xml::{self, DAV};
    let Ok(root) = xml::parse(multistatus) else { return false };
    root.elements().filter(|r| r.is(DAV, "response")).any(|r| {
        r.elements().filter(|p| p.is(DAV, "propstat")).any(|p| {
            let ok = p.child(DAV, "status").is_some_and(|s| s.text().split_whitespace().nth(1) == Some("200"));
            ok && p.child(DAV, "prop").is_some_and(|prop| prop.child(DAV, "resourcetype").is_some())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::{map_if_tags, readable};

    #[test]
    fn the_resource_tags_of_an_if_header_are_mapped_and_nothing_else() {
        let map = |u: &str| u.strip_prefix("http://gw/").map(|p| format!("http://up/dav.php/{p}"));
        assert_eq!(
            map_if_tags("<http://gw/f/a> (<opaquelocktoken:1> [\"e<(\"]) (Not <DAV:no-lock>)", map).as_deref(),
            Some("<http://up/dav.php/f/a> (<opaquelocktoken:1> [\"e<(\"]) (Not <DAV:no-lock>)")
        );
        assert_eq!(
            map_if_tags("<http://gw/a> ([W/\"x\"]) <http://gw/b/> (<urn:uuid:2>)", map).as_deref(),
            Some("<http://up/dav.php/a> ([W/\"x\"]) <http://up/dav.php/b/> (<urn:uuid:2>)")
        );
        // No-tag lists are left as they are.
        assert_eq!(map_if_tags("(<opaquelocktoken:1>)", map).as_deref(), Some("(<opaquelocktoken:1>)"));
        // A tag that does not map, or a malformed header: refused.
        assert_eq!(map_if_tags("<http://elsewhere/a> (<t>)", map), None);
        assert_eq!(map_if_tags("(<t>", map), None);
        assert_eq!(map_if_tags("<http://gw/a (<t>)", map), None);
    }

    #[test]
    fn a_multistatus_without_the_resourcetype_is_no_permission_to_read() {
        // SabreDAV 1.8 to a user its ACL plugin hides the calendar from.
        let empty = r#"<?xml version="1.0" encoding="utf-8"?><d:multistatus xmlns:d="DAV:"/>"#;
        assert!(!readable(empty));
        let denied = r#"<d:multistatus xmlns:d="DAV:"><d:response><d:href>/c/</d:href><d:propstat><d:prop><d:resourcetype/></d:prop><d:status>HTTP/1.1 403 Forbidden</d:status></d:propstat></d:response></d:multistatus>"#;
        assert!(!readable(denied));
        let ok = r#"<multistatus xmlns="DAV:"><response><href>/c/</href><propstat><prop><resourcetype><collection/></resourcetype></prop><status>HTTP/1.1 200 OK</status></propstat></response></multistatus>"#;
        assert!(readable(ok));
        assert!(!readable("not xml"));
    }
}
