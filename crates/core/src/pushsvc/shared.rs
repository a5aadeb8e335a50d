//! The push-service operations the Director calls, for one node or a cluster
//! (`docs/protocol.md` §10.4).
//!
//! Without a [`PushDirectory`] they are the node's own ([`PushEndpoints::create`], `attach`,
//! `remove`, `accept`). With one, the directory is the truth about every push subscription:
//! any node accepts a `POST`, checks the restriction it finds there, and forwards the message
//! to the node holding the client's connection (or keeps it waiting in the directory, where the
//! node the client re-attaches on finds it). A node that holds the connection itself delivers
//! at once, without asking the directory: the fast path, and the only path of a single node.
//!
//! The races a reader may look for: a message forwarded to the former holder while the client
//! re-attaches elsewhere is forwarded once more, to the node the directory then names; one
//! still in flight after that waits in the directory until the client's next re-attach.

use std::sync::{Arc, Weak};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;

use super::{
    Accepted, Created, Entry, ForwardKind, Forwarded, Message, PushDirectory, PushEndpoints, PushError, SharedRecord,
    VecDeque, Waiting, Window, eq_ct, push_frame,
};
use crate::Topic;
use crate::live::{Connection, Pushed};

/// Where a `POST` goes, as found by [`PushEndpoints::route`].
#[derive(Debug, Clone)]
pub enum Route {
    /// To a connection of this node (or this node's waiting messages).
    Local,
    /// Through the cluster's directory: the record found there.
    Shared(SharedRecord),
}

/// SHA-256 of a secret, base64url: what the directory keeps instead of the secret.
fn digest(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes()))
}

fn unavailable(e: super::DirectoryError) -> PushError {
    tracing::warn!(error = %e, "the cluster's push-subscription directory failed");
    PushError::Unavailable
}

/// The live record of `push_id` in the directory.
async fn live_record(dir: &Arc<dyn PushDirectory>, push_id: &str, now: i64) -> Result<SharedRecord, PushError> {
    match dir.get(push_id).await.map_err(unavailable)? {
        None => Err(PushError::NotFound),
        Some(r) if r.gone || r.expires <= now => Err(PushError::Gone),
        Some(r) => Ok(r),
    }
}

fn decode_key(k: &str) -> Result<Vec<u8>, PushError> {
    let raw = URL_SAFE_NO_PAD.decode(k.trim_end_matches('=')).map_err(|_| PushError::BadKey)?;
    if raw.len() != 65 || raw[0] != 4 {
        return Err(PushError::BadKey);
    }
    Ok(raw)
}

impl PushEndpoints {
    /// Creates a push subscription attached to `conn` ([`Self::create`]) and, in a cluster,
    /// records it in the directory.
    pub async fn subscribe(
        &self,
        conn: &Arc<Connection>,
        vapid_key: Option<&str>,
        now: i64,
    ) -> Result<Created, PushError> {
        let created = self.create(conn, vapid_key, now)?;
        let Some(dir) = &self.directory else { return Ok(created) };
        let record = SharedRecord {
            secret_digest: digest(&created.secret),
            vapid_key: vapid_key.map(|k| k.trim_end_matches('=').to_owned()),
            expires: created.expires,
            gone: false,
            node: Some(dir.node_id().to_owned()),
        };
        if let Err(e) = dir.put(&created.push_id, &record).await {
            self.lock().remove(created.push_id.as_str());
            return Err(unavailable(e));
        }
        Ok(created)
    }

