//! Start and stop: the index rebuilt from the store, topic memberships re-announced, pending
//! deliveries handed back to their transports; transports stopped.

use std::sync::Arc;

use crate::store::{PendingDelivery, StoreError, StoredSubscription};
use crate::transport::Transports;
use crate::{ClientId, Index, PushService, ServiceKind, Subscription, SubscriptionId, Target, Topic, Triggers};

/// Rows read from the store per page at start.
const LOAD_PAGE: usize = 5_000;
/// Rows the index makes room for at start at most (beyond, it grows as it must).
const RESERVE_MAX: usize = 10_000_000;
/// Outbox rows claimed per statement.
const CLAIM_PAGE: usize = 1_000;

/// Turns a row read without its target ([`SubscriptionStore::load_routes_page`]) into a
/// subscription whose target stays in the store ([`Target::Stored`]), if its push service is
/// enabled.
///
/// [`SubscriptionStore::load_routes_page`]: crate::SubscriptionStore::load_routes_page
fn route(transports: &Transports, index: &Index, row: &StoredSubscription) -> Option<Subscription> {
    let kind: ServiceKind = row.service.parse().ok()?;
    transports.get(kind)?;
    Some(Subscription {
        id: SubscriptionId::parse(&row.id, 64).ok()?,
        client_id: ClientId::parse(&row.client_id, usize::MAX).ok()?,
        topic: match index.topic(&row.topic) {
            Some(t) => t,
            None => Topic::parse(&row.topic, usize::MAX).ok()?,
        },
        target: Target::Stored(kind),
        expires: row.expires,
        triggers: Triggers::from_bits(row.triggers),
    })
}

/// Turns a stored row into a subscription, if its push service is enabled and its target valid.
fn restore(transports: &Transports, index: &Index, row: &StoredSubscription) -> Option<Subscription> {
    let kind: ServiceKind = row.service.parse().ok()?;
    let transport = transports.get(kind)?;
    let target = transport.parse_stored(&row.target).ok()?;
    Some(Subscription {
        id: SubscriptionId::parse(&row.id, 64).ok()?,
        client_id: ClientId::parse(&row.client_id, usize::MAX).ok()?,
        // Subscribers of a topic share one string: the index's, once it has the topic.
        topic: match index.topic(&row.topic) {
            Some(t) => t,
            None => Topic::parse(&row.topic, usize::MAX).ok()?,
        },
        target,
        expires: row.expires,
        triggers: Triggers::from_bits(row.triggers),
    })
}

/// A page of rows made subscriptions, or the id and service of a row that could not be.
type Restored = Vec<Result<Subscription, (String, String)>>;

fn failed(op: &'static str) -> impl FnOnce(tokio::task::JoinError) -> StoreError {
    move |e| StoreError { op, source: Box::new(e) }
}

/// Ends [`PushService::load`]'s membership phase when dropped.
struct MembersLoading<'a>(&'a tokio::sync::watch::Sender<bool>);

impl Drop for MembersLoading<'_> {
    fn drop(&mut self) {
        self.0.send_replace(false);
    }
}

impl PushService {
    /// Waits while [`PushService::load`] holds subscriptions of transports that keep a
    /// membership as routing only (their targets not yet read back): a removal or subscribe
    /// of such a transport must know the tokens, its own to leave with and the topic's others
    /// to keep a shared one. Requests wait for readiness anyway; this covers the rest (the
    /// purge, feedback, direct callers). Returns at once otherwise.
    pub(super) async fn members_loaded(&self, kinds: impl IntoIterator<Item = ServiceKind>) {
        if !*self.members_loading.borrow()
            || !kinds.into_iter().any(|k| self.transports.get(k).is_some_and(|t| t.tracks_membership()))
        {
            return;
        }
        let _ = self.members_loading.subscribe().wait_for(|loading| !*loading).await;
    }

    /// Turns a stored row into a subscription, if its push service is enabled and its target
    /// valid, as the index holds it ([`PushService::routed`]).
    pub(super) fn restore(&self, row: &StoredSubscription) -> Option<Subscription> {
        restore(&self.transports, &self.index, row).map(|s| self.routed(s))
    }

    /// `sub` as the index holds it: a durable subscription keeps only its routing in memory
    /// ([`Target::Stored`]), unless its transport keeps a membership at the push service (which
    /// needs the target to join and leave).
    pub(super) fn routed(&self, mut sub: Subscription) -> Subscription {
        if let Target::Remote(r) = &sub.target
            && self.transports.get(r.kind()).is_some_and(|t| !t.tracks_membership())
        {
            sub.target = Target::Stored(r.kind());
        }
        sub
    }

