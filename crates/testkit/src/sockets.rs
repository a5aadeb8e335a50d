//! Raw TCP clients for the connection-limit tests (issue 9): idle or half-sent connections,
//! and waiting until the server has closed one.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens `n` connections to `addr` that send nothing.
pub async fn idle_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(TcpStream::connect(addr).await.expect("connect"));
    }
    v
}

/// A connection that has sent the start of a request head, never its end.
pub async fn half_sent_request(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ").await.expect("write");
    s
}

/// Sends one complete keep-alive `GET path` on `s` and returns the response head (status line
/// and headers) once the whole response has been read; the body must have a Content-Length.
pub async fn keep_alive_get(s: &mut TcpStream, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk))
            .await
            .expect("no response within 30 s")
            .expect("read");
        assert!(n > 0, "connection closed before the response was complete");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end];
            let len: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .expect("content-length")
                .parse()
                .expect("a number");
            if buf.len() >= end + 4 + len {
                return head.to_owned();
            }
        }
    }
}

/// Waits until the server closes `s` (end of stream or reset), reading and discarding what
/// it sends meanwhile; panics if that has not happened within `bound` (a safety bound for a
/// hanging test, not a measurement).
pub async fn wait_closed_by_server(s: &mut TcpStream, bound: Duration) {
    let mut chunk = [0u8; 4096];
    let closed = tokio::time::timeout(bound, async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server did not close the connection within {bound:?}");
}
