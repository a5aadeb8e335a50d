//! The davpush Push Director: the Notify API for application servers, the Subscription API for
//! clients, and WebSocket push, over HTTP (axum). Protocol: `docs/protocol.md`.
//!
//! # Layout
//! - [`config`]: defaults → TOML → `DAVPUSH_*` → flags; validation naming the key (the push
//!   services' sections are `davpush_delivery`'s settings). Creates nothing.
//! - [`startup`]: [`Config::prepare`]: the data directory, secrets, VAPID key, WebDAV verifier.
//! - [`app`]: start-up (`build`), router, `serve(listener, state, shutdown)`, background sweeps,
//!   `spawn`.
//! - `state`: [`AppState`], what handlers and connection tasks share.
//! - [`http`]: one module per API; errors mapped to status + JSON in [`http::error`].
//! - `ws`: the WebSocket connection task; it only moves frames between the socket and
//!   [`davpush_core::session`] (the protocol).
//! - `sse`: the Server-Sent Events stream task (`GET /events`): a hub connection written as SSE.
//!
//! No file imports one that imports it back: `app` → `http/*` → `ws` → `state` → `config`
//! (→ `http/webdav_auth` → `http/error`).
//!
//! The HTTP layer only extracts and maps: every decision is made by
//! [`davpush_core::PushService`], so other front ends (the WebDAV gateway, Redis fan-out) reuse it.

pub mod app;
pub mod config;
pub mod http;
mod sse;
pub mod startup;
mod state;
pub mod vapid;
mod ws;

pub use app::{Running, build, router, serve, spawn};
pub use config::{Config, ConfigError, RawConfig};
pub use startup::Startup;
pub use state::AppState;
