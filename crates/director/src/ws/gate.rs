//! The socket of an upgraded WebSocket connection, shared by its task and the fan-out.
//!
//! Every byte written to the TCP socket passes one per-connection gate, a small non-async mutex
//! that holds the unwritten rest of a frame (if the socket took only a part of it). Writers hand
//! the gate whole frames: the fan-out one pre-encoded notification frame at a time
//! ([`DirectSocket::try_write_frame`]), the connection's task whatever tungstenite writes
//! (answers, pings, pongs, close frames), which [`Io`] takes all or nothing. So bytes of two
//! frames never interleave, whoever writes them. The fan-out only ever `try_lock`s the gate and
//! gives up (to the connection's mailbox) if it is busy, if a rest is waiting, or if the socket
//! would block; only the task waits for the socket to become writable.
//!
//! Reads are the task's alone. A connection whose stream is not a plain `TcpStream` (a server
//! built on another listener) is served through hyper's `Upgraded` as before, without a gate.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use davpush_core::live::{DirectSocket, Wrote};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// One connection's TCP socket and its write gate.
#[derive(Debug)]
pub(crate) struct Gate {
    tcp: TcpStream,
    /// The unwritten rest of the frame the socket last took a part of; empty (and without an
    /// allocation) almost always.
    rest: Mutex<Vec<u8>>,
}

impl Gate {
    /// Writes as much of `rest` as the socket takes now. `Ok(true)` when nothing is left.
    fn drain(&self, rest: &mut Vec<u8>) -> io::Result<bool> {
        while !rest.is_empty() {
            match self.tcp.try_write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    rest.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        if rest.capacity() > 0 {
            // An idle connection keeps no buffer.
            *rest = Vec::new();
        }
        Ok(true)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.rest.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The task's write: all of `buf` (the rest kept in the gate) or, if the socket would
    /// block before any of it was written, nothing.
    fn poll_write_all(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            {
                let mut rest = self.lock();
                if self.drain(&mut rest)? {
                    match self.tcp.try_write(buf) {
                        Ok(n) => {
                            rest.extend_from_slice(&buf[n..]);
                            return Poll::Ready(Ok(buf.len()));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
            }
            ready!(self.tcp.poll_write_ready(cx))?;
        }
    }

    /// Writes the rest, if any, waiting for the socket as needed.
    fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.drain(&mut self.lock())? {
                return Poll::Ready(Ok(()));
            }
            ready!(self.tcp.poll_write_ready(cx))?;
        }
    }
}

impl DirectSocket for Gate {
    fn try_write_frame(&self, frame: &[u8]) -> Wrote {
        let Ok(mut rest) = self.rest.try_lock() else {
            return Wrote::Nothing;
        };
        if !rest.is_empty() {
            return Wrote::Nothing;
        }
        match self.tcp.try_write(frame) {
            Ok(n) if n == frame.len() => Wrote::All,
            Ok(0) | Err(_) => Wrote::Nothing,
            Ok(n) => {
                rest.extend_from_slice(&frame[n..]);
                Wrote::Part
            }
        }
    }
}

/// The stream a connection's WebSocket runs on.
#[derive(Debug)]
pub(crate) enum Io {
    /// A TCP socket behind a gate; `pre` holds bytes the client sent before the upgrade was
    /// answered (read by hyper already).
    Gated { gate: Arc<Gate>, pre: Bytes },
    /// Any other upgraded stream: no direct writes.
    Upgraded(TokioIo<Upgraded>),
}

impl Io {
    /// The stream of an upgraded connection, and its gate if it is a plain TCP socket.
    pub(crate) fn new(upgraded: Upgraded) -> (Io, Option<Arc<Gate>>) {
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                // `read_buf` is a slice of hyper's read buffer: copied (usually nothing), so
                // that the connection does not keep that buffer alive.
                let pre =
                    if parts.read_buf.is_empty() { Bytes::new() } else { Bytes::copy_from_slice(&parts.read_buf) };
                let (io, gate) = Io::gated(parts.io.into_inner(), pre);
                (io, Some(gate))
            }
            Err(upgraded) => (Io::Upgraded(TokioIo::new(upgraded)), None),
        }
    }

