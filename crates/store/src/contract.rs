//! What both databases must do for the outbox and the VAPID keys, run against each
//! (SQLite in a temporary file, PostgreSQL in a schema of its own) with several handles on one
//! database, as several nodes (or a node and `davpush vapid rotate`) have.

use davpush_core::{PendingDelivery, StoredSubscription, StoredVapidKey, SubscriptionStore};

/// A Web Push subscription row of `client` to `topic`.
pub(crate) fn row(id: &str, client: &str, topic: &str, expires: i64) -> StoredSubscription {
    StoredSubscription {
        id: id.into(),
        client_id: client.into(),
        topic: topic.into(),
        service: "web_push".into(),
        target: r#"{"endpoint":"https://push.example/1"}"#.into(),
        expires,
        created: 1,
        triggers: 3,
    }
}

fn sub(id: &str) -> StoredSubscription {
    StoredSubscription {
        id: id.into(),
        client_id: format!("client-{id}"),
        topic: "t".into(),
        service: "web_push".into(),
        target: r#"{"endpoint":"https://push.example/1"}"#.into(),
        expires: i64::MAX / 2,
        created: 1,
        triggers: 3,
    }
}

fn pending(id: &str, now: i64) -> PendingDelivery {
    PendingDelivery {
        subscription_id: id.into(),
        topic: "t".into(),
        sync_token: Some("s".into()),
        trigger: None,
        attempt: 1,
        due: now,
        deadline: now + 100,
    }
}

fn ids(rows: Vec<PendingDelivery>) -> Vec<String> {
    let mut ids: Vec<String> = rows.into_iter().map(|p| p.subscription_id).collect();
    ids.sort();
    ids
}

/// `a`, `b` and `c` are three handles on one empty database.
pub(crate) async fn outbox_owners_and_keys(
    a: &dyn SubscriptionStore,
    b: &dyn SubscriptionStore,
    c: &dyn SubscriptionStore,
) {
    let now = davpush_core::unix_now();
    for id in ["s1", "s2", "s3"] {
        a.upsert(&sub(id)).await.unwrap();
    }
    // `a` holds what it saves: nobody claims it, `a` itself does not take it twice.
    a.save_pending(&[pending("s1", now)]).await.unwrap();
    assert!(b.claim_pending(now, 10).await.unwrap().is_empty(), "held by a");
    assert!(a.claim_pending(now + 1_000, 10).await.unwrap().is_empty(), "a's own rows are never claimed again");
    // Released (a graceful stop): the next claimer takes it, once.
    assert_eq!(a.release_pending().await.unwrap(), 1);
    assert_eq!(ids(b.claim_pending(now, 10).await.unwrap()), ["s1"]);
    assert!(c.claim_pending(now, 10).await.unwrap().is_empty(), "claimed by b");
    // `c` dies holding s2 with a 3 s lease: taken over only once the lease has ended.
    c.set_outbox_lease(3);
    c.save_pending(&[pending("s2", now)]).await.unwrap();
    assert!(b.claim_pending(now + 2, 10).await.unwrap().is_empty(), "lease still running");
    assert_eq!(ids(b.claim_pending(now + 10, 10).await.unwrap()), ["s2"]);
    // `b` renews both rows; `a` cannot take them while the renewed lease runs.
    assert_eq!(b.renew_pending(now + 10).await.unwrap(), 2);
    assert!(a.claim_pending(now + 20, 10).await.unwrap().is_empty());
    // Rows queued and released by another handle (`vapid rotate`): claimed page by page.
    c.save_pending(&[pending("s3", now)]).await.unwrap();
    c.release_pending().await.unwrap();
    assert_eq!(a.claim_pending(now, 0).await.unwrap().len(), 0);
    assert_eq!(ids(a.claim_pending(now, 1).await.unwrap()), ["s3"]);
    assert_eq!(ids(a.load_pending().await.unwrap()), ["s1", "s2", "s3"], "load_pending sees every row");

    // VAPID keys: added once, the newest unretired advertised, retired ones deletable.
    let key = |id: &str, created, pem: &str| StoredVapidKey { id: id.into(), pem: pem.into(), created, retired: None };
    a.add_vapid_keys(&[key("k1", 1, "pem1")]).await.unwrap();
    b.add_vapid_keys(&[key("k2", 2, "pem2"), key("k1", 9, "other")]).await.unwrap();
    let keys = c.vapid_keys().await.unwrap();
    assert_eq!(davpush_core::store::advertised(&keys).unwrap().id, "k2");
    let k1 = keys.iter().find(|k| k.id == "k1").unwrap();
    assert_eq!((k1.created, k1.pem.as_str()), (1, "pem1"), "an id already there is left as it is");
    a.retire_vapid_key("k2", 5).await.unwrap();
    b.retire_vapid_key("k2", 7).await.unwrap();
    let keys = c.vapid_keys().await.unwrap();
    assert_eq!(davpush_core::store::advertised(&keys).unwrap().id, "k1");
    assert_eq!(keys.iter().find(|k| k.id == "k2").unwrap().retired, Some(5), "retired once");
    assert!(!a.delete_vapid_key("k1").await.unwrap(), "the advertised key stays");
    assert!(a.delete_vapid_key("k2").await.unwrap());
    assert_eq!(b.vapid_keys().await.unwrap().len(), 1);
}

