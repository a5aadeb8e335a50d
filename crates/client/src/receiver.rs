//! [`WebPushReceiver`]: changes of collections whose server pushes natively (Web Push,
//! RFC 8030) but is not behind the davpush gateway, received through a Director acting as push
//! service (docs/protocol.md §10).
//!
//! Per collection: a push subscription at the Director (restricted to the server's VAPID key
//! when it advertises one), a fresh RFC 8291 key pair and auth secret, and a `push-register`
//! with the WebDAV server. Each push arrives encrypted over the Director's WebSocket and is
//! decrypted here. Registrations are renewed before they expire and removed on
//! [`WebPushReceiver::close`]. After a lost connection the push subscriptions are re-attached
//! (`push_id` + `secret`) and every collection is reported as [`Event::Resync`].

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use davpush_proto::{ClientFrame, ServerFrame, Trigger, unix_now};
use futures_util::{SinkExt, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use url::Url;

use crate::backoff::Backoff;
use crate::client::{Socket, open};
use crate::webpush::{ReceiverKeys, parse_push_message, push_register_body};
use crate::{ClientOptions, Collection, Credentials, Error, Event, Update};

const DIRECTOR: &str = "the push service (Director)";
const WEBDAV: &str = "the WebDAV server";
/// Registration lifetime asked for when the server does not say (`Expires`).
const DEFAULT_LIFETIME: i64 = 3600;

struct Registration {
    collection: Collection,
    keys: ReceiverKeys,
    push_id: String,
    secret: String,
    /// The push subscription's endpoint at the Director.
    endpoint: String,
    /// The registration's URL at the WebDAV server (`Location`), deleted on close.
    location: Option<Url>,
    renew_at: Instant,
}

/// Receives Web Push for collections through the Director as push service; a [`Stream`] of
/// [`Event`]s like [`crate::PushClient`].
pub struct WebPushReceiver {
    events: mpsc::Receiver<Event>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for WebPushReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPushReceiver").finish_non_exhaustive()
    }
}

impl WebPushReceiver {
    /// Connects to the Director at `options.websocket_url` and registers each collection with
    /// its WebDAV server (with `credentials`). Errors here are the first attempt's.
    pub async fn start(
        options: ClientOptions,
        credentials: Credentials,
        collections: Vec<Collection>,
    ) -> Result<WebPushReceiver, Error> {
        let http = http_client(options.extra_ca_pem.as_deref())?;
        let (mut socket, hello) = open(&options).await?;
        let mut regs = Vec::new();
        for c in collections {
            let keys = ReceiverKeys::generate();
            let frame = ClientFrame::PushSubscribe {
                id: Some(c.url.to_string()),
                vapid_key: c.vapid_public_key.clone(),
                push_id: None,
                secret: None,
            };
            let (push_id, endpoint, secret) = match request(&mut socket, &frame).await? {
                ServerFrame::PushSubscribed { push_id, endpoint, secret, .. } => (push_id, endpoint, secret),
                other => return Err(refused(other)),
            };
            let mut reg = Registration {
                collection: c,
                keys,
                push_id,
                secret,
                endpoint,
                location: None,
                renew_at: Instant::now(),
            };
            register(&http, &credentials, &mut reg).await?;
            regs.push(reg);
        }
        let (tx, events) = mpsc::channel(options.event_queue.max(1));
        let _ = tx.try_send(Event::Connected { connection_id: hello.connection_id.clone(), reconnect: false });
        let (stop_tx, stop) = oneshot::channel();
        let task = Task { options, credentials, http, regs, events: tx };
        let handle = tokio::spawn(task.run(socket, stop));
        Ok(WebPushReceiver { events, stop: Some(stop_tx), task: Some(handle) })
    }

    /// Unregisters every collection at its server, ends the push subscriptions and closes.
    pub async fn close(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.events.close();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Stream for WebPushReceiver {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.events.poll_recv(cx)
    }
}

fn http_client(extra_ca_pem: Option<&str>) -> Result<reqwest::Client, Error> {
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some(pem) = extra_ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| Error::Protocol { what: WEBDAV, message: format!("bad CA file: {e}") })?
        {
            b = b.add_root_certificate(cert);
        }
    }
    b.build().map_err(|e| Error::Protocol { what: WEBDAV, message: crate::error::with_causes(&e) })
}

fn refused(frame: ServerFrame) -> Error {
    let message = match frame {
        ServerFrame::Error { error, message, .. } => format!("{error}: {message}"),
        other => format!("unexpected frame {other:?}"),
    };
    Error::Protocol { what: DIRECTOR, message }
}

