//! Push-service transports of davpush and the delivery engine they share.
//!
//! # Layout
//! - [`engine`]: retries with backoff and jitter, `Retry-After`, per-subscription coalescing,
//!   the outbox in the store, outcome metrics and "gone" feedback. Transports only say how to
//!   deliver one message and classify the answer ([`Outcome`]). Per push-service origin
//!   ([`engine::HostKey`]): fair turns, a share of the workers, a circuit breaker and an
//!   adaptive timeout, so a slow or failing host cannot hold up the others.
//! - [`egress`]: the SSRF guard for URLs that clients choose (scheme, addresses after DNS, on
//!   every connect) and the shared HTTP client built on it.
//! - [`webpush`]: RFC 8030 Web Push and UnifiedPush, with RFC 8291 encryption ([`webpush::ece`])
//!   and RFC 8292 VAPID ([`webpush::vapid`]).
//! - [`fcm`]: Google FCM HTTP v1 (service-account JWT → OAuth token), per token or per topic,
//!   directly or through an FCM relay ([`fcm::relay`]).
//! - [`apns`]: Apple Push Notification service, token-based (ES256) over one HTTP/2 connection.
//! - [`hms`]: Huawei Push Kit, per token or per topic.
//! - [`transport`]: [`transport::EngineTransport`], the one `Transport` of every service above:
//!   the engine per subscription or per topic, topic membership; services differ only in how
//!   they read their subscriptions ([`transport::TargetParser`]).
//! - [`auth`]: PEM, RS256 JWTs, the cached OAuth access token and the API client the above share.
//! - [`membership`]: batched topic membership (FCM Instance ID, HMS topics) for topic mode.
//! - [`settings`]: what the services' configuration sections share (`RawDelivery`, `Mode`,
//!   `SettingsError`); each service's `RawX` → `XSettings` sits in its own `settings.rs`.
//!
//! The choice a reader may question: RFC 8291 is implemented here on aws-lc-rs primitives
//! (~100 lines) rather than with a Web Push crate; the available ones pull in OpenSSL or an old
//! HTTP stack, and ours is checked against the RFC's test vector and independent decoders.

pub mod apns;
pub mod auth;
pub mod egress;
pub mod engine;
pub mod fcm;
pub mod hms;
pub mod membership;
pub mod settings;
pub mod transport;
pub mod webpush;

pub use engine::{Deliver, Engine, EngineSettings, HostKey, Outcome, SlotKey};
