//! The routing index: topic → active subscriptions, per push service.
//!
//! The notify path takes one read lock on one shard (selected by the topic's hash), copies the
//! matching `Arc`s out and releases it before anything is delivered. Writers (subscribe,
//! unsubscribe, expiry, connection close) take the bookkeeping mutex, then one shard's write
//! lock; no lock is ever held across an `.await`.

use std::borrow::Borrow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, RwLock};

use crate::notification::Exclusions;
use crate::{ClientId, ServiceKind, Subscription, SubscriptionId, Topic};

const SHARDS: usize = 16;
const KINDS: usize = ServiceKind::ALL.len();

/// The maps' hasher: foldhash, seeded per process (SipHash was a tenth of the start-up time
/// with a million subscriptions, issue 11).
type Hashing = foldhash::fast::RandomState;
type Map<K, V> = HashMap<K, V, Hashing>;

/// The subscribers of one topic, of every push service in one list (one allocation per topic,
/// and a map entry of one `Vec`, instead of a list per service: 100,000 topics, issue 11).
#[derive(Default)]
struct TopicSubs {
    subs: Vec<Arc<Subscription>>,
}

impl TopicSubs {
    fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Number of subscribers per service, in [`ServiceKind::ALL`] order.
    fn counts(&self) -> [usize; KINDS] {
        let mut n = [0; KINDS];
        for s in &self.subs {
            n[s.kind().index()] += 1;
        }
        n
    }
}

/// A subscription in the set of all, found by its id: one pointer per entry, the key is the
/// subscription's own id.
struct ById(Arc<Subscription>);

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ById {}

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id.hash(state);
    }
}

impl Borrow<SubscriptionId> for ById {
    fn borrow(&self) -> &SubscriptionId {
        &self.0.id
    }
}

/// The key of a subscription the index holds in `principal_of`.
fn address(sub: &Arc<Subscription>) -> usize {
    Arc::as_ptr(sub) as usize
}

/// The subscriptions of one client, found by the client id of the first (a set entry of two
/// pointers: the key is the subscriptions' own client id, and most clients have one
/// subscription, held without a list).
struct OfClient {
    first: Arc<Subscription>,
    #[expect(clippy::box_collection, reason = "one pointer in every client's entry instead of three")]
    rest: Option<Box<Vec<Arc<Subscription>>>>,
}

impl OfClient {
    fn iter(&self) -> impl Iterator<Item = &Arc<Subscription>> {
        std::iter::once(&self.first).chain(self.rest.iter().flat_map(|v| v.iter()))
    }

    fn len(&self) -> usize {
        1 + self.rest.as_ref().map_or(0, |v| v.len())
    }

    fn push(&mut self, sub: Arc<Subscription>) {
        self.rest.get_or_insert_default().push(sub);
    }

    /// Without `sub`; `None` if it was the only one.
    fn without(mut self, sub: &Arc<Subscription>) -> Option<OfClient> {
        let mut rest = self.rest.take().map(|v| *v).unwrap_or_default();
        rest.retain(|x| !Arc::ptr_eq(x, sub));
        if Arc::ptr_eq(&self.first, sub) {
            self.first = rest.pop()?;
        }
        self.rest = (!rest.is_empty()).then(|| Box::new(rest));
        Some(self)
    }
}

impl PartialEq for OfClient {
    fn eq(&self, other: &Self) -> bool {
        self.first.client_id == other.first.client_id
    }
}

impl Eq for OfClient {}

impl Hash for OfClient {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.first.client_id.hash(state);
    }
}

impl Borrow<ClientId> for OfClient {
    fn borrow(&self) -> &ClientId {
        &self.first.client_id
    }
}

/// What each subscription costs in memory here (issue 11): one entry in `by_id` (a pointer),
/// one pointer in its client's list and one in its topic's list; the client id, topic and id
/// strings are shared with the subscription (the topic also with every other subscriber of it).
/// A client's subscription to a topic through a service is found by scanning the client's list,
/// which the per-client limit keeps short.
#[derive(Default)]
struct Meta {
    by_id: HashSet<ById, Hashing>,
    by_client: HashSet<OfClient, Hashing>,
    per_kind: [usize; KINDS],
    /// Who made each subscription made through this process since it started, by the address
    /// of the subscription the index holds (removed with it).
    principal_of: Map<usize, Principal>,
    per_principal: Map<Principal, usize>,
}

