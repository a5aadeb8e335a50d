//! Issue 14: SabreDAV, DAViCal and nginx's WebDAV run here for real (started by the tests on
//! loopback) and answer as their users expect, directly (no gateway): principal and home-set
//! discovery, PUT/GET/DELETE, sync-collection where the server has it, and the second user
//! refused on the first user's collection by the server itself.

use davpush_gateway::xml::{self, DAV};
use davpush_testkit::davical::Davical;
use davpush_testkit::nginx_dav::NginxDav;
use davpush_testkit::sabredav::SabreDav;
use reqwest::Method;

use crate::util::basic;

const CALDAV: &str = "urn:ietf:params:xml:ns:caldav";
const CARDDAV: &str = "urn:ietf:params:xml:ns:carddav";
const CS: &str = "http://calendarserver.org/ns/";

/// One request straight to the server; `user` "" sends no credentials.
async fn dav(method: &str, url: &str, user: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut req = http.request(Method::from_bytes(method.as_bytes()).unwrap(), url).body(body.to_owned());
    if !user.is_empty() {
        req = req.header("Authorization", basic(user));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

fn event(uid: &str) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//davpush//test//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20261201T100000Z\r\nDTEND:20261201T110000Z\r\nSUMMARY:{uid}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

fn vcard(uid: &str) -> String {
    format!("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:{uid}\r\nN:{uid};;;;\r\nEND:VCARD\r\n")
}

/// The text of property `ns:name` of the first response of a PROPFIND multistatus.
fn prop(text: &str, ns: &str, name: &str) -> Option<String> {
    let root = xml::parse(text).ok()?;
    let response = root.child(DAV, "response")?;
    response
        .elements()
        .filter(|p| p.is(DAV, "propstat"))
        .filter(|p| p.child(DAV, "status").is_some_and(|s| s.text().contains(" 200 ")))
        .find_map(|p| p.child(DAV, "prop")?.child(ns, name))
        .map(|e| e.elements().find(|h| h.is(DAV, "href")).map(|h| h.text()).unwrap_or_else(|| e.text()))
}

async fn propfind0(url: &str, user: &str, props: &str) -> (u16, String) {
    let body = format!(
        r#"<propfind xmlns="DAV:" xmlns:C="{CALDAV}" xmlns:A="{CARDDAV}" xmlns:CS="{CS}"><prop>{props}</prop></propfind>"#
    );
    dav("PROPFIND", url, user, &[("Depth", "0"), ("Content-Type", "application/xml")], &body).await
}

const SYNC: &str =
    r#"<sync-collection xmlns="DAV:"><sync-token/><sync-level>1</sync-level><prop><getetag/></prop></sync-collection>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_sabredav_serves_caldav_carddav_and_files_under_dav_php() {
    let Some(s) = SabreDav::start() else { return };
    let base = s.url.trim_end_matches('/').to_owned();

    // Discovery as Baïkal's clients do it: the principal, its homes.
    let (st, text) = propfind0(&s.dav_url(), "alice", "<current-user-principal/>").await;
    assert_eq!(st, 207, "{text}\n{}", s.log());
    assert_eq!(prop(&text, DAV, "current-user-principal").as_deref(), Some("/dav.php/principals/alice/"));
    let (st, text) = propfind0(
        &format!("{base}/dav.php/principals/alice/"),
        "alice",
        "<C:calendar-home-set/><A:addressbook-home-set/>",
    )
    .await;
    assert_eq!(st, 207, "{text}");
    assert_eq!(prop(&text, CALDAV, "calendar-home-set").as_deref(), Some("/dav.php/calendars/alice/"));
    assert_eq!(prop(&text, CARDDAV, "addressbook-home-set").as_deref(), Some("/dav.php/addressbooks/alice/"));
    let (st, _) = dav("GET", &format!("{base}/.well-known/caldav"), "", &[], "").await;
    assert_eq!(st, 301);

    // PUT, GET, DELETE of an event; the calendar's CTag moves (there is no sync-token).
    let cal = format!("{base}{}", SabreDav::calendar_path("alice"));
    let ctag = |text: &str| prop(text, CS, "getctag").expect("a getctag");
    let before = ctag(&propfind0(&cal, "alice", "<CS:getctag/>").await.1);
    let ics = event("e1");
    let (st, text) = dav("PUT", &format!("{cal}e1.ics"), "alice", &[("Content-Type", "text/calendar")], &ics).await;
    assert_eq!(st, 201, "{text}");
    let (st, text) = dav("GET", &format!("{cal}e1.ics"), "alice", &[], "").await;
    assert_eq!((st, text.contains("UID:e1")), (200, true), "{text}");
    let after = ctag(&propfind0(&cal, "alice", "<CS:getctag/>").await.1);
    assert_ne!(before, after, "the CTag changes with the calendar");
    let (st, text) = dav("REPORT", &cal, "alice", &[("Content-Type", "application/xml")], SYNC).await;
    assert_ne!(st, 207, "SabreDAV 1.8 has no sync-collection: {text}");
    assert!(text.contains("ReportNotSupported"), "{text}");
    let (st, _) = dav("DELETE", &format!("{cal}e1.ics"), "alice", &[], "").await;
    assert_eq!(st, 204);
    let (st, _) = dav("GET", &format!("{cal}e1.ics"), "alice", &[], "").await;
    assert_eq!(st, 404);

    // A contact; a new calendar.
    let book = format!("{base}{}", SabreDav::addressbook_path("alice"));
    let (st, text) =
        dav("PUT", &format!("{book}c1.vcf"), "alice", &[("Content-Type", "text/vcard")], &vcard("c1")).await;
    assert_eq!(st, 201, "{text}");
    let (st, text) = dav("MKCALENDAR", &format!("{base}/dav.php/calendars/alice/work/"), "alice", &[], "").await;
    assert_eq!(st, 201, "{text}");

    // Files, with LOCK.
    let files = format!("{base}{}", SabreDav::files_path("alice"));
    let (st, _) = dav("PUT", &format!("{files}a.txt"), "alice", &[], "hello").await;
    assert_eq!(st, 201);
    let (st, text) = dav("GET", &format!("{files}a.txt"), "alice", &[], "").await;
    assert_eq!((st, text.as_str()), (200, "hello"));
    let lock = r#"<?xml version="1.0"?><lockinfo xmlns="DAV:"><lockscope><exclusive/></lockscope><locktype><write/></locktype><owner>t</owner></lockinfo>"#;
    let (st, text) = dav("LOCK", &format!("{files}a.txt"), "alice", &[("Content-Type", "application/xml")], lock).await;
    assert_eq!(st, 200, "{text}");

    // Bob is refused by SabreDAV's ACLs; nobody gets in without credentials.
    for (method, url, body) in [
        ("GET", format!("{book}c1.vcf"), String::new()),
        ("PUT", format!("{cal}e2.ics"), ics.clone()),
        ("GET", format!("{files}a.txt"), String::new()),
        ("PROPFIND", files.clone(), String::new()),
    ] {
        let (st, text) = dav(method, &url, "bob", &[], &body).await;
        assert_eq!(st, 403, "bob {method} {url}: {text}");
    }
    let (st, _) = dav("PROPFIND", &cal, "", &[], "").await;
    assert_eq!(st, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_davical_serves_caldav_and_carddav_from_its_own_database() {
    let Some(d) = Davical::start() else { return };
    let base = d.url.trim_end_matches('/').to_owned();
    let exists = |name: &str| {
        let sql = format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'");
        d.pg.command("psql")
            .args(["-qXAt", "-d", "postgres", "-c", &sql])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default()
    };
    assert_eq!(exists(&d.database), b"1\n");

    let (st, text) = propfind0(&format!("{base}/caldav.php/"), "alice", "<current-user-principal/>").await;
    assert_eq!(st, 207, "{text}\n{}", d.log());
    assert_eq!(prop(&text, DAV, "current-user-principal").as_deref(), Some("/caldav.php/alice/"));
    let principal = format!("{base}{}", Davical::principal_path("alice"));
    let (st, text) = propfind0(&principal, "alice", "<C:calendar-home-set/><A:addressbook-home-set/>").await;
    assert_eq!(st, 207, "{text}");
    assert_eq!(prop(&text, CALDAV, "calendar-home-set").as_deref(), Some("/caldav.php/alice/"));
    assert_eq!(prop(&text, CARDDAV, "addressbook-home-set").as_deref(), Some("/caldav.php/alice/"));
    let (st, _) = dav("GET", &format!("{base}/.well-known/caldav"), "", &[], "").await;
    assert_eq!(st, 301);

    let cal = format!("{principal}calendar/");
    let (st, text) = dav("MKCALENDAR", &cal, "alice", &[], "").await;
    assert_eq!(st, 201, "{text}\n{}", d.log());
    let (st, text) = dav("REPORT", &cal, "alice", &[("Content-Type", "application/xml")], SYNC).await;
    assert_eq!(st, 207, "{text}");
    let token =
        |text: &str| xml::parse(text).unwrap().child(DAV, "sync-token").map(|t| t.text()).expect("a sync-token");
    let first = token(&text);
    let ics = event("e1");
    let (st, text) = dav("PUT", &format!("{cal}e1.ics"), "alice", &[("Content-Type", "text/calendar")], &ics).await;
    assert_eq!(st, 201, "{text}");
    let (st, text) = dav("GET", &format!("{cal}e1.ics"), "alice", &[], "").await;
    assert_eq!((st, text.contains("UID:e1")), (200, true), "{text}");
    let (st, text) = dav("REPORT", &cal, "alice", &[("Content-Type", "application/xml")], SYNC).await;
    assert_eq!(st, 207);
    assert!(text.contains("/caldav.php/alice/calendar/e1.ics"), "{text}");
    assert_ne!(token(&text), first, "the sync-token moves");

    let book = format!("{principal}addresses/");
    let mkcol = format!(
        r#"<mkcol xmlns="DAV:" xmlns:A="{CARDDAV}"><set><prop><resourcetype><collection/><A:addressbook/></resourcetype></prop></set></mkcol>"#
    );
    let (st, text) = dav("MKCOL", &book, "alice", &[("Content-Type", "application/xml")], &mkcol).await;
    assert_eq!(st, 201, "{text}");
    let (st, text) =
        dav("PUT", &format!("{book}c1.vcf"), "alice", &[("Content-Type", "text/vcard")], &vcard("c1")).await;
    assert_eq!(st, 201, "{text}");

    for (method, url, body) in [
        ("GET", format!("{cal}e1.ics"), String::new()),
        ("PUT", format!("{cal}e2.ics"), ics.clone()),
        ("PROPFIND", cal.clone(), String::new()),
        ("GET", format!("{book}c1.vcf"), String::new()),
    ] {
        let (st, text) = dav(method, &url, "bob", &[], &body).await;
        assert_eq!(st, 403, "bob {method} {url}: {text}");
    }
    let (st, _) = dav("PROPFIND", &cal, "", &[], "").await;
    assert_eq!(st, 401);
    let (st, _) = dav("DELETE", &format!("{cal}e1.ics"), "alice", &[], "").await;
    assert_eq!(st, 204);

    // Its database goes with it.
    let name = d.database.clone();
    let pg = d.pg.clone();
    drop(d);
    let sql = format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'");
    let out = pg.command("psql").args(["-qXAt", "-d", "postgres", "-c", &sql]).output().unwrap();
    assert_eq!(out.stdout, b"0\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_nginx_serves_webdav_files_to_their_owner() {
    let Some(n) = NginxDav::start() else { return };
    let files = format!("{}{}", n.url.trim_end_matches('/'), NginxDav::files_path("alice"));

    let (st, text) = dav("PUT", &format!("{files}a.txt"), "alice", &[], "hello").await;
    assert_eq!(st, 201, "{text}\n{}", n.log());
    let (st, text) = dav("GET", &format!("{files}a.txt"), "alice", &[], "").await;
    assert_eq!((st, text.as_str()), (200, "hello"));
    let (st, text) = dav("PROPFIND", &files, "alice", &[("Depth", "1")], "").await;
    assert_eq!(st, 207, "{text}");
    assert!(text.contains("/files/alice/a.txt"), "{text}");
    let (st, _) = dav("MKCOL", &format!("{files}sub/"), "alice", &[], "").await;
    assert_eq!(st, 201);
    let dest = format!("{files}sub/b.txt");
    let (st, _) = dav("MOVE", &format!("{files}a.txt"), "alice", &[("Destination", &dest)], "").await;
    // nginx answers 204 where RFC 4918 says 201 (a new resource at the destination).
    assert_eq!(st, 204);
    let (st, _) = dav("GET", &dest, "alice", &[], "").await;
    assert_eq!(st, 200);
    let lock = r#"<?xml version="1.0"?><lockinfo xmlns="DAV:"><lockscope><exclusive/></lockscope><locktype><write/></locktype><owner>t</owner></lockinfo>"#;
    let (st, text) = dav("LOCK", &dest, "alice", &[("Content-Type", "application/xml")], lock).await;
    assert_eq!(st, 200, "{text}");
    let (st, _) = dav("DELETE", &dest, "alice", &[], "").await;
    assert_eq!(st, 423, "locked");
    let (st, _) = dav("PROPPATCH", &files, "alice", &[], "").await;
    assert_eq!(st, 405, "nginx has no PROPPATCH");

    let (st, _) = dav("GET", &format!("{files}sub/b.txt"), "bob", &[], "").await;
    assert_eq!(st, 403);
    let (st, _) = dav("PUT", &format!("{files}c.txt"), "bob", &[], "x").await;
    assert_eq!(st, 403);
    let (st, _) = dav("PROPFIND", &files, "", &[], "").await;
    assert_eq!(st, 401);
    let (st, _) = dav("PUT", &format!("{}/files/bob/b.txt", n.url.trim_end_matches('/')), "bob", &[], "x").await;
    assert_eq!(st, 201, "bob in his own folder");
}
