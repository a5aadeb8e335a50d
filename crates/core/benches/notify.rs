//! The notify path's cost with and without the notification history (issue 15): nanoseconds per
//! notified topic through `PushService::notify`, for a topic nobody listens to and for one with
//! a WebSocket subscriber (its mailbox drained as the connection's task would).
//! `cargo bench -p davpush-core --bench notify`; the figures are in the README.

#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Instant;

use davpush_core::history::HistorySettings;
use davpush_core::live::{Hub, WebSocketTransport};
use davpush_core::notification::Exclusions;
use davpush_core::{ClientId, Limits, MemoryStore, Metrics, Notification, PushService, Target, Topic, Transports};

const ROUNDS: u64 = 200_000;
const TOPICS: u64 = 10_000;

fn service(history: HistorySettings) -> (PushService, Arc<Hub>) {
    let hub = Arc::new(Hub::new(256, 16));
    let transports = Transports::default().with(Arc::new(WebSocketTransport::new(hub.clone())));
    let limits = Limits { max_subscriptions_per_client: TOPICS as usize, ..Limits::default() };
    let svc = PushService::new(Arc::new(MemoryStore::default()), transports, limits, Arc::new(Metrics::default()))
        .with_history(history);
    (svc, hub)
}

fn run(name: &str, history: HistorySettings, listened: bool, rt: &tokio::runtime::Runtime) {
    let (svc, hub) = service(history);
    let conn = hub.open(0).unwrap();
    let now = davpush_core::unix_now();
    if listened {
        let client = ClientId::parse(conn.id(), 64).unwrap();
        for t in 0..TOPICS {
            let topic = Topic::parse(&format!("topic-{t}"), 64).unwrap();
            rt.block_on(svc.subscribe(client.clone(), topic, vec![Target::WebSocket(conn.clone())], None, now))
                .unwrap();
        }
    }
    let topics: Vec<Topic> = (0..TOPICS).map(|t| Topic::parse(&format!("topic-{t}"), 64).unwrap()).collect();
    let exclude = Exclusions::default();
    let mut frames = Vec::new();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        for i in 0..ROUNDS {
            let n = Notification {
                topic: topics[(i % TOPICS) as usize].clone(),
                sync_token: Some("http://dav.example/sync/1234".into()),
                trigger: None,
            };
            svc.notify(vec![n], &exclude, now);
            if listened && i % 64 == 63 {
                conn.take(&mut frames);
                frames.clear();
            }
        }
        best = best.min(start.elapsed().as_nanos() as f64 / ROUNDS as f64);
    }
    println!("{name:<48} {best:>7.0} ns per notified topic");
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let off = HistorySettings { max_entries: 0, ..HistorySettings::default() };
    let on = HistorySettings::default();
    run("no subscriber, history off", off, false, &rt);
    run("no subscriber, history on (100/topic, 100k)", on, false, &rt);
    run("one WebSocket subscriber, history off", off, true, &rt);
    run("one WebSocket subscriber, history on", on, true, &rt);
}
