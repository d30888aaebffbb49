//! # synckit
//!
//! A typed event store: derive [`Event`] on your domain types, append them
//! with ACID guarantees, read them back in a gap-free global order, and
//! subscribe to them in real time.
//!
//! ```
//! use futures::{StreamExt, TryStreamExt};
//! use serde::{Deserialize, Serialize};
//! use synckit::{Cursor, Event, EventStore, ExpectedVersion, MemoryStore, Start};
//!
//! #[derive(Debug, Serialize, Deserialize, Event)]
//! enum Account {
//!     Opened { #[event(aggregate_id)] id: String, owner: String },
//!     Deposited { #[event(aggregate_id)] id: String, amount: u64 },
//! }
//!
//! # futures::executor::block_on(async {
//! let store = MemoryStore::new();
//! let mut deposits = Account::subscribe_from(&store, Start::Beginning).await?;
//!
//! store.append_events(ExpectedVersion::NoStream, &[
//!     Account::Opened { id: "acc-1".into(), owner: "Ada".into() },
//!     Account::Deposited { id: "acc-1".into(), amount: 10 },
//! ]).await?;
//!
//! let first = deposits.next().await.unwrap()?;
//! assert_eq!(first.event_type, "Account.Opened");
//! assert_eq!(first.stream_version, 1);
//! assert_eq!(store.load(Cursor::START).await?.len(), 2);
//!
//! // Typed loads decode each event straight from its stored JSON.
//! let history: Vec<_> = store
//!     .read_stream_as::<Account>(Account::filter(), Cursor::START)
//!     .try_collect()
//!     .await?;
//! assert_eq!(history.len(), 2);
//! # Ok::<(), synckit::Error>(())
//! # }).unwrap();
//! ```
//!
//! ## Backends
//!
//! Every backend implements [`EventStore`] and [`SubscriptionSource`] with
//! the same guarantees (see [`EventStore`]). [`MemoryStore`] runs anywhere,
//! including `wasm32-unknown-unknown`; `sqlite::SqliteStore` (feature
//! `sqlite`) is the embedded default and `postgres::PgStore` (feature
//! `postgres`) the production backend. `synckit::open(target)` opens
//! whichever a target string (an application's `DATABASE_URL`) names: see
//! `StoreConfig::parse`. `client::RemoteStore` (feature `client`) is a
//! store on a synckit server over HTTP, natively and in the browser.
//!
//! ## Schema evolution
//!
//! Stored events never change; the types that read them do. The derive
//! declares the steps from each older shape to the next
//! (`#[event(version = 3, upcast(v1 = "..."), ...)]`) and older
//! names (`aliases = [...]`), every read runs them, and
//! [`evolution::EventTypes::check`] reports, before a deployment, which
//! stored events would not decode: see [`evolution`].
//!
//! ## Features
//!
//! | feature    | gives | default |
//! |------------|-------|---------|
//! | `derive`   | `#[derive(Event)]` | yes |
//! | `sqlite`   | embedded SQLite store, bundled ([`sqlite`]) | yes |
//! | `postgres` | PostgreSQL store and LISTEN/NOTIFY subscriptions ([`postgres`]) | yes |
//! | `schema`   | JSON Schema of every event type ([`Event::event_schemas`]) | yes |
//! | `tls`      | TLS for PostgreSQL connections (rustls) | no |
//! | `server`   | HTTP and Server-Sent Events face (axum, [`server`]) | no |
//! | `client`   | `RemoteStore` over that face, native and wasm32 ([`client`]) | no |
//!
//! With `default-features = false, features = ["derive"]` the crate builds
//! for `wasm32-unknown-unknown`: events, envelopes, cursors, filters,
//! upcasting, notification payloads, the error type and [`MemoryStore`];
//! with `"client"` too, [`client::RemoteStore`] in the browser.
#![doc = include_str!("docs/guarantees.md")]
#![doc = include_str!("docs/subscriptions.md")]
#![doc = include_str!("docs/aggregates.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
// Integer conversions go through `TryFrom` or `sql::int`, never a bare cast.
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

// Lets the crate's own tests and doctests use `#[derive(Event)]`, whose
// output names `::synckit`.
#[allow(unused_extern_crates)]
extern crate self as synckit;

// The typed core: events, envelopes, cursors, filters, errors and
// validation. It needs no runtime and builds for wasm32.
mod model;
// The store traits, paging, subscriptions and shared reads, written once
// for every backend, and the in-memory store (wasm-safe but for the
// spawned handlers, which need tokio).
mod store;
// What the SQL backends share: statements, columns, rows, filters,
// checkpoints, replays and integer conversions.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sql;

#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
pub mod evolution;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
pub mod protocol;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod server;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;

pub use model::{notification, validate};

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod open;

#[doc(hidden)]
pub mod __private;

/// The README's Rust blocks, compiled and run with the doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

pub use model::cursor::{Cursor, ExpectedVersion};
pub use model::error::{BoxError, Error, Result};
pub use model::event::Event;
#[cfg(feature = "schema")]
pub use model::event::EventSchema;
pub use model::filter::{Filter, Start};
pub use model::notification::NotificationPayload;
pub use model::payload::Payload;
pub use model::recorded::{NewEvent, Recorded, metadata};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use open::{AnyStore, StoreConfig, open};
pub use store::aggregate::{
    Aggregate, Decide, DecideError, Decided, Loaded, Snapshots, StoredSnapshot,
};
pub use store::group::{ConsumerGroup, Group, GroupMember, GroupPartition};
#[cfg(feature = "runtime")]
pub use store::handler::{HandlerSubscriptions, SubscriptionHandle};
pub use store::memory::MemoryStore;
pub use store::parked::{ParkedEvent, ParkedStatus};
pub use store::progress::Progress;
pub use store::subscription::{HandlerRetry, Message, Subscription};
pub use store::{EventStore, SubscriptionSource};

/// Derives [`Event`](trait@Event) for a struct or an enum.
///
/// The attributes, what they generate and examples: see
/// [`Event`](trait@Event#deriving-event).
#[cfg(feature = "derive")]
#[cfg_attr(docsrs, doc(cfg(feature = "derive")))]
pub use synckit_derive::Event;
