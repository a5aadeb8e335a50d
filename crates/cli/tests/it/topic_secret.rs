//! Issue 12, item 2: `davpush notify` and `davpush topic` never create the topic secret (only
//! the gateway does); without one they fail with exit 66, naming the path they looked in.

use std::path::Path;
use std::process::{Command, Output};

/// Runs the real binary in `cwd` without the harness's own `DAVPUSH_*` variables.
fn davpush(cwd: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_davpush"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("DAVPUSH_")) {
        cmd.env_remove(k);
    }
    cmd.current_dir(cwd).args(args).output().unwrap()
}

/// Every file and directory under `dir`.
fn entries(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.display().to_string());
        if p.is_dir() {
            out.extend(entries(&p));
        }
    }
    out
}

#[test]
fn issue_12_notify_and_topic_create_no_topic_secret_and_exit_66() {
    let dir = tempfile::tempdir().unwrap();
    let abs = dir.path().join("gateway-data");
    let abs_s = abs.display().to_string();
    let rel = "davpush-data/topic-secret".to_owned();
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["topic", "/alice/calendar/"], rel.clone()),
        (vec!["notify", "--collection", "/alice/calendar/"], rel.clone()),
        (vec!["notify", "--item", "/alice/calendar/e.ics"], rel),
        (vec!["topic", "--data-dir", &abs_s, "/alice/calendar/"], format!("{abs_s}/topic-secret")),
        (vec!["notify", "--data-dir", &abs_s, "--collection", "/alice/calendar/"], format!("{abs_s}/topic-secret")),
    ];
    for (args, path) in cases {
        let out = davpush(dir.path(), &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(66), "{args:?}: {stderr}");
        assert!(stderr.contains(&format!("no topic secret in {path}")), "{args:?} names the path: {stderr}");
        assert!(stderr.contains("davpush gateway"), "{args:?} says how to fix it: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed a topic: {}", String::from_utf8_lossy(&out.stdout));
        assert_eq!(entries(dir.path()), Vec::<String>::new(), "{args:?} created files");
    }

    // `--topic` needs no secret: it gets as far as the Director's notify token.
    let out = davpush(dir.path(), &["notify", "--topic", "t"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("notify-token"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(entries(dir.path()), Vec::<String>::new());

    // The help lists the exit code.
    for sub in ["topic", "notify"] {
        let out = davpush(dir.path(), &[sub, "--help"]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("66 no topic secret"), "{sub} --help");
    }
}

#[test]
fn issue_12_topic_uses_the_secret_the_gateway_made() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let (key, created) = davpush_gateway::topic::TopicKey::load_or_create(&data.join("topic-secret")).unwrap();
    assert!(created);
    let out = davpush(dir.path(), &["topic", "--data-dir", &data.display().to_string(), "/alice/calendar/"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), key.topic("/alice/calendar/").unwrap());
}
