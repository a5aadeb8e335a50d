//! Subscription API bodies (`POST /subscribe`, `POST /unsubscribe`): the JSON the Director
//! reads, the client id, topic, trigger and service-name checks, and Web Push / UnifiedPush
//! parameters (endpoint URL, the egress policy that guards against SSRF, `p256dh`/`auth` keys).
#![no_main]

use std::sync::LazyLock;

use davpush_core::{ClientId, Limits, ServiceKind, Topic, Triggers};
use davpush_delivery::egress::EgressPolicy;
use davpush_delivery::webpush::parse_params;
use davpush_proto::{SubscribeRequest, UnsubscribeRequest};
use libfuzzer_sys::fuzz_target;

static LIMITS: LazyLock<Limits> = LazyLock::new(Limits::default);
static POLICY: LazyLock<EgressPolicy> = LazyLock::new(|| EgressPolicy::new(&[], false).expect("the default policy"));

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<UnsubscribeRequest>(data) {
        let _ = ClientId::parse(&req.client_id, LIMITS.max_client_id_len);
        for name in req.push_services.iter().flatten() {
            let _ = name.parse::<ServiceKind>();
        }
    }
    let Ok(req) = serde_json::from_slice::<SubscribeRequest>(data) else { return };
    let _ = ClientId::parse(&req.client_id, LIMITS.max_client_id_len);
    if let Ok(t) = Topic::parse(&req.topic, LIMITS.max_topic_len) {
        assert!(t.as_str().bytes().all(|b| b.is_ascii_graphic()));
    }
    if let Some(list) = &req.triggers {
        let _ = Triggers::from_list(list);
    }
    for (name, params) in &req.push_services {
        let Ok(kind) = name.parse::<ServiceKind>() else { continue };
        assert_eq!(kind.as_str().parse::<ServiceKind>().ok(), Some(kind), "service names round-trip");
        if matches!(kind, ServiceKind::WebPush | ServiceKind::UnifiedPush) {
            for allow_unencrypted in [false, true] {
                let _ = parse_params(kind, params, &POLICY, allow_unencrypted);
            }
        }
    }
});
