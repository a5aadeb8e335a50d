use super::*;

fn vals(topic: &str) -> PushValues {
    PushValues {
        topic: topic.into(),
        vapid_public_key: Some("BKEY".into()),
        director: "http://127.0.0.1:8080/".into(),
        services: vec!["websocket".into(), "web_push".into()],
        subscription_auth: "token".into(),
        websocket_url: Some("ws://127.0.0.1:8080/ws".into()),
        gateway_websocket_url: Some("ws://127.0.0.1:8081/.davpush/ws".into()),
        grant: None,
    }
}

const UPSTREAM_404: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<multistatus xmlns="DAV:" xmlns:P="https://bitfire.at/webdav-push" xmlns:CS="http://calendarserver.org/ns/">
 <response><href>/alice/cal/</href>
  <propstat><prop><resourcetype><collection/></resourcetype><CS:getctag>"7"</CS:getctag></prop><status>HTTP/1.1 200 OK</status></propstat>
  <propstat><prop><P:topic/><P:transports/></prop><status>HTTP/1.1 404 Not Found</status></propstat>
 </response>
 <response><href>/alice/cal/e1.ics</href>
  <propstat><prop><resourcetype/></prop><status>HTTP/1.1 200 OK</status></propstat>
  <propstat><prop><P:topic/><P:transports/></prop><status>HTTP/1.1 404 Not Found</status></propstat>
 </response>
</multistatus>"#;

#[test]
fn requested_push_props_are_answered_200_for_collections_only() {
    let kind = analyze_propfind(
        br#"<propfind xmlns="DAV:" xmlns:P="https://bitfire.at/webdav-push"><prop><resourcetype/><P:topic/><P:transports/></prop></propfind>"#,
    )
    .unwrap();
    assert_eq!(kind, PropfindKind::Props(vec![(PUSH.into(), "topic".into()), (PUSH.into(), "transports".into())]));
    let out = rewrite_multistatus(UPSTREAM_404, &kind, |href| Some(vals(&format!("T{href}")))).unwrap();
    let root = xml::parse(&out).unwrap();
    let responses: Vec<_> = root.elements().filter(|e| e.is(DAV, "response")).collect();
    let coll = responses[0];
    let propstats: Vec<_> = coll.elements().filter(|e| e.is(DAV, "propstat")).collect();
    assert_eq!(propstats.len(), 1, "the 404 propstat emptied out and was dropped: {out}");
    let prop = propstats[0].child(DAV, "prop").unwrap();
    assert_eq!(prop.child(PUSH, "topic").unwrap().text(), "T/alice/cal/");
    let key = prop
        .child(PUSH, "transports")
        .unwrap()
        .child(PUSH, "web-push")
        .unwrap()
        .child(PUSH, "vapid-public-key")
        .unwrap();
    assert_eq!((key.text().as_str(), key.attr("type")), ("BKEY", Some("p256ecdsa")));
    assert!(prop.child("http://calendarserver.org/ns/", "getctag").is_some(), "upstream props kept");
    // The member keeps its 404 for our properties: it is not push-capable.
    let item = responses[1];
    let statuses: Vec<String> =
        item.elements().filter(|e| e.is(DAV, "propstat")).map(|p| p.child(DAV, "status").unwrap().text()).collect();
    assert_eq!(statuses, vec!["HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found"]);
    assert!(item.elements().any(|p| p.child(DAV, "prop").is_some_and(|p| p.child(PUSH, "topic").is_some())));
}