impl Meta {
    fn forget_principal(&mut self, sub: &Arc<Subscription>) {
        if let Some(p) = self.principal_of.remove(&address(sub))
            && let Some(n) = self.per_principal.get_mut(&p)
        {
            *n -= 1;
            if *n == 0 {
                self.per_principal.remove(&p);
            }
        }
    }

    fn find(&self, client: &ClientId, topic: &Topic, kind: ServiceKind) -> Option<&Arc<Subscription>> {
        self.by_client.get(client)?.iter().find(|s| &s.topic == topic && s.kind() == kind)
    }

    /// Takes `sub` out of its client's list.
    fn unlist(&mut self, sub: &Arc<Subscription>) {
        if let Some(rest) = self.by_client.take(&sub.client_id).and_then(|l| l.without(sub)) {
            self.by_client.insert(rest);
        }
    }

    /// Whether a new subscription of `client` (made by `caps.principal`) fits.
    fn room(&self, client: &ClientId, caps: &Caps) -> Result<(), LimitReached> {
        self.room_for(self.by_client.get(client).map_or(0, OfClient::len), caps)
    }

    /// Whether a new subscription of a client that holds `held` (made by `caps.principal`) fits.
    fn room_for(&self, held: usize, caps: &Caps) -> Result<(), LimitReached> {
        if held >= caps.per_client {
            return Err(LimitReached::PerClient(caps.per_client));
        }
        if let Some((p, max)) = caps.principal
            && self.per_principal.get(&p).copied().unwrap_or(0) >= max
        {
            return Err(LimitReached::PerPrincipal(max));
        }
        if self.by_id.len() >= caps.total {
            return Err(LimitReached::Total(caps.total));
        }
        Ok(())
    }
}

/// Who authenticated a subscription: an opaque hash of the subscription token, or of the
/// WebDAV user, for counting. It is never shown, logged or stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Principal(u64);

impl Principal {
    /// The principal identified by `bytes` (a token, a user name), hashed.
    pub fn of(bytes: &[u8]) -> Self {
        let mut h = std::hash::DefaultHasher::new();
        bytes.hash(&mut h);
        Principal(h.finish())
    }
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Principal(…)")
    }
}

/// The limits a new subscription must fit in; updates of an existing one always fit.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Subscriptions of one client id.
    pub per_client: usize,
    /// Who subscribes, and how many subscriptions it may hold.
    pub principal: Option<(Principal, usize)>,
    /// Subscriptions in total.
    pub total: usize,
}

impl Caps {
    /// Only the per-client limit.
    pub fn per_client(max: usize) -> Self {
        Caps { per_client: max, principal: None, total: usize::MAX }
    }
}

/// A new subscription would exceed a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitReached {
    /// The client (or WebSocket connection) holds as many subscriptions as allowed.
    #[error("the client already has the maximum of {0} subscriptions")]
    PerClient(usize),
    /// The token or WebDAV user holds as many subscriptions as allowed.
    #[error("the maximum of {0} subscriptions per token or user is reached (subscription.max_per_token)")]
    PerPrincipal(usize),
    /// The Director holds as many subscriptions as allowed.
    #[error("this Director holds its maximum of {0} subscriptions (subscription.max_total)")]
    Total(usize),
}

/// Recipients of one topic, grouped by push service (only services with recipients).
pub type Recipients = Vec<(ServiceKind, Vec<Arc<Subscription>>)>;

/// See the module documentation.
pub struct Index {
    shards: Box<[RwLock<Map<Topic, TopicSubs>>]>,
    meta: Mutex<Meta>,
    hasher: Hashing,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            meta: Mutex::default(),
            hasher: Hashing::default(),
        }
    }
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("counts", &self.counts()).finish()
    }
}

impl Index {
    fn shard(&self, topic: &Topic) -> &RwLock<Map<Topic, TopicSubs>> {
        let h = self.hasher.hash_one(topic.as_str()) as usize;
        &self.shards[h % SHARDS]
    }