    /// Re-attaches `push_id` to `conn` ([`Self::attach`]); in a cluster, wherever it was made or
    /// last attached: this node becomes its holder and hands over what waited in the directory.
    pub async fn reattach(
        &self,
        push_id: &str,
        secret: &str,
        conn: &Arc<Connection>,
        now: i64,
    ) -> Result<Created, PushError> {
        let Some(dir) = &self.directory else { return self.attach(push_id, secret, conn, now) };
        let record = live_record(dir, push_id, now).await?;
        if !eq_ct(record.secret_digest.as_bytes(), digest(secret).as_bytes()) {
            return Err(PushError::Forbidden);
        }
        let vapid_key = record.vapid_key.as_deref().map(decode_key).transpose()?;
        let expires = now + self.limits.expiry_secs;
        let previous = record.node.clone();
        let record = SharedRecord { expires, node: Some(dir.node_id().to_owned()), ..record };
        dir.put(push_id, &record).await.map_err(unavailable)?;
        self.lock().insert(
            Arc::from(push_id),
            Entry {
                secret: secret.to_owned(),
                vapid_key,
                expires,
                gone: false,
                conn: Some(Arc::downgrade(conn)),
                pending: VecDeque::new(),
                window: Window::default(),
            },
        );
        if let Some(previous) = previous.filter(|n| n != dir.node_id()) {
            let moved = Forwarded { push_id: push_id.to_owned(), what: ForwardKind::Moved };
            if let Err(e) = dir.forward(&previous, &moved).await {
                tracing::warn!(error = %e, node = %previous, "cannot tell the former holder of a push subscription");
            }
        }
        let waiting = dir.take(push_id).await.map_err(unavailable)?;
        let mut left = waiting.into_iter().filter(|w| w.expires >= now).peekable();
        while let Some(w) = left.peek() {
            let Ok(key) = Topic::parse(&w.key, usize::MAX) else {
                left.next();
                continue;
            };
            if !matches!(conn.push(&key, &Bytes::from(w.frame.clone())), Pushed::Queued | Pushed::Coalesced) {
                break;
            }
            left.next();
        }
        for w in left {
            dir.queue(push_id, &w, self.limits.max_pending, now).await.map_err(unavailable)?;
        }
        Ok(Created {
            push_id: push_id.to_owned(),
            endpoint: self.endpoint(push_id),
            secret: secret.to_owned(),
            expires,
        })
    }

    /// Deletes `push_id` ([`Self::remove`]); in a cluster, on every node.
    pub async fn unsubscribe(&self, push_id: &str, secret: &str, now: i64) -> Result<(), PushError> {
        let Some(dir) = &self.directory else { return self.remove(push_id, secret, now) };
        let record = live_record(dir, push_id, now).await?;
        if !eq_ct(record.secret_digest.as_bytes(), digest(secret).as_bytes()) {
            return Err(PushError::Forbidden);
        }
        let holder = record.node.clone();
        // Answer 410 for as long as senders may reasonably retry.
        let ended = SharedRecord { gone: true, node: None, expires: record.expires.max(now + 86400), ..record };
        dir.put(push_id, &ended).await.map_err(unavailable)?;
        dir.take(push_id).await.map_err(unavailable)?;
        self.end_local(push_id, now);
        if let Some(holder) = holder.filter(|n| n != dir.node_id()) {
            let ended = Forwarded { push_id: push_id.to_owned(), what: ForwardKind::Ended };
            if let Err(e) = dir.forward(&holder, &ended).await {
                tracing::warn!(error = %e, node = %holder, "cannot tell the holder of a push subscription it ended");
            }
        }
        Ok(())
    }

    /// Where a message for `push_id` goes, and the application-server key the subscription is
    /// restricted to (to be checked before [`Self::deliver`]).
    pub async fn route(&self, push_id: &str, now: i64) -> Result<(Route, Option<Vec<u8>>), PushError> {
        {
            let entries = self.lock();
            match entries.get(push_id) {
                Some(e) if e.gone || e.expires <= now => return Err(PushError::Gone),
                Some(e) if self.directory.is_none() || e.conn.as_ref().is_some_and(|w| w.strong_count() > 0) => {
                    return Ok((Route::Local, e.vapid_key.clone()));
                }
                None if self.directory.is_none() => return Err(PushError::NotFound),
                _ => {}
            }
        }
        let dir = self.directory.as_ref().expect("only a cluster gets here");
        let record = live_record(dir, push_id, now).await?;
        // The directory holds only keys that were checked when the subscription was made.
        let key = record.vapid_key.as_deref().map(decode_key).transpose().map_err(|_| PushError::Unavailable)?;
        Ok((Route::Shared(record), key))
    }

