//! Subscribing and unsubscribing: grants, targets, limits, topic memberships at push services,
//! WebSocket connections that close, expiry.

use std::sync::Arc;

use crate::fanout::{ClusterEvent, WireSubscription};
use crate::live::Connection;
use crate::notification::Exclusions;
use crate::store::{StoreError, StoredSubscription};
use crate::{
    Caps, ClientId, Principal, PushService, ServiceError, ServiceKind, Subscription, SubscriptionId, Target, Topic,
    Triggers,
};

/// Subscriptions removed per batch when expired ones are purged.
pub const PURGE_BATCH: usize = 2_000;

/// Result of a subscribe.
#[derive(Debug)]
pub struct Subscribed {
    /// Granted expiry, unix seconds.
    pub expires: i64,
    /// Each subscription and whether it was created (`false`: updated).
    pub subscriptions: Vec<(Arc<Subscription>, bool)>,
}

impl PushService {
    /// May a subscriber with `grant` subscribe to `topic` at `now`? Every subscription, over
    /// the Subscription API or a WebSocket and for every push service, is checked here before
    /// anything else about it; refusals are counted as `grant_refused`.
    ///
    /// A grant that names the user its signer checked makes that user the principal its
    /// subscriptions are counted under (instead of the token a gateway shares for all its users).
    pub fn authorize(&self, topic: &Topic, grant: Option<&str>, now: i64) -> Result<Option<Principal>, ServiceError> {
        let Some(keys) = &self.grants else { return Ok(None) };
        match keys.verify(grant, topic.as_str(), now) {
            Ok(g) => Ok(g.user.map(|u| Principal::of(format!("grant-user:{u}").as_bytes()))),
            Err(e) => {
                self.metrics.reject("grant_refused");
                Err(ServiceError::Grant(e))
            }
        }
    }

    /// Like [`PushService::authorize`] with several grants (an SSE stream's, one or more for its
    /// topics): the topic is granted if one of them names it; a refusal is counted once, with
    /// the error of the last grant tried (`grant_required` without any).
    pub fn authorize_any(&self, topic: &Topic, grants: &[String], now: i64) -> Result<(), ServiceError> {
        let Some(keys) = &self.grants else { return Ok(()) };
        let mut last = keys.verify(None, topic.as_str(), now).map(|_| ());
        for g in grants {
            last = keys.verify(Some(g), topic.as_str(), now).map(|_| ());
            if last.is_ok() {
                break;
            }
        }
        last.map_err(|e| {
            self.metrics.reject("grant_refused");
            ServiceError::Grant(e)
        })
    }

    /// Parses and checks `push_services` of a subscribe request into targets.
    pub async fn parse_targets(
        &self,
        services: &std::collections::BTreeMap<String, serde_json::Value>,
    ) -> Result<Vec<Target>, ServiceError> {
        if services.is_empty() {
            return Err(ServiceError::Invalid {
                field: "push_services".into(),
                message: "must name at least one push service".into(),
            });
        }
        let mut targets = Vec::with_capacity(services.len());
        for (name, params) in services {
            let kind: ServiceKind = name.parse()?;
            let t = self.transports.get(kind).ok_or(ServiceError::ServiceDisabled(kind))?;
            let target =
                t.parse_target(params).map_err(|source| ServiceError::InvalidTarget { service: kind, source })?;
            targets.push((t, kind, target));
        }
        let mut out = Vec::with_capacity(targets.len());
        for (t, kind, target) in targets {
            t.check_target(&target).await.map_err(|source| ServiceError::InvalidTarget { service: kind, source })?;
            out.push(target);
        }
        Ok(out)
    }

