//! WebDAV bodies the gateway understands: which push properties a PROPFIND asks for, the
//! rewrite of the upstream's multistatus that answers them, `push-register`, and `DAV:error`.

use crate::xml::{self, DAV, DAVPUSH, Element, Node, PUSH};

/// The properties the gateway answers, as (namespace, name).
pub const PUSH_PROPS: &[(&str, &str)] = &[
    (PUSH, "transports"),
    (PUSH, "topic"),
    (PUSH, "supported-triggers"),
    (DAVPUSH, "director"),
    (DAVPUSH, "push-services"),
    (DAVPUSH, "subscription-auth"),
    (DAVPUSH, "websocket-url"),
    (DAVPUSH, "gateway-websocket-url"),
];

/// The subscription grant for the requested collection (docs/protocol.md §3.3): answered only
/// when asked for by name, never in `allprop` or `propname` (it is a per-user credential).
pub const GRANT_PROP: (&str, &str) = (DAVPUSH, "grant");

fn is_push_prop(e: &Element) -> bool {
    PUSH_PROPS.iter().chain([&GRANT_PROP]).any(|(ns, n)| e.is(ns, n))
}

/// What a PROPFIND asks for, as far as the gateway is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropfindKind {
    /// Named properties; these of ours among them.
    Props(Vec<(String, String)>),
    /// `allprop` (or an empty body).
    AllProp,
    /// `propname`.
    PropName,
}

impl PropfindKind {
    /// Whether the gateway has anything to add.
    pub fn wants_push(&self) -> bool {
        !matches!(self, PropfindKind::Props(p) if p.is_empty())
    }

    /// Whether the subscription grant is asked for (by name).
    pub fn wants_grant(&self) -> bool {
        matches!(self, PropfindKind::Props(p) if p.iter().any(|(ns, n)| (ns.as_str(), n.as_str()) == GRANT_PROP))
    }
}

/// Reads a PROPFIND body. `None` if it is not a well-formed `propfind` (then the upstream
/// answers it as it sees fit).
pub fn analyze_propfind(body: &[u8]) -> Option<PropfindKind> {
    let text = std::str::from_utf8(body).ok()?;
    if text.trim().is_empty() {
        return Some(PropfindKind::AllProp);
    }
    let root = xml::parse(text).ok()?;
    if !root.is(DAV, "propfind") {
        return None;
    }
    if root.child(DAV, "propname").is_some() {
        return Some(PropfindKind::PropName);
    }
    if root.child(DAV, "allprop").is_some() {
        // `include` may name ours explicitly; allprop adds them for collections anyway.
        return Some(PropfindKind::AllProp);
    }
    let prop = root.child(DAV, "prop")?;
    Some(PropfindKind::Props(
        prop.elements()
            .filter(|e| is_push_prop(e))
            .map(|e| (e.ns.clone().unwrap_or_default(), e.name.clone()))
            .collect(),
    ))
}

/// Values of the push properties for one collection.
#[derive(Debug, Clone)]
pub struct PushValues {
    /// The collection's topic.
    pub topic: String,
    /// The Director's VAPID key, when it offers Web Push.
    pub vapid_public_key: Option<String>,
    /// The Director's URL as clients reach it.
    pub director: String,
    /// The Director's push services.
    pub services: Vec<String>,
    /// `token`, `webdav` or `none`.
    pub subscription_auth: String,
    /// The Director's WebSocket URL, when it offers WebSockets.
    pub websocket_url: Option<String>,
    /// The gateway's own WebSocket (`.davpush/ws`), opened with the WebDAV login, when it
    /// offers one (`web_clients`) and the Director offers WebSockets.
    pub gateway_websocket_url: Option<String>,
    /// A subscription grant for `topic`, when asked for and the user may read the collection.
    pub grant: Option<String>,
}

