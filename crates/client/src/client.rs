//! The WebSocket push client: one connection to a Director, the watched collections, and a task
//! that keeps them subscribed across reconnects and expiry.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use davpush_proto::{ClientFrame, SUBPROTOCOL, ServerFrame, Trigger};
use futures_util::{SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use url::Url;

use crate::Error;
use crate::backoff::Backoff;
use crate::discovery::{Collection, Credentials, SubscriptionAuth};

const DIRECTOR: &str = "the Director";
/// Commands waiting for the connection task at most.
const COMMAND_QUEUE: usize = 64;

pub(crate) type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How the client authenticates to the Director's WebSocket.
#[derive(Clone, Default)]
pub enum DirectorAuth {
    /// Nothing (`subscription-auth` `none`).
    #[default]
    None,
    /// `Authorization: Bearer <token>` (`token`).
    Bearer(String),
    /// A whole `Authorization` header, e.g. the WebDAV Basic credentials (`webdav`).
    Authorization(String),
}

impl std::fmt::Debug for DirectorAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DirectorAuth::None => "None",
            DirectorAuth::Bearer(_) => "Bearer(<redacted>)",
            DirectorAuth::Authorization(_) => "Authorization(<redacted>)",
        })
    }
}

impl DirectorAuth {
    /// What `collection`'s Director asks for: its subscription `token`, the WebDAV
    /// `credentials`, or nothing.
    pub fn for_collection(
        collection: &Collection,
        credentials: &Credentials,
        token: Option<&str>,
    ) -> Result<DirectorAuth, Error> {
        match (&collection.subscription_auth, token) {
            (_, Some(t)) => Ok(DirectorAuth::Bearer(t.to_owned())),
            (SubscriptionAuth::None, None) => Ok(DirectorAuth::None),
            (SubscriptionAuth::Webdav, None) => credentials
                .authorization()
                .map(DirectorAuth::Authorization)
                .ok_or(Error::Unauthorized { what: DIRECTOR, status: 401 }),
            (SubscriptionAuth::Token | SubscriptionAuth::Other(_), None) => Err(Error::TokenRequired),
        }
    }

    fn header(&self) -> Option<String> {
        match self {
            DirectorAuth::None => None,
            DirectorAuth::Bearer(t) => Some(format!("Bearer {t}")),
            DirectorAuth::Authorization(a) => Some(a.clone()),
        }
    }
}

/// Options of a [`PushClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The Director's WebSocket URL (`websocket-url`).
    pub websocket_url: Url,
    /// Authentication.
    pub auth: DirectorAuth,
    /// First reconnect delay (500 ms); doubles up to `max_backoff` (30 s), with jitter.
    pub min_backoff: Duration,
    /// Longest reconnect delay.
    pub max_backoff: Duration,
    /// Subscriptions are renewed after this fraction of their lifetime (0.8).
    pub refresh_ratio: f64,
    /// Handshake timeout (10 s).
    pub connect_timeout: Duration,
    /// Events waiting to be read at most (256); the connection waits while it is full.
    pub event_queue: usize,
    /// PEM certificates of extra trusted roots (a private CA), besides the platform's: for a
    /// `wss://` WebSocket and the `https://` collections asked for subscription grants.
    pub extra_ca_pem: Option<String>,
    /// The WebDAV credentials, with which a fresh subscription grant is asked for from a
    /// collection's server before every subscribe (servers that issue none are fine too).
    pub credentials: Credentials,
    /// `websocket_url` is a davpush gateway's WebSocket (`gateway-websocket-url`), opened with
    /// the WebDAV credentials: each `subscribe` names its collection, which the gateway checks
    /// with the WebDAV server and signs the grant for itself.
    pub via_gateway: bool,
}

impl ClientOptions {
    /// Defaults for `websocket_url` with `auth`.
    pub fn new(websocket_url: Url, auth: DirectorAuth) -> Self {
        ClientOptions {
            websocket_url,
            auth,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            refresh_ratio: 0.8,
            connect_timeout: Duration::from_secs(10),
            event_queue: 256,
            extra_ca_pem: None,
            credentials: Credentials::None,
            via_gateway: false,
        }
    }

