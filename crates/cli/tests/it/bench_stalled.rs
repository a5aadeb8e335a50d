//! `davpush bench --stalled` (issue 17): the stalled connections subscribe, then read nothing;
//! they are counted in the report and left out of the expected frames, so every other
//! connection's frames still add up. Counts only: no figure is asserted.

use crate::procs::{DAVPUSH, director};
use std::process::Command;

/// `davpush bench --json` with `args` (split at spaces) against a Director of its own, with
/// that Director's token and key files: its JSON report and its stderr, once it succeeded.
fn bench(args: &str) -> (serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = director(&data);
    let out = Command::new(DAVPUSH)
        .args(["bench", "--url", &server.url(), "--notify-token-file"])
        .arg(data.join("notify-token"))
        .arg("--subscription-token-file")
        .arg(data.join("subscription-token"))
        .arg("--grant-key-file")
        .arg(data.join("grant-key"))
        .args(args.split_whitespace())
        .arg("--json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

#[test]
fn issue_17_bench_stalled_connections_are_left_out_of_the_expected_frames() {
    let (v, stderr) =
        bench("--connections 20 --topics 2 --rate 10 --duration 1 --idle-secs 0 --fanout-rounds 1 --stalled 3");
    assert_eq!(v["connections"]["connected"], 20, "{v}");
    assert_eq!(v["connections"]["stalled"], 3, "{v}");
    // Each of the 10 notifications goes to one topic of 10 subscribers (connections 17, 18 and
    // 19 stalled: two of topic 1, one of topic 0), so 10 × 10 - 5 × 3 frames are expected.
    let st = &v["sustained"];
    assert_eq!(st["expected_frames"], 85, "{v}");
    assert_eq!(st["received_frames"], 85, "every reading connection got its frames: {v}");
    assert!(stderr.contains("3 of them stalled"), "{stderr}");
}

/// `--stalled-rcvbuf` and `--stalled-all-topics`: the stalled connection gets a small receive
/// buffer and every topic's frames, and the report says how it ended.
#[test]
fn issue_17_bench_stalled_connection_with_a_small_buffer_is_reported() {
    let (v, stderr) = bench(
        "--connections 10 --topics 3 --rate 30 --duration 1 --idle-secs 0 --fanout-rounds 1 --stalled 1 --stalled-rcvbuf 4096 --stalled-all-topics --client-threads 1",
    );
    let c = &v["connections"];
    assert_eq!(c["stalled"], 1, "{v}");
    assert!(c["stalled_rcvbuf_bytes"].as_u64().is_some_and(|b| b >= 4096), "{v}");
    let ended = c["stalled_ended"].as_object().unwrap();
    assert_eq!(ended.values().map(|n| n.as_u64().unwrap()).sum::<u64>(), 1, "{v}");
    // 30 notifications, 10 per topic; connections 0..=8 read (3 per topic): 90 frames.
    assert_eq!(v["sustained"]["expected_frames"], 90, "{v}");
    assert_eq!(v["sustained"]["received_frames"], 90, "{v}");
    assert!(v["sustained"]["client_cpu_us_per_frame"].as_f64().is_some_and(|us| us > 0.0), "{v}");
    assert!(stderr.contains("how the stalled connections ended"), "{stderr}");
}
