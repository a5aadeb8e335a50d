//! Every API answers bad input with a precise 4xx and a JSON error body.

use serde_json::{Value, json};

use crate::util::*;

async fn raw(
    d: &TestDirector,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = d.http.request(method.parse().unwrap(), d.url(path)).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body, headers)
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test]
async fn notify_without_or_with_a_wrong_token_is_401_with_www_authenticate() {
    let d = start("").await;
    let body = br#"{"topic":"t1"}"#.to_vec();
    let (s, b, h) = raw(&d, "POST", "/notify", &[JSON], body.clone()).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("unauthorized")));
    assert_eq!(h["www-authenticate"], "Bearer realm=\"davpush\"");

    let bad = format!("Bearer {}", NOTIFY_TOKEN.replace('0', "1"));
    let (s, _, h) = raw(&d, "POST", "/notify", &[JSON, ("authorization", &bad)], body.clone()).await;
    assert_eq!(s, 401);
    assert!(h["www-authenticate"].to_str().unwrap().contains("invalid_token"));

    // The subscription token is not a notify token.
    let sub = format!("Bearer {SUB_TOKEN}");
    let (s, _, _) = raw(&d, "POST", "/notify", &[JSON, ("authorization", &sub)], body.clone()).await;
    assert_eq!(s, 401);

    // Unauthenticated callers learn nothing about the body: 401 even for garbage.
    let (s, _, _) = raw(&d, "POST", "/notify", &[], b"garbage".to_vec()).await;
    assert_eq!(s, 401);
    let m = d.metrics().await;
    assert_eq!(metric(&m, "davpush_requests_rejected_total{reason=\"notify_unauthorized\"}"), 4.0, "{m}");
}

#[tokio::test]
async fn subscription_api_requires_its_token() {
    let d = start("").await;
    let body = json!({"client_id": "c", "topic": "t", "push_services": {"websocket": {"connection_id": "x"}}});
    let (s, b) = d.post("/subscribe", None, body.clone()).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("unauthorized")));
    let (s, _) = d.post("/subscribe", Some(NOTIFY_TOKEN), body).await;
    assert_eq!(s, 401);
    let (s, _) = d.post("/unsubscribe", Some("wrong-token-but-long-enough"), json!({"client_id": "c"})).await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn malformed_and_misshaped_json_is_400() {
    let d = start("").await;
    let auth = format!("Bearer {NOTIFY_TOKEN}");
    let h = [JSON, ("authorization", auth.as_str())];
    let (s, b, _) = raw(&d, "POST", "/notify", &h, br#"{"topic": "#.to_vec()).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_json")), "{b}");

    // A misspelt `exclude` would notify the very client that asked not to be: refused, named.
    let (s, b, _) = raw(&d, "POST", "/notify", &h, br#"{"topic":"t","excludes":["x"]}"#.to_vec()).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_request")), "{b}");
    assert!(b["message"].as_str().unwrap().contains("excludes"), "{b}");

    let (s, b, _) = raw(&d, "POST", "/notify", &h, br#"{"sync_token":"x"}"#.to_vec()).await;
    assert_eq!((s, b["field"].as_str()), (400, Some("topic")), "{b}");

    let (s, b, _) = raw(&d, "POST", "/notify", &h, br#"{"topic":"has space"}"#.to_vec()).await;
    assert_eq!((s, b["field"].as_str()), (400, Some("topic")), "{b}");

    let (s, b) = d.subscribe(json!({"client_id": "c", "topic": "t", "push_services": {"pigeon": {}}})).await;
    assert_eq!(
        (s, b["error"].as_str(), b["field"].as_str()),
        (400, Some("unknown_push_service"), Some("push_services.pigeon"))
    );

    let (s, b) = d.subscribe(json!({"client_id": "c", "topic": "t", "push_services": {}})).await;
    assert_eq!((s, b["field"].as_str()), (400, Some("push_services")), "{b}");

    let (s, b) = d
        .subscribe(json!({"client_id": "c", "topic": "t", "push_services": {"websocket": {"connection_id": "nope"}}}))
        .await;
    assert_eq!(
        (s, b["error"].as_str(), b["field"].as_str()),
        (400, Some("invalid_push_service"), Some("push_services.websocket.connection_id"))
    );
    let (s, b) =
        d.subscribe(json!({"client_id": "c", "topic": "t", "push_services": {"websocket": {"connection": "x"}}})).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_push_service")), "{b}");
}

#[tokio::test]
async fn overlong_topics_are_400_and_oversized_bodies_413() {
    let d = start("[server]\nmax_body_bytes = 2048\n").await;
    let (s, b) = d.notify(json!({"topic": "a".repeat(257)})).await;
    assert_eq!((s, b["field"].as_str()), (400, Some("topic")));
    assert!(b["message"].as_str().unwrap().contains("at most 256"), "{b}");
    let (s, _) = d.notify(json!({"topic": "a".repeat(256)})).await;
    assert_eq!(s, 202);

    let big = json!({"topic": "t", "sync_token": "x".repeat(4000)});
    let (s, b) = d.notify(big).await;
    assert_eq!((s, b["error"].as_str()), (413, Some("payload_too_large")), "{b}");
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let d = start("").await;
    let auth = format!("Bearer {NOTIFY_TOKEN}");
    let (s, b, _) = raw(
        &d,
        "POST",
        "/notify",
        &[("content-type", "text/plain"), ("authorization", &auth)],
        br#"{"topic":"t"}"#.to_vec(),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (415, Some("unsupported_media_type")));
    let (s, _, _) = raw(&d, "POST", "/notify", &[("authorization", &auth)], br#"{"topic":"t"}"#.to_vec()).await;
    assert_eq!(s, 415, "a missing Content-Type is not JSON either");
    let (s, _, _) = raw(
        &d,
        "POST",
        "/notify",
        &[("content-type", "application/json; charset=utf-8"), ("authorization", &auth)],
        br#"{"topic":"t"}"#.to_vec(),
    )
    .await;
    assert_eq!(s, 202);
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let d = start("").await;
    let (s, b, _) = raw(&d, "GET", "/nope", &[], Vec::new()).await;
    assert_eq!((s, b["error"].as_str()), (404, Some("not_found")));
    let (s, b, h) = raw(&d, "GET", "/notify", &[], Vec::new()).await;
    assert_eq!((s, b["error"].as_str()), (405, Some("method_not_allowed")));
    assert!(h.get("allow").is_some_and(|v| v.to_str().unwrap().contains("POST")), "{h:?}");
    let (s, _, _) = raw(&d, "DELETE", "/subscribe", &[], Vec::new()).await;
    assert_eq!(s, 405);
}

#[tokio::test]
async fn unsubscribing_nothing_is_404() {
    let d = start("").await;
    let (s, b) = d.post("/unsubscribe", Some(SUB_TOKEN), json!({"client_id": "nobody"})).await;
    assert_eq!((s, b["error"].as_str()), (404, Some("not_found")));
}

/// Sends only the head of a POST announcing `content_length` bytes, never the body, and reads
/// the answer (bounded: 5 s).
async fn head_only(d: &TestDirector, path: &str, token: Option<&str>, content_length: u64) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(d.running.addr).await.unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {content_length}\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 4096];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before a complete answer: {}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).into_owned();
            let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
            let length: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .expect("the answer has a Content-Length");
            if body.len() >= length {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                return (status, serde_json::from_str(&body[..length]).unwrap());
            }
        }
    })
    .await;
    answer.expect("no answer within 5 s: the server waits for the announced body")
}