    /// `tcp` behind a new gate, with `pre` read from it already.
    fn gated(tcp: TcpStream, pre: Bytes) -> (Io, Arc<Gate>) {
        let gate = Arc::new(Gate { tcp, rest: Mutex::new(Vec::new()) });
        (Io::Gated { gate: gate.clone(), pre }, gate)
    }
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Upgraded(u) => Pin::new(u).poll_read(cx, buf),
            Io::Gated { pre, .. } if !pre.is_empty() => {
                let n = pre.len().min(buf.remaining());
                buf.put_slice(&pre.split_to(n));
                if pre.is_empty() {
                    *pre = Bytes::new();
                }
                Poll::Ready(Ok(()))
            }
            Io::Gated { gate, .. } => loop {
                ready!(gate.tcp.poll_read_ready(cx))?;
                match gate.tcp.try_read(buf.initialize_unfilled()) {
                    Ok(n) => {
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
            },
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Upgraded(u) => Pin::new(u).poll_write(cx, buf),
            Io::Gated { gate, .. } => gate.poll_write_all(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Upgraded(u) => Pin::new(u).poll_flush(cx),
            Io::Gated { gate, .. } => gate.poll_drain(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Upgraded(u) => Pin::new(u).poll_shutdown(cx),
            Io::Gated { gate, .. } => {
                ready!(gate.poll_drain(cx))?;
                Poll::Ready(socket2::SockRef::from(&gate.tcp).shutdown(std::net::Shutdown::Write))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use davpush_core::live::ws_text_frame;
    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpListener;
    use tokio_tungstenite::WebSocketStream;
    use tungstenite::Message;
    use tungstenite::protocol::Role;

    use super::*;

    /// A connected pair on loopback: the server's side behind a gate (with a small send buffer,
    /// so that the socket fills and takes frames in parts), the client's side plain.
    async fn pair() -> (WebSocketStream<Io>, Arc<Gate>, WebSocketStream<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        socket2::SockRef::from(&server).set_send_buffer_size(8 * 1024).unwrap();
        socket2::SockRef::from(&client).set_recv_buffer_size(8 * 1024).unwrap();
        let (io, gate) = Io::gated(server, Bytes::from_static(b"\x89\x80\0\0\0\0")); // a (masked) client ping, read early
        let server = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        (server, gate, client)
    }

    fn payload(kind: &str, n: usize) -> String {
        // ~3 KB: larger than what a nearly full socket takes, so that writes end in parts.
        format!("{kind} {n:05} {}", "x".repeat(3000))
    }

    /// Issue 17: the fan-out's direct writes and the connection task's own writes (answers,
    /// pings) go to one socket at the same time, the socket fills up and takes frames in parts,
    /// and the client still parses every frame whole and in each writer's order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn direct_and_task_writes_interleave_as_whole_frames() {
        let (mut server, gate, mut client) = pair().await;
        let (parts_tx, mut parts_rx) = tokio::sync::mpsc::channel::<()>(1);
        let full = Arc::new(AtomicBool::new(false));
        // The fan-out: 400 frames, each tried until the socket takes it (a `Nothing` would send
        // it through the mailbox in the Director; here it is tried again). After a `Part` the
        // task is told to write the rest, as `Connection::deliver` wakes it.
        let fanout = {
            let (gate, full) = (gate.clone(), full.clone());
            std::thread::spawn(move || {
                let mut counts = [0usize; 3];
                for n in 0..400 {
                    let frame = ws_text_frame(payload("direct", n).as_bytes());
                    loop {
                        match gate.try_write_frame(&frame) {
                            Wrote::All => counts[0] += 1,
                            Wrote::Part => {
                                counts[1] += 1;
                                let _ = parts_tx.try_send(());
                            }
                            Wrote::Nothing => {
                                counts[2] += 1;
                                full.store(true, Ordering::Release);
                                std::thread::yield_now();
                                continue;
                            }
                        }
                        break;
                    }
                }
                counts
            })
        };
        // The connection's task: 200 answers and 20 pings (each `send` also writes any rest a
        // direct frame left), then whatever rests remain, until the client closes.
        let task = tokio::spawn(async move {
            for n in 0..200 {
                server.send(Message::text(payload("answer", n))).await.unwrap();
                if n % 10 == 0 {
                    server.send(Message::Ping(Bytes::from_static(b"p"))).await.unwrap();
                }
            }
            loop {
                tokio::select! {
                    Some(()) = parts_rx.recv() => server.flush().await.unwrap(),
                    msg = server.next() => match msg {
                        Some(Ok(Message::Close(_))) | None => break,
                        Some(Ok(_)) => {}
                        Some(Err(e)) => panic!("server read: {e}"),
                    },
                }
            }
            server.flush().await.unwrap();
        });
        // The client reads nothing until the socket was found full once.
        while !full.load(Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
        let (mut direct, mut answers, mut pings, mut pongs) = (Vec::new(), Vec::new(), 0, 0);
        while direct.len() < 400 || answers.len() < 200 {
            match client.next().await.expect("connection ended").expect("every frame whole") {
                Message::Text(t) => {
                    let (kind, rest) = t.as_str().split_once(' ').unwrap();
                    let n: usize = rest[..5].parse().unwrap();
                    assert_eq!(t.as_str(), payload(kind, n));
                    match kind {
                        "direct" => direct.push(n),
                        "answer" => answers.push(n),
                        other => panic!("unexpected {other}"),
                    }
                }
                Message::Ping(_) => pings += 1,
                Message::Pong(_) => pongs += 1,
                other => panic!("unexpected frame {other:?}"),
            }
        }
        assert_eq!(direct, (0..400).collect::<Vec<_>>(), "direct frames whole and in order");
        assert_eq!(answers, (0..200).collect::<Vec<_>>(), "answers whole and in order");
        assert_eq!(pings, 20);
        let counts = fanout.join().unwrap();
        assert_eq!(counts[0] + counts[1], 400);
        assert!(counts[2] > 0, "the socket was full at least once: {counts:?}");
        // The client's ping that hyper had read with the upgrade request is answered, and its
        // close; then the server's side lets go of the socket and the client sees it end.
        client.close(None).await.unwrap();
        task.await.unwrap();
        assert!(gate.lock().is_empty(), "no rest left behind");
        drop(gate);
        while let Some(msg) = client.next().await {
            match msg.expect("every frame whole") {
                Message::Pong(_) => pongs += 1,
                Message::Close(_) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
        assert_eq!(pongs, 1);
    }
}
