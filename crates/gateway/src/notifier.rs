//! Change notifications: after a successful write the handler hands the affected collections to
//! the notifier and answers the client at once. The notifier looks up each collection's new
//! sync-token (with the writer's credentials, held only for this) and calls the Director's
//! Notify API, retrying with backoff when the Director is unreachable. The queue is bounded;
//! when it is full a notification is dropped and logged (clients still sync periodically).
//!
//! Notifications of one collection go out in the order of its changes: a job waits while an
//! earlier one of any of its collections is still looking up a sync-token or calling the
//! Director, so the last notification a subscriber gets carries the newest sync-token (16 in
//! flight side by side could otherwise overtake each other, and a burst's last word could be an
//! older token). A job that finds an identical one waiting (the same changes, writer and
//! exclusions) is coalesced into it: the waiting one has not looked up its sync-token yet, so
//! it carries this change too (`davpush_gateway_changes_total{outcome="coalesced"}`).
//!
//! Every change is notified, also of topics the Director's answer called `unheard`: skipping
//! them until a subscribe would need the gateway to see every grant for the topic, and it does
//! not (other gateway processes and `davpush grant` share the key; a client reuses a grant to
//! subscribe again). See `docs/protocol.md` §2.1 and §7.5.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use davpush_proto::notify::TopicEntry;
use davpush_proto::{NotifyRequest, NotifyTopic, Trigger};
use reqwest::header::HeaderValue;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::metrics::GatewayMetrics;
use crate::topic::TopicKey;
use crate::xml::{self, DAV};
use davpush_client::{DirectorClient, DirectorError};

/// Notifications handled concurrently.
const CONCURRENCY: usize = 16;
/// Jobs taken from the queue that wait for an earlier job of one of their collections, at most
/// (beyond, the rest stay in the queue, whose bound drops what overflows).
const WAITING_MAX: usize = 1_024;

/// One collection that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its canonical upstream path.
    pub path: String,
    /// What changed.
    pub trigger: Trigger,
}

/// The notifications caused by one request.
#[derive(Debug, Clone, PartialEq)]
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
    let mut order = Order::default();
    let mut running: JoinSet<()> = JoinSet::new();
    let mut open = true;
    loop {
        while running.len() < CONCURRENCY
            && let Some((job, paths)) = order.next_ready()
        {
            let parts = parts.clone();
            let id = running.spawn(async move { deliver(&parts, job).await }).id();
            order.started(id, paths);
        }
        if !open && running.is_empty() && order.waiting.is_empty() {
            return;
        }
        tokio::select! {
            job = rx.recv(), if open && order.waiting.len() < WAITING_MAX => match job {
                Some(job) => {
                    if !order.admit(job) {
                        parts.metrics.change("coalesced");
                    }
                }
                None => open = false,
            },
            Some(done) = running.join_next_with_id() => {
                order.finished(match done {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                });
            }
            // Unreachable: with nothing running, the first waiting job has just been started.
            else => return,
        }
    }
}

/// The order of the jobs (see the module documentation): those waiting, in the order they
/// came, and the collections of those running.
#[derive(Default)]
struct Order {
    waiting: VecDeque<Job>,
    busy: HashSet<String>,
    running: HashMap<tokio::task::Id, Vec<String>>,
}

impl Order {
    /// Queues `job`; `false` if an identical job was waiting already (it is coalesced into it).
    fn admit(&mut self, job: Job) -> bool {
        if self.waiting.contains(&job) {
            return false;
        }
        self.waiting.push_back(job);
        true
    }

    /// The first waiting job none of whose collections is running or named by a job waiting
    /// before it, with its collections; taken off the queue.
    fn next_ready(&mut self) -> Option<(Job, Vec<String>)> {
        let mut before: HashSet<&str> = HashSet::new();
        let mut found = None;
        for (i, job) in self.waiting.iter().enumerate() {
            let paths = || job.changes.iter().map(|c| c.path.as_str());
            if paths().all(|p| !self.busy.contains(p) && !before.contains(p)) {
                found = Some(i);
                break;
            }
            before.extend(paths());
        }
        let job = self.waiting.remove(found?)?;
        let paths: Vec<String> = job.changes.iter().map(|c| c.path.clone()).collect();
        Some((job, paths))
    }

