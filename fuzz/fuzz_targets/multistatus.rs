//! PROPFIND request bodies and the upstream's 207 multistatus: `analyze_propfind`,
//! `rewrite_multistatus` and `map_hrefs` (with the gateway's path canonicalization as the map).
//! The input is the PROPFIND body, a NUL byte, then the multistatus. Whatever the gateway
//! sends on must be well-formed XML whenever the upstream's body was.
#![no_main]

use davpush_gateway::dav::{PropfindKind, PushValues, analyze_propfind, map_hrefs, rewrite_multistatus};
use davpush_gateway::topic::canonical_path;
use davpush_gateway::xml;
use libfuzzer_sys::fuzz_target;

fn values(href: &str) -> Option<PushValues> {
    (!href.contains("plain")).then(|| PushValues {
        topic: format!("topic-{}", href.len()),
        vapid_public_key: Some(
            "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM".into(),
        ),
        director: "https://push.example/".into(),
        services: vec!["web_push".into(), "websocket".into()],
        subscription_auth: "token".into(),
        websocket_url: Some("wss://push.example/ws".into()),
        gateway_websocket_url: Some("wss://dav.example/.davpush/ws".into()),
        // A grant for some hrefs (as for the requested collection), none for the others.
        grant: href.ends_with("/cal/").then(|| "eyJ2IjoxfQ.c2ln".into()),
    })
}

fuzz_target!(|data: &[u8]| {
    let (propfind, body) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let kind = analyze_propfind(propfind).unwrap_or(PropfindKind::AllProp);
    let Ok(body) = std::str::from_utf8(body) else { return };
    let well_formed = xml::parse(body).is_ok();
    for kind in [kind, PropfindKind::AllProp, PropfindKind::PropName] {
        if let Ok(out) = rewrite_multistatus(body, &kind, values)
            && well_formed
            && let Err(e) = xml::parse(&out)
        {
            panic!("rewrite_multistatus made well-formed XML malformed: {e}\n{out}");
        }
    }
    if let Ok(out) = map_hrefs(body, |h| canonical_path(h).map(|p| format!("/dav{p}")))
        && well_formed
        && let Err(e) = xml::parse(&out)
    {
        panic!("map_hrefs made well-formed XML malformed: {e}\n{out}");
    }
});