fn value(ns: &str, name: &str, v: &PushValues) -> Element {
    let el = Element::new(ns, name);
    match (ns, name) {
        (PUSH, "transports") => {
            let mut wp = Element::new(PUSH, "web-push");
            if let Some(k) = &v.vapid_public_key {
                wp = wp.with_child(Element::new(PUSH, "vapid-public-key").with_attr("type", "p256ecdsa").with_text(k));
            }
            if v.vapid_public_key.is_some() { el.with_child(wp) } else { el }
        }
        (PUSH, "topic") => el.with_text(&v.topic),
        (PUSH, "supported-triggers") => el
            .with_child(Element::new(PUSH, "content-update").with_child(Element::new(DAV, "depth").with_text("1")))
            .with_child(Element::new(PUSH, "property-update").with_child(Element::new(DAV, "depth").with_text("0"))),
        (DAVPUSH, "director") => el.with_text(&v.director),
        (DAVPUSH, "push-services") => {
            v.services.iter().fold(el, |el, s| el.with_child(Element::new(DAVPUSH, "service").with_text(s)))
        }
        (DAVPUSH, "subscription-auth") => el.with_text(&v.subscription_auth),
        (DAVPUSH, "websocket-url") => el.with_text(v.websocket_url.as_deref().unwrap_or("")),
        (DAVPUSH, "gateway-websocket-url") => el.with_text(v.gateway_websocket_url.as_deref().unwrap_or("")),
        (DAVPUSH, "grant") => el.with_text(v.grant.as_deref().unwrap_or("")),
        _ => el,
    }
}

fn status_ok() -> Element {
    Element::new(DAV, "status").with_text("HTTP/1.1 200 OK")
}

/// What the scan of a multistatus learnt about one `response`.
struct ResponseSpan {
    start: usize,
    end: usize,
    href: String,
    saw_resourcetype: bool,
    collection: bool,
}

/// Finds the byte spans of the top-level `response` elements and, for each, its href and
/// whether its `resourcetype` says collection, without building a tree. Returns the root's
/// namespace declarations (raw) too.
fn scan_multistatus(body: &str) -> Result<(String, Vec<ResponseSpan>), xml::XmlError> {
    use quick_xml::NsReader;
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;
    let err = |e: quick_xml::Error| xml::XmlError(e.to_string());
    let is = |r: &ResolveResult<'_>, local: &[u8], name: &[u8]| {
        matches!(r, ResolveResult::Bound(ns) if ns.0.as_bytes() == DAV.as_bytes()) && local == name
    };
    let mut reader = NsReader::from_str(body);
    let mut depth = 0usize;
    let mut decls = String::new();
    let mut spans = Vec::new();
    let mut cur: Option<ResponseSpan> = None;
    let mut in_href = false;
    let mut in_resourcetype = 0usize;
    loop {
        let before = reader.buffer_position() as usize;
        let (resolved, event) = reader.read_resolved_event().map_err(err)?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                let local = e.local_name();
                let local = local.as_ref().as_bytes();
                if depth == 0 {
                    if !is(&resolved, local, b"multistatus") {
                        return Err(xml::XmlError("not a multistatus".into()));
                    }
                    for a in e.attributes() {
                        let a = a.map_err(|e| xml::XmlError(e.to_string()))?;
                        if a.key.as_namespace_binding().is_some() {
                            let k = std::str::from_utf8(a.key.as_ref().as_bytes()).unwrap_or("xmlns");
                            let v: &str = a.value.as_ref();
                            decls.push_str(&format!(" {k}=\"{v}\""));
                        }
                    }
                } else if depth == 1 && !empty && is(&resolved, local, b"response") {
                    cur = Some(ResponseSpan {
                        start: before,
                        end: 0,
                        href: String::new(),
                        saw_resourcetype: false,
                        collection: false,
                    });
                } else if let Some(c) = cur.as_mut() {
                    if depth == 2 && is(&resolved, local, b"href") {
                        in_href = !empty;
                    }
                    if is(&resolved, local, b"resourcetype") {
                        c.saw_resourcetype = true;
                        if !empty {
                            in_resourcetype = depth;
                        }
                    } else if in_resourcetype > 0 && is(&resolved, local, b"collection") {
                        c.collection = true;
                    }
                }
                if !empty {
                    depth += 1;
                }
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if in_resourcetype == depth {
                    in_resourcetype = 0;
                }
                in_href = false;
                if depth == 1
                    && let Some(mut c) = cur.take()
                {
                    c.end = reader.buffer_position() as usize;
                    spans.push(c);
                }
            }
            Event::Text(t) if in_href => {
                if let Some(c) = cur.as_mut() {
                    c.href.push_str(t.xml10_content().trim());
                }
            }
            Event::GeneralRef(r) if in_href => {
                if let (Some(c), Some(ch)) = (cur.as_mut(), xml::resolve_ref(&r)) {
                    c.href.push(ch);
                }
            }
            Event::DocType(_) => return Err(xml::XmlError("DTDs are not accepted".into())),
            Event::Eof => break,
            _ => {}
        }
    }
    Ok((decls, spans))
}

