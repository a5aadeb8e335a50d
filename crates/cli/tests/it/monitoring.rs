//! Issue 13: the Grafana dashboard and the Prometheus alert rules of `packaging/monitoring/`
//! cannot drift from what davpush exposes.
//!
//! - Every metric their PromQL selects (a small tokenizer, tested on tricky expressions below)
//!   is in `GET /metrics` of the process it belongs to: a real Director (`davpush serve`, in a
//!   cluster on PostgreSQL and Redis so that it has every family), gateway (`davpush gateway` in
//!   front of Radicale) and relay (`davpush relay serve` in front of the local FCM), after a
//!   little traffic; and every family they expose has a panel.
//! - The rules pass `promtool check rules`; each has a `for:`, a severity, a summary and a
//!   runbook that is a heading of docs/operations.md ("What to watch"), which explains every
//!   rule and no other; they scrape jobs of `packaging/monitoring/prometheus.yml`.
//! - A real Prometheus, configured from that file, scrapes the three processes: every dashboard
//!   query evaluates without error and with series, every rule evaluates without error and
//!   fires nothing on the healthy stack, and `DavpushRelayDown` fires once the relay is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use yaml_rust2::{Yaml, YamlLoader};

use crate::procs::{self, Proc};

const DASHBOARD: &str = "packaging/monitoring/grafana-dashboard.json";
const ALERTS: &str = "packaging/monitoring/prometheus-alerts.yml";
const SCRAPE: &str = "packaging/monitoring/prometheus.yml";
const OPERATIONS: &str = "docs/operations.md";

// ---------------------------------------------------------------------------------------------
// PromQL: the metric names an expression selects.

/// Words that are PromQL operators or modifiers, and number literals spelled as words.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
];
/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

fn ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

/// Whether `b` starts with the word `word` (case-insensitive, not followed by a name character).
fn starts_with_word(b: &[u8], word: &str) -> bool {
    b.len() >= word.len()
        && b[..word.len()].eq_ignore_ascii_case(word.as_bytes())
        && !b.get(word.len()).is_some_and(|c| ident_char(*c))
}