    fn meta(&self) -> std::sync::MutexGuard<'_, Meta> {
        self.meta.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The topic named `name` as the index holds it, if any subscription has it (to share its
    /// string).
    pub fn topic(&self, name: &str) -> Option<Topic> {
        let shard = self.shards[self.hasher.hash_one(name) as usize % SHARDS].read().unwrap_or_else(|e| e.into_inner());
        shard.get_key_value(name).map(|(t, _)| t.clone())
    }

    /// The subscription of `client` to `topic` through `kind`, if any.
    pub fn find(&self, client: &ClientId, topic: &Topic, kind: ServiceKind) -> Option<Arc<Subscription>> {
        self.meta().find(client, topic, kind).cloned()
    }

    /// The subscription with this id.
    pub fn get(&self, id: &SubscriptionId) -> Option<Arc<Subscription>> {
        self.meta().by_id.get(id).map(|s| s.0.clone())
    }

    /// The subscription with each of these ids, in order (one lock for all).
    pub fn get_all<'a>(&self, ids: impl IntoIterator<Item = &'a SubscriptionId>) -> Vec<Option<Arc<Subscription>>> {
        let m = self.meta();
        ids.into_iter().map(|id| m.by_id.get(id).map(|s| s.0.clone())).collect()
    }

    /// Replaces `current` by `sub` (the same subscription: same id, client, topic and service,
    /// e.g. with its target read from the store), only if the index still holds `current`;
    /// returns the stored handle, or `None` if `current` was removed or replaced meanwhile.
    pub fn replace(&self, current: &Arc<Subscription>, sub: Subscription) -> Option<Arc<Subscription>> {
        if sub.id != current.id || sub.client_id != current.client_id || sub.kind() != current.kind() {
            return None;
        }
        let mut sub = sub;
        sub.topic = current.topic.clone();
        let sub = Arc::new(sub);
        let mut m = self.meta();
        if !m.by_id.get(&sub.id).is_some_and(|s| Arc::ptr_eq(&s.0, current)) {
            return None;
        }
        m.by_id.replace(ById(sub.clone()));
        if let Some(p) = m.principal_of.remove(&address(current)) {
            m.principal_of.insert(address(&sub), p);
        }
        if let Some(mut list) = m.by_client.take(&sub.client_id) {
            if Arc::ptr_eq(&list.first, current) {
                list.first = sub.clone();
            } else if let Some(slot) = list.rest.iter_mut().flat_map(|v| v.iter_mut()).find(|s| Arc::ptr_eq(s, current))
            {
                *slot = sub.clone();
            }
            m.by_client.insert(list);
        }
        let mut shard = self.shard(&sub.topic).write().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = shard.get_mut(&sub.topic).and_then(|t| t.subs.iter_mut().find(|s| Arc::ptr_eq(s, current)))
        {
            *slot = sub.clone();
        }
        drop(shard);
        drop(m);
        Some(sub)
    }

    /// Inserts `sub`, replacing the client's existing subscription to the same topic through the
    /// same service. Returns the stored handle and the replaced subscription, if any. A new
    /// subscription beyond `max_per_client` is refused.
    pub fn insert(
        &self,
        sub: Subscription,
        max_per_client: usize,
    ) -> Result<(Arc<Subscription>, Option<Arc<Subscription>>), LimitReached> {
        self.insert_capped(sub, &Caps::per_client(max_per_client))
    }

    /// Checks whether a new subscription of `client` would fit in `caps` now (the insert checks
    /// again).
    pub fn room(&self, client: &ClientId, caps: &Caps) -> Result<(), LimitReached> {
        self.meta().room(client, caps)
    }