    /// Ends a subscription its push service reported as gone (404/410, unregistered token).
    pub async fn remove_gone(&self, id: &SubscriptionId) -> Result<bool, StoreError> {
        let Some(sub) = self.index.get(id) else {
            // Not (or no longer) in the index; make sure the store forgets it too.
            self.store.delete(&[id.to_string()]).await?;
            return Ok(false);
        };
        match self.remove(vec![sub]).await {
            Ok(n) => Ok(n > 0),
            Err(ServiceError::Store(e)) => Err(e),
            Err(_) => Ok(false),
        }
    }

    /// Subscribes `client` to `topic` through each target (updating existing subscriptions),
    /// for every kind of change.
    pub async fn subscribe(
        &self,
        client: ClientId,
        topic: Topic,
        targets: Vec<Target>,
        requested_expiry: Option<i64>,
        now: i64,
    ) -> Result<Subscribed, ServiceError> {
        self.subscribe_with(client, topic, targets, requested_expiry, Triggers::ALL, None, now).await
    }

    /// Like [`PushService::subscribe`], for the kinds of change in `triggers` only, made by
    /// `principal` (counted against `max_subscriptions_per_principal`; `None`: not counted, as
    /// for subscriptions over a WebSocket, which end with their connection).
    #[allow(clippy::too_many_arguments)]
    pub async fn subscribe_with(
        &self,
        client: ClientId,
        topic: Topic,
        targets: Vec<Target>,
        requested_expiry: Option<i64>,
        triggers: Triggers,
        principal: Option<Principal>,
        now: i64,
    ) -> Result<Subscribed, ServiceError> {
        let expires = self.limits.grant_expiry(requested_expiry, now);
        let caps = Caps {
            per_client: self.limits.max_subscriptions_per_client,
            principal: principal.map(|p| (p, self.limits.max_subscriptions_per_principal)),
            total: self.limits.max_subscriptions,
        };
        let mut out = Vec::with_capacity(targets.len());
        let mut ticket = None;
        for target in targets {
            let kind = target.kind();
            self.members_loaded([kind]).await;
            let existing = self.index.find(&client, &topic, kind);
            if existing.is_none()
                && let Err(limit) = self.index.room(&client, &caps)
            {
                return Err(self.refused(limit));
            }
            let mut id = existing.as_ref().map_or_else(SubscriptionId::random, |s| s.id.clone());
            let mut stored = None;
            if target.is_durable() {
                let mut row = StoredSubscription {
                    id: id.to_string(),
                    client_id: client.to_string(),
                    topic: topic.to_string(),
                    service: kind.as_str().to_owned(),
                    target: target.to_json(),
                    expires,
                    created: now,
                    triggers: triggers.bits(),
                };
                let kept = self.store.upsert(&row).await?;
                if kept != id.as_str() {
                    id = SubscriptionId::parse(&kept, 64).map_err(|e| ServiceError::invalid("id", e))?;
                    row.id = kept;
                }
                stored = Some(row);
            }
            let sub = Subscription { id, client_id: client.clone(), topic: topic.clone(), target, expires, triggers };
            // A durable subscription's target is in the store: the index keeps the routing.
            let sub = self.routed(sub);
            let (sub, previous) = match self.index.insert_capped(sub, &caps) {
                Ok(done) => done,
                Err(limit) => {
                    // A concurrent subscribe took the last place after the check above: the row
                    // just stored must not come back at the next start.
                    if let Some(row) = &stored
                        && let Err(e) = self.store.delete(std::slice::from_ref(&row.id)).await
                    {
                        tracing::error!(error = %e, "could not remove a refused subscription from the store");
                    }
                    return Err(self.refused(limit));
                }
            };
            if let Some(row) = &stored {
                self.publish(ClusterEvent::Subscribed { subscription: WireSubscription::from(row) });
            }
            if let Some(t) = self.transports.get(kind).filter(|t| t.tracks_membership()) {
                let moved = previous.as_ref().filter(|p| !sub.target.same_destination(&p.target));
                if let Some(prev) = moved {
                    self.leave_unused(vec![prev.clone()]).await;
                }
                if previous.is_none() || moved.is_some() {
                    t.added(&sub).await;
                }
            }
            if let Some(prev) = &previous
                && let Some(old) = prev.target.connection()
                && !sub.target.same_destination(&prev.target)
            {
                old.remove_subscription(&sub.id);
            }
            if let Some(conn) = sub.target.connection() {
                conn.add_subscription(sub.id.clone());
                if conn.is_closed() {
                    // The connection ended while we subscribed it; its cleanup may have run already.
                    self.remove_live(conn, &sub.id);
                }
                ticket = self.websocket_changed(&sub.topic).or(ticket);
            }
            out.push((sub, previous.is_none()));
        }
        // Other nodes know of a WebSocket subscription before it is acknowledged, so a notify
        // they receive after it never calls its topic unheard (bounded wait; docs/scale-out.md).
        if let (Some(p), Some(t)) = (&self.presence, ticket) {
            p.recorded(t).await;
        }
        Ok(Subscribed { expires, subscriptions: out })
    }

