//! The davpush gateway: a reverse proxy in front of an unmodified WebDAV/CalDAV/CardDAV server
//! that plays the Application Server's part of WebDAV Push and speaks the current WebDAV-Push
//! spec to clients such as DAVx⁵.
//!
//! # Layout
//! - [`config`]: the gateway's configuration.
//! - [`app`]: the router and the server; every request goes through `app::handle`.
//! - [`state`]: [`GatewayState`] and start-up.
//! - [`upstream`]: the transparent proxy (headers, `Destination`/`Location`, href mapping) and
//!   the permission check asked of the upstream.
//! - [`methods`]: OPTIONS and PROPFIND (discovery), POST and the writes (which collections a
//!   write changes).
//! - [`register`]: `push-register` and the `DELETE` of registration URLs.
//! - [`error`]: [`GatewayError`], every refusal of the gateway's own.
//! - [`dav`]: PROPFIND analysis, multistatus rewrite, `push-register`, `DAV:error`.
//! - [`xml`]: a small namespace-aware XML tree.
//! - [`topic`]: canonical collection paths and their keyed topics.
//! - [`registration`]: self-authenticating registration URLs, owners, `Push-Dont-Notify`.
//! - [`notifier`]: the bounded queue of change notifications to the Director.
//! - [`ops`]: `healthz`, `readyz` and `metrics` under `.davpush/`, and the access log.
//! - [`metrics`]: the gateway's Prometheus metrics (`davpush_gateway_*`).
//! - `web`: the browser module, the demo calendar, WebSocket tickets and the WebSocket proxy.
//!
//! The choice a reader may question: registrations are not stored by the gateway. A
//! registration URL carries its Director subscription and owner under an HMAC, so the gateway
//! stays stateless and the Director remains the one place that holds subscriptions.

pub mod app;
pub mod config;
pub mod dav;
pub mod error;
pub mod methods;
pub mod metrics;
pub mod notifier;
pub mod ops;
pub mod register;
pub mod registration;
pub mod state;
pub mod topic;
pub mod upstream;
mod web;
pub mod xml;

pub use app::{RunningGateway, spawn};
pub use config::{GatewayConfig, RawGatewayConfig};
pub use error::GatewayError;
pub use state::{GatewayState, StartError};
pub use web::{DAVPUSH_JS, WEBPUSH_JS};
