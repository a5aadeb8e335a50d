//! [`PushService`]: subscribe, unsubscribe, notify, expire. The HTTP layer calls one method per
//! request and maps the result; the WebSocket layer calls the same methods.

use std::sync::Arc;

use davpush_proto::{GrantError, GrantKeys, NotifyRequest, NotifyTopic};

use crate::fanout::{ClusterEvent, ClusterMessage, Fanout, WireNotification, WireSubscription};
use crate::ids::IdError;
use crate::index::LimitReached;
use crate::kind::UnknownService;
use crate::live::Connection;
use crate::notification::Exclusions;
use crate::store::{PendingDelivery, StoreError, StoredSubscription, SubscriptionStore};
use crate::transport::{TargetError, Transports};
use crate::{
    Caps, ClientId, Index, Metrics, Notification, Principal, PushMessage, ServiceKind, Subscription, SubscriptionId,
    Target, Topic, Triggers,
};

/// Limits the Director enforces on clients and application servers.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest topic, bytes.
    pub max_topic_len: usize,
    /// Longest client id, bytes.
    pub max_client_id_len: usize,
    /// Subscriptions one client (or one WebSocket connection) may hold.
    pub max_subscriptions_per_client: usize,
    /// Subscriptions one principal (subscription token or WebDAV user) may make, counted
    /// from what this process has seen since it started.
    pub max_subscriptions_per_principal: usize,
    /// Subscriptions this Director holds at most, in total.
    pub max_subscriptions: usize,
    /// Topics in one notify request.
    pub max_topics_per_notify: usize,
    /// Ids in one notify request's `exclude`.
    pub max_exclude: usize,
    /// Longest sync-token, bytes.
    pub max_sync_token_len: usize,
    /// Expiry granted when the client asks for none, seconds from now.
    pub default_expiry: i64,
    /// Shortest expiry granted, seconds from now.
    pub min_expiry: i64,
    /// Longest expiry granted, seconds from now.
    pub max_expiry: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_topic_len: 256,
            max_client_id_len: 256,
            max_subscriptions_per_client: 1000,
            max_subscriptions_per_principal: 10_000,
            max_subscriptions: 1_000_000,
            max_topics_per_notify: 1000,
            max_exclude: 100,
            max_sync_token_len: 1024,
            default_expiry: 3 * 24 * 3600,
            min_expiry: 3600,
            max_expiry: 30 * 24 * 3600,
        }
    }
}

impl Limits {
    /// The expiry granted at `now` for a requested one.
    pub fn grant_expiry(&self, requested: Option<i64>, now: i64) -> i64 {
        match requested {
            None => now + self.default_expiry,
            Some(t) => t.clamp(now + self.min_expiry, now + self.max_expiry),
        }
    }
}