    /// Options for `collection`: with the Director's subscription `token`, its Director
    /// directly; without one, the gateway's WebSocket with the WebDAV `credentials` when the
    /// collection offers one (`gateway-websocket-url`); else the Director directly, with what
    /// its `subscription-auth` asks for.
    pub fn for_collection(
        collection: &Collection,
        credentials: &Credentials,
        token: Option<&str>,
    ) -> Result<ClientOptions, Error> {
        if let (None, Some(url), Some(authorization)) =
            (token, &collection.gateway_websocket_url, credentials.authorization())
        {
            let mut options = ClientOptions::new(url.clone(), DirectorAuth::Authorization(authorization));
            options.credentials = credentials.clone();
            options.via_gateway = true;
            return Ok(options);
        }
        let url = collection.websocket_url.clone().ok_or_else(|| Error::NoPush {
            url: collection.url.to_string(),
            detail: "its Director offers no WebSocket endpoint".into(),
        })?;
        let mut options = ClientOptions::new(url, DirectorAuth::for_collection(collection, credentials, token)?);
        options.credentials = credentials.clone();
        Ok(options)
    }
}

/// A change of a watched collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The collection.
    pub collection: Url,
    /// Its topic.
    pub topic: String,
    /// Its new sync-token, when the server sent it.
    pub sync_token: Option<String>,
    /// What changed (`content` when the server did not say).
    pub trigger: Trigger,
}

/// What a [`PushClient`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A connection is up (after a reconnect, `reconnect` is true).
    Connected {
        /// The Director's id of this connection.
        connection_id: String,
        /// Whether this replaces a lost connection.
        reconnect: bool,
    },
    /// A collection is subscribed (also after every renewal).
    Subscribed {
        /// The collection.
        collection: Url,
        /// Granted expiry, unix seconds.
        expires: i64,
    },
    /// A collection changed: sync it.
    Update(Update),
    /// Changes may have been missed, sync once: after a reconnect to a Director that keeps no
    /// history, or whose history no longer covers the time disconnected (after a reconnect
    /// within it, what was missed arrives as [`Event::Update`]s instead).
    Resync {
        /// The collection.
        collection: Url,
    },
    /// The connection was lost; the next attempt follows after `retry_in`.
    Disconnected {
        /// Why.
        reason: String,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
    /// The Director refused to subscribe a collection (an `error` frame).
    Refused {
        /// The collection.
        collection: Url,
        /// Error code.
        error: String,
        /// Explanation.
        message: String,
    },
}

#[derive(Debug)]
enum Command {
    Watch(Url, String),
    Unwatch(String),
    Close,
}

