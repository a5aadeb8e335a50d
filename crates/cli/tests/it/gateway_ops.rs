//! Issue 13, gateway observability, with the real binary: `davpush gateway --print-example-config`,
//! `--dump-config`, the `DAVPUSH_GATEWAY__<KEY>` variables, and `--log-format json` with its
//! access lines.

use std::collections::BTreeMap;
use std::path::Path;

use crate::operator::{Running, command, run, text};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn env(vars: &[(&str, &str)]) -> BTreeMap<String, String> {
    vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The Director's secrets in `data` (what the gateway reads), made by `davpush vapid`.
fn director_secrets(data: &Path) {
    let out = run(&["vapid", "--data-dir", &data.display().to_string()], &BTreeMap::new());
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn issue_13_gateway_print_example_config_is_the_example_file() {
    let out = run(&["gateway", "--print-example-config"], &BTreeMap::new());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let example = std::fs::read_to_string(Path::new(ROOT).join("examples/gateway.toml")).unwrap();
    assert_eq!(text(&out.stdout), example);
}

#[test]
fn issue_13_gateway_dump_config_layers_variables_redacts_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    director_secrets(&data);
    let d = data.display().to_string();
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, "timeout_secs = 5\nmax_sockets_per_user = 3\nlisten = \"127.0.0.1:9\"\n").unwrap();
    let vars = env(&[
        ("DAVPUSH_GATEWAY_CONFIG", &file.display().to_string()),
        ("DAVPUSH_GATEWAY__UPSTREAM", "http://user:hunter2@127.0.0.1:5232/"),
        ("DAVPUSH_GATEWAY__TIMEOUT_SECS", "30"),
        ("DAVPUSH_GATEWAY__UPSTREAM_HEADERS", r#"{ "X-Upstream-Secret" = "hunter3" }"#),
        // The Director's keys in the same environment are not the gateway's.
        ("DAVPUSH_SERVER__LISTEN", "127.0.0.1:1"),
    ]);
    let out = run(&["gateway", "--dump-config", "--data-dir", &d, "--listen", "127.0.0.1:0"], &vars);
    let dump = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: toml::Table = toml::from_str(&dump).unwrap();
    assert_eq!(v["timeout_secs"].as_integer(), Some(30), "the variable wins over the file: {dump}");
    assert_eq!(v["max_sockets_per_user"].as_integer(), Some(3), "{dump}");
    assert_eq!(v["listen"].as_str(), Some("127.0.0.1:0"), "the flag wins: {dump}");
    assert_eq!(v["upstream"].as_str(), Some("http://***@127.0.0.1:5232/"), "{dump}");
    assert!(!dump.contains("hunter2") && !dump.contains("hunter3"), "{dump}");
    assert!(!data.join("topic-secret").exists(), "--dump-config created the topic secret");
    // The Director, in the same environment, ignores the gateway's variables.
    let out = run(&["serve", "--dump-config", "--data-dir", &d], &env(&[("DAVPUSH_GATEWAY__UPSTREAM", "x")]));
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Misspelt, mistyped, invalid: exit 64 naming the variable, nothing printed.
    for (name, value) in [
        ("DAVPUSH_GATEWAY__LISTN", "127.0.0.1:0"),
        ("DAVPUSH_GATEWAY__TIMEOUT_SECS", "soon"),
        ("DAVPUSH_GATEWAY__TIMEOUT_SECS", "0"),
        ("DAVPUSH_GATEWAY__UPSTREAM", "ftp://127.0.0.1/"),
    ] {
        let vars = env(&[("DAVPUSH_GATEWAY__UPSTREAM", "http://127.0.0.1:5232/"), (name, value)]);
        let out = run(&["gateway", "--dump-config", "--data-dir", &d], &vars);
        assert_eq!(out.status.code(), Some(64), "{name}={value}: {}", text(&out.stdout));
        assert!(text(&out.stderr).contains(name), "{name}={value}: {}", text(&out.stderr));
        assert!(out.stdout.is_empty(), "{name}={value}");
    }
    let out = run(&["gateway", "--dump-config", "--data-dir", &d], &BTreeMap::new());
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("`upstream`"), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_gateway_json_logs_are_one_object_per_line_and_access_lines_hold_no_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.display().to_string();
    let (dport, gport) = (crate::documented::free_port(), crate::documented::free_port());
    let director = Running::start(command(
        &["serve", "--listen", &format!("127.0.0.1:{dport}"), "--data-dir", &d],
        &BTreeMap::new(),
    ));
    director.wait_for("Push Director listening");
    // The Director is the upstream here too: an HTTP server that answers GET /healthz.
    let director_url = format!("http://127.0.0.1:{dport}");
    let mut gw = command(
        &["gateway", "--log-format", "json", "--data-dir", &d, "--director", &director_url],
        &env(&[("DAVPUSH_GATEWAY__UPSTREAM", &format!("{director_url}/")), ("RUST_LOG", "debug")]),
    );
    gw.args(["--listen", &format!("127.0.0.1:{gport}")]);
    let gateway = Running::start(gw);
    gateway.wait_for("WebDAV gateway listening");

    let base = format!("http://127.0.0.1:{gport}");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let status = |r: reqwest::Response| r.status().as_u16();
    let r =
        http.get(format!("{base}/healthz?access_token=tok-never-logged")).basic_auth("alice", Some("pw-never-logged"));
    assert_eq!(status(r.send().await.unwrap()), 200);
    let r = http.get(format!("{base}/.davpush/healthz")).bearer_auth("bearer-never-logged");
    assert_eq!(status(r.send().await.unwrap()), 200);
    let r = http.get(format!("{base}/.davpush/ws?ticket=ticket-never-logged"));
    assert_eq!(status(r.send().await.unwrap()), 401);
    let r = http
        .delete(format!("{base}/.davpush/registrations/reg-token-never-logged"))
        .basic_auth("bob", Some("pw2-never-logged"));
    assert_eq!(status(r.send().await.unwrap()), 404);
    let (log, status) = gateway.terminate();
    assert!(status.success(), "{log}");

    let mut access = Vec::new();
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\nlog:\n{log}"));
        assert!(v.is_object(), "{line}");
        if v["target"] == "davpush_gateway::access" {
            access.push(v["fields"].clone());
        }
    }
    for secret in [
        "pw-never-logged",
        "tok-never-logged",
        "bearer-never-logged",
        "ticket-never-logged",
        "reg-token-never-logged",
        "pw2-never-logged",
    ] {
        assert!(!log.contains(secret), "{secret} is in the log:\n{log}");
    }
    assert_eq!(access.len(), 4, "one access line per request:\n{log}");
    let find = |path: &str| {
        access.iter().find(|a| a["path"] == path).unwrap_or_else(|| panic!("no access line of {path}:\n{log}")).clone()
    };
    let first = find("/healthz");
    assert_eq!(
        (first["method"].as_str(), first["status"].as_u64(), first["user"].as_str()),
        (Some("GET"), Some(200), Some("alice"))
    );
    assert!(first["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{first}");
    assert_eq!(find("/.davpush/healthz")["user"], "-", "a bearer token names no user");
    assert_eq!(find("/.davpush/ws")["status"], 401);
    let deleted = find("/.davpush/registrations/***");
    assert_eq!((deleted["method"].as_str(), deleted["user"].as_str()), (Some("DELETE"), Some("bob")));
    director.terminate();
}
