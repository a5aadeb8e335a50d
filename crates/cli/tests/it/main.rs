#![allow(missing_docs)]
#![allow(clippy::unwrap_used)] // tests, benches and examples stop at the first failure
//! Integration tests of the `davpush` binary and its subcommands, against real servers on
//! loopback (a Director, the gateway, Radicale).

mod bench_fanout;
mod bench_stalled;
mod browser_push_service;
mod config;
mod documented;
mod documented_elsewhere;
mod durable;
mod fd_limit;
mod gateway_ops;
mod gateway_web_push;
mod install;
mod listen;
mod listen_readme;
mod monitoring;
mod operator;
mod php_recipes;
mod procs;
mod proxy_tls;
mod push_bench;
mod push_service_plaintext;
mod radicale_recipe;
mod sd_notify;
mod secrets_in_gateway_logs;
mod secrets_in_logs;
mod topic_secret;
mod vapid;
mod xandikos_push;
mod xandikos_recipe;