#[test]
fn propfind_without_push_props_is_left_alone() {
    let k = analyze_propfind(br#"<D:propfind xmlns:D="DAV:"><D:prop><D:getetag/></D:prop></D:propfind>"#).unwrap();
    assert!(!k.wants_push());
    assert_eq!(analyze_propfind(b""), Some(PropfindKind::AllProp));
    assert_eq!(analyze_propfind(br#"<propfind xmlns="DAV:"><propname/></propfind>"#), Some(PropfindKind::PropName));
    assert_eq!(analyze_propfind(b"<not-xml"), None);
}

#[test]
fn propname_lists_names_and_allprop_adds_values() {
    let out = rewrite_multistatus(UPSTREAM_404, &PropfindKind::PropName, |_| Some(vals("t"))).unwrap();
    let root = xml::parse(&out).unwrap();
    let coll = root.child(DAV, "response").unwrap();
    let ok = coll
        .elements()
        .find(|p| p.is(DAV, "propstat") && p.child(DAV, "status").unwrap().text().contains("200"))
        .unwrap();
    let topic = ok.child(DAV, "prop").unwrap().child(PUSH, "topic").unwrap();
    assert!(topic.children.is_empty(), "propname gives empty elements");
    let out = rewrite_multistatus(UPSTREAM_404, &PropfindKind::AllProp, |_| Some(vals("t"))).unwrap();
    assert!(out.contains("<P:topic>t</P:topic>"), "{out}");
    assert!(out.contains("<X:service>websocket</X:service>"), "{out}");
}

#[test]
fn issue_9_a_multistatus_with_a_byte_order_mark_is_rewritten_and_mapped_in_place() {
    // Found by the `multistatus` fuzz target: positions were 3 bytes off after a BOM.
    let body = format!("\u{feff}{UPSTREAM_404}");
    let kind = analyze_propfind(
        br#"<propfind xmlns="DAV:" xmlns:P="https://bitfire.at/webdav-push"><prop><P:topic/></prop></propfind>"#,
    )
    .unwrap();
    let out = rewrite_multistatus(&body, &kind, |_| Some(vals("t"))).unwrap();
    assert!(out.contains("<P:topic>t</P:topic>"), "{out}");
    let mapped = map_hrefs(&body, |h| Some(format!("/dav{h}"))).unwrap();
    assert!(mapped.contains("<href>/dav/alice/cal/</href>"), "{mapped}");
    assert!(xml::parse(&mapped).is_ok(), "{mapped}");
}

#[test]
fn the_grant_is_answered_only_by_name_and_only_where_given() {
    let kind =
        analyze_propfind(br#"<propfind xmlns="DAV:" xmlns:X="urn:davpush:1"><prop><X:grant/></prop></propfind>"#)
            .unwrap();
    assert!(kind.wants_push() && kind.wants_grant());
    let out = rewrite_multistatus(UPSTREAM_404, &kind, |href| {
        Some(PushValues { grant: (href == "/alice/cal/").then(|| "G.S".to_owned()), ..vals("t") })
    })
    .unwrap();
    assert!(out.contains("<X:grant>G.S</X:grant>"), "{out}");
    // Another collection without a grant: 404 for it, and no empty 200 propstat.
    let out = rewrite_multistatus(UPSTREAM_404, &kind, |_| Some(vals("t"))).unwrap();
    let root = xml::parse(&out).unwrap();
    let coll = root.child(DAV, "response").unwrap();
    let statuses: Vec<String> = coll
        .elements()
        .filter(|e| e.is(DAV, "propstat") && e.child(DAV, "prop").unwrap().child(DAVPUSH, "grant").is_some())
        .map(|p| p.child(DAV, "status").unwrap().text())
        .collect();
    assert_eq!(statuses, vec!["HTTP/1.1 404 Not Found"], "{out}");
    // allprop and propname never carry it.
    for k in [PropfindKind::AllProp, PropfindKind::PropName] {
        assert!(!k.wants_grant());
        let out =
            rewrite_multistatus(UPSTREAM_404, &k, |_| Some(PushValues { grant: Some("G.S".into()), ..vals("t") }))
                .unwrap();
        assert!(!out.contains("grant"), "{out}");
    }
}

const DAVX5_REGISTER: &str = r#"<push-register xmlns="https://bitfire.at/webdav-push">
    <subscription><web-push-subscription>
      <push-resource>https://up.example.net/yohd4yai5Phiz1wi</push-resource>
      <subscription-public-key type="p256dh">BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4</subscription-public-key>
      <auth-secret>BTBZMqHH6r4Tts7J_aSIgg</auth-secret>
    </web-push-subscription></subscription>
    <expires>Wed, 20 Dec 2023 10:03:31 GMT</expires>
  </push-register>"#;

#[test]
fn davx5_registration_without_trigger_means_content_updates() {
    let root = is_push_register(DAVX5_REGISTER.as_bytes()).unwrap();
    let r = parse_push_register(&root).unwrap();
    assert_eq!(r.push_resource, "https://up.example.net/yohd4yai5Phiz1wi");
    assert!(r.content && !r.property);
    assert_eq!(r.expires, Some(1703066611));
}

#[test]
fn spec_sample_registration_and_refusals() {
    let spec = r#"<push-register xmlns="https://bitfire.at/webdav-push" xmlns:D="DAV:">
  <subscription><web-push-subscription>
      <push-resource>https://up.example.net/yohd4yai5Phiz1wi</push-resource>
      <content-encoding>aes128gcm</content-encoding>
      <subscription-public-key type="p256dh">BCVxsr7N</subscription-public-key>
      <auth-secret>BTBZMqHH6r4Tts7J_aSIgg</auth-secret>
  </web-push-subscription></subscription>
  <trigger><content-update><D:depth>infinity</D:depth></content-update>
    <property-update><D:depth>0</D:depth><D:prop><D:displayname/><D:owner/></D:prop></property-update></trigger>
  <expires>Wed, 20 Dec 2023 10:03:31 GMT</expires></push-register>"#;
    let r = parse_push_register(&is_push_register(spec.as_bytes()).unwrap()).unwrap();
    assert!(r.content && r.property);
    let no_trigger = spec.replace("<content-update><D:depth>infinity</D:depth></content-update>", "").replace(
        "<property-update><D:depth>0</D:depth><D:prop><D:displayname/><D:owner/></D:prop></property-update>",
        "",
    );
    assert_eq!(
        parse_push_register(&is_push_register(no_trigger.as_bytes()).unwrap()),
        Err(RegisterError::NoSupportedTrigger)
    );
    let bad_enc = spec.replace("aes128gcm", "aesgcm");
    assert!(matches!(
        parse_push_register(&is_push_register(bad_enc.as_bytes()).unwrap()),
        Err(RegisterError::InvalidSubscription(_))
    ));
    let relative = spec.replace("https://up.example.net/yohd4yai5Phiz1wi", "/relative");
    assert!(matches!(
        parse_push_register(&is_push_register(relative.as_bytes()).unwrap()),
        Err(RegisterError::InvalidSubscription(_))
    ));
    assert!(is_push_register(b"<other xmlns='DAV:'/>").is_none());
    assert!(is_push_register(b"").is_none());
    let e = dav_error("no-supported-trigger", "x");
    assert!(e.contains("<D:error") && e.contains("<P:no-supported-trigger/>"), "{e}");
}

#[test]
fn hrefs_are_mapped_everywhere_and_the_rest_is_kept() {
    let body = r#"<?xml version="1.0"?>
<d:multistatus xmlns:d="DAV:"><d:response><d:href>/alice/a&amp;b/</d:href><d:propstat><d:prop>
<d:current-user-principal><d:href>http://up:5232/alice/</d:href></d:current-user-principal>
<x:other xmlns:x="urn:x"><x:href>/alice/</x:href></x:other></d:prop>
<d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>"#;
    let out = map_hrefs(body, |h| match h.strip_prefix("http://up:5232") {
        Some(p) => Some(format!("https://dav.example.org/dav{p}")),
        None => h.starts_with('/').then(|| format!("/dav{h}")),
    })
    .unwrap();
    assert!(out.contains("<d:href>/dav/alice/a&amp;b/</d:href>"), "{out}");
    assert!(out.contains("<d:href>https://dav.example.org/dav/alice/</d:href>"), "{out}");
    assert!(out.contains("<x:href>/alice/</x:href>"), "only DAV:href is mapped: {out}");
    assert!(out.starts_with("<?xml version=\"1.0\"?>\n<d:multistatus xmlns:d=\"DAV:\">"), "{out}");
}