    /// Accepts `msg` for `push_id` along `route`: hands it to the connection, forwards it to the
    /// node holding it, or keeps it waiting within its TTL.
    pub async fn deliver(&self, push_id: &str, route: Route, msg: Message, now: i64) -> Result<Accepted, PushError> {
        let Some(dir) = &self.directory else { return self.accept(push_id, msg, now) };
        let record = match route {
            Route::Local => {
                let (accepted, waiting) = self.accept_local(push_id, msg, now, false)?;
                if let Some(w) = waiting {
                    dir.queue(push_id, &w, self.limits.max_pending, now).await.map_err(unavailable)?;
                }
                return Ok(accepted);
            }
            Route::Shared(record) => record,
        };
        let limit = self.limits.per_subscription_per_minute;
        self.remote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(Arc::from(push_id), now, limit)
            .map_err(PushError::RateLimited)?;
        let ttl = msg.ttl.clamp(0, self.limits.max_ttl_secs);
        let (message_id, key, frame) = push_frame(push_id, &msg);
        let frame = String::from_utf8(frame.to_vec()).expect("frames are JSON");
        let message = Waiting { key: key.as_str().to_owned(), topic: msg.topic, frame, expires: now + ttl };
        match record.node.as_deref() {
            Some(holder) if holder != dir.node_id() => {
                let f = Forwarded { push_id: push_id.to_owned(), what: ForwardKind::Deliver { message, hops: 0 } };
                dir.forward(holder, &f).await.map_err(unavailable)?;
                Ok(Accepted { message_id, ttl, delivered: true })
            }
            _ => {
                if ttl > 0 {
                    dir.queue(push_id, &message, self.limits.max_pending, now).await.map_err(unavailable)?;
                }
                Ok(Accepted { message_id, ttl, delivered: false })
            }
        }
    }

    /// Applies what another node forwarded to this one (the holder of `forwarded.push_id`).
    pub async fn receive(&self, forwarded: Forwarded, now: i64) {
        let Some(dir) = &self.directory else { return };
        let push_id = forwarded.push_id.as_str();
        match forwarded.what {
            ForwardKind::Ended => self.end_local(push_id, now),
            ForwardKind::Moved => {
                self.lock().remove(push_id);
            }
            ForwardKind::Deliver { message, hops } => {
                if self.hand_to_connection(push_id, &message) || message.expires <= now {
                    return;
                }
                // The client may have re-attached elsewhere meanwhile.
                if hops < 1
                    && let Ok(Some(r)) = dir.get(push_id).await
                    && !r.gone
                    && let Some(holder) = r.node.filter(|n| n != dir.node_id())
                {
                    let f = Forwarded {
                        push_id: push_id.to_owned(),
                        what: ForwardKind::Deliver { message, hops: hops + 1 },
                    };
                    if let Err(e) = dir.forward(&holder, &f).await {
                        tracing::warn!(error = %e, node = %holder, "cannot forward a push message");
                    }
                    return;
                }
                if let Err(e) = dir.queue(push_id, &message, self.limits.max_pending, now).await {
                    tracing::warn!(error = %e, "a forwarded push message for an offline client was lost");
                }
            }
        }
    }

    /// Messages waiting for `push_id` to be re-attached, on this node or in the cluster.
    pub async fn waiting(&self, push_id: &str) -> Result<usize, PushError> {
        match &self.directory {
            None => Ok(self.pending(push_id)),
            Some(dir) => dir.waiting(push_id).await.map_err(unavailable),
        }
    }

    /// Pushes `message` to the live connection `push_id` is attached to on this node.
    fn hand_to_connection(&self, push_id: &str, message: &Waiting) -> bool {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(push_id).filter(|e| !e.gone) else { return false };
        let Some(conn) = entry.conn.as_ref().and_then(Weak::upgrade) else { return false };
        let Ok(key) = Topic::parse(&message.key, usize::MAX) else { return false };
        if matches!(conn.push(&key, &Bytes::from(message.frame.clone())), Pushed::Queued | Pushed::Coalesced) {
            return true;
        }
        entry.conn = None;
        false
    }

    /// Marks the local copy of `push_id` deleted, if this node has one.
    fn end_local(&self, push_id: &str, now: i64) {
        if let Some(entry) = self.lock().get_mut(push_id) {
            entry.gone = true;
            entry.conn = None;
            entry.pending.clear();
            entry.expires = entry.expires.max(now + 86400);
        }
    }
}