    /// Rebuilds the index from the store (at start), page by page, then marks the service
    /// ready ([`PushService::is_ready`]). Returns how many subscriptions were loaded.
    ///
    /// Only the routing is read ([`crate::SubscriptionStore::load_routes_page`]: no target,
    /// so no JSON or URL is parsed at start; issue 11); targets are read when a notification
    /// reaches them (`targets`). Those of transports that keep a membership at the push
    /// service are read once the routing is loaded, in batches, and held. Three stages
    /// overlap: the store reads page `k + 1` (on its own thread), a blocking thread makes page
    /// `k`'s subscriptions, and this task indexes page `k - 1`.
    pub async fn load(&self, now: i64) -> Result<usize, StoreError> {
        // Until the targets of membership-keeping transports are read back (below), removals
        // and subscribes of those transports wait (`members_loaded`); also if this fails.
        self.members_loading.send_replace(true);
        let members_loading = MembersLoading(&self.members_loading);
        let read = |after: String| {
            let store = self.store.clone();
            tokio::spawn(async move { store.load_routes_page(now, &after, LOAD_PAGE).await })
        };
        let parse = |rows: Vec<StoredSubscription>| {
            let (transports, index) = (self.transports.clone(), self.index.clone());
            tokio::task::spawn_blocking(move || -> Restored {
                rows.into_iter().map(|row| route(&transports, &index, &row).ok_or((row.id, row.service))).collect()
            })
        };
        // Read beside the first page: the index gets room for all rows before the first is
        // inserted (a row a client at most; what is left over is given back at the end).
        let mut count = Some({
            let store = self.store.clone();
            tokio::spawn(async move { store.count().await })
        });
        let mut n = 0;
        let mut members = Vec::new();
        let mut reading = Some(read(String::new()));
        let mut parsing = None;
        loop {
            let page = match reading.take() {
                Some(r) => Some(r.await.map_err(failed("load subscriptions"))??),
                None => None,
            };
            let this = match page {
                Some(page) => {
                    if page.rows.len() == LOAD_PAGE {
                        reading = Some(read(page.next));
                    }
                    Some(parse(page.rows))
                }
                None => None,
            };
            let Some(previous) = std::mem::replace(&mut parsing, this) else {
                if parsing.is_none() {
                    break;
                }
                continue;
            };
            let restored = previous.await.map_err(failed("restore subscriptions"))?;
            if let Some(count) = count.take() {
                match count.await.map_err(failed("count subscriptions"))? {
                    Ok(Some(rows)) => {
                        let rows = usize::try_from(rows).unwrap_or(usize::MAX).min(RESERVE_MAX);
                        self.index.reserve(rows, rows);
                    }
                    Ok(None) => {}
                    // Only a hint: the load goes on, the index grows as it must.
                    Err(e) => tracing::debug!(error = %e, "could not count the stored subscriptions"),
                }
            }
            for restored in restored {
                match restored {
                    Ok(sub) => {
                        if let Ok((sub, _)) = self.index.insert(sub, usize::MAX) {
                            n += 1;
                            if self.transports.get(sub.kind()).is_some_and(|t| t.tracks_membership()) {
                                members.push(sub);
                            }
                        }
                    }
                    Err((id, service)) => tracing::warn!(
                        subscription = %id, service = %service,
                        "stored subscription not loaded: its push service is disabled or its row invalid"
                    ),
                }
            }
            // Let requests (health, WebSocket traffic) in between pages.
            tokio::task::yield_now().await;
        }
        if count.is_none() {
            self.index.shrink_to_fit();
        }
        // Those that keep a membership hold their targets: read now, in batches.
        let mut held = Vec::with_capacity(members.len());
        for batch in members.chunks(crate::TARGETS_BATCH) {
            let by_id: std::collections::HashMap<&SubscriptionId, &Arc<Subscription>> =
                batch.iter().map(|r| (&r.id, r)).collect();
            for sub in self.with_targets(batch.to_vec(), now).await? {
                let routed = by_id.get(&sub.id).copied();
                let full = Subscription {
                    id: sub.id.clone(),
                    client_id: sub.client_id.clone(),
                    topic: sub.topic.clone(),
                    target: sub.target.clone(),
                    expires: sub.expires,
                    triggers: sub.triggers,
                };
                // `None`: replaced meanwhile by a request, which announced it.
                held.push(routed.and_then(|r| self.index.replace(r, full)).unwrap_or(sub));
            }
        }
        let members = held;
        // Topic memberships at the push service are re-announced (idempotent, batched by the
        // transport): a Director switched to topic mode, or one whose last changes were lost in
        // a crash, thus converges without clients subscribing again.
        let mut announced = std::collections::HashSet::new();
        for sub in members {
            if announced.insert((sub.kind(), sub.topic.clone(), sub.target.to_json()))
                && let Some(t) = self.transports.get(sub.kind())
            {
                t.added(&sub).await;
            }
        }
        // Removals waiting for the tokens now leave after the announcements.
        drop(members_loading);
        // Alone (no cluster), the node takes every row at once: those its previous run held
        // when it crashed need not wait for their lease to end.
        self.claim_pending(if self.fanout.is_none() { i64::MAX } else { now }).await?;
        self.ready.send_replace(true);
        self.metrics.ready.set(1);
        Ok(n)
    }