    fn started(&mut self, task: tokio::task::Id, paths: Vec<String>) {
        self.busy.extend(paths.iter().cloned());
        self.running.insert(task, paths);
    }

    fn finished(&mut self, task: tokio::task::Id) {
        for p in self.running.remove(&task).unwrap_or_default() {
            self.busy.remove(&p);
        }
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    use axum::Router;
    use axum::routing::post;

    use super::*;

    /// What the fake upstream and the fake Director saw.
    #[derive(Default)]
    struct Seen {
        /// The collection's current sync-token (a number).
        token: AtomicU64,
        /// PROPFINDs answered (or being answered).
        lookups: AtomicU64,
        /// The sync-tokens the Director was notified of, in the order it got them.
        notified: Mutex<Vec<String>>,
    }

    async fn serve(router: Router) -> url::Url {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        url::Url::parse(&format!("http://{addr}/")).unwrap()
    }

    /// An upstream whose first sync-token lookup reads the token, then answers 300 ms late; and a
    /// Director that records the sync-tokens it is notified of.
    async fn fakes(seen: &Arc<Seen>) -> NotifierParts {
        let s = seen.clone();
        let upstream = serve(Router::new().fallback(move || {
            let s = s.clone();
            async move {
                let token = s.token.load(Ordering::SeqCst);
                if s.lookups.fetch_add(1, Ordering::SeqCst) == 0 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let body = format!(
                    r#"<?xml version="1.0"?><d:multistatus xmlns:d="DAV:"><d:response><d:href>/cal/</d:href><d:propstat><d:prop><d:sync-token>http://t/{token}</d:sync-token></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>"#
                );
                (axum::http::StatusCode::MULTI_STATUS, body)
            }
        }))
        .await;
        let s = seen.clone();
        let director = serve(Router::new().route(
            "/notify",
            post(move |body: axum::body::Bytes| {
                let s = s.clone();
                async move {
                    let req: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let token = req["topics"][0]["sync_token"].as_str().unwrap_or_default().to_owned();
                    s.notified.lock().unwrap().push(token);
                    axum::Json(serde_json::json!({"topics": 1, "addressed": 0}))
                }
            }),
        ))
        .await;
        let http = reqwest::Client::new();
        NotifierParts {
            metrics: Arc::default(),
            upstream_http: http.clone(),
            upstream,
            director: DirectorClient::with_http(director, http).notify_token("notify-token"),
            topics: TopicKey::new(&[7; 32]),
            attempts: 1,
            sync_token_lookup: true,
        }
    }

    fn change() -> Job {
        Job {
            changes: vec![Change { path: "/cal/".into(), trigger: Trigger::Content }],
            exclude: Vec::new(),
            authorization: None,
        }
    }

    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let start = std::time::Instant::now();
        while !cond() {
            assert!(start.elapsed() < Duration::from_secs(10), "not within 10 s: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_collections_notifications_keep_the_order_of_its_changes_and_a_burst_coalesces() {
        let seen = Arc::new(Seen::default());
        let parts = fakes(&seen).await;
        let metrics = parts.metrics.clone();
        let notifier = Notifier::start(parts, 100);
        seen.token.store(1, Ordering::SeqCst);
        notifier.submit(change());
        until("the first lookup", || seen.lookups.load(Ordering::SeqCst) == 1).await;
        // Two more changes while the first one's lookup is slow: the second must not overtake
        // it with a newer token, and the third is carried by the second, which has not looked
        // its token up yet.
        seen.token.store(2, Ordering::SeqCst);
        notifier.submit(change());
        notifier.submit(change());
        until("two notifications", || seen.notified.lock().unwrap().len() == 2).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(*seen.notified.lock().unwrap(), ["http://t/1", "http://t/2"], "in the order of the changes");
        let text = metrics.render();
        for (outcome, n) in [("queued", 3), ("sent", 2), ("coalesced", 1), ("dropped", 0)] {
            let line = format!("davpush_gateway_changes_total{{outcome=\"{outcome}\"}} {n}");
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
