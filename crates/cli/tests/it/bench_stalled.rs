//! `davpush bench --stalled` (issue 17): the stalled connections subscribe, then read nothing;
//! they are counted in the report and left out of the expected frames, so every other
//! connection's frames still add up. Counts only: no figure is asserted.

use crate::procs::{DAVPUSH, director};
use std::process::Command;

#[test]
fn issue_17_bench_stalled_connections_are_left_out_of_the_expected_frames() {
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
        .args(["--connections", "20", "--topics", "2", "--rate", "10", "--duration", "1"])
        .args(["--idle-secs", "0", "--fanout-rounds", "1", "--stalled", "3", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["connections"]["connected"], 20, "{v}");
    assert_eq!(v["connections"]["stalled"], 3, "{v}");
    // Each of the 10 notifications goes to one topic of 10 subscribers (connections 17, 18 and
    // 19 stalled: two of topic 1, one of topic 0), so 10 × 10 - 5 × 3 frames are expected.
    let st = &v["sustained"];
    assert_eq!(st["expected_frames"], 85, "{v}");
    assert_eq!(st["received_frames"], 85, "every reading connection got its frames: {v}");
    assert!(stderr.contains("3 of them stalled"), "{stderr}");
}
