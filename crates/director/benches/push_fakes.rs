//! Deliveries per second through each local push-service fake, and the upstream cost of a
//! notification in FCM topic mode. Not a micro-benchmark: a real Director (release build) on
//! loopback delivers one notification to N subscriptions of one topic, and the clock runs
//! from the notify request until the fake has accepted all N messages. The fakes verify
//! every request (JWT signatures included) as in the integration tests, on the same two
//! cores as the Director, so the figures are a floor for the Director's own cost.
//!
//!     cargo bench -p davpush-director --bench push_fakes [-- N RUNS]
#![allow(clippy::unwrap_used)] // tests, benches and examples stop at the first failure

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use davpush_director::config::{Overrides, RawConfig};
use davpush_director::{Config, Running};
use davpush_testkit::fakes::{apns as fake_apns, fcm as fake_fcm, hms as fake_hms};
use serde_json::{Value, json};

const NOTIFY: &str = "notify-token-0123456789";
const SUB: &str = "subscribe-token-0123456789";

struct Director {
    running: Running,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn director(extra: &str) -> Director {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\nrequest_timeout_secs = 120\n[notify]\ntokens = [{NOTIFY:?}]\n\
         [subscription]\ntokens = [{SUB:?}]\n[web_push]\nenabled = false\n{extra}",
        dir.path().display().to_string()
    );
    let raw = RawConfig::from_toml(&toml, &BTreeMap::new(), &Overrides::default()).unwrap();
    let running = davpush_director::spawn(Config::from_raw(raw).unwrap()).await.unwrap();
    Director { running, http: reqwest::Client::new(), _dir: dir }
}

impl Director {
    async fn subscribe_all(&self, n: usize, service: &str, params: impl Fn(usize) -> Value) {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let body = json!({"client_id": format!("c{i}"), "topic": "bench", "push_services": {service: params(i)}});
            let (http, url) = (self.http.clone(), format!("{}/subscribe", self.running.url()));
            tasks.spawn(async move {
                let s = http.post(url).bearer_auth(SUB).json(&body).send().await.unwrap().status();
                assert!(s.is_success(), "{s}");
            });
            while tasks.len() >= 32 {
                tasks.join_next().await.unwrap().unwrap();
            }
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    }

    async fn notify(&self, i: usize) {
        let s = self
            .http
            .post(format!("{}/notify", self.running.url()))
            .bearer_auth(NOTIFY)
            .json(&json!({"topic": "bench", "sync_token": i.to_string()}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(s.as_u16(), 202);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(name: &str, n: usize, rates: Vec<f64>) {
    let runs: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
    println!(
        "{name:<34} {n:>6} deliveries/notify   median {:>8.0} deliveries/s   runs [{}]",
        median(rates),
        runs.join(", ")
    );
}

/// Notifies `runs` times; each time waits until `$fake` accepted `$n` messages. Deliveries/s.
macro_rules! measure {
    ($d:expr, $n:expr, $runs:expr, $fake:expr) => {{
        let mut rates = Vec::new();
        for run in 0..$runs {
            let t = Instant::now();
            $d.notify(run).await;
            for _ in 0..$n {
                $fake.next().await;
            }
            rates.push($n as f64 / t.elapsed().as_secs_f64());
        }
        rates
    }};
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = args.first().copied().unwrap_or(2000);
    let runs = args.get(1).copied().unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        println!("push_fakes: {n} subscriptions of one topic, {runs} notifications each; Director and fake share 2 cores");

        // FCM, one message per token.
        let mut fcm = fake_fcm::FakeFcm::start().await;
        let secrets = tempfile::tempdir().unwrap();
        let d = director(&fcm.director_toml(secrets.path(), "token")).await;
        d.subscribe_all(n, "fcm", |i| json!({"registration_token": format!("tok-{i}")})).await;
        let rates = measure!(d, n, runs, fcm);
        assert!(fcm.rejections().is_empty(), "{:?}", fcm.rejections());
        report("FCM (token mode)", n, rates);
        drop(d);

        // FCM through the relay (Director → relay → fake), token mode, limits out of the way.
        let sa = secrets.path().join("relay-sa.json");
        std::fs::write(&sa, &fcm.service_account).unwrap();
        let keys = secrets.path().join("relay-keys.json");
        let (_, key) = davpush_relay::keys::issue(&keys, "bench", davpush_core::unix_now()).unwrap();
        let relay_toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[fcm]\ncredentials_file = {:?}\nbase_url = {:?}\niid_url = {:?}\n\
             [keys]\nfile = {:?}\n[limits]\nkey_per_minute = 100000000\nkey_burst = 1000000\nip_per_minute = 100000000\n\
             ip_burst = 1000000\ntoken_per_minute = 6000\ntoken_burst = 100\n",
            sa.display().to_string(),
            fcm.url(),
            fcm.url(),
            keys.display().to_string()
        );
        let relay = davpush_relay::spawn(
            davpush_relay::RelayConfig::from_raw(davpush_relay::RawRelayConfig::from_toml(&relay_toml).unwrap()).unwrap(),
        )
        .await
        .unwrap();
        let key_file = secrets.path().join("relay-key");
        std::fs::write(&key_file, &key).unwrap();
        let d = director(&format!(
            "[fcm]\nenabled = true\nrelay_url = {:?}\nrelay_key_file = {:?}\n",
            relay.url(),
            key_file.display().to_string()
        ))
        .await;
        d.subscribe_all(n, "fcm", |i| json!({"registration_token": format!("tok-{i}")})).await;
        let rates = measure!(d, n, runs, fcm);
        report("FCM through the relay (token mode)", n, rates);
        drop(d);

        // FCM topic mode: how many upstream requests does one notification cost?
        let topic_n = 1000;
        let mut fcm = fake_fcm::FakeFcm::start().await;
        let d = director(&fcm.director_toml(secrets.path(), "topic")).await;
        d.subscribe_all(topic_n, "fcm", |i| json!({"registration_token": format!("tok-{i}")})).await;
        let name = davpush_delivery::fcm::topic_name("davpush", "bench");
        while fcm.members(&name) < topic_n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let iid = fcm.iid_requests();
        let before = fcm.send_requests();
        d.notify(0).await;
        let sent = fcm.next().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        println!(
            "FCM (topic mode)                   {topic_n:>6} devices: {} upstream request(s) per notification (reached {} devices); \
             joining them took {iid} Instance ID request(s)",
            fcm.send_requests() - before,
            sent.fanout
        );
        drop(d);

        // APNs over one HTTP/2 connection (TLS).
        let mut apns = fake_apns::FakeApns::start().await;
        let d = director(&apns.director_toml(secrets.path())).await;
        d.subscribe_all(n, "apns", |i| json!({"device_token": format!("a1{i:062x}")})).await;
        let rates = measure!(d, n, runs, apns);
        assert!(apns.rejections().is_empty(), "{:?}", apns.rejections());
        report(&format!("APNs (HTTP/2, {} connection)", apns.connections()), n, rates);
        drop(d);

        // HMS, one message per token.
        let mut hms = fake_hms::FakeHms::start().await;
        let d = director(&hms.director_toml(secrets.path(), "token", fake_hms::SECRET)).await;
        d.subscribe_all(n, "hms", |i| json!({"token": format!("tok-{i}")})).await;
        let rates = measure!(d, n, runs, hms);
        assert!(hms.rejections().is_empty(), "{:?}", hms.rejections());
        report("HMS (token mode)", n, rates);
    });
}
