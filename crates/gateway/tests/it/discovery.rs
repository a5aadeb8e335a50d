//! Discovery through the gateway: OPTIONS and PROPFIND.

use davpush_gateway::xml::{self, DAV, DAVPUSH, PUSH};

use crate::util::*;

#[tokio::test]
async fn collections_advertise_push_and_members_do_not() {
    let Some(s) = stack("").await else { return };
    let cal = s.mkcalendar("alice", "work").await;
    assert_eq!(s.put_event("alice", &format!("{cal}e1.ics"), "e1", "Meeting", &[]).await, 201);

    let (st, h, _) = s.dav("OPTIONS", &cal, "alice", &[], "").await;
    assert_eq!(st, 200);
    let dav = h.get("dav").unwrap().to_str().unwrap();
    assert!(dav.contains("calendar-access") && dav.ends_with("webdav-push"), "{dav}");
    let (_, h, _) = s.dav("OPTIONS", &format!("{cal}e1.ics"), "alice", &[], "").await;
    assert!(!h.get("dav").unwrap().to_str().unwrap().contains("webdav-push"), "members are not push-capable");

    let body = r#"<propfind xmlns="DAV:" xmlns:P="https://bitfire.at/webdav-push" xmlns:X="urn:davpush:1">
      <prop><resourcetype/><P:transports/><P:topic/><P:supported-triggers/><X:director/><X:push-services/><X:websocket-url/><X:subscription-auth/></prop></propfind>"#;
    let (st, _, text) =
        s.dav("PROPFIND", &cal, "alice", &[("Depth", "1"), ("Content-Type", "application/xml")], body).await;
    assert_eq!(st, 207, "{text}");
    let root = xml::parse(&text).unwrap();
    let mut seen_collection = false;
    let mut seen_member = false;
    for resp in root.elements().filter(|e| e.is(DAV, "response")) {
        let href = resp.child(DAV, "href").unwrap().text();
        let ok: Vec<_> = resp
            .elements()
            .filter(|p| p.is(DAV, "propstat") && p.child(DAV, "status").unwrap().text().contains(" 200 "))
            .filter_map(|p| p.child(DAV, "prop"))
            .collect();
        let prop = |ns: &str, n: &str| ok.iter().find_map(|p| p.child(ns, n));
        if href.ends_with('/') {
            seen_collection = true;
            let key = prop(PUSH, "transports")
                .unwrap()
                .child(PUSH, "web-push")
                .unwrap()
                .child(PUSH, "vapid-public-key")
                .unwrap();
            assert_eq!(key.attr("type"), Some("p256ecdsa"));
            assert_eq!(key.text(), s.director.state.startup.vapid_key.as_ref().unwrap().public_key());
            assert_eq!(prop(PUSH, "topic").unwrap().text().len(), 22);
            let triggers = prop(PUSH, "supported-triggers").unwrap();
            assert_eq!(triggers.child(PUSH, "content-update").unwrap().child(DAV, "depth").unwrap().text(), "1");
            assert_eq!(prop(DAVPUSH, "director").unwrap().text(), format!("{}/", s.director.url()));
            let services: Vec<String> = prop(DAVPUSH, "push-services").unwrap().elements().map(|e| e.text()).collect();
            assert!(
                services.contains(&"websocket".to_owned()) && services.contains(&"web_push".to_owned()),
                "{services:?}"
            );
            assert_eq!(prop(DAVPUSH, "websocket-url").unwrap().text(), format!("ws://{}/ws", s.director.addr));
            assert_eq!(prop(DAVPUSH, "subscription-auth").unwrap().text(), "token");
        } else {
            seen_member = true;
            assert!(prop(PUSH, "topic").is_none(), "a member has no topic: {text}");
        }
    }
    assert!(seen_collection && seen_member, "{text}");
}

#[tokio::test]
async fn topics_are_stable_across_aliases_and_match_davpush_topic() {
    let Some(s) = stack("").await else { return };
    let cal = s.mkcalendar("alice", "cal 1").await;
    let t1 = s.topic("alice", "/alice/cal%201/").await;
    let t2 = s.topic("alice", "/alice//cal%201").await;
    assert_eq!(t1, t2);
    let (key, _) = davpush_gateway::RawGatewayConfig { data_dir: s.data.path().to_owned(), ..Default::default() }
        .topic_key()
        .unwrap();
    assert_eq!(key.topic(&cal).unwrap(), t1, "`davpush topic` computes the same topic");
    assert_ne!(s.topic("alice", &s.mkcalendar("alice", "other").await).await, t1);
}

#[tokio::test]
async fn allprop_and_propname_are_handled() {
    let Some(s) = stack("").await else { return };
    let cal = s.mkcalendar("alice", "c").await;
    let (st, _, text) = s
        .dav(
            "PROPFIND",
            &cal,
            "alice",
            &[("Depth", "0"), ("Content-Type", "application/xml")],
            r#"<propfind xmlns="DAV:"><propname/></propfind>"#,
        )
        .await;
    assert_eq!(st, 207);
    assert!(text.contains("<P:topic/>") && text.contains("<P:transports/>"), "{text}");
    let (st, _, text) = s.dav("PROPFIND", &cal, "alice", &[("Depth", "0")], "").await;
    assert_eq!(st, 207);
    assert!(text.contains("<P:topic>"), "allprop includes the push properties: {text}");
}
