//! Topic membership at a push service (FCM's Instance ID `batchAdd`/`batchRemove`, HMS's
//! `topic:subscribe`/`topic:unsubscribe`): a device token joins the service-side topic of a
//! davpush topic when it subscribes, and leaves it when its subscription ends.
//!
//! Changes are queued (bounded) and sent by one task in batches: whatever arrived within a
//! short window, grouped by topic and operation, up to the service's batch limit per request.
//! So a thousand devices subscribing at once cost one request, not a thousand. For the same
//! token and topic the last change in a batch wins. A batch that fails as a whole (network,
//! 429, 5xx) is retried with backoff a few times; a token the service reports as invalid when
//! it joins is reported as gone, which ends its subscription.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use davpush_core::feedback::Feedback;
use davpush_core::{Metrics, ServiceKind, SubscriptionId};
use tokio::sync::mpsc;

/// Join or leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Join the topic.
    Add,
    /// Leave the topic.
    Remove,
}

/// The service's answer for one token of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenResult {
    /// Done.
    Ok,
    /// The token is not (or no longer) valid.
    Gone(String),
    /// Refused for another reason (logged).
    Failed(String),
}

/// A batch failed as a whole.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct BatchError {
    /// Worth retrying (network, 429, 5xx).
    pub transient: bool,
    /// What happened.
    pub message: String,
}

/// A push service's topic-membership API.
#[async_trait]
pub trait MembershipApi: Send + Sync + 'static {
    /// Changes the membership of `tokens` (at most [`MembershipApi::max_batch`]) in the service
    /// topic of davpush topic `topic`; one result per token, in order.
    async fn change(&self, op: Op, topic: &str, tokens: &[String]) -> Result<Vec<TokenResult>, BatchError>;
    /// Tokens per request at most.
    fn max_batch(&self) -> usize {
        1000
    }
}

#[derive(Debug, Clone)]
struct Job {
    op: Op,
    topic: String,
    token: String,
    sub: SubscriptionId,
    attempt: u32,
}

/// Membership settings.
#[derive(Debug, Clone)]
pub struct MembershipSettings {
    /// Changes waiting at most (beyond, `added`/`removed` wait for room).
    pub queue: usize,
    /// How long the task waits for more changes before it sends a batch.
    pub linger: Duration,
    /// Attempts for a batch that fails as a whole.
    pub max_attempts: u32,
    /// First retry delay (doubled per attempt).
    pub backoff: Duration,
}

impl Default for MembershipSettings {
    fn default() -> Self {
        MembershipSettings {
            queue: 10_000,
            linger: Duration::from_millis(20),
            max_attempts: 5,
            backoff: Duration::from_secs(1),
        }
    }
}

/// The queue and its task. Cloning shares it.
#[derive(Clone)]
pub struct Membership {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership").field("queued", &(self.tx.max_capacity() - self.tx.capacity())).finish()
    }
}

impl Membership {
    /// Starts the task (needs a Tokio runtime).
    pub fn start(
        kind: ServiceKind,
        api: Arc<dyn MembershipApi>,
        settings: MembershipSettings,
        feedback: Feedback,
        metrics: Arc<Metrics>,
    ) -> Membership {
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let worker = Worker { kind, api, settings, feedback, metrics, retry: tx.downgrade() };
        tokio::spawn(worker.run(rx));
        Membership { tx }
    }

    /// Queues a change for `token` in `topic` on behalf of subscription `sub`.
    pub async fn change(&self, op: Op, topic: &str, token: &str, sub: &SubscriptionId) {
        let job = Job { op, topic: topic.to_owned(), token: token.to_owned(), sub: sub.clone(), attempt: 0 };
        if self.tx.send(job).await.is_err() {
            tracing::warn!("topic membership task stopped: change dropped");
        }
    }
}

