//! Push-service transports of davpush and the delivery engine they share.
//!
//! # Layout
//! - [`engine`]: retries with backoff and jitter, `Retry-After`, per-subscription coalescing,
//!   the outbox in the store, outcome metrics and "gone" feedback. Transports only say how to
//!   deliver one message and classify the answer ([`Outcome`]).
//! - [`egress`]: the SSRF guard for URLs that clients choose (scheme, addresses after DNS, on
//!   every connect) and the shared HTTP client built on it.
//! - [`webpush`]: RFC 8030 Web Push and UnifiedPush, with RFC 8291 encryption ([`webpush::ece`])
//!   and RFC 8292 VAPID ([`webpush::vapid`]).
//!
//! The choice a reader may question: RFC 8291 is implemented here on aws-lc-rs primitives
//! (~100 lines) rather than with a Web Push crate; the available ones pull in OpenSSL or an old
//! HTTP stack, and ours is checked against the RFC's test vector and independent decoders.

pub mod egress;
pub mod engine;
pub mod webpush;

pub use engine::{Deliver, Engine, EngineSettings, Outcome};
