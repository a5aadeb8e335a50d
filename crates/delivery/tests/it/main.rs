#![allow(missing_docs)]
#![allow(clippy::unwrap_used)] // tests, benches and examples stop at the first failure
//! Adapter-level tests of the transports: each push service's sender (the `Deliver` impl the
//! engine calls) against its local fake from `davpush_testkit`, without a Director or an
//! engine in between. They pin the request each adapter sends and the [`Outcome`] it makes of
//! each answer the real service documents, and renewal of access tokens.
//!
//! [`Outcome`]: davpush_delivery::Outcome

mod util;

mod apns;
mod fcm;
mod hms;
mod webpush;
