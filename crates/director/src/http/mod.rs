//! The HTTP layer: one small handler per route; each extracts, calls one `PushService` method
//! and maps the result. Errors are mapped in [`error`].

pub mod admin;
pub mod error;
pub mod forwarded;

pub(crate) mod auth;
pub(crate) mod events;
pub(crate) mod json;
pub(crate) mod notify;
pub(crate) mod ops;
pub(crate) mod push;
pub(crate) mod subscription;
pub mod webdav_auth;
pub(crate) mod websocket;