/// Whether a `response` is about a collection: its `resourcetype` says so, or, when that was not
/// asked for (or for `propname`, which lists it without value), its href ends with `/`
/// (RFC 4918 §8.3 recommends it).
fn is_collection(r: &ResponseSpan, kind: &PropfindKind) -> bool {
    if matches!(kind, PropfindKind::PropName) || !r.saw_resourcetype {
        return r.href.ends_with('/');
    }
    r.collection
}

/// Maps every `DAV:href` of a multistatus with `map` (from the upstream's URL space to the
/// public one); hrefs `map` leaves alone (`None`) and everything else are copied byte for byte.
pub fn map_hrefs(body: &str, map: impl Fn(&str) -> Option<String>) -> Result<String, xml::XmlError> {
    // quick-xml skips a byte order mark but does not count it in its positions: drop it first
    // (the answer is UTF-8 either way).
    let body = body.strip_prefix('\u{feff}').unwrap_or(body);
    use quick_xml::NsReader;
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;
    let err = |e: quick_xml::Error| xml::XmlError(e.to_string());
    let mut reader = NsReader::from_str(body);
    let mut out = String::with_capacity(body.len() + 256);
    let mut copied = 0;
    // (content start, decoded text) of the href being read
    let mut href: Option<(usize, String)> = None;
    loop {
        let before = reader.buffer_position() as usize;
        let (resolved, event) = reader.read_resolved_event().map_err(err)?;
        match event {
            Event::Start(ref e) => {
                let is_href = matches!(&resolved, ResolveResult::Bound(ns) if ns.0.as_bytes() == DAV.as_bytes())
                    && e.local_name().as_ref() == "href";
                if is_href {
                    href = Some((reader.buffer_position() as usize, String::new()));
                }
            }
            Event::Text(t) => {
                if let Some((_, text)) = href.as_mut() {
                    text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                if let (Some((_, text)), Some(c)) = (href.as_mut(), xml::resolve_ref(&r)) {
                    text.push(c);
                }
            }
            Event::End(_) => {
                if let Some((start, text)) = href.take()
                    && let Some(mapped) = map(text.trim())
                {
                    out.push_str(&body[copied..start]);
                    xml::escape_into(&mapped, &mut out);
                    copied = before;
                }
            }
            Event::DocType(_) => return Err(xml::XmlError("DTDs are not accepted".into())),
            Event::Eof => break,
            _ => {}
        }
    }
    out.push_str(&body[copied..]);
    Ok(out)
}

/// Rewrites a multistatus: for every collection, the push properties `kind` asks for are
/// answered in a 200 propstat (and removed from the upstream's 404 one). `values` gives the
/// values for a response's href (`None`: not push-capable, left alone). Responses that are not
/// rewritten are copied byte for byte: only the collections' are parsed and re-serialized.
pub fn rewrite_multistatus(
    body: &str,
    kind: &PropfindKind,
    values: impl Fn(&str) -> Option<PushValues>,
) -> Result<String, xml::XmlError> {
    // As in `map_hrefs`: positions must count from the first character quick-xml reads.
    let body = body.strip_prefix('\u{feff}').unwrap_or(body);
    let (decls, spans) = scan_multistatus(body)?;
    let mut out = String::with_capacity(body.len() + 1024);
    let mut copied = 0;
    for span in spans {
        if !is_collection(&span, kind) {
            continue;
        }
        let Some(v) = values(&span.href) else { continue };
        // Parse just this response, with the root's namespace declarations in scope.
        let wrapped = format!("<w{decls}>{}</w>", &body[span.start..span.end]);
        let w = xml::parse(&wrapped)?;
        let Some(mut resp) = w.elements().next().cloned() else { continue };
        rewrite_response(&mut resp, kind, &v);
        out.push_str(&body[copied..span.start]);
        out.push_str(&xml::serialize_fragment(&resp));
        copied = span.end;
    }
    out.push_str(&body[copied..]);
    Ok(out)
}

fn rewrite_response(resp: &mut Element, kind: &PropfindKind, v: &PushValues) {
    let wanted: Vec<(String, String)> = match kind {
        PropfindKind::Props(p) => p.clone(),
        PropfindKind::AllProp | PropfindKind::PropName => {
            PUSH_PROPS.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
        }
    };
    // Remove our properties from the upstream's propstats (typically its 404 one).
    resp.children.retain_mut(|n| {
        let Node::Element(ps) = n else { return true };
        if !ps.is(DAV, "propstat") {
            return true;
        }
        let Some(prop) = ps.elements_mut().find(|e| e.is(DAV, "prop")) else { return true };
        prop.children.retain(|c| !matches!(c, Node::Element(e) if is_push_prop(e)));
        prop.elements().next().is_some() || ps.child(DAV, "status").is_none_or(|s| s.text().contains(" 200 "))
    });
    let mut ours = Element::new(DAV, "prop");
    let mut missing = Element::new(DAV, "prop");
    for (ns, name) in &wanted {
        if (ns.as_str(), name.as_str()) == GRANT_PROP && v.grant.is_none() {
            // Not for this response (another collection, or no read access): 404, as RFC 4918
            // answers a property the resource does not have.
            missing.children.push(Node::Element(Element::new(ns, name)));
            continue;
        }
        let el = if matches!(kind, PropfindKind::PropName) { Element::new(ns, name) } else { value(ns, name, v) };
        ours.children.push(Node::Element(el));
    }
    if missing.elements().next().is_some() {
        let ps = Element::new(DAV, "propstat")
            .with_child(missing)
            .with_child(Element::new(DAV, "status").with_text("HTTP/1.1 404 Not Found"));
        let at = resp
            .children
            .iter()
            .position(|n| matches!(n, Node::Element(e) if e.is(DAV, "responsedescription") || e.is(DAV, "location")))
            .unwrap_or(resp.children.len());
        resp.children.insert(at, Node::Element(ps));
    }
    if ours.elements().next().is_none() {
        return;
    }
    // Merge into an existing 200 propstat, or add one.
    let ok = resp
        .elements_mut()
        .find(|e| e.is(DAV, "propstat") && e.child(DAV, "status").is_some_and(|s| s.text().contains(" 200 ")));
    match ok.and_then(|ps| ps.elements_mut().find(|e| e.is(DAV, "prop"))) {
        Some(prop) => prop.children.extend(ours.children),
        None => {
            let ps = Element::new(DAV, "propstat").with_child(ours).with_child(status_ok());
            // Keep `href` first and `responsedescription` last, as RFC 4918's DTD orders them.
            let at = resp
                .children
                .iter()
                .position(
                    |n| matches!(n, Node::Element(e) if e.is(DAV, "responsedescription") || e.is(DAV, "location")),
                )
                .unwrap_or(resp.children.len());
            resp.children.insert(at, Node::Element(ps));
        }
    }
}

/// A parsed `push-register` (the spec's registration body), read liberally: DAVx⁵ ≤ 4.5.19
/// sends no `trigger` and no `content-encoding`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRegister {
    /// The push resource (the Web Push endpoint).
    pub push_resource: String,
    /// The client's P-256 key (base64url).
    pub p256dh: String,
    /// The client's auth secret (base64url).
    pub auth: String,
    /// Content updates requested (depth downgraded to 1).
    pub content: bool,
    /// Property updates requested (depth downgraded to 0).
    pub property: bool,
    /// Requested expiry (IMF-fixdate parsed), unix seconds.
    pub expires: Option<i64>,
}

