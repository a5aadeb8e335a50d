//! The davpush Push Director: the Notify API for application servers, the Subscription API for
//! clients, and WebSocket push, over HTTP (axum). Protocol: `docs/protocol.md`.
//!
//! # Layout
//! - [`config`]: defaults → TOML → `DAVPUSH_*` → flags; validation naming the key (the push
//!   services' sections are `davpush_delivery`'s settings). Creates nothing.
//! - [`startup`]: [`Config::prepare`]: the data directory, secrets, VAPID key, WebDAV verifier.
//! - [`app`]: state, router, `serve(listener, state, shutdown)`, background sweeps, `spawn`.
//! - [`http`]: one module per API; errors mapped to status + JSON in [`http::error`].
//! - `ws`: the WebSocket connection task and the protocol's request handling.
//!
//! The HTTP layer only extracts and maps: every decision is made by
//! [`davpush_core::PushService`], so other front ends (the WebDAV gateway, Redis fan-out) reuse it.

pub mod app;
pub mod config;
pub mod http;
pub mod startup;
mod ws;

pub use app::{AppState, Running, build, router, serve, spawn};
pub use config::{Config, ConfigError, RawConfig};
pub use startup::Startup;
