#![allow(missing_docs)]
//! Integration tests of the Push Director: a real server on 127.0.0.1:0, real HTTP and
//! WebSocket clients.

mod fake_apns;
mod fake_fcm;
mod fake_hms;
mod fake_jwt;
mod fake_push;
mod util;

mod apns;
mod cluster;
mod connections;
mod draft;
mod errors;
mod fcm;
mod grants;
mod hms;
mod ops;
mod relay;
mod subscription;
mod webpush;
mod websocket;