/// Why a registration is refused: the spec's preconditions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// No valid subscription.
    #[error("invalid-subscription: {0}")]
    InvalidSubscription(String),
    /// No supported trigger remains.
    #[error("no-supported-trigger")]
    NoSupportedTrigger,
    /// The body is not XML at all.
    #[error("malformed XML: {0}")]
    Malformed(String),
}

/// Whether `body` is a `push-register` document (so a POST is a registration).
pub fn is_push_register(body: &[u8]) -> Option<Element> {
    let text = std::str::from_utf8(body).ok()?;
    let root = xml::parse(text).ok()?;
    root.is(PUSH, "push-register").then_some(root)
}

/// Reads a `push-register` element.
pub fn parse_push_register(root: &Element) -> Result<PushRegister, RegisterError> {
    let invalid = |m: &str| RegisterError::InvalidSubscription(m.to_owned());
    let sub = root.child(PUSH, "subscription").ok_or_else(|| invalid("no subscription"))?;
    let wps = sub.child(PUSH, "web-push-subscription").ok_or_else(|| invalid("no web-push-subscription"))?;
    let push_resource = wps.child(PUSH, "push-resource").map(Element::text).unwrap_or_default();
    let parsed = url::Url::parse(&push_resource).map_err(|_| invalid("push-resource is not an absolute URI"))?;
    if parsed.host().is_none() {
        return Err(invalid("push-resource has no host"));
    }
    if let Some(enc) = wps.child(PUSH, "content-encoding")
        && enc.text() != "aes128gcm"
    {
        return Err(invalid("content-encoding must be aes128gcm"));
    }
    let key = wps.child(PUSH, "subscription-public-key").ok_or_else(|| invalid("no subscription-public-key"))?;
    if key.attr("type").is_some_and(|t| t != "p256dh") {
        return Err(invalid("subscription-public-key must be of type p256dh"));
    }
    let p256dh = key.text();
    let auth = wps.child(PUSH, "auth-secret").map(Element::text).unwrap_or_default();
    if p256dh.is_empty() || auth.is_empty() {
        return Err(invalid("subscription-public-key and auth-secret are required (messages are always encrypted)"));
    }
    let (content, property) = match root.child(PUSH, "trigger") {
        // DAVx⁵ ≤ 4.5.19: no trigger means content updates at depth 1.
        None => (true, false),
        Some(t) => (t.child(PUSH, "content-update").is_some(), t.child(PUSH, "property-update").is_some()),
    };
    if !content && !property {
        return Err(RegisterError::NoSupportedTrigger);
    }
    let expires = root
        .child(PUSH, "expires")
        .and_then(|e| httpdate::parse_http_date(&e.text()).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64);
    Ok(PushRegister { push_resource, p256dh, auth, content, property, expires })
}

/// A `DAV:error` body with one precondition element of the push namespace.
pub fn dav_error(precondition: &str, description: &str) -> String {
    let root = Element::new(DAV, "error")
        .with_child(Element::new(PUSH, precondition))
        .with_child(Element::new(DAVPUSH, "description").with_text(description));
    xml::serialize(&root)
}

#[cfg(test)]
mod tests;
