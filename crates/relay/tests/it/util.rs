//! Test helpers: a Director that delivers through the relay, Prometheus values.

use std::collections::BTreeMap;

use davpush_director::config::{Overrides, RawConfig};
use davpush_director::{Config, Running};
use serde_json::Value;

pub(crate) const NOTIFY_TOKEN: &str = "notify-token-0123456789";
pub(crate) const SUB_TOKEN: &str = "subscribe-token-0123456789";

pub(crate) use davpush_testkit::eventually;

/// A Director on 127.0.0.1:0 in a fresh data directory, with grants off (the tests subscribe
/// to made-up topics) and `extra` TOML appended (its own sections only).
pub(crate) struct TestDirector {
    pub(crate) running: Running,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

pub(crate) async fn start(extra: &str) -> TestDirector {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n[notify]\ntokens = [{NOTIFY_TOKEN:?}]\n\
         [subscription]\ntokens = [{SUB_TOKEN:?}]\ngrants = \"off\"\n{extra}",
        dir.path().display().to_string()
    );
    let raw = RawConfig::from_toml(&toml, &BTreeMap::new(), &Overrides::default()).unwrap();
    let running = davpush_director::spawn(Config::from_raw(raw).unwrap()).await.unwrap();
    TestDirector { running, http: reqwest::Client::new(), _dir: dir }
}

impl TestDirector {
    async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.running.url()))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn notify(&self, body: Value) -> (u16, Value) {
        self.post("/notify", NOTIFY_TOKEN, body).await
    }

    pub(crate) async fn subscribe(&self, body: Value) -> (u16, Value) {
        self.post("/subscribe", SUB_TOKEN, body).await
    }
}

/// The value of one Prometheus series (exact line prefix match), 0 if absent.
pub(crate) fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}