/// Sends `frame` and returns the answer (frames other than answers are not expected before
/// the first registration).
async fn request(socket: &mut Socket, frame: &ClientFrame) -> Result<ServerFrame, Error> {
    let text = serde_json::to_string(frame).expect("frames serialize");
    socket.send(Message::Text(text.into())).await.map_err(|_| Error::Closed)?;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), socket.next()).await;
        match next {
            Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str::<ServerFrame>(t.as_str()) {
                Ok(ServerFrame::Push { .. }) | Err(_) => continue,
                Ok(f) => return Ok(f),
            },
            Ok(Some(Ok(_))) => continue,
            _ => return Err(Error::Unreachable { what: DIRECTOR, message: "no answer".into() }),
        }
    }
}

/// `push-register`s `reg` (its endpoint and keys) at its collection's server.
async fn register(http: &reqwest::Client, credentials: &Credentials, reg: &mut Registration) -> Result<(), Error> {
    let mut req = http
        .post(reg.collection.url.clone())
        .header("content-type", "application/xml; charset=utf-8")
        .body(push_register_body(&reg.endpoint, &reg.keys));
    if let Some(a) = credentials.authorization() {
        req = req.header("authorization", a);
    }
    let resp =
        req.send().await.map_err(|e| Error::Unreachable { what: WEBDAV, message: crate::error::with_causes(&e) })?;
    let status = resp.status().as_u16();
    match status {
        200..=299 => {}
        401 | 403 => return Err(Error::Unauthorized { what: WEBDAV, status }),
        _ => return Err(Error::Http { what: WEBDAV, status }),
    }
    let location =
        resp.headers().get("location").and_then(|l| l.to_str().ok()).and_then(|l| reg.collection.url.join(l).ok());
    let expires = resp
        .headers()
        .get("expires")
        .and_then(|e| e.to_str().ok())
        .and_then(httpdate)
        .unwrap_or(unix_now() + DEFAULT_LIFETIME);
    // Renew at two thirds of the lifetime (at least a minute from now).
    let lifetime = (expires - unix_now()).max(90);
    reg.renew_at = Instant::now() + Duration::from_secs((lifetime * 2 / 3) as u64);
    if let Some(old) = std::mem::replace(&mut reg.location, location)
        && Some(&old) != reg.location.as_ref()
    {
        unregister(http, credentials, &old).await;
    }
    Ok(())
}

async fn unregister(http: &reqwest::Client, credentials: &Credentials, location: &Url) {
    let mut req = http.delete(location.clone());
    if let Some(a) = credentials.authorization() {
        req = req.header("authorization", a);
    }
    if let Err(e) = req.send().await {
        tracing::warn!(error = %e, "could not remove a push registration");
    }
}

/// Unix seconds of an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn httpdate(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else { return None };
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|m| m == month)? as i64
        + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let mut hms = time.split(':').map(|p| p.parse::<i64>());
    let (h, m, sec) = (hms.next()?.ok()?, hms.next()?.ok()?, hms.next()?.ok()?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + h * 3600 + m * 60 + sec)
}

struct Task {
    options: ClientOptions,
    credentials: Credentials,
    http: reqwest::Client,
    regs: Vec<Registration>,
    events: mpsc::Sender<Event>,
}

impl Task {
    async fn emit(&self, e: Event) {
        let _ = self.events.send(e).await;
    }