#[tokio::test]
async fn issue_9_an_oversized_content_length_is_413_before_the_body_is_read() {
    let d = start("[server]\nmax_body_bytes = 2048\n").await;
    let huge = 1 << 40;
    for path in ["/subscribe", "/unsubscribe"] {
        let (s, b) = head_only(&d, path, Some(SUB_TOKEN), huge).await;
        assert_eq!((s, b["error"].as_str()), (413, Some("payload_too_large")), "{path}: {b}");
        assert!(b["message"].as_str().unwrap().contains("2048"), "{b}");
    }
    let (s, b) = head_only(&d, "/notify", Some(NOTIFY_TOKEN), huge).await;
    assert_eq!((s, b["error"].as_str()), (413, Some("payload_too_large")), "{b}");
    // The Notify API authenticates before it looks at the body, announced or not.
    let (s, b) = head_only(&d, "/notify", None, huge).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("unauthorized")), "{b}");
    let (s, b) = head_only(&d, "/notify", Some("wrong-token-0123456789"), huge).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("unauthorized")), "{b}");
    // The limit itself is allowed; one byte more is not.
    let auth = format!("Bearer {NOTIFY_TOKEN}");
    let headers = [("content-type", "application/json"), ("authorization", auth.as_str())];
    let body = |len: usize| format!("{:<len$}", r#"{"topic":"t"}"#).into_bytes();
    let (s, b, _) = raw(&d, "POST", "/notify", &headers, body(2048)).await;
    assert_eq!(s, 202, "{b}");
    let (s, b, _) = raw(&d, "POST", "/notify", &headers, body(2049)).await;
    assert_eq!((s, b["error"].as_str()), (413, Some("payload_too_large")), "{b}");
}
