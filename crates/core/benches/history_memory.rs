//! Issue 15's first unmeasured figure: the in-memory notification history's memory per kept
//! notification at `max_entries` = 100,000, as the growth of the process's resident memory
//! (`VmRSS`, so the allocator's own overhead counts) while 100,000 notifications are recorded,
//! each shape in a fresh process. Topics are 22 characters (the gateway's), sync-tokens 60 (a
//! URL like Radicale's). Two shapes: 100,000 notifications of 10,000 topics (10 each), and
//! 100,000 topics notified once each (the per-topic log dominates). Then the same after each
//! notification's positioned `notify` frame and Server-Sent Event were made (made once a
//! resuming WebSocket client or an SSE stream takes it, and kept with it).
//! `cargo bench -p davpush-core --bench history_memory`; the figures are in the README.

#![allow(missing_docs, clippy::unwrap_used)]

use std::process::Command;
use std::sync::Arc;

use davpush_core::history::{HistorySettings, MemoryHistory};
use davpush_core::{Framing, Notification, PushMessage, Topic};

const ENTRIES: usize = 100_000;
const SHAPES: &[(&str, usize)] =
    &[("10,000 topics, 10 notifications each", 10_000), ("100,000 topics, 1 notification each", 100_000)];

/// Resident memory of this process, bytes.
fn rss() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim_end_matches("kB").trim().parse().unwrap();
    kb * 1024.0
}

fn measure(name: &str, topics: usize) {
    let settings = HistorySettings { per_topic: 100, max_age_ms: 600_000, max_entries: ENTRIES };
    let names: Vec<Topic> = (0..topics).map(|t| Topic::parse(&format!("{t:0>22}"), 64).unwrap()).collect();
    let mut kept: Vec<Arc<PushMessage>> = Vec::with_capacity(ENTRIES);
    // Touches the vector's pages now, so that only the history's growth is measured below.
    let placeholder =
        Arc::new(PushMessage::new(Notification { topic: names[0].clone(), sync_token: None, trigger: None }));
    kept.resize(ENTRIES, placeholder);
    kept.clear();
    let history = MemoryHistory::new(settings);
    let now = 1_767_225_600_000;
    let before = rss();
    for i in 0..ENTRIES {
        let n = Notification {
            topic: names[i % topics].clone(),
            sync_token: Some(format!("http://radicale.org/ns/sync/{i:0>32}")),
            trigger: None,
        };
        history.record(PushMessage::new(n), now, |m| kept.push(m.clone()));
    }
    let recorded = rss() - before;
    assert_eq!(history.len(), ENTRIES);
    for m in &kept {
        m.frame(Framing::WebSocketPositions);
        m.frame(Framing::Sse);
    }
    let framed = rss() - before;
    println!(
        "{name:<40} {:>5.0} bytes per entry, {:>5.0} with its resume frames ({:.1} MB / {:.1} MB)",
        recorded / ENTRIES as f64,
        framed / ENTRIES as f64,
        recorded / 1e6,
        framed / 1e6,
    );
}

fn main() {
    if let Ok(shape) = std::env::var("DAVPUSH_BENCH_SHAPE") {
        let (name, topics) = SHAPES[shape.parse::<usize>().unwrap()];
        measure(name, topics);
        return;
    }
    println!("in-memory history, {ENTRIES} entries (resident memory growth, one process per shape)");
    for i in 0..SHAPES.len() {
        let status =
            Command::new(std::env::current_exe().unwrap()).env("DAVPUSH_BENCH_SHAPE", i.to_string()).status().unwrap();
        assert!(status.success());
    }
}
