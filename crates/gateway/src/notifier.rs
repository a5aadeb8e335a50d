//! Change notifications: after a successful write the handler hands the affected collections to
//! the notifier and answers the client at once. The notifier looks up each collection's new
//! sync-token (with the writer's credentials, held only for this) and calls the Director's
//! Notify API, retrying with backoff when the Director is unreachable. The queue is bounded;
//! when it is full a notification is dropped and logged (clients still sync periodically).
//!
//! Every change is notified, also of topics the Director's answer called `unheard`: skipping
//! them until a subscribe would need the gateway to see every grant for the topic, and it does
//! not (other gateway processes and `davpush grant` share the key; a client reuses a grant to
//! subscribe again). See `docs/protocol.md` §2.1 and §7.5.

use std::sync::Arc;
use std::time::Duration;

use davpush_proto::notify::TopicEntry;
use davpush_proto::{NotifyRequest, NotifyTopic, Trigger};
use reqwest::header::HeaderValue;
use tokio::sync::{Semaphore, mpsc};

use crate::metrics::GatewayMetrics;
use crate::topic::TopicKey;
use crate::xml::{self, DAV};
use davpush_client::{DirectorClient, DirectorError};

/// Notifications handled concurrently.
const CONCURRENCY: usize = 16;

/// One collection that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its canonical upstream path.
    pub path: String,
    /// What changed.
    pub trigger: Trigger,
}

/// The notifications caused by one request.
#[derive(Debug, Clone)]
pub struct Job {
    /// Collections that changed.
    pub changes: Vec<Change>,
    /// Director subscription ids not to notify (`Push-Dont-Notify`).
    pub exclude: Vec<String>,
    /// The writer's credentials, for the sync-token lookup.
    pub authorization: Option<HeaderValue>,
}

/// The sending half.
#[derive(Debug, Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Job>,
    metrics: Arc<GatewayMetrics>,
}

/// What the worker needs.
#[derive(Debug, Clone)]
pub struct NotifierParts {
    /// Counts each notification's outcome (`davpush_gateway_changes_total`).
    pub metrics: Arc<GatewayMetrics>,
    /// Client for the upstream.
    pub upstream_http: reqwest::Client,
    /// Upstream base URL.
    pub upstream: url::Url,
    /// The Director.
    pub director: DirectorClient,
    /// Topic key.
    pub topics: TopicKey,
    /// Attempts per notification.
    pub attempts: u32,
    /// Look up sync-tokens.
    pub sync_token_lookup: bool,
}

impl Notifier {
    /// Starts the worker with a queue of `capacity` jobs.
    pub fn start(parts: NotifierParts, capacity: usize) -> Notifier {
        let (tx, rx) = mpsc::channel(capacity);
        let metrics = parts.metrics.clone();
        tokio::spawn(run(Arc::new(parts), rx));
        Notifier { tx, metrics }
    }

    /// Queues a job without waiting.
    pub fn submit(&self, job: Job) {
        if job.changes.is_empty() {
            return;
        }
        match self.tx.try_send(job) {
            Ok(()) => self.metrics.change("queued"),
            Err(e) => {
                self.metrics.change("dropped");
                tracing::error!(error = %e, "change notification dropped: the queue to the Director is full");
            }
        }
    }
}

async fn run(parts: Arc<NotifierParts>, mut rx: mpsc::Receiver<Job>) {
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    while let Some(job) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let parts = parts.clone();
        tokio::spawn(async move {
            deliver(&parts, job).await;
            drop(permit);
        });
    }
}

async fn deliver(parts: &NotifierParts, job: Job) {
    let mut topics = Vec::with_capacity(job.changes.len());
    for c in &job.changes {
        let sync_token = if parts.sync_token_lookup && c.trigger == Trigger::Content {
            sync_token(parts, &c.path, job.authorization.as_ref()).await
        } else {
            None
        };
        topics.push(NotifyTopic::Detailed(TopicEntry {
            topic: parts.topics.topic_of_canonical(&c.path),
            sync_token,
            trigger: Some(c.trigger),
        }));
    }
    let req = NotifyRequest { topics: Some(topics), exclude: job.exclude, ..Default::default() };
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=parts.attempts {
        match parts.director.notify(&req).await {
            Ok(_) => {
                parts.metrics.change("sent");
                return;
            }
            Err(DirectorError::Refused { status, body }) if (400..500).contains(&status) && status != 429 => {
                parts.metrics.change("dropped");
                tracing::error!(status, error = %body.message, "the Director refused a change notification");
                return;
            }
            Err(e) => {
                if attempt == parts.attempts {
                    parts.metrics.change("dropped");
                    tracing::error!(error = %e, attempts = attempt, "change notification lost: the Director stayed unreachable");
                    return;
                }
                parts.metrics.change("retried");
                tracing::warn!(error = %e, attempt, "the Director is unreachable; retrying the change notification");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// The collection's `DAV:sync-token` (RFC 6578), if the upstream offers one.
async fn sync_token(parts: &NotifierParts, path: &str, auth: Option<&HeaderValue>) -> Option<String> {
    let mut url = parts.upstream.clone();
    url.set_path(path);
    let mut req = parts
        .upstream_http
        .request(reqwest::Method::from_bytes(b"PROPFIND").expect("valid method"), url)
        .header("Depth", "0")
        .header("Content-Type", "application/xml; charset=utf-8")
        .body(r#"<?xml version="1.0" encoding="utf-8"?><propfind xmlns="DAV:"><prop><sync-token/></prop></propfind>"#);
    if let Some(a) = auth {
        req = req.header("Authorization", a.clone());
    }
    let resp = req.send().await.ok()?;
    if resp.status().as_u16() != 207 {
        return None;
    }
    let body = resp.text().await.ok()?;
    let root = xml::parse(&body).ok()?;
    root.elements()
        .filter(|r| r.is(DAV, "response"))
        .flat_map(|r| r.elements().filter(|p| p.is(DAV, "propstat")))
        .filter(|ps| ps.child(DAV, "status").is_some_and(|s| s.text().contains(" 200 ")))
        .find_map(|ps| ps.child(DAV, "prop")?.child(DAV, "sync-token").map(|t| t.text()))
        .filter(|t| !t.is_empty())
}