    /// Ends the subscriptions of `client` (to `topic`, through `kinds`). `NotFound` if none.
    pub async fn unsubscribe(
        &self,
        client: &ClientId,
        topic: Option<&Topic>,
        kinds: Option<&[ServiceKind]>,
    ) -> Result<u64, ServiceError> {
        let subs = self.index.of_client(client, topic, kinds);
        if subs.is_empty() {
            return Err(ServiceError::NotFound);
        }
        self.remove(subs).await
    }

    async fn remove(&self, subs: Vec<Arc<Subscription>>) -> Result<u64, ServiceError> {
        let subs = if subs.iter().any(|s| s.target.is_stored_only()) {
            self.members_loaded(subs.iter().map(|s| s.kind())).await;
            // Those start-up gave their targets meanwhile are removed as the index holds them.
            subs.into_iter()
                .map(|s| match self.index.get(&s.id) {
                    Some(cur)
                        if s.target.is_stored_only()
                            && !Arc::ptr_eq(&cur, &s)
                            && cur.client_id == s.client_id
                            && cur.topic == s.topic
                            && cur.kind() == s.kind()
                            && cur.expires == s.expires =>
                    {
                        cur
                    }
                    _ => s,
                })
                .collect()
        } else {
            subs
        };
        let mut durable = Vec::new();
        let mut left = Vec::new();
        let mut n = 0;
        for s in subs {
            if self.index.remove_if(&s.id, |cur| std::ptr::eq(cur, &*s)).is_none() {
                continue;
            }
            n += 1;
            left.push(s.clone());
            if let Some(conn) = s.target.connection() {
                conn.remove_subscription(&s.id);
                self.websocket_changed(&s.topic);
            }
            if s.target.is_durable() {
                durable.push(s.id.to_string());
            }
        }
        if !durable.is_empty() {
            self.store.delete(&durable).await?;
            self.publish(ClusterEvent::Removed { ids: durable });
        }
        self.leave_unused(left).await;
        Ok(n)
    }

    /// Tells membership-tracking transports about ended subscriptions whose destination no
    /// remaining subscription of the same topic uses (two clients may share one device token).
    async fn leave_unused(&self, ended: Vec<Arc<Subscription>>) {
        use std::collections::{HashMap, HashSet};
        let mut groups: HashMap<(ServiceKind, Topic), Vec<Arc<Subscription>>> = HashMap::new();
        for s in ended {
            if self.transports.get(s.kind()).is_some_and(|t| t.tracks_membership()) {
                groups.entry((s.kind(), s.topic.clone())).or_default().push(s);
            }
        }
        for ((kind, topic), subs) in groups {
            let Some(t) = self.transports.get(kind) else { continue };
            let remaining = self.index.recipients(&topic, i64::MIN, &Exclusions::default());
            let mut in_use: HashSet<String> = remaining
                .into_iter()
                .filter(|(k, _)| *k == kind)
                .flat_map(|(_, v)| v.into_iter().map(|s| s.target.to_json()))
                .collect();
            for s in subs {
                // `insert` also dedupes: each destination leaves once.
                if in_use.insert(s.target.to_json()) {
                    t.removed(&s).await;
                }
            }
        }
    }

