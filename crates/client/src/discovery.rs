//! Discovery: does a collection offer WebDAV Push, under which topic, through which Director?
//! `OPTIONS` (is `webdav-push` in `DAV`?) and one `PROPFIND Depth: 0` of the spec's properties
//! and davpush's (`urn:davpush:1`), with the user's credentials.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use url::Url;

use crate::Error;

const DAV: &str = "DAV:";
const PUSH: &str = "https://bitfire.at/webdav-push";
const DAVPUSH: &str = "urn:davpush:1";
const WEBDAV: &str = "the WebDAV server";

const PROPFIND: &str = concat!(
    r#"<?xml version="1.0" encoding="utf-8"?>"#,
    r#"<d:propfind xmlns:d="DAV:" xmlns:p="https://bitfire.at/webdav-push" xmlns:x="urn:davpush:1"><d:prop>"#,
    "<d:displayname/><d:sync-token/><p:topic/><p:transports/>",
    "<x:director/><x:push-services/><x:subscription-auth/><x:websocket-url/><x:gateway-websocket-url/><x:grant/>",
    "</d:prop></d:propfind>"
);

/// Only the subscription grant (asked again before every subscribe: grants are short-lived).
const GRANT_PROPFIND: &str = concat!(
    r#"<?xml version="1.0" encoding="utf-8"?>"#,
    r#"<d:propfind xmlns:d="DAV:" xmlns:x="urn:davpush:1"><d:prop><x:grant/></d:prop></d:propfind>"#,
);

/// The user's credentials for the WebDAV server.
#[derive(Clone, Default)]
pub enum Credentials {
    /// None.
    #[default]
    None,
    /// HTTP Basic.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// A bearer token (OAuth).
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Basic { user, .. } => write!(f, "Basic({user}, <redacted>)"),
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

impl Credentials {
    /// The `Authorization` header value.
    pub fn authorization(&self) -> Option<String> {
        match self {
            Credentials::None => None,
            Credentials::Basic { user, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            Credentials::Bearer(t) => Some(format!("Bearer {t}")),
        }
    }
}

/// How the Director authenticates subscribers (`urn:davpush:1` `subscription-auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionAuth {
    /// A subscription token (e.g. the app's pseudo-public token).
    Token,
    /// The same credentials as for WebDAV.
    Webdav,
    /// None.
    None,
    /// Something this client does not know.
    Other(String),
}

/// A push-capable collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    /// Its URL.
    pub url: Url,
    /// Its push topic.
    pub topic: String,
    /// `DAV:displayname`.
    pub display_name: Option<String>,
    /// `DAV:sync-token` at discovery.
    pub sync_token: Option<String>,
    /// Whether `OPTIONS` listed `webdav-push` in `DAV`.
    pub webdav_push: bool,
    /// The Director's URL.
    pub director: Option<Url>,
    /// The Director's push services (`websocket`, `web_push`, …).
    pub services: Vec<String>,
    /// How the Director authenticates subscribers.
    pub subscription_auth: SubscriptionAuth,
    /// The Director's WebSocket endpoint.
    pub websocket_url: Option<Url>,
    /// The davpush gateway's WebSocket, opened with the WebDAV credentials (no Director token
    /// needed; docs/clients.md).
    pub gateway_websocket_url: Option<Url>,
    /// The VAPID public key for Web Push subscriptions.
    pub vapid_public_key: Option<String>,
    /// A short-lived subscription grant for `topic`, when the server issues them (the davpush
    /// gateway does, to users who may read the collection; docs/protocol.md §3.3).
    pub grant: Option<String>,
}

/// Discovers collections with one HTTP client.
#[derive(Debug, Clone)]
pub struct Discovery {
    http: reqwest::Client,
}

fn unreachable(e: reqwest::Error) -> Error {
    Error::Unreachable { what: WEBDAV, message: crate::error::with_causes(&e) }
}

impl Discovery {
    /// A discovery client with a 30 s timeout.
    pub fn new() -> Result<Discovery, Error> {
        Discovery::with_extra_ca(None)
    }

