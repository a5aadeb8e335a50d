#![allow(missing_docs)]
#![allow(clippy::unwrap_used)] // tests, benches and examples stop at the first failure
//! Integration tests of the client library against a real Director on loopback.

mod push_service;
mod wss;
