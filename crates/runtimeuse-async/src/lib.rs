//! The runtimeuse client on any async runtime: the generic body of `runtimeuse-tokio` and
//! `runtimeuse-async-std`.
//!
//! Applications use one of those two crates. This one holds what they share, written once over
//! a [`Backend`] (a clock, a resettable timer, and a WebSocket that is a
//! `Stream + Sink<Message>`), on top of the sans-IO core [`runtimeuse_proto`]:
//!
//! - [`Session`]: sequential requests over one connection, events as a [`Stream`](https://docs.rs/futures-util/0.3/futures_util/stream/trait.Stream.html)
//!   ([`RequestEvents`]), the callback style, the graceful close, cancel safety;
//! - [`QueryOptions`] and [`ExecuteCommandsOptions`], [`AbortHandle`], [`Error`];
//! - [`Client`] and its one-shot calls; [`ClientSettings`], [`ClientBuilder`] and [`Error`]
//!   come from `runtimeuse-client-core`, which the blocking client shares;
//! - [`conn::Conn`]: the socket pump, also under `runtimeuse-tokio`'s server driver.
//!
//! An adapter implements [`Backend`] (including [`Backend::connect`]: TCP, TLS, handshake) and
//! names `Client<ItsBackend>` and `Session<ItsBackend>` `Client` and `Session`.
//!
//! The blocking client (`runtimeuse-tungstenite`) shares the request logic, the options type,
//! `AbortHandle` and `Error` (from `runtimeuse-client-core`); its front page says what differs
//! between blocking and async code.
//!
//! # Features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `rustls` | no | `ClientSettings::tls_config`: a rustls configuration (ring provider) |
//! | `webpki-roots` | no | with `rustls`, trust the webpki root certificates |

#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod adapter;
mod backend;
mod calls;
mod client;
pub mod conn;
mod connect;
mod events;
mod options;
mod pump;
mod session;

pub use backend::{Backend, timeout};
pub use client::Client;
pub use events::RequestEvents;
pub use options::{BoxFuture, ExecuteCommandsOptions, QueryOptions};
pub use runtimeuse_client_core::callbacks::AsyncCallbacks;
pub use runtimeuse_client_core::options::{CallOptions, Parts, Wire};
/// The core's types of the client's signatures ([`runtimeuse_client_core::types`]).
#[doc(inline)]
pub use runtimeuse_client_core::types::*;
pub use runtimeuse_client_core::{
    AbortHandle, ClientBuilder, ClientSettings, DEFAULT_READ_BUFFER, Error,
};
pub use session::Session;

/// The read-ahead wrapper [`adapter!`] wraps (for the macro's expansion).
#[doc(hidden)]
pub use runtimeuse_client_core::read_ahead::ReadAheadStream as ReadAheadInner;

pub use futures_util;
pub use runtimeuse_proto as proto;
pub use tungstenite;