/// The index after the string literal that starts at `i` (`"…"`, `'…'` with `\` escapes, or
/// `` `…` `` without).
fn skip_string(b: &[u8], mut i: usize) -> usize {
    let quote = b[i];
    i += 1;
    while i < b.len() && b[i] != quote {
        if b[i] == b'\\' && quote != b'`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The index after the `close` that ends the group opened at `i`; string literals inside are
/// skipped whole (a label value may contain `}`).
fn skip_group(b: &[u8], mut i: usize, close: u8) -> usize {
    i += 1;
    while i < b.len() && b[i] != close {
        if matches!(b[i], b'"' | b'\'' | b'`') {
            i = skip_string(b, i);
        } else {
            i += 1;
        }
    }
    i + 1
}

/// The metric names `expr` selects: identifiers that are not functions or aggregations (a word
/// followed by `(`), keywords, label names (in `{…}` and in `by (…)`, `on (…)`, …), strings,
/// numbers and durations (`[…]`, `offset 5m`), or Grafana variables (`$__rate_interval`).
pub(crate) fn metric_names(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if matches!(c, b'"' | b'\'' | b'`') {
            i = skip_string(b, i);
        } else if c == b'{' {
            i = skip_group(b, i, b'}');
        } else if c == b'[' {
            i = skip_group(b, i, b']');
        } else if c == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'$' {
            i += 1;
            if b.get(i) == Some(&b'{') {
                i = skip_group(b, i, b'}');
            } else {
                while i < b.len() && ident_char(b[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            // 1, 0.5, 1e3, 0x1F, 5m, 1h30m: the whole run of letters, digits and dots.
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                i += 1;
            }
        } else if ident_start(c) {
            let start = i;
            while i < b.len() && ident_char(b[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            let mut next = i;
            while next < b.len() && b[next].is_ascii_whitespace() {
                next += 1;
            }
            let lower = word.to_ascii_lowercase();
            if LABEL_LISTS.contains(&lower.as_str()) {
                if b.get(next) == Some(&b'(') {
                    i = skip_group(b, next, b')');
                }
            } else if KEYWORDS.contains(&lower.as_str())
                || b.get(next) == Some(&b'(')
                || ["by", "without"].iter().any(|k| starts_with_word(&b[next..], k))
            {
                // an operator; a function or aggregation; an aggregation with `by` first
            } else {
                names.insert(word.to_owned());
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn promql_metric_names_skip_functions_keywords_labels_strings_and_ranges() {
    let cases: &[(&str, &[&str])] = &[
        ("davpush_ready == 0", &["davpush_ready"]),
        (
            r#"sum by (service, outcome) (rate(davpush_deliveries_total{outcome=~"sent|failed", x!="a}b"}[5m]))"#,
            &["davpush_deliveries_total"],
        ),
        ("histogram_quantile(0.99, sum by (le) (rate(h_seconds_bucket[$__rate_interval])))", &["h_seconds_bucket"]),
        ("sum(rate(a_sum[${interval}])) / sum(rate(a_count[5m] offset 1h))", &["a_count", "a_sum"]),
        ("a / on(instance) group_left(version) b offset 5m > bool 0", &["a", "b"]),
        ("a * on (job) group_left b", &["a", "b"]),
        ("max_over_time(x[1h:5m]) and ignoring(job) y unless z OR w", &["w", "x", "y", "z"]),
        ("sum(m) without (instance, le) * 2 + -Inf < NaN", &["m"]),
        ("1e3 * 0x1F + .5 - 2.5e-3", &[]),
        (r#"label_replace(up, "dst", "$1", "src", "(.*)")"#, &["up"]),
        (r#"count_values("version", build_info) > 0"#, &["build_info"]),
        (r#"x{a="\"}"} + y{b=`}`}"#, &["x", "y"]),
        (r#"{__name__="hidden", job="j"}"#, &[]),
        ("recorded:rate5m > 1 # a comment naming not_a_metric", &["recorded:rate5m"]),
        ("min_over_time(davpush_store_wal_bytes[15m]) > 64 * 1024 * 1024", &["davpush_store_wal_bytes"]),
        ("sum by(x)(rate(q[1m]))", &["q"]),
        (
            "count without (instance) (a) + topk by (job) (3, b) + bytes + byte_total",
            &["a", "b", "byte_total", "bytes"],
        ),
        ("rate (spaced_total [5m])", &["spaced_total"]),
        ("vector(1) + time() + a @ start()", &["a"]),
    ];
    for (expr, want) in cases {
        let got = metric_names(expr);
        let want: BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(got, want, "{expr}");
    }
}

// ---------------------------------------------------------------------------------------------
// The files.

fn repo_path(path: &str) -> String {
    format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))
}

/// One alerting rule of prometheus-alerts.yml.
#[derive(Debug)]
struct Rule {
    name: String,
    expr: String,
    for_: String,
    severity: String,
    summary: String,
    runbook: String,
}

fn text(y: &Yaml, what: &str) -> String {
    y.as_str().unwrap_or_else(|| panic!("{ALERTS}: {what} is not a string: {y:?}")).to_owned()
}

fn rules() -> Vec<Rule> {
    let docs = YamlLoader::load_from_str(&procs::repo_file(ALERTS)).unwrap();
    assert_eq!(docs.len(), 1, "{ALERTS}: one YAML document");
    let groups = docs[0]["groups"].as_vec().unwrap_or_else(|| panic!("{ALERTS}: no `groups` list"));
    let mut rules = Vec::new();
    for g in groups {
        for r in g["rules"].as_vec().unwrap_or_else(|| panic!("{ALERTS}: group without `rules`: {g:?}")) {
            let name = text(&r["alert"], "alert");
            rules.push(Rule {
                expr: text(&r["expr"], &format!("{name}: expr")),
                for_: text(&r["for"], &format!("{name}: for")),
                severity: text(&r["labels"]["severity"], &format!("{name}: labels.severity")),
                summary: text(&r["annotations"]["summary"], &format!("{name}: annotations.summary")),
                runbook: text(&r["annotations"]["runbook"], &format!("{name}: annotations.runbook")),
                name,
            });
        }
    }
    rules
}

/// One query of a dashboard panel.
#[derive(Debug)]
struct Query {
    panel: String,
    expr: String,
}

fn dashboard() -> Value {
    serde_json::from_str(&procs::repo_file(DASHBOARD)).unwrap()
}

fn queries(dashboard: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_else(|| panic!("a target without expr: {p}"));
            out.push(Query { panel: p["title"].as_str().unwrap().to_owned(), expr: expr.to_owned() });
        }
    }
    out
}

/// The GitHub anchor of a Markdown heading's text.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The `####` headings of docs/operations.md's "What to watch" section: the alerts it explains.
fn documented_alerts() -> Vec<String> {
    let doc = procs::repo_file(OPERATIONS);
    let start = doc.find("\n## What to watch\n").unwrap_or_else(|| panic!("{OPERATIONS}: no `## What to watch`"));
    let section = &doc[start + 1..];
    let end = section[3..].find("\n## ").map(|e| e + 3).unwrap_or(section.len());
    section[..end].lines().filter_map(|l| l.strip_prefix("#### ")).map(str::to_owned).collect()
}

/// The job names of the example scrape configuration.
fn scrape_jobs() -> Vec<String> {
    let docs = YamlLoader::load_from_str(&procs::repo_file(SCRAPE)).unwrap();
    docs[0]["scrape_configs"].as_vec().unwrap().iter().map(|j| text(&j["job_name"], "job_name")).collect()
}

#[test]
fn issue_13_the_dashboard_is_importable_by_grafana_9_and_names_only_alerts_that_exist() {
    let d = dashboard();
    let schema = d["schemaVersion"].as_u64().unwrap();
    assert!((36..=41).contains(&schema), "Grafana 9 and later import schemaVersion {schema}");
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()) && d["title"].as_str().is_some());
    // No datasource is hard-coded: a `datasource` variable of Prometheus datasources.
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars.iter().find(|v| v["name"] == "datasource").expect("a `datasource` variable");
    assert_eq!((ds["type"].as_str(), ds["query"].as_str()), (Some("datasource"), Some("prometheus")));
    let want_ds = json!({"type": "prometheus", "uid": "${datasource}"});

    let alerts: BTreeSet<String> = rules().into_iter().map(|r| r.name).collect();
    let mut ids = BTreeSet::new();
    let mut queried = 0;
    for p in d["panels"].as_array().unwrap() {
        let title = p["title"].as_str().unwrap();
        assert!(ids.insert(p["id"].as_u64().unwrap()), "panel ids are unique: {title}");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(x + w <= 24 && g["h"].as_u64().unwrap() > 0 && g["y"].is_u64(), "{title}: gridPos {g}");
        if p["type"] == "row" {
            continue;
        }
        assert!(["timeseries", "stat"].contains(&p["type"].as_str().unwrap()), "{title}: {}", p["type"]);
        assert_eq!(p["datasource"], want_ds, "{title}");
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert_eq!(t["datasource"], want_ds, "{title}");
            assert!(refs.insert(t["refId"].as_str().unwrap()), "{title}: refIds are unique");
            assert!(!metric_names(t["expr"].as_str().unwrap()).is_empty(), "{title}: {t}");
            queried += 1;
        }
        // The descriptions name the alerts about what the panel shows: they must exist.
        let desc = p["description"].as_str().unwrap_or_else(|| panic!("{title}: no description"));
        for word in desc.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| w.starts_with("Davpush")) {
            assert!(alerts.contains(word), "{title}: its description names {word}, which is no rule of {ALERTS}");
        }
    }
    assert!(queried >= 30, "{queried} queries");
}

#[test]
fn issue_13_every_alert_has_a_for_a_severity_a_summary_and_a_runbook_in_the_operations_guide() {
    let rules = rules();
    assert!(rules.len() >= 15, "{rules:?}");
    let documented = documented_alerts();
    let jobs = scrape_jobs();
    assert_eq!(jobs, ["davpush", "davpush-gateway", "davpush-relay"], "{SCRAPE}");
    let mut names = BTreeSet::new();
    for r in &rules {
        assert!(names.insert(r.name.clone()), "{}: alert names are unique", r.name);
        assert!(r.name.starts_with("Davpush"), "{}", r.name);
        let for_ok = r.for_.len() >= 2
            && r.for_[..r.for_.len() - 1].parse::<u32>().is_ok_and(|n| n > 0)
            && r.for_.ends_with(['s', 'm', 'h']);
        assert!(for_ok, "{}: `for: {}` is a positive duration", r.name, r.for_);
        assert!(["critical", "warning"].contains(&r.severity.as_str()), "{}: severity {}", r.name, r.severity);
        assert!(r.summary.len() > 20, "{}: summary {:?}", r.name, r.summary);
        assert!(!metric_names(&r.expr).is_empty(), "{}: {}", r.name, r.expr);
        let anchor = format!("{OPERATIONS}#{}", slug(&r.name));
        assert_eq!(r.runbook, anchor, "{}: the runbook is its section of the operations guide", r.name);
        assert!(documented.contains(&r.name), "{OPERATIONS} has no `#### {}` under `## What to watch`", r.name);
        // `up{job="…"}` names a job of the example scrape configuration.
        for part in r.expr.split("job=\"").skip(1) {
            let job = &part[..part.find('"').unwrap()];
            assert!(jobs.iter().any(|j| j == job), "{}: job {job:?} is not in {SCRAPE}", r.name);
        }
    }
    for d in &documented {
        assert!(names.contains(d), "{OPERATIONS} explains `{d}`, which is no rule of {ALERTS}");
    }
}

/// `promtool` or `prometheus` (Debian package `prometheus`), or `None` when skipping was chosen.
fn prometheus_tool(name: &str) -> Option<String> {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string());
    if found.is_none() {
        davpush_testkit::require::missing(&format!("`{name}` (Prometheus)"), "apt-get install prometheus");
    }
    found
}

/// The example scrape configuration with the test's targets, 1 s intervals and the repository's
/// rule file; each replaced text must be there.
fn scrape_config(director: &str, gateway: &str, relay: &str) -> String {
    let mut config = procs::repo_file(SCRAPE);
    for (from, to) in [
        ("\"127.0.0.1:8080\"", format!("{director:?}")),
        ("\"127.0.0.1:8081\"", format!("{gateway:?}")),
        ("\"127.0.0.1:8090\"", format!("{relay:?}")),
        ("scrape_interval: 15s", "scrape_interval: 1s".to_owned()),
        ("evaluation_interval: 15s", "evaluation_interval: 1s".to_owned()),
        ("/etc/prometheus/davpush-alerts.yml", repo_path(ALERTS)),
    ] {
        assert_eq!(config.matches(from).count(), 1, "{SCRAPE} has `{from}` once");
        config = config.replace(from, &to);
    }
    config
}

#[test]
fn issue_13_promtool_checks_the_rules_and_the_scrape_configuration() {
    let Some(promtool) = prometheus_tool("promtool") else { return };
    let out = Command::new(&promtool).args(["check", "rules"]).arg(repo_path(ALERTS)).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool check rules {ALERTS}: {said}");
    assert!(said.contains(&format!("SUCCESS: {} rules found", rules().len())), "{said}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, scrape_config("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")).unwrap();
    let out = Command::new(&promtool).args(["check", "config"]).arg(&config).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool check config ({SCRAPE}): {said}");
}

// ---------------------------------------------------------------------------------------------
// The running processes.

/// Which process exposes a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Director,
    Gateway,
    Relay,
    /// Series Prometheus makes itself for every target (`up`).
    Prometheus,
}

fn source(name: &str) -> Source {
    if name == "up" {
        Source::Prometheus
    } else if name.starts_with("davpush_gateway_") {
        Source::Gateway
    } else if name.starts_with("davpush_relay_") {
        Source::Relay
    } else if name.starts_with("davpush_") {
        Source::Director
    } else {
        panic!("`{name}` is no metric of davpush")
    }
}

/// The names of the samples of a Prometheus text exposition.
fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l[..l.find(['{', ' ']).unwrap_or(l.len())].to_owned())
        .collect()
}

/// The family a sample name belongs to (what a panel must query one member of).
fn family(sample: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count", "_total"] {
        if let Some(f) = sample.strip_suffix(suffix) {
            return f;
        }
    }
    sample
}

/// A child process killed (and reaped) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn get_text(http: &reqwest::Client, url: &str) -> String {
    let resp = http.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(resp.status(), 200, "GET {url}");
    resp.text().await.unwrap()
}