    async fn run(mut self, mut socket: Socket, mut stop: oneshot::Receiver<()>) {
        for r in &self.regs {
            let e = Event::Subscribed { collection: r.collection.url.clone(), expires: unix_now() };
            let _ = self.events.send(e).await;
        }
        let mut backoff = Backoff::new(self.options.min_backoff, self.options.max_backoff);
        loop {
            let renew_at = self
                .regs
                .iter()
                .map(|r| r.renew_at)
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep_until(renew_at) => self.renew().await,
                msg = socket.next() => match msg {
                    Some(Ok(Message::Text(t))) => self.on_frame(t.as_str()).await,
                    Some(Ok(_)) => {}
                    _ => {
                        let Some(s) = self.reconnect(&mut backoff, &mut stop).await else { return self.finish(None).await };
                        socket = s;
                    }
                },
            }
        }
        self.finish(Some(&mut socket)).await;
    }

    async fn on_frame(&self, text: &str) {
        let Ok(ServerFrame::Push { push_id, data, .. }) = serde_json::from_str::<ServerFrame>(text) else { return };
        let Some(reg) = self.regs.iter().find(|r| r.push_id == push_id) else { return };
        let plain = URL_SAFE_NO_PAD.decode(&data).ok().and_then(|body| reg.keys.decrypt(&body).ok());
        let Some(plain) = plain else {
            tracing::warn!(collection = %reg.collection.url, "a push did not decrypt; ignored");
            return;
        };
        let m = parse_push_message(&String::from_utf8_lossy(&plain));
        let topic = m.topic.unwrap_or_else(|| reg.collection.topic.clone());
        let u = Update {
            collection: reg.collection.url.clone(),
            topic,
            sync_token: m.sync_token,
            trigger: Trigger::Content,
        };
        self.emit(Event::Update(u)).await;
    }

    /// Registers again every registration that is due (the same endpoint, new expiry).
    async fn renew(&mut self) {
        let now = Instant::now();
        let (http, creds) = (self.http.clone(), self.credentials.clone());
        let mut done = Vec::new();
        for r in self.regs.iter_mut().filter(|r| r.renew_at <= now) {
            match register(&http, &creds, r).await {
                Ok(()) => done.push(r.collection.url.clone()),
                Err(e) => {
                    tracing::warn!(collection = %r.collection.url, error = %e, "renewing the push registration failed");
                    r.renew_at = now + Duration::from_secs(60);
                }
            }
        }
        for c in done {
            self.emit(Event::Subscribed { collection: c, expires: unix_now() }).await;
        }
    }

    async fn reconnect(&mut self, backoff: &mut Backoff, stop: &mut oneshot::Receiver<()>) -> Option<Socket> {
        let mut reason = "connection lost".to_owned();
        loop {
            let delay = backoff.next_delay();
            self.emit(Event::Disconnected { reason: reason.clone(), retry_in: delay }).await;
            tokio::select! {
                _ = &mut *stop => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            let (mut socket, hello) = match open(&self.options).await {
                Ok(s) => s,
                Err(e) => {
                    reason = e.to_string();
                    continue;
                }
            };
            let mut ok = true;
            let (http, creds) = (self.http.clone(), self.credentials.clone());
            for r in &mut self.regs {
                let frame = ClientFrame::PushSubscribe {
                    id: None,
                    vapid_key: None,
                    push_id: Some(r.push_id.clone()),
                    secret: Some(r.secret.clone()),
                };
                match request(&mut socket, &frame).await {
                    Ok(ServerFrame::PushSubscribed { .. }) => {}
                    // The Director forgot it (restarted, or it expired): a new push subscription,
                    // registered again with the server.
                    Ok(ServerFrame::Error { error, .. }) if error == "not_found" || error == "gone" => {
                        let frame = ClientFrame::PushSubscribe {
                            id: None,
                            vapid_key: r.collection.vapid_public_key.clone(),
                            push_id: None,
                            secret: None,
                        };
                        match request(&mut socket, &frame).await {
                            Ok(ServerFrame::PushSubscribed { push_id, endpoint, secret, .. }) => {
                                (r.push_id, r.endpoint, r.secret) = (push_id, endpoint, secret);
                                if let Err(e) = register(&http, &creds, r).await {
                                    tracing::warn!(collection = %r.collection.url, error = %e, "registering again failed");
                                    r.renew_at = Instant::now() + Duration::from_secs(60);
                                }
                            }
                            _ => ok = false,
                        }
                    }
                    _ => ok = false,
                }
            }
            if !ok {
                reason = "the push subscriptions could not be re-attached".into();
                continue;
            }
            backoff.reset();
            self.emit(Event::Connected { connection_id: hello.connection_id, reconnect: true }).await;
            for r in &self.regs {
                self.emit(Event::Resync { collection: r.collection.url.clone() }).await;
            }
            return Some(socket);
        }
    }

    /// Unregisters at the WebDAV servers and ends the push subscriptions.
    async fn finish(self, socket: Option<&mut Socket>) {
        for r in &self.regs {
            if let Some(l) = &r.location {
                unregister(&self.http, &self.credentials, l).await;
            }
        }
        if let Some(socket) = socket {
            for r in &self.regs {
                let f = ClientFrame::PushUnsubscribe { id: None, push_id: r.push_id.clone(), secret: r.secret.clone() };
                let _ = socket.send(Message::Text(serde_json::to_string(&f).expect("frames serialize").into())).await;
            }
            let _ = socket.close(None).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(httpdate("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784111777));
        assert_eq!(httpdate("yesterday"), None);
    }
}
