#![allow(missing_docs)]
#![allow(clippy::unwrap_used)] // tests, benches and examples stop at the first failure
//! Integration tests of the `davpush` binary and its subcommands, against real servers on
//! loopback (a Director, the gateway, Radicale).

mod config;
mod fd_limit;
mod install;
mod listen;
mod radicale_hook;
mod sd_notify;
mod secrets_in_logs;
