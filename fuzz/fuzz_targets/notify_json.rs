//! A Notify API body (`POST /notify`): the JSON the Director reads, then its validation
//! (`PushService::parse_notify`: topics, sync-tokens, triggers, `exclude`, limits).
#![no_main]

use std::sync::{Arc, LazyLock};

use davpush_core::{Limits, MemoryStore, PushService, Transports};
use davpush_proto::NotifyRequest;
use libfuzzer_sys::fuzz_target;

static SERVICE: LazyLock<PushService> = LazyLock::new(|| {
    PushService::new(Arc::new(MemoryStore::default()), Transports::default(), Limits::default(), Arc::default())
});

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<NotifyRequest>(data) else { return };
    let limits = SERVICE.limits();
    if let Ok((notifications, _exclusions)) = SERVICE.parse_notify(req) {
        assert!(!notifications.is_empty(), "a valid notify names at least one topic");
        for n in &notifications {
            let t = n.topic.as_str();
            assert!(!t.is_empty() && t.len() <= limits.max_topic_len, "topic {t:?} passed validation");
            if let Some(s) = &n.sync_token {
                assert!(s.len() <= limits.max_sync_token_len);
            }
        }
    }
});