    /// Like [`Index::insert`], for a new subscription within all of `caps`; the subscription is
    /// counted for `caps.principal` until it is removed. An update keeps its place whatever the
    /// limits, and its count moves to the principal that updated it.
    pub fn insert_capped(
        &self,
        mut sub: Subscription,
        caps: &Caps,
    ) -> Result<(Arc<Subscription>, Option<Arc<Subscription>>), LimitReached> {
        // Each map is looked up once where it can be (issue 11: at start a million inserts one
        // after the other, each lookup in a table of a million a cache miss).
        let mut m = self.meta();
        let (found, held) = match m.by_client.get(&sub.client_id) {
            Some(list) => (list.iter().find(|s| s.topic == sub.topic && s.kind() == sub.kind()).cloned(), list.len()),
            None => (None, 0),
        };
        let previous = match found {
            Some(old) => {
                m.by_id.remove(&old.id);
                Some(old)
            }
            None => {
                m.room_for(held, caps)?;
                None
            }
        };
        // The topic's list, and its string for the new subscriber to share, in one lookup.
        let sub = {
            let mut shard = self.shard(&sub.topic).write().unwrap_or_else(|e| e.into_inner());
            match shard.entry(sub.topic.clone()) {
                Entry::Occupied(mut e) => {
                    sub.topic = e.key().clone();
                    let sub = Arc::new(sub);
                    let list = &mut e.get_mut().subs;
                    match previous.as_ref().and_then(|old| list.iter().position(|s| Arc::ptr_eq(s, old))) {
                        Some(pos) => list[pos] = sub.clone(),
                        None => list.push(sub.clone()),
                    }
                    sub
                }
                Entry::Vacant(e) => {
                    let sub = Arc::new(sub);
                    e.insert(TopicSubs { subs: vec![sub.clone()] });
                    sub
                }
            }
        };
        if let Some(old) = &previous {
            m.unlist(old);
            m.forget_principal(old);
        } else {
            m.per_kind[sub.kind().index()] += 1;
        }
        if let Some((p, _)) = caps.principal {
            m.principal_of.insert(address(&sub), p);
            *m.per_principal.entry(p).or_default() += 1;
        }
        m.by_id.insert(ById(sub.clone()));
        // A new client's list is inserted without looking for one first.
        let existing = if previous.is_none() && held == 0 { None } else { m.by_client.take(&sub.client_id) };
        let list = match existing {
            Some(mut list) => {
                list.push(sub.clone());
                list
            }
            None => OfClient { first: sub.clone(), rest: None },
        };
        m.by_client.insert(list);
        drop(m);
        Ok((sub, previous))
    }

    /// Removes the subscription `id` if `pred` holds for it.
    pub fn remove_if(
        &self,
        id: &SubscriptionId,
        pred: impl FnOnce(&Subscription) -> bool,
    ) -> Option<Arc<Subscription>> {
        let mut m = self.meta();
        let sub = m.by_id.get(id)?.0.clone();
        if !pred(&sub) {
            return None;
        }
        m.by_id.remove(id);
        m.forget_principal(&sub);
        m.unlist(&sub);
        m.per_kind[sub.kind().index()] -= 1;
        let mut shard = self.shard(&sub.topic).write().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = shard.get_mut(&sub.topic) {
            let list = &mut t.subs;
            if let Some(pos) = list.iter().position(|s| Arc::ptr_eq(s, &sub)) {
                list.swap_remove(pos);
                if list.capacity() > 8 && list.len() < list.capacity() / 4 {
                    list.shrink_to(list.len() * 2);
                }
            }
            if t.is_empty() {
                shard.remove(&sub.topic);
            }
        }
        Some(sub)
    }

    /// Removes the subscription `id`.
    pub fn remove(&self, id: &SubscriptionId) -> Option<Arc<Subscription>> {
        self.remove_if(id, |_| true)
    }

    /// The subscriptions of `client`, optionally only for `topic` and only through `kinds`.
    pub fn of_client(
        &self,
        client: &ClientId,
        topic: Option<&Topic>,
        kinds: Option<&[ServiceKind]>,
    ) -> Vec<Arc<Subscription>> {
        let m = self.meta();
        let Some(subs) = m.by_client.get(client) else {
            return Vec::new();
        };
        subs.iter()
            .filter(|s| topic.is_none_or(|t| &s.topic == t))
            .filter(|s| kinds.is_none_or(|k| k.contains(&s.kind())))
            .cloned()
            .collect()
    }

    /// Number of subscriptions of `client`.
    pub fn client_count(&self, client: &ClientId) -> usize {
        self.meta().by_client.get(client).map_or(0, OfClient::len)
    }

    /// The unexpired, non-excluded subscribers of `topic` at `now`, by service.
    pub fn recipients(&self, topic: &Topic, now: i64, exclude: &Exclusions) -> Recipients {
        self.select(topic, now, exclude, |_| true)
    }

    /// Like [`Index::recipients`], only those that want a change of kind `trigger`.
    pub fn recipients_for(
        &self,
        topic: &Topic,
        now: i64,
        exclude: &Exclusions,
        trigger: Option<davpush_proto::Trigger>,
    ) -> Recipients {
        self.select(topic, now, exclude, |s| s.triggers.accepts(trigger))
    }

