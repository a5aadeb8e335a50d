//! Issue 15's first unmeasured figure: the in-memory notification history's heap bytes per
//! kept notification at `max_entries` = 100,000, counted by a global allocator that sums what
//! is allocated and freed (no estimate from type sizes). Topics are 22 characters (the
//! gateway's), sync-tokens 60 (a URL like Radicale's). Two shapes: 100,000 notifications of
//! 10,000 topics (10 each), and 100,000 topics notified once each (the per-topic log dominates).
//! Then the same after each notification's positioned `notify` frame and Server-Sent Event were
//! made (they are made once a resuming WebSocket client or an SSE stream takes it, and kept
//! with it). `cargo bench -p davpush-core --bench history_memory`; the figures are in the README.

#![allow(missing_docs, clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use davpush_core::history::{HistorySettings, MemoryHistory};
use davpush_core::{Framing, Notification, PushMessage, Topic};

/// Bytes currently allocated on the heap.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const ENTRIES: usize = 100_000;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn measure(name: &str, topics: usize) {
    let settings = HistorySettings { per_topic: 100, max_age_ms: 600_000, max_entries: ENTRIES };
    let names: Vec<Topic> = (0..topics).map(|t| Topic::parse(&format!("{t:0>22}"), 64).unwrap()).collect();
    let before = live();
    let history = MemoryHistory::new(settings);
    let mut kept: Vec<Arc<PushMessage>> = Vec::with_capacity(ENTRIES);
    let kept_vec = live() - before;
    let now = 1_767_225_600_000;
    for i in 0..ENTRIES {
        let n = Notification {
            topic: names[i % topics].clone(),
            sync_token: Some(format!("http://radicale.org/ns/sync/{i:0>32}")),
            trigger: None,
        };
        history.record(PushMessage::new(n), now, |m| kept.push(m.clone()));
    }
    assert_eq!(history.len(), ENTRIES);
    let recorded = live() - before - kept_vec;
    for m in &kept {
        m.frame(Framing::WebSocketPositions);
        m.frame(Framing::Sse);
    }
    let framed = live() - before - kept_vec;
    drop(kept);
    println!(
        "{name:<40} {:>6.0} bytes per entry, {:>6.0} with its resume frames ({:.1} MB / {:.1} MB)",
        recorded as f64 / ENTRIES as f64,
        framed as f64 / ENTRIES as f64,
        recorded as f64 / 1e6,
        framed as f64 / 1e6,
    );
    drop(history);
}

fn main() {
    println!("in-memory history, {ENTRIES} entries (heap bytes counted by the allocator)");
    measure("10,000 topics, 10 notifications each", 10_000);
    measure("100,000 topics, 1 notification each", 100_000);
}