/// Issue 11, only the routing in memory: start-up reads rows without their targets, page by
/// page; a notify reads the targets of the unexpired ones among given ids (quotes, escapes and
/// non-ASCII in a target come back as written). `store` is empty.
pub(crate) async fn routes_and_targets(store: &dyn SubscriptionStore) {
    // (`\u001e` and `\u001f`: JSON's escapes of the separators a SQLite page is read with.)
    let target =
        |i: usize| format!(r#"{{"endpoint":"https://push.example/{i}?a=\"b\"&c=é\\\u001e\u001f","p256dh":"k{i}"}}"#);
    for i in 0..7 {
        let mut r = sub(&format!("s{i}"));
        r.client_id = format!("client-{i}");
        r.target = target(i);
        r.triggers = 1;
        if i == 3 {
            r.expires = 10;
        }
        upsert_new(store, &r).await;
    }
    let (mut routes, mut after) = (Vec::new(), String::new());
    loop {
        let page = store.load_routes_page(100, &after, 4).await.unwrap();
        let n = page.rows.len();
        routes.extend(page.rows);
        after = page.next;
        if n < 4 {
            break;
        }
    }
    let mut ids: Vec<&str> = routes.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["s0", "s1", "s2", "s4", "s5", "s6"], "every unexpired row, once");
    assert!(routes.iter().all(|r| r.target.is_empty() && r.triggers == 1 && r.topic == "t"), "{routes:?}");
    assert_eq!(routes.iter().find(|r| r.id == "s5").unwrap().client_id, "client-5");

    let ask: Vec<String> = ["s1", "s3", "s5", "missing", "s6"].into_iter().map(String::from).collect();
    let mut found = store.load_targets(&ask, 100).await.unwrap();
    found.sort();
    assert_eq!(found, [("s1".into(), target(1)), ("s5".into(), target(5)), ("s6".into(), target(6))]);
    assert!(store.load_targets(&[], 100).await.unwrap().is_empty());
    store.delete(&["s5".into()]).await.unwrap();
    assert_eq!(store.load_targets(&ask, 100).await.unwrap().len(), 2, "a deleted row is not read");

    // A topic's targets of one service, page by page in id order: s0 s1 s2 s4 s6 are left
    // (s3 expired, s5 deleted); rows of another topic or service are not read.
    let mut other_topic = sub("s7");
    other_topic.topic = "u".into();
    upsert_new(store, &other_topic).await;
    let mut other_service = sub("s8");
    other_service.service = "fcm".into();
    upsert_new(store, &other_service).await;
    let first = store.load_topic_targets("t", "web_push", "", 100, 3).await.unwrap();
    assert_eq!(first, [("s0".into(), target(0)), ("s1".into(), target(1)), ("s2".into(), target(2))]);
    let rest = store.load_topic_targets("t", "web_push", "s2", 100, 3).await.unwrap();
    assert_eq!(rest, [("s4".into(), target(4)), ("s6".into(), target(6))], "fewer than asked: the last page");
    assert!(store.load_topic_targets("t", "web_push", "s6", 100, 3).await.unwrap().is_empty());
    assert_eq!(store.load_topic_targets("t", "fcm", "", 100, 3).await.unwrap().len(), 1);
    // An upsert of an existing subscription keeps its id and is read with its new target.
    let mut again = sub("other-id");
    again.client_id = "client-4".into();
    again.target = target(40);
    assert_eq!(store.upsert(&again).await.unwrap(), "s4", "the first id is kept");
    let rest = store.load_topic_targets("t", "web_push", "s2", 100, 3).await.unwrap();
    assert_eq!(rest, [("s4".into(), target(40)), ("s6".into(), target(6))]);

    // Ids are ordered byte by byte (as the Director cuts a big topic into ranges: Rust's
    // string order), not by a language's collation, which would put "a1" before "B9" and
    // ignore the "-" of "a-1".
    for (i, id) in ["a1", "B9", "a-1", "_z", "a-0"].into_iter().enumerate() {
        let mut r = sub(id);
        r.topic = "order".into();
        r.client_id = format!("order-{i}");
        upsert_new(store, &r).await;
    }
    let ids = |rows: Vec<(String, String)>| rows.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    let first = store.load_topic_targets("order", "web_push", "", 100, 3).await.unwrap();
    assert_eq!(ids(first), ["B9", "_z", "a-0"]);
    let rest = store.load_topic_targets("order", "web_push", "a-0", 100, 3).await.unwrap();
    assert_eq!(ids(rest), ["a-1", "a1"]);
}

async fn upsert_new(store: &dyn SubscriptionStore, r: &StoredSubscription) {
    assert_eq!(store.upsert(r).await.unwrap(), r.id);
}

/// Outbox rows: a save replaces the row of its subscription, a row needs its subscription
/// (none is kept for an unknown one) and goes with it, and a delete removes it. `store` is empty.
pub(crate) async fn outbox_rows(store: &dyn SubscriptionStore) {
    store.upsert(&sub("a")).await.unwrap();
    let p = |id: &str, token: &str, attempt| PendingDelivery {
        subscription_id: id.into(),
        topic: "t".into(),
        sync_token: Some(token.into()),
        trigger: None,
        attempt,
        due: 5,
        deadline: 50,
    };
    store.save_pending(&[p("a", "s1", 1)]).await.unwrap();
    store.save_pending(&[p("a", "s2", 2)]).await.unwrap();
    store.save_pending(&[p("no-such-subscription", "x", 1)]).await.unwrap();
    assert_eq!(store.load_pending().await.unwrap(), vec![p("a", "s2", 2)]);
    store.delete(&["a".into()]).await.unwrap();
    assert!(store.load_pending().await.unwrap().is_empty(), "deleting a subscription deletes its outbox row");
    store.upsert(&sub("b")).await.unwrap();
    store.save_pending(&[p("b", "s3", 1)]).await.unwrap();
    store.delete_pending(&["b".into()]).await.unwrap();
    assert!(store.load_pending().await.unwrap().is_empty());
}
