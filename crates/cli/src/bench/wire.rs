//! A lean WebSocket client (RFC 6455, client side) for the load tool's connections, so that
//! reading a frame costs next to nothing next to the server it measures: the opening handshake
//! by hand on the raw `TcpStream`, then one fixed buffer per connection that unmasked server
//! frames are parsed in place from (no allocation and no copy per frame).
//!
//! Only what a davpush server sends is accepted: whole (unfragmented) text, binary and control
//! frames without reserved bits, unmasked, no larger than the buffer. Anything else is a
//! [`WireError`], which ends the connection (counted); nothing here panics on the peer's bytes.

use std::fmt;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::SetupError;

pub(super) const OP_TEXT: u8 = 0x1;
pub(super) const OP_BINARY: u8 = 0x2;
pub(super) const OP_CLOSE: u8 = 0x8;
pub(super) const OP_PING: u8 = 0x9;
pub(super) const OP_PONG: u8 = 0xA;

/// Longest frame header: 2 bytes, a 64-bit length (no mask: server frames are unmasked).
const MAX_HEADER: usize = 10;

/// A server frame this client does not accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WireError {
    /// A continuation frame or one without FIN (the server sends whole messages).
    Fragmented,
    /// Payload longer than the read buffer allows.
    Oversized(u64),
    /// A masked frame (servers must not mask, RFC 6455 §5.1).
    Masked,
    /// Reserved bits set (no extension was negotiated).
    Reserved,
    /// An opcode RFC 6455 does not define.
    Opcode(u8),
    /// A control frame over 125 bytes.
    LongControl,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Fragmented => write!(f, "fragmented frame"),
            WireError::Oversized(n) => write!(f, "frame of {n} bytes, over the read buffer"),
            WireError::Masked => write!(f, "masked server frame"),
            WireError::Reserved => write!(f, "reserved bits set"),
            WireError::Opcode(op) => write!(f, "unknown opcode {op:#x}"),
            WireError::LongControl => write!(f, "control frame over 125 bytes"),
        }
    }
}

/// Where a complete frame lies in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Head {
    pub(super) opcode: u8,
    /// Offset of the payload from the frame's start.
    pub(super) header: usize,
    pub(super) len: usize,
}

impl Head {
    pub(super) fn total(&self) -> usize {
        self.header + self.len
    }
}

/// Parses the frame at the start of `buf`: `Ok(None)` while it is incomplete. A frame is
/// refused as soon as its header shows it cannot be accepted (before its payload arrives).
pub(super) fn parse(buf: &[u8], max_payload: usize) -> Result<Option<Head>, WireError> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(WireError::Reserved);
    }
    let opcode = b0 & 0x0F;
    match opcode {
        0x0 => return Err(WireError::Fragmented),
        OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
        other => return Err(WireError::Opcode(other)),
    }
    if b0 & 0x80 == 0 {
        return Err(WireError::Fragmented);
    }
    if b1 & 0x80 != 0 {
        return Err(WireError::Masked);
    }
    let (header, len) = match b1 & 0x7F {
        126 => {
            let Some(b) = buf.get(2..4) else { return Ok(None) };
            (4, u64::from(u16::from_be_bytes([b[0], b[1]])))
        }
        127 => {
            let Some(b) = buf.get(2..10) else { return Ok(None) };
            (10, u64::from_be_bytes(b.try_into().expect("8 bytes")))
        }
        n => (2, u64::from(n)),
    };
    if opcode >= OP_CLOSE && len > 125 {
        return Err(WireError::LongControl);
    }
    if len > max_payload as u64 {
        return Err(WireError::Oversized(len));
    }
    let len = len as usize;
    Ok((buf.len() >= header + len).then_some(Head { opcode, header, len }))
}

/// One connection's read buffer: bytes `start..end` are read but not yet consumed.
pub(super) struct Reader {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Reader {
    /// A reader whose frames may be up to `capacity` bytes, header included.
    pub(super) fn new(capacity: usize) -> Reader {
        Reader { buf: vec![0; capacity.max(MAX_HEADER + 126)].into_boxed_slice(), start: 0, end: 0 }
    }

    fn max_payload(&self) -> usize {
        self.buf.len() - MAX_HEADER
    }

    /// The unconsumed bytes.
    pub(super) fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks `n` pending bytes consumed.
    pub(super) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// The next complete frame's head, if the buffer holds one; take it with [`Reader::take`].
    pub(super) fn head(&self) -> Result<Option<Head>, WireError> {
        parse(self.pending(), self.max_payload())
    }

    /// Consumes the frame `head` (from [`Reader::head`]) and returns its payload.
    pub(super) fn take(&mut self, head: Head) -> &[u8] {
        let at = self.start + head.header;
        self.consume(head.total());
        // `consume` may reset the indices when the buffer empties; the bytes stay in place
        // until the next read.
        &self.buf[at..at + head.len]
    }

    /// Free space to read into, after moving the pending bytes to the front. Never empty when
    /// [`Reader::head`] returned `Ok(None)`: a frame it accepts fits the buffer.
    pub(super) fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Records `n` bytes read into [`Reader::spare`].
    pub(super) fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Reads until a complete frame is buffered; `Ok(None)` at the end of the stream.
    pub(super) async fn fill_frame(&mut self, stream: &mut TcpStream) -> std::io::Result<Option<Head>> {
        loop {
            match self.head() {
                Ok(Some(h)) => return Ok(Some(h)),
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())),
            }
            let spare = self.spare();
            if spare.is_empty() {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "read buffer full"));
            }
            let n = stream.read(spare).await?;
            if n == 0 {
                return Ok(None);
            }
            self.filled(n);
        }
    }
}