    fn select(
        &self,
        topic: &Topic,
        now: i64,
        exclude: &Exclusions,
        wanted: impl Fn(&Subscription) -> bool,
    ) -> Recipients {
        let shard = self.shard(topic).read().unwrap_or_else(|e| e.into_inner());
        let Some(t) = shard.get(topic) else {
            return Vec::new();
        };
        let mut by_kind: [Vec<Arc<Subscription>>; KINDS] = Default::default();
        for s in t.subs.iter().filter(|s| s.expires > now && !exclude.contains(&s.id) && wanted(s)) {
            by_kind[s.kind().index()].push(s.clone());
        }
        ServiceKind::ALL.into_iter().zip(by_kind).filter(|(_, subs)| !subs.is_empty()).collect()
    }

    /// Whether `topic` has an unexpired subscription at `now` (whatever its triggers and
    /// whoever a notify excludes): the Notify API's `unheard` is the opposite.
    pub fn has_subscribers(&self, topic: &Topic, now: i64) -> bool {
        let shard = self.shard(topic).read().unwrap_or_else(|e| e.into_inner());
        shard.get(topic).is_some_and(|t| t.subs.iter().any(|s| s.expires > now))
    }

    /// Number of subscriptions of `topic`, per service in [`ServiceKind::ALL`] order.
    pub fn topic_counts(&self, topic: &str) -> [usize; KINDS] {
        let shard =
            self.shards[self.hasher.hash_one(topic) as usize % SHARDS].read().unwrap_or_else(|e| e.into_inner());
        shard.get(topic).map_or([0; KINDS], TopicSubs::counts)
    }

    /// Number of shards, for [`Index::topics_page`] cursors.
    pub const SHARDS: usize = SHARDS;

