//! Times the gateway's multistatus rewrite on a 100-member calendar answer shaped like Apache
//! mod_dav's (`cargo run --release -p davpush-gateway --example rewrite_timing`). The request asks
//! for push properties, as DAVx⁵'s collection PROPFIND does.
#![allow(clippy::unwrap_used)] // tests, benches and examples stop at the first failure

use davpush_gateway::dav::{PushValues, analyze_propfind, rewrite_multistatus};

fn response(href: &str, collection: bool) -> String {
    let rt = if collection { "<D:resourcetype><D:collection/></D:resourcetype>" } else { "<D:resourcetype/>" };
    format!(
        "<D:response xmlns:lp1=\"DAV:\" xmlns:g1=\"https://bitfire.at/webdav-push\">\n<D:href>{href}</D:href>\n\
         <D:propstat>\n<D:prop>\n{rt}\n<lp1:getetag>\"5a-61d2f3c4e1b80\"</lp1:getetag>\n</D:prop>\n\
         <D:status>HTTP/1.1 200 OK</D:status>\n</D:propstat>\n<D:propstat>\n<D:prop>\n<D:displayname/>\n<g1:topic/>\n\
         <g1:transports/>\n</D:prop>\n<D:status>HTTP/1.1 404 Not Found</D:status>\n</D:propstat>\n</D:response>\n"
    )
}

fn main() {
    let mut body = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:multistatus xmlns:D=\"DAV:\">\n");
    body.push_str(&response("/cal/", true));
    for i in 1..=100 {
        body.push_str(&response(&format!("/cal/e{i}.ics"), false));
    }
    body.push_str("</D:multistatus>\n");
    let kind = analyze_propfind(
        br#"<propfind xmlns="DAV:" xmlns:P="https://bitfire.at/webdav-push"><prop><resourcetype/><getetag/><displayname/><P:topic/><P:transports/></prop></propfind>"#,
    )
    .expect("a propfind");
    let values = |_: &str| {
        Some(PushValues {
            topic: "d7e5xA5y7Ut3ncVZF2_EMA".into(),
            vapid_public_key: Some("BA1Hxzyi1RUM1b5wjxsn7nGx".into()),
            director: "http://127.0.0.1:8080/".into(),
            services: vec!["websocket".into(), "web_push".into()],
            subscription_auth: "token".into(),
            websocket_url: Some("ws://127.0.0.1:8080/ws".into()),
            gateway_websocket_url: Some("ws://127.0.0.1:8081/.davpush/ws".into()),
            grant: None,
        })
    };
    let n = 2000u32;
    let start = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(rewrite_multistatus(&body, &kind, values).expect("rewrites"));
    }
    println!("multistatus of {} bytes, 101 responses: {:?} per rewrite", body.len(), start.elapsed() / n);
}
