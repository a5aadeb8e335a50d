//! `davpush bench fanout` (issue 17): the Director next to the naive broadcast server, both
//! started by the bench itself and measured by the same load tool. Figures are not asserted
//! (benchmarks measure, tests check): the test checks that both servers delivered every frame
//! and that every figure the README quotes is reported.

use std::process::Command;

/// The command the README prints, run as printed in a fresh directory.
pub(crate) const README_COMMAND: &str =
    "davpush bench fanout --connections 300 --rounds 2 --runs 1 --data-dir bench-fanout";

#[test]
fn issue_17_bench_fanout_measures_the_director_and_the_baseline_alike() {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<&str> = README_COMMAND.split_whitespace().skip(1).collect();
    let out =
        Command::new(env!("CARGO_BIN_EXE_davpush")).args(&args).arg("--json").current_dir(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for server in ["davpush", "baseline"] {
        let s = &v[server];
        assert_eq!(s["frames_expected"], 600, "{server}: {v}");
        assert_eq!(s["frames_received"], 600, "{server}: every connection got every round's frame: {v}");
        let cpu = s["server_cpu_us_per_frame"].as_f64().unwrap_or(0.0);
        assert!(cpu > 0.0, "{server}: the server's CPU time is accounted: {v}");
        assert!(s["bytes_per_idle_connection"].is_number(), "{server}: {v}");
        assert!(s["fanout_last_frame_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{server}: {v}");
    }
    assert!(v["cpu_ratio"].as_f64().is_some_and(|r| r > 0.0), "{v}");
    // The human-readable table goes to stderr with --json.
    for expected in ["server CPU/frame", "davpush / baseline server CPU per frame"] {
        assert!(stderr.contains(expected), "`{expected}` missing in:\n{stderr}");
    }
    // Both servers were stopped: nothing listens on the logged addresses any more.
    for server in ["davpush-1", "baseline-1"] {
        let log = std::fs::read_to_string(dir.path().join("bench-fanout").join(server).join("server.log")).unwrap();
        let addr = log.lines().find_map(|l| l.split("addr=").nth(1)).unwrap().split_whitespace().next().unwrap();
        assert!(std::net::TcpStream::connect(addr).is_err(), "{server} still listens on {addr}");
    }
    let again = Command::new(env!("CARGO_BIN_EXE_davpush")).args(&args).current_dir(dir.path()).output().unwrap();
    assert!(!again.status.success(), "a used data directory is refused");
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"));
}