    /// Up to `limit` topics of shard `shard` that sort after `after` (`""`: from the first),
    /// in order, with their counts per service, and with at least one subscription of a kind
    /// `wanted` accepts. One shard's read lock is held while its topics are scanned; the
    /// result holds at most `limit` entries (a bounded heap, not a copy of the shard).
    pub fn topics_page(
        &self,
        shard: usize,
        after: &str,
        limit: usize,
        wanted: impl Fn(ServiceKind) -> bool,
    ) -> Vec<(Topic, [usize; KINDS])> {
        use std::collections::BinaryHeap;
        let Some(lock) = self.shards.get(shard) else { return Vec::new() };
        let map = lock.read().unwrap_or_else(|e| e.into_inner());
        // A max-heap of the `limit` smallest topics after `after`.
        let mut heap: BinaryHeap<&Topic> = BinaryHeap::with_capacity(limit.min(map.len()) + 1);
        for (topic, subs) in map.iter() {
            if topic.as_str() <= after || !subs.subs.iter().any(|s| wanted(s.kind())) {
                continue;
            }
            if heap.len() < limit {
                heap.push(topic);
            } else if heap.peek().is_some_and(|top| topic < *top) {
                heap.pop();
                heap.push(topic);
            }
        }
        let mut out: Vec<_> = heap
            .into_iter()
            .map(|t| {
                let counts = map.get(t).map_or([0; KINDS], TopicSubs::counts);
                (t.clone(), counts)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Subscriptions whose expiry is at or before `now`.
    pub fn expired(&self, now: i64) -> Vec<Arc<Subscription>> {
        self.meta().by_id.iter().filter(|s| s.0.expires <= now).map(|s| s.0.clone()).collect()
    }

    /// Number of subscriptions per service, in [`ServiceKind::ALL`] order.
    pub fn counts(&self) -> [usize; KINDS] {
        self.meta().per_kind
    }

    /// Makes room for `subscriptions` more subscriptions of `clients` more clients, so that
    /// inserting them does not grow the tables step by step (issue 11: each growth re-hashes
    /// every entry, whose key is behind a pointer, a cache miss each; at start with a million
    /// that was most of the inserts' time).
    pub fn reserve(&self, subscriptions: usize, clients: usize) {
        let mut m = self.meta();
        m.by_id.reserve(subscriptions);
        m.by_client.reserve(clients);
    }

    /// Gives back what [`Index::reserve`] made room for and was not used (one re-hash of what
    /// the table holds, if it can shrink at all): start-up reserves a client per subscription,
    /// while clients usually hold several.
    pub fn shrink_to_fit(&self) {
        let mut m = self.meta();
        m.by_id.shrink_to_fit();
        m.by_client.shrink_to_fit();
    }

    /// Total number of subscriptions.
    pub fn len(&self) -> usize {
        self.meta().by_id.len()
    }

    /// Whether there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Target;
    use crate::live::Hub;

    fn client(s: &str) -> ClientId {
        ClientId::parse(s, 64).unwrap()
    }

    fn topic(s: &str) -> Topic {
        Topic::parse(s, 64).unwrap()
    }

    fn sub(hub: &Hub, client: &str, topic: &str, expires: i64) -> Subscription {
        Subscription {
            id: SubscriptionId::random(),
            client_id: ClientId::parse(client, 64).unwrap(),
            topic: Topic::parse(topic, 64).unwrap(),
            target: Target::WebSocket(hub.open(0).unwrap()),
            expires,
            triggers: crate::Triggers::ALL,
        }
    }

    #[test]
    fn insert_replaces_same_client_topic_and_service() {
        let hub = Hub::new(4, 100);
        let idx = Index::default();
        let (a, prev) = idx.insert(sub(&hub, "c1", "t", 100), 10).unwrap();
        assert!(prev.is_none());
        let mut again = sub(&hub, "c1", "t", 200);
        again.id = a.id.clone();
        let (b, prev) = idx.insert(again, 10).unwrap();
        assert!(Arc::ptr_eq(&prev.unwrap(), &a));
        assert_eq!(idx.len(), 1);
        let r = idx.recipients(&b.topic, 150, &Exclusions::default());
        assert_eq!(r.len(), 1);
        assert!(Arc::ptr_eq(&r[0].1[0], &b), "the update replaced the old entry");
    }

    #[test]
    fn issue_11_subscribers_of_a_topic_share_its_string_and_are_found_by_client() {
        let hub = Hub::new(4, 100);
        let idx = Index::default();
        let (a, _) = idx.insert(sub(&hub, "c1", "shared-topic", 100), 10).unwrap();
        let (b, _) = idx.insert(sub(&hub, "c2", "shared-topic", 100), 10).unwrap();
        assert_eq!(a.topic.as_str().as_ptr(), b.topic.as_str().as_ptr(), "one string for the topic");
        let found = idx.find(&client("c2"), &topic("shared-topic"), ServiceKind::WebSocket).unwrap();
        assert!(Arc::ptr_eq(&found, &b));
        assert!(idx.find(&client("c2"), &topic("shared-topic"), ServiceKind::WebPush).is_none());
        assert!(idx.find(&client("c3"), &topic("shared-topic"), ServiceKind::WebSocket).is_none());
        assert_eq!(idx.of_client(&client("c1"), None, None).len(), 1);
        idx.remove(&a.id);
        assert_eq!(idx.client_count(&client("c1")), 0);
        assert!(Arc::ptr_eq(&idx.get(&b.id).unwrap(), &b));
    }

    /// What start-up does (room made for every row, then given back) keeps every lookup right:
    /// new clients, a client's second subscription, and a replacement in its topic's list.
    #[test]
    fn issue_11_room_made_first_and_given_back_changes_no_lookup() {
        let hub = Hub::new(4, 1_000);
        let idx = Index::default();
        idx.reserve(10_000, 10_000);
        let mut kept = Vec::new();
        for c in 0..50 {
            for t in 0..3 {
                kept.push(idx.insert(sub(&hub, &format!("c{c}"), &format!("t{t}"), 100), 10).unwrap().0);
            }
        }
        // c7's subscription to t1 replaced: same place in the topic's list, the old one gone.
        let (new, old) = idx.insert(sub(&hub, "c7", "t1", 300), 10).unwrap();
        let old = old.expect("replaced");
        assert!(Arc::ptr_eq(&old, &kept[7 * 3 + 1]));
        idx.shrink_to_fit();
        assert_eq!(idx.len(), 150);
        assert!(idx.get(&old.id).is_none());
        assert!(Arc::ptr_eq(&idx.get(&new.id).unwrap(), &new));
        let found = idx.find(&client("c7"), &topic("t1"), ServiceKind::WebSocket).unwrap();
        assert!(Arc::ptr_eq(&found, &new));
        assert_eq!(new.topic.as_str().as_ptr(), kept[1].topic.as_str().as_ptr(), "one string for the topic");
        for c in 0..50 {
            assert_eq!(idx.client_count(&client(&format!("c{c}"))), 3);
        }
        let t1: Vec<SubscriptionId> = idx
            .recipients(&topic("t1"), 200, &Exclusions::default())
            .into_iter()
            .flat_map(|(_, v)| v.into_iter().map(|s| s.id.clone()))
            .collect();
        assert_eq!(t1, vec![new.id.clone()], "only the replacement outlives 200");
        assert_eq!(idx.recipients(&topic("t1"), 50, &Exclusions::default())[0].1.len(), 50);
        idx.remove(&new.id);
        assert_eq!(idx.client_count(&client("c7")), 2);
        assert!(idx.find(&client("c7"), &topic("t1"), ServiceKind::WebSocket).is_none());
    }

    #[test]
    fn recipients_skip_expired_and_excluded() {
        let hub = Hub::new(4, 100);
        let idx = Index::default();
        let (a, _) = idx.insert(sub(&hub, "c1", "t", 100), 10).unwrap();
        let (b, _) = idx.insert(sub(&hub, "c2", "t", 300), 10).unwrap();
        idx.insert(sub(&hub, "c3", "other", 300), 10).unwrap();
        let t = a.topic.clone();
        let ids = |r: Recipients| -> Vec<SubscriptionId> {
            r.into_iter().flat_map(|(_, v)| v.into_iter().map(|s| s.id.clone())).collect()
        };
        assert_eq!(ids(idx.recipients(&t, 50, &Exclusions::default())).len(), 2);
        assert_eq!(ids(idx.recipients(&t, 100, &Exclusions::default())), vec![b.id.clone()]);
        assert!(ids(idx.recipients(&t, 100, &Exclusions::new(vec![b.id.clone()]))).is_empty());
        assert_eq!(idx.expired(100).len(), 1);
    }

    #[test]
    fn per_client_limit_and_removal() {
        let hub = Hub::new(4, 100);
        let idx = Index::default();
        let (a, _) = idx.insert(sub(&hub, "c1", "t1", 100), 2).unwrap();
        idx.insert(sub(&hub, "c1", "t2", 100), 2).unwrap();
        assert_eq!(idx.insert(sub(&hub, "c1", "t3", 100), 2).unwrap_err(), LimitReached::PerClient(2));
        assert!(idx.remove_if(&a.id, |_| false).is_none());
        assert!(idx.remove(&a.id).is_some());
        assert!(idx.remove(&a.id).is_none());
        idx.insert(sub(&hub, "c1", "t3", 100), 2).unwrap();
        assert_eq!(idx.client_count(&a.client_id), 2);
        assert!(idx.recipients(&a.topic, 0, &Exclusions::default()).is_empty());
        assert_eq!(idx.counts()[ServiceKind::WebSocket.index()], 2);
    }

    #[test]
    fn issue_9_new_subscriptions_are_capped_per_principal_and_in_total() {
        let hub = Hub::new(8, 100);
        let idx = Index::default();
        let (alice, bob) = (Principal::of(b"alice"), Principal::of(b"bob"));
        let caps = |p| Caps { per_client: 100, principal: Some((p, 2)), total: 3 };
        idx.insert_capped(sub(&hub, "c1", "t1", 100), &caps(alice)).unwrap();
        idx.insert_capped(sub(&hub, "c2", "t1", 100), &caps(alice)).unwrap();
        assert_eq!(idx.room(&client("c3"), &caps(alice)), Err(LimitReached::PerPrincipal(2)));
        assert_eq!(
            idx.insert_capped(sub(&hub, "c3", "t1", 100), &caps(alice)).unwrap_err(),
            LimitReached::PerPrincipal(2)
        );
        // An update is not a new subscription.
        let (_, previous) = idx.insert_capped(sub(&hub, "c1", "t1", 200), &caps(alice)).unwrap();
        assert!(previous.is_some());
        idx.insert_capped(sub(&hub, "c3", "t1", 100), &caps(bob)).unwrap();
        assert_eq!(idx.insert_capped(sub(&hub, "c4", "t1", 100), &caps(bob)).unwrap_err(), LimitReached::Total(3));
        // Removing one of alice's frees a place for her, and one in total.
        let gone = idx.find(&client("c2"), &topic("t1"), ServiceKind::WebSocket).unwrap();
        idx.remove(&gone.id);
        idx.insert_capped(sub(&hub, "c5", "t1", 100), &caps(alice)).unwrap();
        assert_eq!(idx.len(), 3);
        // Subscriptions loaded from the store or made over a WebSocket count only in total.
        assert_eq!(
            idx.insert_capped(sub(&hub, "c6", "t1", 100), &Caps { per_client: 100, principal: None, total: 3 })
                .unwrap_err(),
            LimitReached::Total(3)
        );
    }
}
