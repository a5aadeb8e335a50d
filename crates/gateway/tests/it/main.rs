//! The gateway in front of a real Radicale, with a real Director, a local push service and
//! independent decryption (Python http_ece).
#![allow(missing_docs)]
#![allow(clippy::unwrap_used)] // tests, benches and examples stop at the first failure

mod util;

mod browser;
mod connections;
mod demo_page;
mod discovery;
mod litmus;
mod matrix;
mod notifications;
mod ops;
mod php_servers;
mod prefix;
mod registration;
mod security;
mod webdav_auth;
