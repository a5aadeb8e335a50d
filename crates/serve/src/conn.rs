//! One connection's task: hyper's HTTP/1.1 connection (with upgrades), watched by the
//! deadlines of its phase, and the service that tells the registry when requests begin and end.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tower::Service;

use crate::registry::{Phase, Registry};
use crate::{Limits, Observer, Refusal};

/// What every connection task shares.
pub(crate) struct Shared {
    pub(crate) router: Router,
    pub(crate) registry: Arc<Registry>,
    pub(crate) limits: Limits,
    pub(crate) observer: Option<Observer>,
}

impl Shared {
    pub(crate) fn refused(&self, why: Refusal) {
        tracing::debug!(reason = why.as_str(), "connection closed before a request");
        if let Some(o) = &self.observer {
            o(why);
        }
    }
}

/// Serves one accepted connection until it closes, is upgraded, times out or is shed.
/// `stop` turns true when the server shuts down; `_done` is dropped when this task ends.
pub(crate) async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    wake: Arc<Notify>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    _done: watch::Receiver<()>,
) {
    let svc = ConnService { router: shared.router.clone(), registry: shared.registry.clone(), id, peer };
    // No hyper timer: its header-read timeout also runs while a keep-alive connection is idle,
    // which would cap the idle timeout at the header-read timeout. Both are enforced below.
    let conn =
        http1::Builder::new().header_read_timeout(None).serve_connection(TokioIo::new(stream), svc).with_upgrades();
    tokio::pin!(conn);
    let limits = &shared.limits;
    let far = || Instant::now() + std::time::Duration::from_secs(86_400 * 365);
    // Set once hyper was asked to close after the request in progress; a connection that does
    // not finish within `idle_timeout` more (a client that does not read) is dropped.
    let mut closing: Option<Instant> = None;
    let mut stopping = *stop.borrow();
    loop {
        let phase = shared.registry.phase(id);
        if let Some(Phase::Shed(why)) = phase {
            shared.refused(why);
            break;
        }
        if stopping && closing.is_none() {
            if let Some(Phase::Pending { .. }) = phase {
                break;
            }
            conn.as_mut().graceful_shutdown();
            closing = Some(Instant::now());
        }
        let deadline = match (phase, closing) {
            (_, Some(since)) => since + limits.idle_timeout,
            (Some(Phase::Pending { since }), None) => since + limits.header_read_timeout,
            (Some(Phase::Idle { since, .. }), None) => since + limits.idle_timeout,
            _ => far(),
        };
        tokio::select! {
            _ = conn.as_mut() => break,
            _ = wake.notified() => {}
            _ = stop.changed(), if !stopping => stopping = true,
            _ = tokio::time::sleep_until(deadline) => {
                if closing.is_some() {
                    tracing::debug!("connection dropped: it did not finish closing");
                    break;
                }
                match shared.registry.phase(id) {
                    Some(Phase::Pending { since }) if since + limits.header_read_timeout <= Instant::now() => {
                        shared.refused(Refusal::HeaderTimeout);
                        break;
                    }
                    Some(Phase::Idle { since, .. }) if since + limits.idle_timeout <= Instant::now() => {
                        tracing::trace!("idle keep-alive connection closed");
                        conn.as_mut().graceful_shutdown();
                        closing = Some(Instant::now());
                    }
                    _ => {}
                }
            }
        }
    }
    shared.registry.remove(id);
}

/// The per-connection service: counts the request in the registry for as long as its handler
/// runs and its response body is being sent, and gives handlers the peer address
/// (`ConnectInfo<SocketAddr>`).
#[derive(Clone)]
struct ConnService {
    router: Router,
    registry: Arc<Registry>,
    id: u64,
    peer: SocketAddr,
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        self.registry.begin(self.id);
        let guard = InFlight { registry: self.registry.clone(), id: self.id };
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let mut router = self.router.clone();
        Box::pin(async move {
            let resp = router.call(req).await?;
            Ok(resp.map(|inner| Body::new(Tracked { inner, _guard: guard })))
        })
    }
}

/// One request in progress; its end is reported when dropped.
struct InFlight {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.registry.end(self.id, Instant::now());
    }
}

/// A response body that holds its request's [`InFlight`] until hyper has taken all of it.
struct Tracked {
    inner: Body,
    _guard: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
