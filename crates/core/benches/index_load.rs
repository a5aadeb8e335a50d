//! The routing index's inserts at start (issue 11): a million durable subscriptions of the
//! `davpush bench population` shape (every client its own id, 100,000 topics plus one of
//! 10,000, ids and client ids of UUID size), inserted one after the other as
//! `PushService::load` does, into a fresh index, with and without making room first. Prints
//! nanoseconds per insert, best of three (the heap it holds is measured by `davpush bench
//! population`, not here).
//! `cargo bench -p davpush-core --bench index_load`; the figures are in the README.

#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Instant;

use davpush_core::{Caps, ClientId, Index, ServiceKind, Subscription, SubscriptionId, Target, Topic, Triggers};

const COUNT: u64 = 1_000_000;
const TOPICS: u64 = 100_000;
const BIG: u64 = 10_000;

/// A UUID-sized string made of `n` (distinct for distinct `n`, spread like random ones).
fn uuid(prefix: &str, n: u64) -> String {
    let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{prefix}{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", h >> 32, (h >> 16) & 0xffff, h & 0xfff, n & 0xfff, n)
}

fn rows() -> Vec<Subscription> {
    let kinds = [ServiceKind::WebPush, ServiceKind::WebPush, ServiceKind::WebPush, ServiceKind::Fcm, ServiceKind::Apns];
    (0..COUNT)
        .map(|n| {
            let topic = if n < BIG { "big-topic".to_owned() } else { uuid("t", n % TOPICS) };
            Subscription {
                id: SubscriptionId::parse(&uuid("s", n), 64).unwrap(),
                client_id: ClientId::parse(&uuid("c", n), 64).unwrap(),
                topic: Topic::parse(&topic, 256).unwrap(),
                target: Target::Stored(kinds[(n % 5) as usize]),
                expires: i64::MAX,
                triggers: Triggers::ALL,
            }
        })
        .collect()
}

/// Nanoseconds per insert of a million into a fresh index (best of three); with `reserve`,
/// the index first makes room for all (as start-up does with the store's count).
fn run(reserve: bool) -> f64 {
    let caps = Caps { per_client: 1_000, principal: None, total: usize::MAX };
    let mut best = f64::MAX;
    for _ in 0..3 {
        // Made beforehand: only the inserts are timed. Sorted by id, as the store pages them.
        let mut subs = rows();
        subs.sort_unstable_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        let index = Index::default();
        let start = Instant::now();
        if reserve {
            index.reserve(COUNT as usize, COUNT as usize);
        }
        for sub in subs {
            index.insert_capped(sub, &caps).unwrap();
        }
        if reserve {
            index.shrink_to_fit();
        }
        best = best.min(start.elapsed().as_nanos() as f64 / COUNT as f64);
        assert_eq!(index.len(), COUNT as usize);
    }
    best
}

fn main() {
    println!("{:<56} {:>7.0} ns per insert", "1,000,000 inserts, the index growing as it must", run(false));
    println!("{:<56} {:>7.0} ns per insert", "1,000,000 inserts, room made first (start-up)", run(true));
}