    /// A discovery client that also trusts the PEM certificates `extra_ca_pem` (a private CA,
    /// e.g. of a reverse proxy in front of the WebDAV server), besides the platform's roots.
    pub fn with_extra_ca(extra_ca_pem: Option<&str>) -> Result<Discovery, Error> {
        let mut builder =
            reqwest::Client::builder().timeout(Duration::from_secs(30)).connect_timeout(Duration::from_secs(10));
        if let Some(pem) = extra_ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| Error::Protocol {
                what: WEBDAV,
                message: format!("TLS setup: bad CA certificate: {}", crate::error::with_causes(&e)),
            })?;
            builder = builder.tls_certs_merge(certs);
        }
        let http =
            builder.build().map_err(|e| Error::Unreachable { what: WEBDAV, message: crate::error::with_causes(&e) })?;
        Ok(Discovery { http })
    }

    /// With a given HTTP client.
    pub fn with_client(http: reqwest::Client) -> Discovery {
        Discovery { http }
    }

    /// Reads the push properties of the collection at `url`.
    pub async fn discover(&self, url: &Url, credentials: &Credentials) -> Result<Collection, Error> {
        let auth = credentials.authorization();
        let with_auth = |r: reqwest::RequestBuilder| match &auth {
            Some(a) => r.header(reqwest::header::AUTHORIZATION, a),
            None => r,
        };
        let options = with_auth(self.http.request(reqwest::Method::OPTIONS, url.clone())).send().await;
        let options = options.map_err(unreachable)?;
        check_auth(options.status().as_u16(), auth.is_some())?;
        let webdav_push = options
            .headers()
            .get_all("dav")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim() == "webdav-push");
        let props = self.propfind(url, credentials, PROPFIND).await?;
        let get = |ns: &str, name: &str| props.text.get(&(ns.to_owned(), name.to_owned())).filter(|s| !s.is_empty());
        let Some(topic) = get(PUSH, "topic").cloned() else {
            let detail = if webdav_push { "no push topic" } else { "no `webdav-push` in DAV, no push topic" };
            return Err(Error::NoPush { url: url.to_string(), detail: detail.into() });
        };
        let url_prop = |ns, name| get(ns, name).and_then(|s| Url::parse(s).ok());
        Ok(Collection {
            url: url.clone(),
            topic,
            display_name: get(DAV, "displayname").cloned(),
            sync_token: get(DAV, "sync-token").cloned(),
            webdav_push,
            director: url_prop(DAVPUSH, "director"),
            services: props.services,
            subscription_auth: match get(DAVPUSH, "subscription-auth").map(String::as_str) {
                Some("token") | None => SubscriptionAuth::Token,
                Some("webdav") => SubscriptionAuth::Webdav,
                Some("none") => SubscriptionAuth::None,
                Some(other) => SubscriptionAuth::Other(other.to_owned()),
            },
            websocket_url: url_prop(DAVPUSH, "websocket-url"),
            gateway_websocket_url: url_prop(DAVPUSH, "gateway-websocket-url"),
            vapid_public_key: get(PUSH, "vapid-public-key").cloned(),
            grant: get(DAVPUSH, "grant").cloned(),
        })
    }

    /// A fresh subscription grant for the collection at `url`, if its server issues them.
    pub async fn grant(&self, url: &Url, credentials: &Credentials) -> Result<Option<String>, Error> {
        let props = self.propfind(url, credentials, GRANT_PROPFIND).await?;
        Ok(props.text.get(&(DAVPUSH.to_owned(), "grant".to_owned())).filter(|s| !s.is_empty()).cloned())
    }

    /// `PROPFIND Depth: 0` of `body` at `url`: the first response's properties.
    async fn propfind(&self, url: &Url, credentials: &Credentials, body: &'static str) -> Result<Props, Error> {
        let mut req = self
            .http
            .request(reqwest::Method::from_bytes(b"PROPFIND").expect("method"), url.clone())
            .header("Depth", "0")
            .header(reqwest::header::CONTENT_TYPE, "application/xml; charset=utf-8")
            .body(body);
        if let Some(a) = credentials.authorization() {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        check_auth(status, !matches!(credentials, Credentials::None))?;
        if status != 207 {
            return Err(Error::Http { what: WEBDAV, status });
        }
        let text = resp.text().await.map_err(unreachable)?;
        parse_props(&text).map_err(|message| Error::Protocol { what: WEBDAV, message })
    }
}