struct Worker {
    kind: ServiceKind,
    api: Arc<dyn MembershipApi>,
    settings: MembershipSettings,
    feedback: Feedback,
    metrics: Arc<Metrics>,
    retry: mpsc::WeakSender<Job>,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Job>) {
        let max = self.api.max_batch().max(1);
        while let Some(first) = rx.recv().await {
            // Collect what arrives within the linger window (bounded by the queue size).
            let mut jobs = vec![first];
            let deadline = tokio::time::Instant::now() + self.settings.linger;
            while jobs.len() < self.settings.queue.max(max) {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(j)) => jobs.push(j),
                    _ => break,
                }
            }
            // Last change per (topic, token) wins; groups keep their first appearance's order.
            let mut latest: HashMap<(String, String), usize> = HashMap::new();
            for (i, j) in jobs.iter().enumerate() {
                latest.insert((j.topic.clone(), j.token.clone()), i);
            }
            let mut groups: Vec<((Op, String), Vec<Job>)> = Vec::new();
            for (i, j) in jobs.into_iter().enumerate() {
                if latest.get(&(j.topic.clone(), j.token.clone())) != Some(&i) {
                    continue;
                }
                let key = (j.op, j.topic.clone());
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, v)) => v.push(j),
                    None => groups.push((key, vec![j])),
                }
            }
            for ((op, topic), group) in groups {
                for chunk in group.chunks(max) {
                    self.send(op, &topic, chunk).await;
                }
            }
        }
    }

    async fn send(&self, op: Op, topic: &str, chunk: &[Job]) {
        let tokens: Vec<String> = chunk.iter().map(|j| j.token.clone()).collect();
        let (ok_label, failed_label) = match op {
            Op::Add => ("topic_joined", "topic_join_failed"),
            Op::Remove => ("topic_left", "topic_leave_failed"),
        };
        match self.api.change(op, topic, &tokens).await {
            Ok(results) => {
                for (j, r) in chunk.iter().zip(results.into_iter().chain(std::iter::repeat(TokenResult::Ok))) {
                    match r {
                        TokenResult::Ok => self.metrics.delivered(self.kind, ok_label, 1),
                        TokenResult::Gone(reason) if op == Op::Add => {
                            tracing::info!(service = %self.kind, subscription = %j.sub, reason, "push token refused when joining its topic");
                            self.metrics.delivered(self.kind, "gone", 1);
                            self.feedback.gone(j.sub.clone());
                        }
                        // Leaving with a dead token: nothing left to do.
                        TokenResult::Gone(_) => self.metrics.delivered(self.kind, ok_label, 1),
                        TokenResult::Failed(reason) => {
                            tracing::warn!(service = %self.kind, subscription = %j.sub, reason, "topic membership change refused");
                            self.metrics.delivered(self.kind, failed_label, 1);
                        }
                    }
                }
            }
            Err(e) if e.transient && chunk[0].attempt + 1 < self.settings.max_attempts => {
                let attempt = chunk[0].attempt + 1;
                let delay = self.settings.backoff.saturating_mul(1 << attempt.min(10));
                tracing::warn!(service = %self.kind, error = %e, tokens = chunk.len(), ?delay, "topic membership batch failed, will retry");
                let Some(tx) = self.retry.upgrade() else { return };
                let jobs: Vec<Job> = chunk.iter().cloned().map(|j| Job { attempt, ..j }).collect();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    for j in jobs {
                        if tx.try_send(j).is_err() {
                            tracing::warn!("topic membership queue full: a retried change is dropped");
                        }
                    }
                });
            }
            Err(e) => {
                tracing::error!(service = %self.kind, error = %e, tokens = chunk.len(), "topic membership batch failed");
                self.metrics.delivered(self.kind, failed_label, chunk.len() as u64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Api {
        calls: Mutex<Vec<(Op, String, Vec<String>)>>,
        fail_first: Mutex<u32>,
    }

    #[async_trait]
    impl MembershipApi for Api {
        async fn change(&self, op: Op, topic: &str, tokens: &[String]) -> Result<Vec<TokenResult>, BatchError> {
            {
                let mut f = self.fail_first.lock().unwrap();
                if *f > 0 {
                    *f -= 1;
                    return Err(BatchError { transient: true, message: "503".into() });
                }
            }
            self.calls.lock().unwrap().push((op, topic.to_owned(), tokens.to_vec()));
            Ok(tokens
                .iter()
                .map(|t| if t == "dead" { TokenResult::Gone("NOT_FOUND".into()) } else { TokenResult::Ok })
                .collect())
        }
        fn max_batch(&self) -> usize {
            100
        }
    }

    #[tokio::test(start_paused = true)]
    async fn changes_are_batched_per_topic_and_dead_tokens_reported() {
        let api = Arc::new(Api { fail_first: Mutex::new(1), ..Default::default() });
        let (feedback, mut gone) = Feedback::channel();
        let m = Membership::start(
            ServiceKind::Fcm,
            api.clone(),
            MembershipSettings::default(),
            feedback,
            Arc::new(Metrics::default()),
        );
        let dead = SubscriptionId::random();
        for i in 0..250 {
            m.change(Op::Add, "t1", &format!("tok{i}"), &SubscriptionId::random()).await;
        }
        m.change(Op::Add, "t1", "dead", &dead).await;
        m.change(Op::Add, "t2", "x", &SubscriptionId::random()).await;
        m.change(Op::Add, "t2", "y", &SubscriptionId::random()).await;
        m.change(Op::Remove, "t2", "y", &SubscriptionId::random()).await;
        assert_eq!(gone.recv().await.unwrap(), dead);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let calls = api.calls.lock().unwrap().clone();
        let sizes: Vec<(Op, &str, usize)> = calls.iter().map(|(o, t, v)| (*o, t.as_str(), v.len())).collect();
        assert_eq!(
            sizes,
            vec![
                (Op::Add, "t1", 100),
                (Op::Add, "t1", 51),
                (Op::Add, "t2", 1),
                (Op::Remove, "t2", 1),
                (Op::Add, "t1", 100)
            ],
            "the failed first batch is retried whole, later; the last change per token wins"
        );
        assert_eq!(calls[2].2, vec!["x".to_owned()]);
    }
}
