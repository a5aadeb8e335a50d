#![allow(missing_docs)]
//! Integration tests of the client library against a real Director on loopback.

mod wss;