    fn remove_live(&self, conn: &Arc<Connection>, id: &SubscriptionId) {
        if let Some(s) = self.index.remove_if(id, |s| s.target.connection().is_some_and(|c| Arc::ptr_eq(c, conn))) {
            self.websocket_changed(&s.topic);
        }
    }

    /// Ends every subscription made for a WebSocket connection that closed.
    pub fn connection_closed(&self, conn: &Arc<Connection>) {
        for id in conn.take_subscriptions() {
            self.remove_live(conn, &id);
        }
    }

    /// Removes the subscriptions expired at `now` from the index and the store, in batches of
    /// [`PURGE_BATCH`] (each a short transaction; other requests run in between).
    pub async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        let expired: Vec<_> = self.index.expired(now).into_iter().filter(|s| s.expires <= now).collect();
        let mut n = 0;
        for batch in expired.chunks(PURGE_BATCH) {
            n += match self.remove(batch.to_vec()).await {
                Ok(n) => n,
                Err(ServiceError::Store(e)) => return Err(e),
                Err(_) => 0,
            };
            tokio::task::yield_now().await;
        }
        // Rows no index holds (e.g. of a disabled push service, or written by another node).
        let mut stored = 0;
        loop {
            let purged = self.store.purge_expired(now, PURGE_BATCH).await?;
            stored += purged;
            if purged < PURGE_BATCH as u64 {
                break;
            }
            tokio::task::yield_now().await;
        }
        Ok(n + stored)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::testing::Members;
    use crate::transport::Transports;
    use crate::{ClientId, Limits, MemoryStore, Metrics, PushService, ServiceKind, Topic};

    #[tokio::test]
    async fn membership_follows_subscriptions_and_shared_tokens_leave_last() {
        let members = Arc::new(Members::default());
        let svc = PushService::new(
            Arc::new(MemoryStore::default()),
            Transports::default().with(members.clone()),
            Limits::default(),
            Arc::new(Metrics::default()),
        );
        let target =
            |tok: &str| svc.transports().get(ServiceKind::Fcm).unwrap().parse_target(&serde_json::json!(tok)).unwrap();
        let (t, now) = (Topic::parse("t", 8).unwrap(), 1_000);
        let (a, b) = (ClientId::parse("a", 8).unwrap(), ClientId::parse("b", 8).unwrap());
        svc.subscribe(a.clone(), t.clone(), vec![target("tok")], None, now).await.unwrap();
        svc.subscribe(b.clone(), t.clone(), vec![target("tok")], None, now).await.unwrap();
        // Same destination again: an update, no new membership.
        svc.subscribe(a.clone(), t.clone(), vec![target("tok")], None, now).await.unwrap();
        let log = |m: &Members| m.log.lock().unwrap().iter().map(|(op, _, p)| format!("{op} {p}")).collect::<Vec<_>>();
        assert_eq!(log(&members), ["add \"tok\"", "add \"tok\""]);
        // A moved destination leaves the old one (unused by others? b still uses "tok").
        svc.subscribe(a.clone(), t.clone(), vec![target("tok2")], None, now).await.unwrap();
        assert_eq!(log(&members), ["add \"tok\"", "add \"tok\"", "add \"tok2\""]);
        svc.unsubscribe(&b, None, None).await.unwrap();
        assert_eq!(log(&members).last().unwrap(), "remove \"tok\"", "the last user of tok left");
        // Expiry leaves too.
        svc.purge_expired(now + 10 * 24 * 3600).await.unwrap();
        assert_eq!(log(&members).last().unwrap(), "remove \"tok2\"");
        assert_eq!(log(&members).len(), 5);
    }
}