    /// Claims the outbox rows nobody holds (all of them at a first start; later those queued
    /// by `davpush vapid rotate` and those of a node whose lease ran out) and hands them to
    /// their transports; rows of subscriptions that no longer exist are deleted. Returns how
    /// many were taken. Called at start and then periodically, with [`Self::renew_pending`].
    pub async fn claim_pending(&self, now: i64) -> Result<usize, StoreError> {
        let mut taken = 0;
        loop {
            let pending = self.store.claim_pending(now, CLAIM_PAGE).await?;
            let full = pending.len() == CLAIM_PAGE;
            let mut by_kind: Vec<Vec<(Arc<Subscription>, PendingDelivery)>> = vec![Vec::new(); ServiceKind::ALL.len()];
            let mut stale = Vec::new();
            let mut found = Vec::new();
            let mut rows = std::collections::HashMap::new();
            for p in pending {
                match SubscriptionId::parse(&p.subscription_id, 64).ok().and_then(|id| self.index.get(&id)) {
                    Some(sub) if self.transports.get(sub.kind()).is_some() => {
                        found.push(sub);
                        rows.insert(p.subscription_id.clone(), p);
                    }
                    _ => stale.push(p.subscription_id),
                }
            }
            // Their targets, for those held as routing only.
            for sub in self.with_targets(found, crate::unix_now()).await? {
                if let Some(p) = rows.remove(sub.id.as_str()) {
                    by_kind[sub.kind().index()].push((sub, p));
                }
            }
            // Ended between the claim and the read of their targets.
            stale.extend(rows.into_keys());
            if !stale.is_empty() {
                self.store.delete_pending(&stale).await?;
            }
            for (kind, list) in ServiceKind::ALL.into_iter().zip(by_kind) {
                if let (false, Some(t)) = (list.is_empty(), self.transports.get(kind)) {
                    tracing::info!(service = %kind, deliveries = list.len(), "pending deliveries taken from the outbox");
                    taken += list.len();
                    t.restore(list).await;
                }
            }
            if !full {
                return Ok(taken);
            }
        }
    }

    /// Extends this node's lease on the outbox rows it holds (see [`Self::claim_pending`]).
    pub async fn renew_pending(&self, now: i64) -> Result<u64, StoreError> {
        self.store.renew_pending(now).await
    }