/// An instant query of Prometheus's HTTP API: its `result` list, or the error it gave.
async fn query(http: &reqwest::Client, prometheus: &str, expr: &str) -> Result<Vec<Value>, String> {
    let mut url = url::Url::parse(&format!("{prometheus}/api/v1/query")).unwrap();
    url.query_pairs_mut().append_pair("query", expr);
    let body: Value = http.get(url).send().await.unwrap().json().await.unwrap();
    if body["status"] == "success" {
        Ok(body["data"]["result"].as_array().cloned().unwrap_or_default())
    } else {
        Err(format!("{}: {}", body["errorType"], body["error"]))
    }
}

/// A bound on waiting for something that happens on its own (a scrape, an evaluation): two
/// minutes, polled every 200 ms.
struct Patience(Instant);

impl Patience {
    fn new() -> Patience {
        Patience(Instant::now() + Duration::from_secs(120))
    }

    /// Waits before the next look, or panics with `why` once the bound is over.
    async fn again(&self, why: impl FnOnce() -> String) {
        assert!(Instant::now() < self.0, "not within two minutes: {}", why());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The FCM relay in front of `fcm`, with a fresh installation key (returned).
fn relay(dir: &Path, fcm: &davpush_testkit::fakes::fcm::FakeFcm) -> (Proc, String) {
    let keys = dir.join("relay-keys.json");
    let out = procs::davpush()
        .args(["relay", "issue-key", "--label", "monitoring", "--keys-file"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let sa = dir.join("service-account.json");
    std::fs::write(&sa, &fcm.service_account).unwrap();
    let config = dir.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[fcm]\ncredentials_file = {:?}\nbase_url = {:?}\niid_url = {:?}\n\
             [keys]\nfile = {:?}\n",
            sa.display().to_string(),
            fcm.url(),
            fcm.url(),
            keys.display().to_string()
        ),
    )
    .unwrap();
    let mut cmd = procs::davpush();
    cmd.args(["relay", "serve", "--config"]).arg(&config);
    (Proc::start(cmd, "FCM relay listening"), key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_dashboard_and_alert_metrics_exist_in_running_processes_and_evaluate_in_prometheus() {
    use davpush_testkit::{fakes::fcm::FakeFcm, radicale::Radicale, services};
    let Some(prometheus) = prometheus_tool("prometheus") else { return };
    let Some(pg) = services::postgres_schema().await else { return };
    let Some(redis) = services::redis_url().await else { return };
    let Some(radicale) = Radicale::start(&[]) else { return };
    let mut fcm = FakeFcm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();

    // The relay; a Director node of a cluster (so that it counts cluster messages) that
    // delivers FCM through the relay; the gateway in front of Radicale, with the Director.
    let (relay, relay_key) = relay(dir.path(), &fcm);
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let relay_key_file = dir.path().join("fcm-relay-key");
    std::fs::write(&relay_key_file, &relay_key).unwrap();
    let director_toml = dir.path().join("davpush.toml");
    std::fs::write(
        &director_toml,
        format!(
            "[store]\nurl = {:?}\n[cluster]\nredis_url = {:?}\nchannel_prefix = \"monitoring-{}\"\n\
             [fcm]\nenabled = true\nrelay_url = {:?}\nrelay_key_file = {:?}\n",
            pg.url(),
            redis,
            davpush_testkit::services::unique_suffix(),
            relay.url().trim_end_matches('/'),
            relay_key_file.display().to_string()
        ),
    )
    .unwrap();
    let mut cmd = procs::davpush();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"]).arg(&director_toml).arg("--data-dir").arg(&data);
    let director = Proc::start(cmd, "Push Director listening");
    let gateway = procs::gateway(&data, &radicale.url, &director.url());

    // A little traffic. Refused: a notify with a wrong token, a relay push without a key.
    let resp = http.post(format!("{}notify", director.url())).bearer_auth("wrong").json(&json!({})).send().await;
    assert_eq!(resp.unwrap().status(), 401);
    let resp = http.post(format!("{}v1/push", relay.url())).json(&json!({"topic": "t"})).send().await;
    assert_eq!(resp.unwrap().status(), 401);
    // A calendar through the gateway, a WebSocket subscriber through it, and an FCM subscriber
    // of the same topic at the Director (with a grant, as an application server makes them).
    let cal = "/alice/cal/";
    let cal_url = format!("{}{}", gateway.url(), &cal[1..]);
    assert_eq!(procs::dav("MKCALENDAR", &cal_url, "").await, 201);
    let topic = procs::advertised_topic(&cal_url).await;
    let mut ws = procs::subscribe_through_gateway(&gateway, cal, &topic).await;
    let out = procs::davpush()
        .args(["grant", "--config"])
        .arg(&director_toml)
        .arg("--data-dir")
        .arg(&data)
        .arg("--") // a topic may start with `-`
        .arg(&topic)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let grant = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let subscription_token = std::fs::read_to_string(data.join("subscription-token")).unwrap();
    let resp = http
        .post(format!("{}subscribe", director.url()))
        .bearer_auth(subscription_token.trim())
        .json(&json!({"client_id": "phone", "topic": topic, "grant": grant,
            "push_services": {"fcm": {"registration_token": "tok-1"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    // A change: both subscribers learn of it.
    assert_eq!(procs::dav("PUT", &format!("{cal_url}e1.ics"), &procs::event("e1")).await, 201);
    assert_eq!(procs::next_frame(&mut ws).await["type"], "notify");
    assert_eq!(fcm.next().await.message["token"], "tok-1");
    drop(ws);

    // Every metric the dashboard and the rules select is in /metrics of its process.
    let url = |p: &Proc| format!("{}metrics", p.url());
    let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let d = dashboard();
    let dashboard_queries = queries(&d);
    for q in &dashboard_queries {
        for n in metric_names(&q.expr) {
            wanted.entry(n).or_default().push(format!("panel {:?}", q.panel));
        }
    }
    let rules = rules();
    for r in &rules {
        for n in metric_names(&r.expr) {
            wanted.entry(n).or_default().push(format!("alert {}", r.name));
        }
    }
    // (The counters of the last deliveries are counted after the subscribers saw them.)
    let patience = Patience::new();
    let exposed = loop {
        let exposed = BTreeMap::from([
            (Source::Director, sample_names(&get_text(&http, &url(&director)).await)),
            (Source::Gateway, sample_names(&get_text(&http, &format!("{}.davpush/metrics", gateway.url())).await)),
            (Source::Relay, sample_names(&get_text(&http, &url(&relay)).await)),
        ]);
        let missing: Vec<String> = wanted
            .iter()
            .filter(|(n, _)| source(n) != Source::Prometheus && !exposed[&source(n)].contains(*n))
            .map(|(n, users)| format!("{n} ({:?}; used by {})", source(n), users.join(", ")))
            .collect();
        if missing.is_empty() {
            break exposed;
        }
        patience.again(|| format!("not exposed:\n  {}", missing.join("\n  "))).await;
    };
    // ... and every family they expose has a panel.
    let on_dashboard: BTreeSet<String> =
        dashboard_queries.iter().flat_map(|q| metric_names(&q.expr)).map(|n| family(&n).to_owned()).collect();
    for (src, names) in &exposed {
        for n in names {
            assert!(on_dashboard.contains(family(n)), "{n} ({src:?}) has no panel in {DASHBOARD}");
        }
    }

    // A real Prometheus, configured from the example scrape configuration.
    let port = davpush_testkit::free_port();
    let config = dir.path().join("prometheus.yml");
    let addr = |p: &Proc| p.addr.to_string();
    std::fs::write(&config, scrape_config(&addr(&director), &addr(&gateway), &addr(&relay))).unwrap();
    let log = dir.path().join("prometheus.log");
    let child = Command::new(&prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _prometheus = Killed(child);
    let prom = format!("http://127.0.0.1:{port}");
    let log = || std::fs::read_to_string(&log).unwrap_or_default();

    // Prometheus serves; every job scraped, up, at least three times; every rule evaluated.
    let patience = Patience::new();
    loop {
        match http.get(format!("{prom}/-/ready")).send().await {
            Ok(r) if r.status() == 200 => break,
            other => patience.again(|| format!("Prometheus is not ready: {other:?}; log: {}", log())).await,
        }
    }
    'scraped: loop {
        for job in scrape_jobs() {
            let q = format!("count_over_time(up{{job={job:?}}}[1m]) >= 3 and up == 1");
            let r = query(&http, &prom, &q).await.unwrap_or_else(|e| panic!("{q}: {e}"));
            if r.is_empty() {
                let targets = targets(&http, &prom).await;
                patience.again(|| format!("job {job} not up three times; targets: {targets}; log: {}", log())).await;
                continue 'scraped;
            }
        }
        let groups: Value = http.get(format!("{prom}/api/v1/rules")).send().await.unwrap().json().await.unwrap();
        let evaluated: Vec<&Value> = groups["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .filter(|r| r["health"] != "unknown")
            .collect();
        if evaluated.len() < rules.len() {
            patience.again(|| format!("{} of {} rules evaluated: {groups}", evaluated.len(), rules.len())).await;
            continue;
        }
        for r in evaluated {
            assert_eq!(r["health"], "ok", "{}: {}", r["name"], r["lastError"]);
        }
        break;
    }

    // Every dashboard query evaluates, with series (Grafana's interval as a range).
    for q in &dashboard_queries {
        let expr = q.expr.replace("$__rate_interval", "1m");
        let r = query(&http, &prom, &expr).await;
        let r = r.unwrap_or_else(|e| panic!("panel {:?}: {expr}: {e}", q.panel));
        assert!(!r.is_empty(), "panel {:?}: {expr} has no series", q.panel);
    }
    // Every rule evaluates, and on this healthy stack fires nothing (a rule that fires here has
    // its comparison the wrong way round). A gateway reports ready after its first check.
    let patience = Patience::new();
    'quiet: loop {
        for r in &rules {
            let result = query(&http, &prom, &r.expr).await.unwrap_or_else(|e| panic!("{}: {e}", r.name));
            if !result.is_empty() {
                patience.again(|| format!("{} fires on a healthy stack: {result:?}", r.name)).await;
                continue 'quiet;
            }
        }
        break;
    }

    // The relay stops: DavpushRelayDown's expression selects it.
    let relay_addr = relay.addr.to_string();
    drop(relay);
    let down = &rules.iter().find(|r| r.name == "DavpushRelayDown").unwrap().expr;
    let patience = Patience::new();
    loop {
        let r = query(&http, &prom, down).await.unwrap_or_else(|e| panic!("{down}: {e}"));
        if r.iter().any(|s| s["metric"]["instance"] == relay_addr.as_str()) {
            break;
        }
        patience.again(|| format!("{down} does not select the stopped relay: {r:?}")).await;
    }
    drop((director, gateway, radicale));
    pg.drop_schema().await;
}

/// What Prometheus says of its targets (for failure messages).
async fn targets(http: &reqwest::Client, prom: &str) -> String {
    match http.get(format!("{prom}/api/v1/targets")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => e.to_string(),
    }
}