/// Masking keys for client frames (RFC 6455 §5.3 asks for unpredictable ones; a load tool on
/// loopback only needs them to differ).
pub(super) struct Masks(u64);

impl Masks {
    pub(super) fn new(seed: u64) -> Masks {
        use std::hash::BuildHasher;
        Masks(std::hash::RandomState::new().hash_one(seed) | 1)
    }

    fn next(&mut self) -> [u8; 4] {
        // xorshift64
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x as u32).to_le_bytes()
    }

    /// Appends a masked client frame (FIN set) to `out`.
    pub(super) fn frame(&mut self, opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
        out.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= usize::from(u16::MAX) => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = self.next();
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    }
}

/// What the opening handshake sends besides the key.
#[derive(Debug, Clone)]
pub(super) struct Upgrade {
    /// `Host` header value.
    pub(super) host: String,
    /// Request target (path and query).
    pub(super) target: String,
    pub(super) protocol: &'static str,
    /// `Authorization` header value.
    pub(super) authorization: Option<String>,
}

/// Largest response head accepted.
const MAX_HEAD: usize = 8192;

/// The opening handshake (RFC 6455 §4.1) on `stream`: sends the upgrade request, reads the
/// response head and checks 101, `Sec-WebSocket-Accept` and the subprotocol. Bytes the server
/// sent after the head (its first frames) stay in `reader`.
pub(super) async fn handshake(stream: &mut TcpStream, up: &Upgrade, reader: &mut Reader) -> Result<(), SetupError> {
    let key = generate_key();
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Protocol: {}\r\n",
        up.target, up.host, up.protocol
    );
    if let Some(a) = &up.authorization {
        req.push_str("Authorization: ");
        req.push_str(a);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.map_err(|e| SetupError::Io(e, "WebSocket upgrade"))?;
    // The head, read in chunks that may run into the first frames.
    let mut head: Vec<u8> = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(at) = find(&head, b"\r\n\r\n") {
            break at + 4;
        }
        if head.len() > MAX_HEAD {
            return Err(SetupError::Protocol("the upgrade response head is over 8 KiB".into()));
        }
        let n = stream.read(&mut chunk).await.map_err(|e| SetupError::Io(e, "WebSocket upgrade"))?;
        if n == 0 {
            return Err(SetupError::Closed("connection ended during the upgrade".into()));
        }
        head.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let rest = &head[end..];
    let status = status_of(&text).ok_or_else(|| SetupError::Protocol(format!("not an HTTP response: {text:?}")))?;
    if status != 101 {
        let body = error_body(stream, &text, rest.to_vec()).await;
        return Err(if status == 401 { SetupError::Unauthorized(body) } else { SetupError::Http(status, body) });
    }
    let accept = header(&text, "sec-websocket-accept");
    if accept != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return Err(SetupError::Protocol(format!("wrong Sec-WebSocket-Accept: {accept:?}")));
    }
    let protocol = header(&text, "sec-websocket-protocol");
    if protocol != Some(up.protocol) {
        return Err(SetupError::Protocol(format!("server chose subprotocol {protocol:?}, not {}", up.protocol)));
    }
    let spare = reader.spare();
    if rest.len() > spare.len() {
        return Err(SetupError::Protocol("the server's first frames overflow the read buffer".into()));
    }
    spare[..rest.len()].copy_from_slice(rest);
    reader.filled(rest.len());
    Ok(())
}

/// The body of a refused upgrade: what arrives of `Content-Length` bytes (at most 4 KiB).
async fn error_body(stream: &mut TcpStream, head: &str, mut body: Vec<u8>) -> String {
    let want = header(head, "content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0).min(4096);
    let mut chunk = [0u8; 1024];
    while body.len() < want {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(4096);
    String::from_utf8_lossy(&body).into_owned()
}

fn status_of(head: &str) -> Option<u16> {
    let line = head.lines().next()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

/// Value of the first header `name` (lower case) in a response head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// Position of `needle` in `hay`.
pub(super) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let last_start = hay.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        // Jump to the next occurrence of the first byte.
        match hay[i..=last_start].iter().position(|&b| b == first) {
            Some(p) => i += p,
            None => return None,
        }
        if &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The `sync_token` of a `notify` frame, found by byte search (empty when it has none or it is
/// unterminated); `None` for other frames. The Director writes compact JSON, and the sync tokens
/// of this tool need no escapes.
pub(super) fn notify_token(payload: &[u8]) -> Option<&[u8]> {
    find(payload, br#""type":"notify""#)?;
    const KEY: &[u8] = br#""sync_token":""#;
    let Some(at) = find(payload, KEY).map(|at| at + KEY.len()) else { return Some(&[]) };
    let len = payload[at..].iter().position(|&b| b == b'"').unwrap_or(0);
    Some(&payload[at..at + len])
}

/// Parses ASCII digits (no sign, no overflow).
pub(super) fn digits(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 18 {
        return None;
    }
    s.iter().try_fold(0usize, |n, &b| b.is_ascii_digit().then(|| n * 10 + usize::from(b - b'0')))
}

#[cfg(test)]
#[path = "wire/tests.rs"]
mod tests;
