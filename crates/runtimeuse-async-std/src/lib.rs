//! The runtimeuse client for async-std and smol: talk to an agent runtime over WebSocket.
//!
//! A thin driver of the sans-IO core [`runtimeuse_proto`] over async-tungstenite: the generic
//! client of [`runtimeuse_async`] with async-io's clock and timers and async-net's sockets
//! ([`AsyncIo`]). async-std is discontinued (RUSTSEC-2025-0052) and is not a dependency: the
//! pieces used here are the ones async-std itself runs on, so the client works the same under
//! async-std, smol, or `async_io::block_on`. The API is that of `runtimeuse-tokio`:
//!
//! - one-shot calls: [`Client::query`](runtimeuse_async::Client::query) and
//!   [`Client::execute_commands`](runtimeuse_async::Client::execute_commands) connect, run one
//!   request and close;
//! - persistent sessions: [`Client::session`](runtimeuse_async::Client::session) gives
//!   sequential queries and command batches over one connection, then a graceful
//!   [`close`](runtimeuse_async::Session::close);
//! - streaming as a [`Stream`](runtimeuse_async::futures_util::Stream)
//!   ([`Session::query_events`](runtimeuse_async::Session::query_events)) or the callback
//!   style ([`CallOptions::on_assistant_message`] and friends);
//! - cancellation from anywhere ([`AbortHandle`]), overall and idle timeouts, keepalive pings;
//! - structured output into a Rust type, artifact uploads answered with presigned URLs;
//! - `wss://` with rustls (ring) and the webpki roots, extra root certificates, extra headers.
//!
//! The types are those of `runtimeuse-tokio` (both are [`runtimeuse_async`]'s generic client),
//! so [its front page](https://docs.rs/runtimeuse-tokio)'s examples of sessions, structured
//! results, abort handles, timeouts and artifacts apply here word for word, with
//! `runtimeuse_async_std` for `runtimeuse_tokio` and your executor's spawn and sleep.
//!
//! ```no_run
//! use std::time::Duration;
//! use runtimeuse_async_std::{Client, Error, ExecuteCommandsOptions, QueryOptions, SessionEnd};
//!
//! # fn main() -> Result<(), Error> {
//! async_io::block_on(async {
//!     let client = Client::new("ws://localhost:8080");
//!     let options = QueryOptions::new("You are a helpful assistant.", "gpt-4o")
//!         .timeout(Duration::from_secs(300))
//!         .on_assistant_message(|blocks| async move { println!("{}", blocks.join("")) });
//!     let result = client.query("What is 2 + 2?", options).await?;
//!     println!("{:?}", result.text());
//!
//!     let mut session = client.session().await?;
//!     let out = session.execute_commands(["echo hello"], ExecuteCommandsOptions::new()).await?;
//!     assert_eq!(out.results[0].exit_code, 0);
//!     assert_eq!(session.close().await?, SessionEnd::Confirmed);
//!     Ok(())
//! })
//! # }
//! ```
//!
//! # Features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `rustls-tls-webpki-roots` | yes | `wss://` with rustls (ring provider) trusting the webpki roots |
//! | `rustls-tls-native-roots` | no | `wss://` with rustls (ring provider) trusting the system's roots |
//! | `schemars` | no | [`CallOptions::output_type`]: the answer's schema from a type |

#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod client;

pub use client::AsyncIo;
pub use runtimeuse_async::{
    AbortHandle, AsyncCallbacks, BoxFuture, CallOptions, ClientSettings, DEFAULT_READ_BUFFER,
    Error, ExecuteCommandsOptions, Parts, QueryOptions, Wire,
};

runtimeuse_async::adapter!(AsyncIo);

pub use async_tungstenite;
pub use runtimeuse_async;
/// The core's types of the client's signatures ([`runtimeuse_client_core::types`]).
#[doc(inline)]
pub use runtimeuse_client_core::types::*;
pub use runtimeuse_proto as proto;