/// 401 without credentials: a login is needed; 401 or 403 with them: refused.
fn check_auth(status: u16, with_credentials: bool) -> Result<(), Error> {
    match status {
        401 if !with_credentials => Err(Error::LoginRequired { what: WEBDAV }),
        401 | 403 => Err(Error::Unauthorized { what: WEBDAV, status }),
        _ => Ok(()),
    }
}

#[derive(Debug, Default)]
struct Props {
    /// Text of every (namespace, local name) seen; the first response wins.
    text: HashMap<(String, String), String>,
    /// `x:service` values.
    services: Vec<String>,
}

fn parse_props(xml: &str) -> Result<Props, String> {
    let mut reader = NsReader::from_str(xml);
    let mut stack: Vec<(String, String)> = Vec::new();
    let mut props = Props::default();
    let mut responses = 0;
    loop {
        let (resolved, event) = reader.read_resolved_event().map_err(|e| e.to_string())?;
        let ns = match &resolved {
            ResolveResult::Bound(ns) => String::from_utf8_lossy(ns.0.as_bytes()).into_owned(),
            _ => String::new(),
        };
        match event {
            Event::Start(e) => {
                let name = e.local_name().as_ref().to_owned();
                if ns == DAV && name == "response" {
                    responses += 1;
                }
                stack.push((ns, name));
            }
            Event::End(_) => {
                stack.pop();
            }
            Event::Text(t) if responses == 1 => append(&mut props, &stack, &t.xml10_content()),
            Event::CData(c) if responses == 1 => append(&mut props, &stack, &c.xml10_content()),
            Event::GeneralRef(r) if responses == 1 => {
                let c = match &*r {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    _ => "",
                };
                append(&mut props, &stack, c);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    for s in props.text.values_mut() {
        *s = s.trim().to_owned();
    }
    Ok(props)
}

fn append(props: &mut Props, stack: &[(String, String)], text: &str) {
    let Some(top) = stack.last() else { return };
    if top.0 == DAVPUSH && top.1 == "service" {
        let t = text.trim();
        if !t.is_empty() {
            props.services.push(t.to_owned());
        }
        return;
    }
    props.text.entry(top.clone()).or_default().push_str(text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_gateways_multistatus() {
        let xml = r#"<?xml version="1.0"?><D:multistatus xmlns:D="DAV:" xmlns:P="https://bitfire.at/webdav-push" xmlns:X="urn:davpush:1">
          <D:response><D:href>/alice/cal/</D:href><D:propstat><D:prop>
            <D:displayname>Work &amp; more</D:displayname><P:topic>abc</P:topic>
            <P:transports><P:web-push><P:vapid-public-key type="p256ecdsa">BKEY</P:vapid-public-key></P:web-push></P:transports>
            <X:director>http://127.0.0.1:8080/</X:director>
            <X:push-services><X:service>websocket</X:service><X:service>web_push</X:service></X:push-services>
            <X:subscription-auth>webdav</X:subscription-auth><X:websocket-url>ws://127.0.0.1:8080/ws</X:websocket-url>
          </D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>
          <D:propstat><D:prop><D:sync-token/></D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat></D:response>
        </D:multistatus>"#;
        let p = parse_props(xml).unwrap();
        let get = |ns: &str, n: &str| p.text.get(&(ns.to_owned(), n.to_owned())).cloned().unwrap_or_default();
        assert_eq!(get(PUSH, "topic"), "abc");
        assert_eq!(get(DAV, "displayname"), "Work & more");
        assert_eq!(get(PUSH, "vapid-public-key"), "BKEY");
        assert_eq!(get(DAVPUSH, "websocket-url"), "ws://127.0.0.1:8080/ws");
        assert_eq!(get(DAV, "sync-token"), "");
        assert_eq!(p.services, ["websocket", "web_push"]);
    }
}
