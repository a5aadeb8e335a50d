//! `davpush bench push-service` (issue 16): the README's command, run as printed in a fresh
//! directory, reports consistent counts (no timing is asserted: the figures are the bench's).

use std::process::Command;

/// The numbers in parentheses of the report line starting with `label`: `(N sent, N accepted,
/// N frames, N lost)`.
fn counts(text: &str, label: &str) -> [u64; 4] {
    let line =
        text.lines().find(|l| l.trim_start().starts_with(label)).unwrap_or_else(|| panic!("no {label} in:\n{text}"));
    let inner = &line[line.find('(').unwrap() + 1..line.find(')').unwrap()];
    let v: Vec<u64> = inner.split(", ").map(|p| p.split(' ').next().unwrap().parse().unwrap()).collect();
    [v[0], v[1], v[2], v[3]]
}

#[test]
fn issue_16_bench_push_service_counts_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_davpush"))
        .args(["bench", "push-service", "--clients", "200", "--senders", "8", "--secs", "2"])
        .args(["--data-dir", "bench-push-service"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("200 clients, 8 senders, 1024-byte bodies, 2 s per phase"), "{text}");
    let [sent1, accepted1, frames1, lost1] = counts(&text, "saturated:");
    assert!(sent1 > 0, "{text}");
    assert_eq!((accepted1, frames1, lost1), (sent1, sent1, 0), "every push accepted and delivered:\n{text}");
    let [sent2, accepted2, frames2, lost2] = counts(&text, "paced:");
    assert!(sent2 > 0, "{text}");
    assert_eq!((accepted2, frames2, lost2), (sent2, sent2, 0), "every push accepted and delivered:\n{text}");
    assert!(text.contains(&format!("({frames2} frames)")), "a latency for every paced frame:\n{text}");
    assert!(text.contains("refused:    none; unknown frames 0"), "{text}");
    // The Director it started is gone, and the directory cannot be reused.
    let again = Command::new(env!("CARGO_BIN_EXE_davpush"))
        .args(["bench", "push-service", "--clients", "1", "--data-dir", "bench-push-service"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success(), "a used data directory is refused");
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"));
}

#[test]
fn issue_16_bench_push_service_signs_with_vapid_when_asked() {
    // Every subscription restricted to the senders' key: a push the Director could not verify
    // would be refused (403) and show in `refused:`.
    for (mode, label) in [("reuse", "VAPID on (tokens reused)"), ("per-push", "VAPID on (a token per push)")] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_davpush"))
            .args(["bench", "push-service", "--clients", "20", "--senders", "4", "--secs", "1", "--vapid", mode])
            .args(["--data-dir", "bench-push-vapid"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains(label), "{text}");
        let [sent, accepted, frames, lost] = counts(&text, "saturated:");
        assert!(sent > 0, "{text}");
        assert_eq!((accepted, frames, lost), (sent, sent, 0), "every signed push accepted and delivered:\n{text}");
        assert!(text.contains("refused:    none; unknown frames 0"), "{text}");
        assert!(text.contains("µs per accepted push"), "the server's CPU per push is reported:\n{text}");
    }
}
