#![allow(missing_docs)]
//! Integration tests of the Push Director: a real server on 127.0.0.1:0, real HTTP and
//! WebSocket clients.

mod fake_push;
mod util;

mod draft;
mod errors;
mod ops;
mod subscription;
mod webpush;
mod websocket;
