//! A WebDAV Push client: discover push support of a WebDAV collection, subscribe to it over a
//! Director's WebSocket and receive its changes as a [`Stream`](futures_util::Stream), with
//! reconnects, resubscription and renewal handled.
//!
//! ```no_run
//! use davpush_client::{ClientOptions, Credentials, Discovery, Event, PushClient};
//! use futures_util::StreamExt;
//!
//! # async fn example() -> Result<(), davpush_client::Error> {
//! let creds = Credentials::Basic { user: "alice".into(), password: "secret".into() };
//! let url = url::Url::parse("https://dav.example.org/alice/calendar/").unwrap();
//! let calendar = Discovery::new()?.discover(&url, &creds).await?;
//! // `token`: the app's subscription token, needed when the Director says `subscription-auth` token.
//! let mut client = PushClient::connect(ClientOptions::for_collection(&calendar, &creds, None)?).await?;
//! client.watch(&calendar).await?;
//! while let Some(event) = client.next().await {
//!     match event {
//!         Event::Update(u) => println!("{} changed (sync-token {:?})", u.collection, u.sync_token),
//!         Event::Resync { collection } => println!("reconnected: sync {collection} once"),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`discovery`]: `OPTIONS` + `PROPFIND` of the push properties; [`Credentials`], [`Collection`].
//! - [`client`]: [`PushClient`], its options and [`Event`]s.
//! - [`director`]: [`DirectorClient`], the Director's HTTP APIs (info, subscribe, unsubscribe,
//!   notify), as the gateway, `davpush notify` and the load tool use them.
//! - [`backoff`]: exponential backoff with jitter.
//! - [`error`]: [`Error`], classified by the part that failed.
//! - [`receiver`]: [`WebPushReceiver`], the same [`Event`]s for collections whose server pushes
//!   Web Push natively, through a Director as push service.
//! - [`webpush`]: receiving Web Push through the Director as push service (docs/protocol.md §10):
//!   RFC 8291 keys and decryption, `push-register` bodies, `push-message` parsing.
//!
//! The choice a reader may question: subscriptions are made with `subscribe` frames over the
//! WebSocket (docs/protocol.md §4.2), not with `POST /subscribe`: one round trip fewer, no
//! client id to keep, and the Director ends them with the connection, so nothing outlives the
//! client. After a reconnect every watched collection is subscribed again and reported as
//! [`Event::Resync`], because changes may have happened in between. The spec's `push-register`
//! is for Web Push receivers (a browser's or phone's push service), which this client is not.
//!
//! `wss://` uses rustls with the platform's trusted roots, as the HTTP client does;
//! [`ClientOptions::extra_ca_pem`] adds a private CA (also for the grant requests to the
//! collections' server; [`Discovery::with_extra_ca`] for discovery).

pub mod backoff;
pub mod client;
pub mod director;
pub mod discovery;
pub mod error;
pub mod receiver;
pub mod webpush;

pub use client::{ClientOptions, DirectorAuth, Event, PushClient, Update};
pub use davpush_proto::Trigger;
pub use director::{DirectorClient, DirectorError};
pub use discovery::{Collection, Credentials, Discovery, SubscriptionAuth};
pub use error::Error;
pub use receiver::WebPushReceiver;
