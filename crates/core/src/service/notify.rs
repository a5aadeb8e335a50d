//! The notify path: a Notify API request is validated into notifications, which are handed to
//! the transports without awaiting.

use std::sync::Arc;

use davpush_proto::{NotifyRequest, NotifyTopic};

use crate::fanout::{ClusterEvent, ClusterMessage, WireNotification};
use crate::history::Position;
use crate::notification::Exclusions;
use crate::service::History;
use crate::{Notification, PushMessage, PushService, ServiceError, ServiceKind, SubscriptionId, Topic};

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

/// The topics of a notify that no node had a subscriber of (the Notify API's `unheard`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unheard {
    /// These topics (in request order, each once) had no unexpired subscription on any node.
    Known(Vec<Topic>),
    /// A node of a cluster could not ask the presence registry: no topic may be named.
    Unknown,
}

impl PushService {
    /// The topics of `notifications` without an unexpired subscription in this node's index
    /// (every durable subscription of the cluster, and this node's WebSocket subscriptions),
    /// each once. Candidates for [`PushService::unheard`]; take them before delivering.
    pub fn unheard_here(&self, notifications: &[Notification], now: i64) -> Vec<Topic> {
        let mut seen = std::collections::HashSet::new();
        notifications
            .iter()
            .filter(|n| !self.index.has_subscribers(&n.topic, now) && seen.insert(n.topic.as_str()))
            .map(|n| n.topic.clone())
            .collect()
    }

    /// Of the topics [`PushService::unheard_here`] found, those that no other node has a
    /// WebSocket subscriber of either (asks the presence registry in a cluster).
    pub async fn unheard(&self, here: Vec<Topic>) -> Unheard {
        if here.is_empty() {
            return Unheard::Known(here);
        }
        let Some(presence) = &self.presence else { return Unheard::Known(here) };
        match presence.heard_elsewhere(&here).await {
            Some(heard) if heard.len() == here.len() => {
                Unheard::Known(here.into_iter().zip(heard).filter(|(_, h)| !h).map(|(t, _)| t).collect())
            }
            _ => Unheard::Unknown,
        }
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
        let shared = matches!(self.history, History::Shared(_));
        if let Some(f) = &self.fanout {
            let event = ClusterEvent::Notify {
                notifications: notifications
                    .iter()
                    .map(|n| WireNotification {
                        topic: n.topic.to_string(),
                        sync_token: n.sync_token.clone(),
                        trigger: n.trigger,
                    })
                    .collect(),
                exclude: exclude.ids().iter().map(ToString::to_string).collect(),
                positions: Vec::new(),
            };
            if shared {
                // Positioned where the history lives, and back to every node's live
                // connections (this one's too) in the history's order.
                let message = ClusterMessage { node: f.node_id().to_owned(), event };
                f.publish_positioned(message);
            } else {
                self.publish(event);
            }
        }
        let reach = if shared { Reach::Durable } else { Reach::All };
        self.deliver(notifications, exclude, now, reach, &[])
    }

    /// Hands notifications to the transports `reach` names; `positions` (one per notification,
    /// or none) were assigned by the cluster's history. Without them, live deliveries of a
    /// node with a history in memory get their positions there.
    pub(super) fn deliver(
        &self,
        notifications: Vec<Notification>,
        exclude: &Exclusions,
        now: i64,
        reach: Reach,
        positions: &[Position],
    ) -> NotifyReport {
        let mut report = NotifyReport::default();
        let now_ms = unix_now_ms(now);
        for (i, n) in notifications.into_iter().enumerate() {
            report.topics += 1;
            if reach != Reach::Live {
                self.metrics.notifications.inc();
                self.metrics.recent.notified(&n.topic);
            }
            let recipients = self.index.recipients_for(&n.topic, now, exclude, n.trigger);
            let records = positions.is_empty()
                && reach != Reach::Durable
                && matches!(&self.history, History::Local(h) if h.enabled());
            if recipients.is_empty() && !records {
                continue;
            }
            let mut message = PushMessage::new(n);
            if let Some(p) = positions.get(i) {
                message = message.at(p.clone());
            }
            let dispatch = |message: &Arc<PushMessage>, live: bool, report: &mut NotifyReport| {
                for (kind, subs) in &recipients {
                    if live != (*kind == ServiceKind::WebSocket) {
                        continue;
                    }
                    let Some(t) = self.transports.get(*kind) else {
                        continue;
                    };
                    report.addressed[kind.index()] += subs.len() as u64;
                    // Durable subscribers held as routing only: their targets are read from the
                    // store off this path (`targets`).
                    let d = if !live && subs.iter().any(|s| s.target.is_stored_only()) {
                        let (stored, held): (Vec<_>, Vec<_>) =
                            subs.iter().cloned().partition(|s| s.target.is_stored_only());
                        self.fetch_and_dispatch(message, *kind, stored, now);
                        if held.is_empty() {
                            continue;
                        }
                        t.dispatch(message, &held)
                    } else {
                        t.dispatch(message, subs)
                    };
                    self.metrics.delivered(*kind, "queued", d.queued);
                    self.metrics.delivered(*kind, "coalesced", d.coalesced);
                    self.metrics.delivered(*kind, "dropped", d.dropped);
                    self.metrics.delivered(*kind, "sent", d.sent);
                }
            };
            let message = match (&self.history, reach) {
                // Every notification is recorded, with or without live subscribers now: a
                // client that is reconnecting has none at this moment.
                (History::Local(h), _) if records => {
                    let mut out = None;
                    h.record(message, now_ms, |m| {
                        dispatch(m, true, &mut report);
                        out = Some(m.clone());
                    });
                    match out {
                        Some(m) => m,
                        None => continue,
                    }
                }
                _ => {
                    let m = Arc::new(message);
                    if reach != Reach::Durable {
                        dispatch(&m, true, &mut report);
                    } else {
                        // This node's live subscribers get it back through the cluster's
                        // history: addressed all the same.
                        for (kind, subs) in recipients.iter().filter(|(k, _)| *k == ServiceKind::WebSocket) {
                            report.addressed[kind.index()] += subs.len() as u64;
                        }
                    }
                    m
                }
            };
            if reach != Reach::Live {
                dispatch(&message, false, &mut report);
            }
        }
        report
    }
}

/// Which transports a delivery reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// All (a notify received by a single node).
    All,
    /// Durable subscriptions only (a notify received by a node whose live connections are
    /// served through the cluster's history).
    Durable,
    /// Live connections of this process only (a notification from the cluster).
    Live,
}

/// Milliseconds for the history: the clock's, when `now` is the current second (tests pass
/// made-up seconds, which are taken as they are).
fn unix_now_ms(now: i64) -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    if ms / 1000 == now.max(0) as u64 { ms } else { now.max(0) as u64 * 1000 }
}