/// A WebSocket connection to a Director that keeps watched collections subscribed: it
/// reconnects with backoff and jitter, subscribes again after a reconnect (the Director gives a
/// new connection id and subscriptions end with their connection), renews subscriptions before
/// they expire, and unsubscribes when closed or dropped. A [`Stream`] of [`Event`]s; read it,
/// since the connection waits while `event_queue` events are unread.
#[derive(Debug)]
pub struct PushClient {
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<Event>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl PushClient {
    /// Connects (the first attempt is made now: an unreachable Director or refused credentials
    /// are errors here; later losses are retried).
    pub async fn connect(options: ClientOptions) -> Result<PushClient, Error> {
        let (socket, connection_id) = open(&options).await?;
        let (commands, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (ev_tx, events) = mpsc::channel(options.event_queue.max(1));
        let discovery = crate::Discovery::with_extra_ca(options.extra_ca_pem.as_deref())?;
        let task =
            Task { options, discovery, commands: cmd_rx, events: ev_tx, watched: HashMap::new(), position: None };
        let handle = tokio::spawn(task.run(socket, connection_id));
        Ok(PushClient { commands, events, task: Some(handle) })
    }

    /// Watches a collection (subscribes now and after every reconnect).
    pub async fn watch(&self, collection: &Collection) -> Result<(), Error> {
        self.watch_topic(collection.url.clone(), &collection.topic).await
    }

    /// Watches `topic`, reported as `url`.
    pub async fn watch_topic(&self, url: Url, topic: &str) -> Result<(), Error> {
        self.commands.send(Command::Watch(url, topic.to_owned())).await.map_err(|_| Error::Closed)
    }

    /// Stops watching a collection.
    pub async fn unwatch(&self, collection: &Collection) -> Result<(), Error> {
        self.commands.send(Command::Unwatch(collection.topic.clone())).await.map_err(|_| Error::Closed)
    }

    /// Unsubscribes everything, closes the connection and waits for that.
    pub async fn close(mut self) {
        let _ = self.commands.send(Command::Close).await;
        // Unread events must not hold the task up.
        self.events.close();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Stream for PushClient {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for PushClient {
    fn drop(&mut self) {
        if self.task.is_some() {
            // The task unsubscribes and closes; it does not wait for readers any more.
            let _ = self.commands.try_send(Command::Close);
            self.events.close();
        }
    }
}

use davpush_proto::unix_now;

/// Opens a connection and reads the `hello`.
pub(crate) async fn open(options: &ClientOptions) -> Result<(Socket, Hello), Error> {
    let mut request = options
        .websocket_url
        .as_str()
        .into_client_request()
        .map_err(|e| Error::Protocol { what: DIRECTOR, message: crate::error::with_causes(&e) })?;
    let h = request.headers_mut();
    h.insert("sec-websocket-protocol", tungstenite::http::HeaderValue::from_static(SUBPROTOCOL));
    if let Some(a) = options.auth.header() {
        let v = tungstenite::http::HeaderValue::from_str(&a)
            .map_err(|_| Error::Protocol { what: DIRECTOR, message: "invalid credentials header".into() })?;
        h.insert("authorization", v);
    }
    let connector = match options.websocket_url.scheme() {
        "wss" => Some(tokio_tungstenite::Connector::Rustls(tls_config(options.extra_ca_pem.as_deref())?)),
        _ => None,
    };
    let connect = tokio::time::timeout(
        options.connect_timeout,
        tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector),
    );
    let mut socket = match connect.await {
        Err(_) => return Err(Error::Unreachable { what: DIRECTOR, message: "the handshake timed out".into() }),
        Ok(Err(tungstenite::Error::Http(resp))) => {
            let status = resp.status().as_u16();
            return Err(if status == 401 || status == 403 {
                Error::Unauthorized { what: DIRECTOR, status }
            } else {
                Error::Http { what: DIRECTOR, status }
            });
        }
        Ok(Err(e)) => return Err(Error::Unreachable { what: DIRECTOR, message: crate::error::with_causes(&e) }),
        Ok(Ok((socket, _))) => socket,
    };
    let first = tokio::time::timeout(options.connect_timeout, socket.next()).await;
    match first {
        Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str::<ServerFrame>(t.as_str()) {
            Ok(ServerFrame::Hello { connection_id, ping_interval, position, .. }) => Ok((
                socket,
                Hello { connection_id, ping_interval: Duration::from_secs(ping_interval.max(1)), position },
            )),
            _ => Err(Error::Protocol { what: DIRECTOR, message: format!("expected a hello frame, got {t}") }),
        },
        Ok(Some(Err(e))) => Err(Error::Unreachable { what: DIRECTOR, message: crate::error::with_causes(&e) }),
        _ => Err(Error::Unreachable { what: DIRECTOR, message: "no hello frame".into() }),
    }
}

/// TLS for `wss://`: the platform's roots (as reqwest uses them), plus `extra_ca_pem`.
fn tls_config(extra_ca_pem: Option<&str>) -> Result<std::sync::Arc<rustls::ClientConfig>, Error> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let tls_err = |m: String| Error::Protocol { what: DIRECTOR, message: format!("TLS setup: {m}") };
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let extra: Vec<CertificateDer<'static>> = match extra_ca_pem {
        Some(pem) => CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| tls_err(format!("bad CA certificate: {e}")))?,
        None => Vec::new(),
    };
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
        .map_err(|e| tls_err(e.to_string()))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

#[derive(Debug)]
pub(crate) struct Hello {
    pub(crate) connection_id: String,
    pub(crate) ping_interval: Duration,
    /// The Director's history position when the connection opened (absent: no history).
    pub(crate) position: Option<String>,
}

#[derive(Debug)]
struct Watched {
    url: Url,
    /// When to subscribe again (set from the granted expiry).
    renew_at: Option<Instant>,
}

struct Task {
    options: ClientOptions,
    discovery: crate::Discovery,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    watched: HashMap<String, Watched>,
    /// The last history position the Director sent (in `hello`, `notify` or `resync`): what
    /// the next connection's subscriptions resume from (`since`).
    position: Option<String>,
}

enum End {
    Closed,
    Lost(String),
}

fn frame(f: &ClientFrame) -> Message {
    Message::Text(serde_json::to_string(f).expect("frames serialize").into())
}

impl Task {
    async fn emit(&self, e: Event) {
        // A reader that went away (closed stream) does not stop the connection.
        let _ = self.events.send(e).await;
    }

    async fn run(mut self, socket: Socket, hello: Hello) {
        let mut backoff = Backoff::new(self.options.min_backoff, self.options.max_backoff);
        let (mut socket, mut hello, mut reconnect) = (socket, hello, false);
        loop {
            let mut reason = match self.session(&mut socket, &hello, reconnect).await {
                End::Closed => return,
                End::Lost(r) => r,
            };
            loop {
                let delay = backoff.next_delay();
                tracing::info!(%reason, retry_in = ?delay, "push connection lost");
                self.emit(Event::Disconnected { reason: reason.clone(), retry_in: delay }).await;
                if !self.wait(delay).await {
                    return;
                }
                match open(&self.options).await {
                    Ok((s, h)) => {
                        (socket, hello, reconnect) = (s, h, true);
                        backoff.reset();
                        break;
                    }
                    Err(e) => reason = e.to_string(),
                }
            }
        }
    }

    /// Waits `delay`, still taking commands; `false` when closed.
    async fn wait(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                c = self.commands.recv() => match c {
                    Some(Command::Watch(url, topic)) => {
                        self.watched.insert(topic, Watched { url, renew_at: None });
                    }
                    Some(Command::Unwatch(topic)) => {
                        self.watched.remove(&topic);
                    }
                    Some(Command::Close) | None => return false,
                },
            }
        }
    }

