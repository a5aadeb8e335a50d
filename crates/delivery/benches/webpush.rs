//! `cargo bench -p davpush-delivery --bench webpush`: encrypted Web Push deliveries per second
//! to a local push endpoint, next to this machine's raw P-256 ECDH rate (`openssl speed
//! ecdhp256`) measured in the same run. Everything runs on the same cores: sender, encryption
//! and the receiving endpoint.
//!
//! Deliveries go through the real path: `Transport::dispatch` → engine (coalescing, workers) →
//! RFC 8291 encryption with a fresh key per message → cached VAPID header → HTTP POST over a
//! kept-alive connection → the endpoint's 201.
#![allow(clippy::unwrap_used)] // tests, benches and examples stop at the first failure

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use davpush_core::feedback::Feedback;
use davpush_core::transport::Transport;
use davpush_core::{
    ClientId, MemoryStore, Metrics, Notification, PushMessage, ServiceKind, Subscription, SubscriptionId, Topic,
};
use davpush_delivery::egress::EgressPolicy;
use davpush_delivery::webpush::vapid::{Vapid, VapidKey};
use davpush_delivery::webpush::{WebPushSender, WebPushSettings, WebPushTransport, ece};

const UA_PUBLIC: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const UA_AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

fn openssl_ecdh() -> Option<f64> {
    let out = std::process::Command::new("openssl").args(["speed", "-seconds", "3", "ecdhp256"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("ecdh (nistp256)"))?;
    line.split_whitespace().last()?.parse().ok()
}

fn encrypt_rate() -> f64 {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (k, a) = (b64.decode(UA_PUBLIC).unwrap(), b64.decode(UA_AUTH).unwrap());
    let plaintext =
        br#"{"type":"notify","topic":"f0ec984b-4b19-4652-91f2-92c6d81c3c09","sync_token":"http://dav/sync/42"}"#;
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(3) {
        std::hint::black_box(ece::encrypt(plaintext, &k, &a).unwrap());
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let ecdh = openssl_ecdh();
    match ecdh {
        Some(r) => println!("openssl speed ecdhp256 (1 core):        {r:>10.0} ECDH op/s"),
        None => println!("openssl speed ecdhp256:                  not available"),
    }
    let enc = encrypt_rate();
    println!("RFC 8291 encrypt, fresh key (1 core):    {enc:>10.0} messages/s");

    // A local push endpoint that counts.
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let app = axum::Router::new().fallback(move || {
        let c = counter.clone();
        async move {
            c.fetch_add(1, Ordering::Relaxed);
            axum::http::StatusCode::CREATED
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = std::env::temp_dir().join(format!("davpush-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, _) = VapidKey::load_or_create(&dir.join("vapid.pem")).unwrap();
    let vapid = Arc::new(Vapid::new(Arc::new(key), "mailto:bench@example.org".into()));
    let policy = EgressPolicy::new(&[format!("127.0.0.1:{}", addr.port())], true).unwrap();
    let settings = WebPushSettings { max_per_host: 64, ..Default::default() };
    let sender = Arc::new(WebPushSender::new(vapid, policy, &settings).unwrap());
    let (feedback, _gone) = Feedback::channel();
    let transport = WebPushTransport::start(
        ServiceKind::WebPush,
        sender,
        &settings,
        feedback,
        Arc::new(Metrics::default()),
        Arc::new(MemoryStore::default()),
    );

    // 2,000 subscribers of one topic, each with its own endpoint path; 10 notifications.
    let subscribers = 2000u64;
    let rounds = 10u64;
    let subs: Vec<Arc<Subscription>> = (0..subscribers)
        .map(|i| {
            let params = serde_json::json!({"endpoint": format!("http://{addr}/push/{i}"), "p256dh": UA_PUBLIC, "auth": UA_AUTH});
            Arc::new(Subscription {
                id: SubscriptionId::random(),
                client_id: ClientId::parse(&format!("c{i}"), 64).unwrap(),
                topic: Topic::parse("bench", 64).unwrap(),
                target: transport.parse_target(&params).unwrap(),
                expires: i64::MAX / 2,
                triggers: davpush_core::Triggers::ALL,
            })
        })
        .collect();
    let start = Instant::now();
    for r in 0..rounds {
        let msg = Arc::new(PushMessage::new(Notification {
            topic: Topic::parse("bench", 64).unwrap(),
            sync_token: Some(format!("http://dav/sync/{r}")),
            trigger: None,
        }));
        transport.dispatch(&msg, &subs);
        // Let each round go out before the next, so that nothing is coalesced away.
        while received.load(Ordering::Relaxed) < (r + 1) * subscribers {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let total = received.load(Ordering::Relaxed);
    let rate = total as f64 / secs;
    println!(
        "encrypted Web Push deliveries, end to end: {rate:>8.0} deliveries/s ({total} in {secs:.2} s, 2 cores shared with the endpoint)"
    );
    if let Some(r) = ecdh {
        println!("ratio to the 1-core ECDH rate:           {:>9.0} %", 100.0 * rate / r);
    }
    let _ = std::fs::remove_dir_all(dir);
}
