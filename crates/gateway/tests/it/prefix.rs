//! The gateway published under another path than the upstream's: hrefs, Location and
//! registration URLs are in the public URL space, topics stay those of the upstream's paths.

use davpush_gateway::xml::{self, DAV};
use serde_json::json;

use crate::util::*;

#[tokio::test]
async fn a_gateway_under_dav_maps_hrefs_and_locations() {
    let Some(mut s) = stack_with_public_path("/dav/").await else { return };
    let cal = s.mkcalendar_at("/dav/alice/work/", "alice").await;
    assert_eq!(cal, "/alice/work/");
    let public_cal = format!("/dav{cal}");
    assert_eq!(s.put_event("alice", &format!("{public_cal}e1.ics"), "e1", "x", &[]).await, 201);

    // PROPFIND: every href is under /dav/, including those inside property values.
    let body = r#"<propfind xmlns="DAV:" xmlns:P="https://bitfire.at/webdav-push"><prop><resourcetype/><current-user-principal/><P:topic/></prop></propfind>"#;
    let (st, _, text) =
        s.dav("PROPFIND", &public_cal, "alice", &[("Depth", "1"), ("Content-Type", "application/xml")], body).await;
    assert_eq!(st, 207, "{text}");
    let root = xml::parse(&text).unwrap();
    let hrefs: Vec<String> =
        root.elements().filter(|r| r.is(DAV, "response")).map(|r| r.child(DAV, "href").unwrap().text()).collect();
    assert!(hrefs.len() == 2 && hrefs.iter().all(|h| h.starts_with("/dav/alice/work/")), "{hrefs:?}");
    assert!(text.contains(">/dav/alice/</"), "the principal's href is mapped too: {text}");
    // The topic is that of the upstream path, as `davpush topic` computes it.
    let (key, _) = davpush_gateway::RawGatewayConfig { data_dir: s.data.path().to_owned(), ..Default::default() }
        .topic_key()
        .unwrap();
    assert!(text.contains(&key.topic(&cal).unwrap()), "{text}");
    // REPORT passes through with mapped hrefs too.
    let report = r#"<sync-collection xmlns="DAV:"><sync-token/><sync-level>1</sync-level><prop><getetag/></prop></sync-collection>"#;
    let (st, _, text) = s.dav("REPORT", &public_cal, "alice", &[("Content-Type", "application/xml")], report).await;
    assert_eq!(st, 207);
    assert!(text.contains("/dav/alice/work/e1.ics"), "{text}");

    // Registration URLs live under the public prefix, and deleting one works there.
    let keys = json!({"p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "auth": "BTBZMqHH6r4Tts7J_aSIgg"});
    let reg = format!(
        r#"<push-register xmlns="https://bitfire.at/webdav-push"><subscription><web-push-subscription>
        <push-resource>{}</push-resource><subscription-public-key type="p256dh">{}</subscription-public-key>
        <auth-secret>{}</auth-secret></web-push-subscription></subscription></push-register>"#,
        s.push.endpoint("p"),
        keys["p256dh"].as_str().unwrap(),
        keys["auth"].as_str().unwrap()
    );
    let (st, h, b) = s.dav("POST", &public_cal, "alice", &[("Content-Type", "application/xml")], &reg).await;
    assert_eq!(st, 201, "{b}");
    let location = h.get("location").unwrap().to_str().unwrap().to_owned();
    assert!(location.starts_with(&format!("{}/dav/.davpush/registrations/", s.gateway.url())), "{location}");
    assert_eq!(s.put_event("alice", &format!("{public_cal}e2.ics"), "e2", "y", &[]).await, 201);
    s.push.next().await;
    let reg_path = url::Url::parse(&location).unwrap().path().to_owned();
    let (st, _, _) = s.dav("DELETE", &reg_path, "alice", &[], "").await;
    assert_eq!(st, 204);
}