    /// Subscribes `topic`; `since` resumes from a history position (the first subscribe of a
    /// topic on a connection), renewals go without.
    async fn subscribe(
        &self,
        socket: &mut Socket,
        topic: &str,
        since: Option<String>,
    ) -> Result<(), tungstenite::Error> {
        let Some(url) = self.watched.get(topic).map(|w| w.url.clone()) else { return Ok(()) };
        if self.options.via_gateway {
            // The gateway checks that the user may read the collection and adds the grant.
            let f = ClientFrame::Subscribe {
                id: Some(topic.to_owned()),
                topic: topic.to_owned(),
                expires: None,
                grant: None,
                since,
            };
            let mut value = serde_json::to_value(&f).expect("frames serialize");
            if let Some(object) = value.as_object_mut() {
                object.insert("collection".into(), url.path().into());
            }
            return socket.send(Message::Text(value.to_string().into())).await;
        }
        let grant = self.grant(&url).await;
        let f =
            ClientFrame::Subscribe { id: Some(topic.to_owned()), topic: topic.to_owned(), expires: None, grant, since };
        socket.send(frame(&f)).await
    }

    /// A fresh grant from the collection's server; without one the Director may refuse, which
    /// is reported as [`Event::Refused`].
    async fn grant(&self, url: &Url) -> Option<String> {
        match self.discovery.grant(url, &self.options.credentials).await {
            Ok(g) => g,
            Err(e) => {
                // A URL may carry user information: only its origin and path are logged.
                let shown = format!("{}{}", url.origin().ascii_serialization(), url.path());
                tracing::warn!(collection = %shown, error = %e, "cannot get a subscription grant");
                None
            }
        }
    }

