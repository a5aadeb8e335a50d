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
                let gate = Arc::new(Gate { tcp: parts.io.into_inner(), rest: Mutex::new(Vec::new()) });
                (Io::Gated { gate: gate.clone(), pre: parts.read_buf }, Some(gate))
            }
            Err(upgraded) => (Io::Upgraded(TokioIo::new(upgraded)), None),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Upgraded(u) => Pin::new(u).poll_read(cx, buf),
            Io::Gated { pre, .. } if !pre.is_empty() => {
                let n = pre.len().min(buf.remaining());
                buf.put_slice(&pre.split_to(n));
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
