//! The gateway's router and server: every request goes through [`handle`], which routes
//! registration URLs, the browser endpoints and the WebDAV methods (see [`crate::methods`]).

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::methods;
use crate::state::{GatewayState, StartError};

/// The router: everything goes through [`handle`].
pub fn router(state: GatewayState) -> Router {
    Router::new().fallback(handle).with_state(state)
}

/// Handles one request.
pub async fn handle(State(st): State<GatewayState>, req: Request) -> Response {
    let access = crate::ops::Access::of(&st, &req);
    let from_script =
        req.headers().get("x-requested-with").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"XMLHttpRequest"));
    let mut resp = dispatch(&st, req).await;
    if from_script && resp.status() == StatusCode::UNAUTHORIZED {
        // A Basic challenge makes browsers show their own login dialog over a page's request
        // (or, headless, wait for one forever); a script that sent the user's credentials itself
        // handles the 401 (the convention of Nextcloud and ownCloud).
        let kept: Vec<HeaderValue> = resp
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter(|v| !v.as_bytes().get(..5).is_some_and(|s| s.eq_ignore_ascii_case(b"basic")))
            .cloned()
            .collect();
        resp.headers_mut().remove(header::WWW_AUTHENTICATE);
        for v in kept {
            resp.headers_mut().append(header::WWW_AUTHENTICATE, v);
        }
    }
    access.done(&st, resp.status());
    resp
}

async fn dispatch(st: &GatewayState, req: Request) -> Response {
    route(st, req).await.unwrap_or_else(IntoResponse::into_response)
}

/// The operations endpoints, registration URLs, the browser endpoints under `.davpush/`, else a
/// WebDAV method.
async fn route(st: &GatewayState, req: Request) -> Result<Response, GatewayError> {
    let path = req.uri().path().to_owned();
    if let Some(rest) = ops_path(st, &path) {
        return crate::ops::handle(st, req.method(), rest).await;
    }
    if let Some(token) = path.strip_prefix(&st.registration_prefix()) {
        return crate::register::registration_request(st, req, token).await;
    }
    if st.cfg.web_clients
        && let Some(rest) = path.strip_prefix(&st.web_prefix())
    {
        return crate::web::handle(st, req, rest).await;
    }
    if !crate::topic::path_is_safe(&path) {
        return Err(GatewayError::BadRequest(
            "paths with `.`/`..` segments, backslashes or encoded slashes are refused".into(),
        ));
    }
    let up_path =
        st.cfg.to_upstream_path(&path).ok_or(GatewayError::NotFound("not under this gateway's public URL"))?;
    methods::handle(st, req, &up_path).await
}

/// `healthz`, `readyz` or `metrics` if `path` is one of them under `<public_url>.davpush/` (or
/// under `/.davpush/`, outside a public path prefix, where nothing of the upstream's is either).
fn ops_path<'a>(st: &GatewayState, path: &'a str) -> Option<&'a str> {
    let rest = path.strip_prefix(&st.web_prefix()).or_else(|| path.strip_prefix("/.davpush/"))?;
    crate::ops::OPS_PATHS.contains(&rest).then_some(rest)
}

/// Serves on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: GatewayState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Header-read and idle timeouts, the pending-connection cap, surviving EMFILE: issue 9.
    let server = davpush_serve::Server::new(state.cfg.connections);
    server.serve(listener, router(state), shutdown).await
}

/// A gateway running in this process.
#[derive(Debug)]
pub struct RunningGateway {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningGateway {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.map_err(std::io::Error::other)?
    }
}

/// Binds `listener` and serves `cfg` in a task.
pub async fn spawn(cfg: GatewayConfig, listener: TcpListener) -> Result<RunningGateway, StartError> {
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: cfg.listen, source })?;
    let state = GatewayState::build(cfg).await?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state, async move {
        let _ = rx.await;
    }));
    Ok(RunningGateway { addr, stop: Some(tx), task })
}
