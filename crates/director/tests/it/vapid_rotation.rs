//! VAPID key rotation (issue 15): the rotation message goes out with the old key, checked by
//! independent implementations (Python http_ece and py_vapid); new registrations use the new
//! key; the old key file goes when no subscription uses it; everything survives restarts.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use davpush_director::config::Overrides;
use davpush_director::{Config, RawConfig};
use davpush_testkit::fake_push::FakePush;
use serde_json::{Value, json};

use crate::util::*;
use crate::webpush::{ua_keys, web_push_params};

/// Decrypts `req` with the user agent's keys and verifies its VAPID header (Python).
pub(crate) fn check(py: &str, push: &FakePush, req: &davpush_testkit::fake_push::Captured, keys: &Value) -> Value {
    oracle(
        py,
        "check",
        &json!({
            "body": B64.encode(&req.body),
            "private": keys["private"],
            "auth": keys["auth"],
            "authorization": req.header("authorization").unwrap(),
            "endpoint": push.endpoint("x"),
            "encoding": req.header("content-encoding"),
        }),
    )
    .unwrap_or_else(|e| panic!("independent check failed: {e}"))
}

fn retired_keys(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir.join("vapid-keys")) {
        Ok(e) => e.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

#[tokio::test]
async fn issue_15_rotation_message_is_signed_with_the_old_key_and_the_old_key_goes_when_unused() {
    let Some(py) = interop_python() else { return };
    let mut push = FakePush::start().await;
    let d = start(&format!(
        "[web_push]\nallow_hosts = [\"127.0.0.1:{}\"]\nallow_http = true\nsubject = \"mailto:ops@example.org\"\n",
        push.addr.port()
    ))
    .await;
    let old_key = d.running.state.startup.vapid_key.as_ref().unwrap().public_key();
    let (keys_a, keys_b) = (ua_keys(Some(&py)), ua_keys(Some(&py)));
    // Two subscriptions (two topics) on one endpoint, one on another: two distinct endpoints.
    for (client, topic, ep, keys) in
        [("a", "cal-1", "a", &keys_a), ("a", "cal-2", "a", &keys_a), ("b", "cal-1", "b", &keys_b)]
    {
        let (s, b) = d
            .subscribe(json!({"client_id": client, "topic": topic, "push_services": {"web_push": web_push_params(&push.endpoint(ep), keys, "webdav-push-xml")}}))
            .await;
        assert_eq!(s, 201, "{b}");
    }

    // The operator's procedure: stop, rotate, start.
    let (toml, dir) = d.stop().await;
    let config =
        Config::from_raw(RawConfig::from_toml(&toml, &BTreeMap::new(), &Overrides::default()).unwrap()).unwrap();
    let startup = config.prepare().unwrap();
    let store = davpush_store::open(&config.store_url).await.unwrap();
    let rotated = davpush_director::vapid::rotate(&config, &startup, store.as_ref()).await.unwrap();
    store.close().await;
    drop(store);
    assert_eq!(rotated.queued, 2, "one rotation message per distinct endpoint");
    assert_ne!(rotated.new_public_key, old_key);
    assert_eq!(retired_keys(dir.path()), [format!("{}.pem", rotated.retired_id)]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.path().join("vapid-keys").join(format!("{}.pem", rotated.retired_id));
        assert_eq!(std::fs::metadata(p).unwrap().permissions().mode() & 0o777, 0o600);
    }

    let d = start_with(&toml, dir).await;
    let new_key = d.running.state.startup.vapid_key.as_ref().unwrap().public_key();
    assert_eq!(new_key, rotated.new_public_key, "the new key is the advertised one");
    let info: Value = d.http.get(d.url("/info")).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["vapid_public_key"], new_key, "{info}");

    let mut seen = Vec::new();
    for _ in 0..2 {
        let req = push.next().await;
        let keys = if req.path == "/push/a" { &keys_a } else { &keys_b };
        assert_eq!(req.header("content-encoding"), Some("aes128gcm"));
        let checked = check(&py, &push, &req, keys);
        assert_eq!(checked["vapid_key"], old_key, "signed with the key the subscription was made with");
        assert_eq!(
            checked["plaintext"],
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<push-message xmlns=\"https://bitfire.at/webdav-push\" \
             xmlns:D=\"DAV:\"><property-update><D:prop><transports/></D:prop></property-update></push-message>"
        );
        seen.push(req.path.clone());
    }
    seen.sort();
    assert_eq!(seen, ["/push/a", "/push/b"]);

    // A change still reaches an old subscription, signed with the old key; after a restart too.
    let d = d.restart().await;
    d.notify(json!({"topic": "cal-1", "sync_token": "s1"})).await;
    for _ in 0..2 {
        let req = push.next().await;
        let keys = if req.path == "/push/a" { &keys_a } else { &keys_b };
        assert_eq!(check(&py, &push, &req, keys)["vapid_key"], old_key, "{}", req.path);
    }

    // Client b re-registers (the push service gives it a new endpoint): the new key signs.
    let keys_b2 = ua_keys(Some(&py));
    d.post("/unsubscribe", Some(SUB_TOKEN), json!({"client_id": "b"})).await;
    let (s, _) = d
        .subscribe(json!({"client_id": "b", "topic": "cal-1", "push_services": {"web_push": web_push_params(&push.endpoint("b2"), &keys_b2, "webdav-push-xml")}}))
        .await;
    assert_eq!(s, 201);
    d.notify(json!({"topic": "cal-2", "sync_token": "s2"})).await;
    let req = push.next().await;
    assert_eq!(req.path, "/push/a");
    assert_eq!(check(&py, &push, &req, &keys_a)["vapid_key"], old_key);
    let d = d.restart().await;
    assert_eq!(retired_keys(d.data_dir()).len(), 1, "client a still uses the old key");
    d.notify(json!({"topic": "cal-1", "sync_token": "s3"})).await;
    for _ in 0..2 {
        let req = push.next().await;
        let (keys, key) = if req.path == "/push/a" { (&keys_a, &old_key) } else { (&keys_b2, &new_key) };
        assert_eq!(&check(&py, &push, &req, keys)["vapid_key"], key, "{}", req.path);
    }

    // Client a goes too: at the next start nothing uses the old key, and its file is deleted.
    d.post("/unsubscribe", Some(SUB_TOKEN), json!({"client_id": "a"})).await;
    let d = d.restart().await;
    assert!(retired_keys(d.data_dir()).is_empty(), "the old key is removed once unused");
    assert_eq!(d.running.state.startup.vapid_key.as_ref().unwrap().public_key(), new_key);
}
