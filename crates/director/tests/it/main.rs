#![allow(missing_docs)]
#![allow(clippy::unwrap_used)] // tests, benches and examples stop at the first failure
//! Integration tests of the Push Director: a real server on 127.0.0.1:0, real HTTP and
//! WebSocket clients.

mod util;

mod admin;
mod apns;
mod browser;
mod cluster;
mod connections;
mod draft;
mod durable_targets;
mod errors;
mod events;
mod fanout_direct;
mod fcm;
mod grants;
mod hms;
mod ops;
mod push_cluster;
mod push_service;
mod readiness;
mod subscription;
mod topics;
mod vapid_live;
mod vapid_rotation;
mod webpush;
mod websocket;
