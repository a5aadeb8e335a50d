//! `wss://`: the client reaches a Director behind a TLS-terminating proxy (as in production),
//! trusting a private CA; an untrusted certificate is refused.

use std::collections::BTreeMap;
use std::time::Duration;

use davpush_client::{ClientOptions, DirectorAuth, Event, PushClient};
use futures_util::StreamExt;

/// Terminates TLS on a free port and forwards to `backend`: the port and the CA to trust.
async fn tls_proxy(backend: std::net::SocketAddr) -> (u16, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (port, davpush_testkit::tls_proxy::rustls_proxy(listener, backend))
}

#[tokio::test]
async fn wss_through_a_tls_proxy_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        // A made-up topic with no collection server to grant it: grants off (this test is about TLS).
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n[subscription]\nauth = \"none\"\ngrants = \"off\"\n",
        dir.path().display().to_string()
    );
    let raw = davpush_director::RawConfig::from_toml(&toml, &BTreeMap::new(), &Default::default()).unwrap();
    let director = davpush_director::spawn(davpush_director::Config::from_raw(raw).unwrap()).await.unwrap();
    let (port, ca_pem) = tls_proxy(director.addr).await;
    let url = url::Url::parse(&format!("wss://localhost:{port}/ws")).unwrap();

    // Without the private CA the certificate is not trusted.
    let untrusted = PushClient::connect(ClientOptions::new(url.clone(), DirectorAuth::None)).await;
    assert!(untrusted.is_err(), "an untrusted certificate must be refused");

    let mut opts = ClientOptions::new(url, DirectorAuth::None);
    opts.extra_ca_pem = Some(ca_pem);
    let mut client = PushClient::connect(opts).await.expect("wss with the private CA");
    let collection = url::Url::parse("https://dav.example.org/alice/cal/").unwrap();
    client.watch_topic(collection.clone(), "wss-topic").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, client.next()).await.expect("subscribed in time") {
            Some(Event::Subscribed { .. }) => break,
            Some(_) => continue,
            None => panic!("client ended"),
        }
    }
    let token = std::fs::read_to_string(dir.path().join("notify-token")).unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/notify", director.url()))
        .bearer_auth(token.trim())
        .json(&serde_json::json!({"topic": "wss-topic", "sync_token": "s1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    loop {
        match tokio::time::timeout_at(deadline, client.next()).await.expect("update in time") {
            Some(Event::Update(u)) => {
                assert_eq!(
                    (u.collection, u.topic.as_str(), u.sync_token.as_deref()),
                    (collection, "wss-topic", Some("s1"))
                );
                break;
            }
            Some(_) => continue,
            None => panic!("client ended"),
        }
    }
    client.close().await;
}