/// Why a request was refused. Each variant maps to one HTTP status in the HTTP layer.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A field is malformed.
    #[error("`{field}` {message}")]
    Invalid {
        /// Which field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// `push_services` names a service this software does not know.
    #[error("{0}")]
    UnknownService(#[from] UnknownService),
    /// `push_services` names a service that is not enabled on this Director.
    #[error("push service `{0}` is not enabled on this Director")]
    ServiceDisabled(ServiceKind),
    /// A service's parameters were refused.
    #[error("push_services.{service}: {source}")]
    InvalidTarget {
        /// Which service.
        service: ServiceKind,
        /// Why.
        source: TargetError,
    },
    /// The client holds as many subscriptions as allowed.
    #[error(transparent)]
    LimitReached(#[from] LimitReached),
    /// The subscriber did not prove that it may read the topic's collection (no grant, or one
    /// that is invalid, expired or for other topics).
    #[error(transparent)]
    Grant(#[from] GrantError),
    /// Nothing matched (unsubscribe).
    #[error("no matching subscription")]
    NotFound,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ServiceError {
    fn invalid(field: impl Into<String>, e: IdError) -> Self {
        ServiceError::Invalid { field: field.into(), message: e.to_string() }
    }

    /// The request field the error is about, if any.
    pub fn field(&self) -> Option<String> {
        match self {
            ServiceError::Invalid { field, .. } => Some(field.clone()),
            ServiceError::UnknownService(u) => Some(format!("push_services.{}", u.0)),
            ServiceError::ServiceDisabled(k) => Some(format!("push_services.{k}")),
            ServiceError::InvalidTarget { service, source } => Some(match source.field {
                Some(f) => format!("push_services.{service}.{f}"),
                None => format!("push_services.{service}"),
            }),
            ServiceError::Grant(_) => Some("grant".into()),
            _ => None,
        }
    }
}

impl PushService {
    /// Counts a subscription refused for a limit (`davpush_requests_rejected_total{reason}`).
    fn refused(&self, limit: LimitReached) -> ServiceError {
        self.metrics.reject(match limit {
            LimitReached::PerClient(_) => "subscription_limit_per_client",
            LimitReached::PerPrincipal(_) => "subscription_limit_per_token",
            LimitReached::Total(_) => "subscription_limit_total",
        });
        limit.into()
    }
}

/// Result of a subscribe.
#[derive(Debug)]
pub struct Subscribed {
    /// Granted expiry, unix seconds.
    pub expires: i64,
    /// Each subscription and whether it was created (`false`: updated).
    pub subscriptions: Vec<(Arc<Subscription>, bool)>,
}

/// Result of a notify.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NotifyReport {
    /// Topics processed.
    pub topics: u64,
    /// Subscriptions addressed, per service in [`ServiceKind::ALL`] order.
    pub addressed: [u64; ServiceKind::ALL.len()],
}

impl NotifyReport {
    /// Total addressed.
    pub fn total(&self) -> u64 {
        self.addressed.iter().sum()
    }
}

/// See the module documentation.
pub struct PushService {
    index: Index,
    store: Arc<dyn SubscriptionStore>,
    transports: Transports,
    limits: Limits,
    metrics: Arc<Metrics>,
    fanout: Option<Arc<dyn Fanout>>,
    grants: Option<GrantKeys>,
}

impl std::fmt::Debug for PushService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushService").field("index", &self.index).field("transports", &self.transports).finish()
    }
}

impl PushService {
    /// A service with an empty index; call [`PushService::load`] to fill it from the store.
    pub fn new(
        store: Arc<dyn SubscriptionStore>,
        transports: Transports,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Self {
        PushService { index: Index::default(), store, transports, limits, metrics, fanout: None, grants: None }
    }

    /// Requires a grant for every subscription (`subscription.grants = "required"`): a topic is
    /// public, so a subscriber must prove with a grant signed by one of `keys` that it may read
    /// the topic's collection ([`davpush_proto::grant`]).
    pub fn with_grants(mut self, keys: GrantKeys) -> Self {
        self.grants = Some(keys);
        self
    }

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

    /// Makes this service one node of a cluster: notifications and changes of durable
    /// subscriptions are published through `fanout` (see [`crate::fanout`]).
    pub fn with_fanout(mut self, fanout: Arc<dyn Fanout>) -> Self {
        self.fanout = Some(fanout);
        self
    }

    /// The cluster seam, if this node is part of a cluster.
    pub fn fanout(&self) -> Option<&Arc<dyn Fanout>> {
        self.fanout.as_ref()
    }

    fn publish(&self, event: ClusterEvent) {
        if let Some(f) = &self.fanout {
            let channel = event.channel();
            f.publish(channel, ClusterMessage { node: f.node_id().to_owned(), event }.encode());
        }
    }

    /// Turns a stored row into a subscription, if its push service is enabled and its target valid.
    fn restore(&self, row: &StoredSubscription) -> Option<Subscription> {
        let kind: ServiceKind = row.service.parse().ok()?;
        let transport = self.transports.get(kind)?;
        let params: serde_json::Value = serde_json::from_str(&row.target).ok()?;
        let target = transport.parse_target(&params).ok()?;
        Some(Subscription {
            id: SubscriptionId::parse(&row.id, 64).ok()?,
            client_id: ClientId::parse(&row.client_id, usize::MAX).ok()?,
            topic: Topic::parse(&row.topic, usize::MAX).ok()?,
            target,
            expires: row.expires,
            triggers: Triggers::from_bits(row.triggers),
        })
    }

    /// Applies what another node of the cluster reports. Messages this node sent are skipped.
    /// Only the index changes: the sending node has written the store and talked to the push
    /// service already.
    pub fn apply(&self, message: ClusterMessage, now: i64) {
        if self.fanout.as_ref().is_some_and(|f| f.node_id() == message.node) {
            return;
        }
        match message.event {
            ClusterEvent::Notify { notifications, exclude } => {
                let notifications = notifications
                    .into_iter()
                    .filter_map(|n| {
                        Some(Notification {
                            topic: Topic::parse(&n.topic, usize::MAX).ok()?,
                            sync_token: n.sync_token,
                            trigger: n.trigger,
                        })
                    })
                    .collect();
                let exclude =
                    Exclusions::new(exclude.iter().filter_map(|id| SubscriptionId::parse(id, 64).ok()).collect());
                // Durable subscriptions were served by the node that received the notification.
                self.deliver(notifications, &exclude, now, false);
            }
            ClusterEvent::Subscribed { subscription } => {
                let row = StoredSubscription::from(subscription);
                match self.restore(&row) {
                    Some(sub) if sub.target.is_durable() => {
                        let _ = self.index.insert(sub, usize::MAX);
                    }
                    _ => tracing::warn!(
                        subscription = %row.id, service = %row.service,
                        "subscription from another node not indexed: its push service is disabled here or its target invalid"
                    ),
                }
            }
            ClusterEvent::Removed { ids } => {
                for id in ids.iter().filter_map(|id| SubscriptionId::parse(id, 64).ok()) {
                    self.index.remove_if(&id, |s| s.target.is_durable());
                }
            }
        }
    }

    /// Brings the durable part of the index in line with the store (after messages from other
    /// nodes may have been missed, e.g. while the connection between nodes was down). Returns
    /// how many subscriptions were added or removed.
    pub async fn resync(&self, now: i64) -> Result<usize, StoreError> {
        // Candidates for removal are taken before reading the store: a subscription made here
        // meanwhile is in the store before it is in the index, so it is never removed by mistake.
        let before: Vec<_> = self.index.expired(i64::MAX).into_iter().filter(|s| s.target.is_durable()).collect();
        let rows = self.store.load(now).await?;
        let mut changed = 0;
        let mut ids = std::collections::HashSet::with_capacity(rows.len());
        for row in &rows {
            ids.insert(row.id.clone());
            let Some(sub) = self.restore(row) else { continue };
            let fresh = self.index.get(&sub.id).is_none_or(|cur| {
                cur.expires != sub.expires
                    || cur.triggers != sub.triggers
                    || cur.target.to_json() != sub.target.to_json()
            });
            if fresh {
                let _ = self.index.insert(sub, usize::MAX);
                changed += 1;
            }
        }
        for s in before {
            if !ids.contains(s.id.as_str()) && self.index.remove_if(&s.id, |cur| std::ptr::eq(cur, &*s)).is_some() {
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The routing index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The enabled transports.
    pub fn transports(&self) -> &Transports {
        &self.transports
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SubscriptionStore> {
        &self.store
    }

    /// Validates a topic.
    pub fn topic(&self, field: &str, s: &str) -> Result<Topic, ServiceError> {
        Topic::parse(s, self.limits.max_topic_len).map_err(|e| ServiceError::invalid(field, e))
    }

    /// Validates a client id.
    pub fn client_id(&self, s: &str) -> Result<ClientId, ServiceError> {
        ClientId::parse(s, self.limits.max_client_id_len).map_err(|e| ServiceError::invalid("client_id", e))
    }

    /// Rebuilds the index from the store (at start). Returns how many subscriptions were loaded.
    pub async fn load(&self, now: i64) -> Result<usize, StoreError> {
        let rows = self.store.load(now).await?;
        let mut n = 0;
        let mut members = Vec::new();
        for row in rows {
            let restored = self.restore(&row);
            match restored {
                Some(sub) => {
                    if let Ok((sub, _)) = self.index.insert(sub, usize::MAX) {
                        n += 1;
                        if self.transports.get(sub.kind()).is_some_and(|t| t.tracks_membership()) {
                            members.push(sub);
                        }
                    }
                }
                None => tracing::warn!(
                    subscription = %row.id, service = %row.service,
                    "stored subscription not loaded: its push service is disabled or its target invalid"
                ),
            }
        }
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
        let pending = self.store.load_pending().await?;
        let mut by_kind: Vec<Vec<(Arc<Subscription>, PendingDelivery)>> = vec![Vec::new(); ServiceKind::ALL.len()];
        let mut stale = Vec::new();
        for p in pending {
            match SubscriptionId::parse(&p.subscription_id, 64).ok().and_then(|id| self.index.get(&id)) {
                Some(sub) => by_kind[sub.kind().index()].push((sub, p)),
                None => stale.push(p.subscription_id),
            }
        }
        if !stale.is_empty() {
            self.store.delete_pending(&stale).await?;
        }
        for (kind, list) in ServiceKind::ALL.into_iter().zip(by_kind) {
            if let (false, Some(t)) = (list.is_empty(), self.transports.get(kind)) {
                tracing::info!(service = %kind, deliveries = list.len(), "pending deliveries restored");
                t.restore(list).await;
            }
        }
        Ok(n)
    }

    /// Stops the transports; deliveries still pending are kept in the store for the next start.
    pub async fn shutdown(&self) {
        if let Some(f) = &self.fanout {
            f.close();
        }
        for kind in self.transports.enabled().collect::<Vec<_>>() {
            if let Some(t) = self.transports.get(kind) {
                t.shutdown().await;
            }
        }
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
        for target in targets {
            let kind = target.kind();
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
            }
            out.push((sub, previous.is_none()));
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
        self.index.remove_if(id, |s| s.target.connection().is_some_and(|c| Arc::ptr_eq(c, conn)));
    }

    /// Ends every subscription made for a WebSocket connection that closed.
    pub fn connection_closed(&self, conn: &Arc<Connection>) {
        for id in conn.take_subscriptions() {
            self.remove_live(conn, &id);
        }
    }

    /// Removes the subscriptions expired at `now` from the index and the store.
    pub async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        let expired: Vec<_> = self.index.expired(now).into_iter().filter(|s| s.expires <= now).collect();
        let n = match self.remove(expired).await {
            Ok(n) => n,
            Err(ServiceError::Store(e)) => return Err(e),
            Err(_) => 0,
        };
        let stored = self.store.purge_expired(now).await?;
        Ok(n.max(stored))
    }

    /// Validates a Notify API request into notifications and exclusions.
    pub fn parse_notify(&self, req: NotifyRequest) -> Result<(Vec<Notification>, Exclusions), ServiceError> {
        let check_token = |field: &str, t: &Option<String>| -> Result<(), ServiceError> {
            match t {
                Some(t) if t.len() > self.limits.max_sync_token_len => Err(ServiceError::Invalid {
                    field: field.into(),
                    message: format!("is longer than {} bytes", self.limits.max_sync_token_len),
                }),
                _ => Ok(()),
            }
        };
        check_token("sync_token", &req.sync_token)?;
        let mut out = Vec::new();
        if let Some(t) = &req.topic {
            out.push(Notification {
                topic: self.topic("topic", t)?,
                sync_token: req.sync_token.clone(),
                trigger: req.trigger,
            });
        }
        if let Some(list) = req.topics {
            if list.len() + out.len() > self.limits.max_topics_per_notify {
                return Err(ServiceError::Invalid {
                    field: "topics".into(),
                    message: format!("has more than {} entries", self.limits.max_topics_per_notify),
                });
            }
            for (i, entry) in list.into_iter().enumerate() {
                let field = format!("topics[{i}]");
                out.push(match entry {
                    NotifyTopic::Plain(t) => Notification {
                        topic: self.topic(&field, &t)?,
                        sync_token: req.sync_token.clone(),
                        trigger: req.trigger,
                    },
                    NotifyTopic::Detailed(e) => {
                        check_token(&format!("{field}.sync_token"), &e.sync_token)?;
                        Notification {
                            topic: self.topic(&format!("{field}.topic"), &e.topic)?,
                            sync_token: e.sync_token.or_else(|| req.sync_token.clone()),
                            trigger: e.trigger.or(req.trigger),
                        }
                    }
                });
            }
        }
        if out.is_empty() {
            return Err(ServiceError::Invalid {
                field: "topic".into(),
                message: "is required (or a non-empty `topics`)".into(),
            });
        }
        if req.exclude.len() > self.limits.max_exclude {
            return Err(ServiceError::Invalid {
                field: "exclude".into(),
                message: format!("has more than {} entries", self.limits.max_exclude),
            });
        }
        let exclude = req
            .exclude
            .iter()
            .enumerate()
            .map(|(i, s)| SubscriptionId::parse(s, 64).map_err(|e| ServiceError::invalid(format!("exclude[{i}]"), e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((out, Exclusions::new(exclude)))
    }

    /// Delivers notifications to the subscribers of their topics. Never blocks and never awaits:
    /// each transport only queues.
    /// In a cluster, the notifications are also published (once) for the other nodes' WebSocket
    /// connections; this node alone serves durable subscriptions.
    pub fn notify(&self, notifications: Vec<Notification>, exclude: &Exclusions, now: i64) -> NotifyReport {
        if self.fanout.is_some() {
            self.publish(ClusterEvent::Notify {
                notifications: notifications
                    .iter()
                    .map(|n| WireNotification {
                        topic: n.topic.to_string(),
                        sync_token: n.sync_token.clone(),
                        trigger: n.trigger,
                    })
                    .collect(),
                exclude: exclude.ids().iter().map(ToString::to_string).collect(),
            });
        }
        self.deliver(notifications, exclude, now, true)
    }

    /// Hands notifications to the transports: all of them, or (`durable == false`) only those
    /// that reach connections of this process.
    fn deliver(&self, notifications: Vec<Notification>, exclude: &Exclusions, now: i64, durable: bool) -> NotifyReport {
        let mut report = NotifyReport::default();
        for n in notifications {
            report.topics += 1;
            if durable {
                self.metrics.notifications.inc();
            }
            let recipients = self.index.recipients_for(&n.topic, now, exclude, n.trigger);
            if recipients.is_empty() {
                continue;
            }
            let message = Arc::new(PushMessage::new(n));
            for (kind, subs) in recipients {
                if !durable && kind != ServiceKind::WebSocket {
                    continue;
                }
                let Some(t) = self.transports.get(kind) else {
                    continue;
                };
                let d = t.dispatch(&message, &subs);
                report.addressed[kind.index()] += subs.len() as u64;
                self.metrics.delivered(kind, "queued", d.queued);
                self.metrics.delivered(kind, "coalesced", d.coalesced);
                self.metrics.delivered(kind, "dropped", d.dropped);
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::transport::{Dispatched, Transport};
    use crate::{MemoryStore, RemoteTarget};

    /// A topic-mode transport that records membership changes.
    #[derive(Default)]
    struct Members {
        log: Mutex<Vec<(&'static str, String, String)>>,
    }

    #[async_trait::async_trait]
    impl Transport for Members {
        fn kind(&self) -> ServiceKind {
            ServiceKind::Fcm
        }
        fn parse_target(&self, params: &serde_json::Value) -> Result<Target, TargetError> {
            Ok(Target::Remote(RemoteTarget::new(ServiceKind::Fcm, params.to_string(), ())))
        }
        fn dispatch(&self, _m: &Arc<PushMessage>, _r: &[Arc<Subscription>]) -> Dispatched {
            Dispatched::default()
        }
        fn tracks_membership(&self) -> bool {
            true
        }
        async fn added(&self, sub: &Arc<Subscription>) {
            self.log.lock().unwrap().push(("add", sub.topic.to_string(), sub.target.to_json()));
        }
        async fn removed(&self, sub: &Arc<Subscription>) {
            self.log.lock().unwrap().push(("remove", sub.topic.to_string(), sub.target.to_json()));
        }
    }

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

    #[tokio::test]
    async fn memberships_are_announced_again_at_start_once_per_topic_and_token() {
        let store = Arc::new(MemoryStore::default());
        for (id, client, topic, token) in [("a", "c1", "t1", "tok"), ("b", "c2", "t1", "tok"), ("c", "c3", "t2", "tok")]
        {
            store
                .upsert(&StoredSubscription {
                    id: format!("{id}-{}", SubscriptionId::random()),
                    client_id: client.into(),
                    topic: topic.into(),
                    service: "fcm".into(),
                    target: format!("\"{token}\""),
                    expires: i64::MAX / 2,
                    created: 0,
                    triggers: 3,
                })
                .await
                .unwrap();
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
}

#[cfg(test)]
mod cluster_tests {
    use std::sync::Mutex;

    use super::*;
    use crate::fanout::Channel;
    use crate::transport::{Dispatched, Transport};
    use crate::{MemoryStore, RemoteTarget};

    #[derive(Debug)]
    struct Recorder(&'static str, Mutex<Vec<(Channel, ClusterMessage)>>);

    impl Fanout for Recorder {
        fn node_id(&self) -> &str {
            self.0
        }
        fn publish(&self, channel: Channel, payload: bytes::Bytes) -> bool {
            self.1.lock().unwrap().push((channel, ClusterMessage::decode(&payload).unwrap()));
            true
        }
    }

    /// A durable transport that counts deliveries.
    #[derive(Default)]
    struct Counting(Mutex<u64>);

    impl Transport for Counting {
        fn kind(&self) -> ServiceKind {
            ServiceKind::Fcm
        }
        fn parse_target(&self, params: &serde_json::Value) -> Result<Target, TargetError> {
            Ok(Target::Remote(RemoteTarget::new(ServiceKind::Fcm, params.to_string(), ())))
        }
        fn dispatch(&self, _m: &Arc<PushMessage>, r: &[Arc<Subscription>]) -> Dispatched {
            *self.0.lock().unwrap() += r.len() as u64;
            Dispatched::default()
        }
    }

    fn node(name: &'static str) -> (PushService, Arc<Recorder>, Arc<Counting>) {
        let rec = Arc::new(Recorder(name, Mutex::default()));
        let counting = Arc::new(Counting::default());
        let svc = PushService::new(
            Arc::new(MemoryStore::default()),
            Transports::default().with(counting.clone()),
            Limits::default(),
            Arc::new(Metrics::default()),
        )
        .with_fanout(rec.clone());
        (svc, rec, counting)
    }

    #[tokio::test]
    async fn changes_and_notifications_are_published_and_applied_elsewhere() {
        let (a, rec_a, sent_a) = node("a");
        let (b, _, sent_b) = node("b");
        let target = a.transports().get(ServiceKind::Fcm).unwrap().parse_target(&serde_json::json!("tok")).unwrap();
        let (client, topic, now) = (ClientId::parse("c", 8).unwrap(), Topic::parse("t", 8).unwrap(), 1_000);
        a.subscribe(client.clone(), topic.clone(), vec![target], None, now).await.unwrap();
        let (exclude, n) =
            (Exclusions::default(), Notification { topic: topic.clone(), sync_token: None, trigger: None });
        a.notify(vec![n], &exclude, now);
        a.unsubscribe(&client, None, None).await.unwrap();
        let log = std::mem::take(&mut *rec_a.1.lock().unwrap());
        let channels: Vec<_> = log.iter().map(|(c, _)| *c).collect();
        assert_eq!(channels, [Channel::Subscriptions, Channel::Notify, Channel::Subscriptions]);
        assert_eq!(*sent_a.0.lock().unwrap(), 1, "the receiving node delivers to durable subscriptions");

        let mut log = log.into_iter().map(|(_, m)| m);
        b.apply(log.next().unwrap(), now);
        assert_eq!(b.index().counts()[ServiceKind::Fcm.index()], 1, "b indexes a's subscription");
        b.apply(log.next().unwrap(), now);
        assert_eq!(*sent_b.0.lock().unwrap(), 0, "other nodes never deliver to durable subscriptions");
        // A node ignores what it sent itself.
        let removal = log.next().unwrap();
        a.apply(ClusterMessage { node: "a".into(), ..removal.clone() }, now);
        b.apply(removal, now);
        assert!(b.index().is_empty(), "b forgets the removed subscription");
    }

    #[tokio::test]
    async fn resync_aligns_the_index_with_the_store() {
        let (b, _, _) = node("b");
        let row = |id: &str, client: &str| ClusterMessage {
            node: "a".into(),
            event: ClusterEvent::Subscribed {
                subscription: WireSubscription {
                    id: id.into(),
                    client_id: client.into(),
                    topic: "t".into(),
                    service: "fcm".into(),
                    target: "\"tok\"".into(),
                    expires: 5_000,
                    created: 0,
                    triggers: 3,
                },
            },
        };
        // A subscription whose removal was missed, and one that is stored but was never announced.
        b.apply(row("gone", "c1"), 1_000);
        let ClusterEvent::Subscribed { subscription } = row("kept", "c2").event else { unreachable!() };
        b.store().upsert(&subscription.into()).await.unwrap();
        assert_eq!(b.resync(1_000).await.unwrap(), 2);
        assert!(b.index().get(&SubscriptionId::parse("gone", 64).unwrap()).is_none());
        assert!(b.index().get(&SubscriptionId::parse("kept", 64).unwrap()).is_some());
        assert_eq!(b.resync(1_000).await.unwrap(), 0, "nothing changes twice");
    }
}