    async fn session(&mut self, socket: &mut Socket, hello: &Hello, reconnect: bool) -> End {
        self.emit(Event::Connected { connection_id: hello.connection_id.clone(), reconnect }).await;
        // Resume from the last position seen (a Director without a history sends none: then
        // every collection is re-synced after a reconnect). The first connection starts at
        // its hello's, so nothing between it and the subscriptions is missed.
        let resumes = hello.position.is_some() && (self.position.is_some() || !reconnect);
        if self.position.is_none() || hello.position.is_none() {
            self.position.clone_from(&hello.position);
        }
        let since = if resumes { self.position.clone() } else { None };
        let topics: Vec<(String, Url)> = self.watched.iter().map(|(t, w)| (t.clone(), w.url.clone())).collect();
        for (topic, url) in topics {
            if let Err(e) = self.subscribe(socket, &topic, since.clone()).await {
                return End::Lost(e.to_string());
            }
            if let Some(w) = self.watched.get_mut(&topic) {
                w.renew_at = None;
            }
            if reconnect && !resumes {
                self.emit(Event::Resync { collection: url }).await;
            }
        }
        let mut heard = Instant::now();
        let mut ping = tokio::time::interval_at(Instant::now() + hello.ping_interval, hello.ping_interval);
        loop {
            let renew = self.watched.values().filter_map(|w| w.renew_at).min();
            tokio::select! {
                c = self.commands.recv() => match c {
                    Some(Command::Watch(url, topic)) => {
                        self.watched.insert(topic.clone(), Watched { url, renew_at: None });
                        let since = hello.position.as_ref().and(self.position.clone());
                        if let Err(e) = self.subscribe(socket, &topic, since).await {
                            return End::Lost(e.to_string());
                        }
                    }
                    Some(Command::Unwatch(topic)) => {
                        if self.watched.remove(&topic).is_some() {
                            let f = ClientFrame::Unsubscribe { id: None, topic };
                            if let Err(e) = socket.send(frame(&f)).await {
                                return End::Lost(e.to_string());
                            }
                        }
                    }
                    Some(Command::Close) | None => {
                        for topic in self.watched.keys() {
                            let _ = socket.feed(frame(&ClientFrame::Unsubscribe { id: None, topic: topic.clone() })).await;
                        }
                        let _ = socket.close(None).await;
                        return End::Closed;
                    }
                },
                m = socket.next() => {
                    heard = Instant::now();
                    match m {
                        Some(Ok(Message::Text(t))) => self.on_frame(t.as_str()).await,
                        Some(Ok(Message::Close(f))) => {
                            let why = f.map(|f| format!("closed by the Director ({} {})", u16::from(f.code), f.reason))
                                .unwrap_or_else(|| "closed by the Director".into());
                            return End::Lost(why);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return End::Lost(e.to_string()),
                        None => return End::Lost("the connection ended".into()),
                    }
                }
                _ = tokio::time::sleep_until(renew.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400))), if renew.is_some() => {
                    let now = Instant::now();
                    let due: Vec<String> = self.watched.iter().filter(|(_, w)| w.renew_at.is_some_and(|r| r <= now)).map(|(t, _)| t.clone()).collect();
                    for topic in due {
                        if let Some(w) = self.watched.get_mut(&topic) {
                            w.renew_at = None;
                        }
                        if let Err(e) = self.subscribe(socket, &topic, None).await {
                            return End::Lost(e.to_string());
                        }
                    }
                }
                _ = ping.tick() => {
                    if heard.elapsed() > 2 * hello.ping_interval {
                        return End::Lost("the Director stopped answering".into());
                    }
                    if let Err(e) = socket.send(Message::Ping(Vec::new().into())).await {
                        return End::Lost(e.to_string());
                    }
                }
            }
        }
    }

    async fn on_frame(&mut self, text: &str) {
        let Ok(f) = serde_json::from_str::<ServerFrame>(text) else {
            tracing::debug!(frame = text, "unknown frame ignored");
            return;
        };
        match f {
            ServerFrame::Notify { topic, sync_token, trigger, position } => {
                if position.is_some() {
                    self.position = position;
                }
                if let Some(w) = self.watched.get(&topic) {
                    let u = Update {
                        collection: w.url.clone(),
                        topic,
                        sync_token,
                        trigger: trigger.unwrap_or(Trigger::Content),
                    };
                    self.emit(Event::Update(u)).await;
                }
            }
            ServerFrame::Subscribed { topic, expires, .. } => {
                let ratio = self.options.refresh_ratio.clamp(0.1, 0.95);
                if let Some(w) = self.watched.get_mut(&topic) {
                    let lifetime = (expires - unix_now()).max(1) as f64;
                    w.renew_at = Some(Instant::now() + Duration::from_secs_f64((lifetime * ratio).max(1.0)));
                    let url = w.url.clone();
                    self.emit(Event::Subscribed { collection: url, expires }).await;
                }
            }
            ServerFrame::Resync { topics, position } => {
                if position.is_some() {
                    self.position = position;
                }
                for topic in topics {
                    if let Some(w) = self.watched.get(&topic) {
                        let url = w.url.clone();
                        self.emit(Event::Resync { collection: url }).await;
                    }
                }
            }
            ServerFrame::Error { id: Some(topic), error, message } => {
                if let Some(w) = self.watched.get(&topic) {
                    let url = w.url.clone();
                    self.emit(Event::Refused { collection: url, error, message }).await;
                }
            }
            _ => {}
        }
    }
}