    /// Stops the transports; deliveries still pending are kept in the store for the next start.
    /// Then closes the store (SQLite: its write-ahead log is checkpointed and truncated).
    pub async fn shutdown(&self) {
        if let Some(f) = &self.fanout {
            f.close();
        }
        if let Some(p) = &self.presence {
            p.leave().await;
        }
        // Notifications whose targets are being read reach the engines first, so that the
        // transports keep what is still pending of them.
        self.fetches_done(std::time::Duration::from_secs(10)).await;
        for kind in self.transports.enabled().collect::<Vec<_>>() {
            if let Some(t) = self.transports.get(kind) {
                t.shutdown().await;
            }
        }
        // What the transports kept is free for the next node (or this one's next start).
        if let Err(e) = self.store.release_pending().await {
            tracing::error!(error = %e, "could not release the outbox rows held by this node");
        }
        self.store.close().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::testing::Members;
    use crate::store::{StoredSubscription, SubscriptionStore};
    use crate::transport::Transports;
    use crate::{ClientId, Limits, MemoryStore, Metrics, PushService, SubscriptionId};

    /// A stored FCM subscription whose target is `token`.
    fn fcm_row(id: &str, client: &str, topic: &str, token: &str) -> StoredSubscription {
        StoredSubscription {
            id: id.into(),
            client_id: client.into(),
            topic: topic.into(),
            service: "fcm".into(),
            target: format!("\"{token}\""),
            expires: i64::MAX / 2,
            created: 0,
            triggers: 3,
        }
    }

    #[tokio::test]
    async fn memberships_are_announced_again_at_start_once_per_topic_and_token() {
        let store = Arc::new(MemoryStore::default());
        for (id, client, topic, token) in [("a", "c1", "t1", "tok"), ("b", "c2", "t1", "tok"), ("c", "c3", "t2", "tok")]
        {
            store.upsert(&fcm_row(&format!("{id}-{}", SubscriptionId::random()), client, topic, token)).await.unwrap();
        }
        let members = Arc::new(Members::default());
        let svc = PushService::new(
            store,
            Transports::default().with(members.clone()),
            Limits::default(),
            Arc::new(Metrics::default()),
        );
        assert_eq!(svc.load(0).await.unwrap(), 3);
        let mut log: Vec<String> =
            members.log.lock().unwrap().iter().map(|(op, t, p)| format!("{op} {t} {p}")).collect();
        log.sort();
        assert_eq!(log, ["add t1 \"tok\"", "add t2 \"tok\""], "two clients sharing a token join once");
    }

    /// The start-up gap of issue 11: subscriptions of a membership-keeping transport are
    /// indexed as routing only before start-up reads their tokens back. A removal in between
    /// (here an unsubscribe; in a Director the purge or push-service feedback) waits for the
    /// tokens: the token leaves the topic it alone used (before, `removed` got no token and the
    /// membership stayed), not the one another client of the topic shares.
    #[tokio::test(flavor = "current_thread")]
    async fn issue_11_a_removal_during_start_up_waits_for_the_tokens_and_keeps_a_shared_one() {
        let store = Arc::new(MemoryStore::default());
        let ids = ["a", "b", "c"].map(|p| format!("{p}-{}", SubscriptionId::random()));
        for ((id, client), (topic, token)) in
            ids.iter().zip(["c1", "c2", "c1"]).zip([("t1", "tok"), ("t1", "tok"), ("t2", "tok2")])
        {
            store.upsert(&fcm_row(id, client, topic, token)).await.unwrap();
        }
        let members = Arc::new(Members::default());
        let svc = Arc::new(PushService::new(
            store.clone(),
            Transports::default().with(members.clone()),
            Limits::default(),
            Arc::new(Metrics::default()),
        ));
        let loading = tokio::spawn({
            let svc = svc.clone();
            async move { svc.load(0).await }
        });
        // On this one thread, start-up runs only while the test yields: wait until it has
        // indexed both as routing only (it yields after indexing a page).
        let ids: Vec<SubscriptionId> = ids.iter().map(|id| SubscriptionId::parse(id, 64).unwrap()).collect();
        let routing_only = || ids.iter().all(|id| svc.index().get(id).is_some_and(|s| s.target.is_stored_only()));
        let mut tries = 0;
        while !routing_only() && !loading.is_finished() && tries < 10_000_000 {
            tokio::task::yield_now().await;
            tries += 1;
        }
        assert!(routing_only(), "the test removes while start-up holds the tokens in the store only");
        assert!(members.log.lock().unwrap().is_empty(), "nothing announced yet");

        assert_eq!(svc.unsubscribe(&ClientId::parse("c1", 8).unwrap(), None, None).await.unwrap(), 2);
        assert_eq!(loading.await.unwrap().unwrap(), 3);
        let log: Vec<String> = members.log.lock().unwrap().iter().map(|(op, t, p)| format!("{op} {t} {p}")).collect();
        assert_eq!(
            log,
            ["add t1 \"tok\"", "add t2 \"tok2\"", "remove t2 \"tok2\""],
            "c1 leaves t2 with its token; c2 still uses the token in t1: it does not leave"
        );
        assert!(svc.index().get(&ids[0]).is_none() && svc.index().get(&ids[2]).is_none());
        let kept = svc.index().get(&ids[1]).unwrap();
        assert_eq!(kept.target.to_json(), "\"tok\"", "c2 holds its token");
        let rows = store.load(0).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.client_id.as_str()).collect::<Vec<_>>(), ["c2"]);
    }
}
