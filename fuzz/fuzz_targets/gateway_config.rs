//! The gateway's configuration file (`RawGatewayConfig` from TOML), then its validation
//! (`GatewayConfig::from_raw`) with the secret files pointed at a scratch folder prepared once
//! (so the fuzzer never reads or creates files it names).
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use davpush_gateway::{GatewayConfig, RawGatewayConfig};
use libfuzzer_sys::fuzz_target;

static SECRETS: LazyLock<PathBuf> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("davpush-fuzz-gateway-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    for name in ["notify-token", "subscription-token", "topic-secret"] {
        std::fs::write(dir.join(name), "0123456789abcdef0123456789abcdef\n").expect("secret file");
    }
    // A base64url key of 32 bytes, as the Director generates it.
    std::fs::write(dir.join("grant-key"), "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY\n").expect("grant key");
    dir
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(mut raw) = toml::from_str::<RawGatewayConfig>(text) else { return };
    raw.data_dir = SECRETS.clone();
    raw.notify_token_file = PathBuf::new();
    raw.subscription_token_file = PathBuf::new();
    raw.topic_secret_file = PathBuf::new();
    raw.grant_key_file = PathBuf::new();
    if let Ok(c) = GatewayConfig::from_raw(raw) {
        let _ = c.to_upstream_path("/dav/calendars/alice/");
        let _ = c.to_public_path("/calendars/alice/");
    }
});
