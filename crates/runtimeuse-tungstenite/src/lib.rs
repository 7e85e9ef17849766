//! The runtimeuse client for synchronous programs: talk to an agent runtime over a blocking
//! WebSocket, with no async runtime in the dependency tree.
//!
//! A thin driver of the sans-IO core [`runtimeuse_proto`] over tungstenite: the core's
//! deadlines become socket read timeouts. The API follows `runtimeuse-tokio`:
//! [`Client::query`] and [`Client::execute_commands`] for one-shot calls, [`Client::session`]
//! for persistent sessions, [`Session::query_events`] for events as an [`Iterator`], plain
//! closures as callbacks, and an [`AbortHandle`] that cancels from another thread.
//!
//! ```no_run
//! use runtimeuse_tungstenite::{Client, ExecuteCommandsOptions, QueryOptions};
//!
//! let client = Client::new("ws://localhost:8080");
//! let options = QueryOptions::new("You are a helpful assistant.", "gpt-4o")
//!     .on_assistant_message(|blocks| println!("{}", blocks.join("")));
//! let result = client.query("What is 2 + 2?", options)?;
//! println!("{:?}", result.text());
//! let out = client.execute_commands(["echo hello"], ExecuteCommandsOptions::new())?;
//! assert_eq!(out.results[0].exit_code, 0);
//! # Ok::<(), runtimeuse_tungstenite::Error>(())
//! ```
//!
//! # Blocking and async clients
//!
//! The blocking client (`runtimeuse-tungstenite`) and the async ones (`runtimeuse-tokio` and
//! `runtimeuse-async-std`, both over `runtimeuse-async`) share their request logic
//! (`runtimeuse_client_core::requests`), their options type, [`AbortHandle`] and [`Error`],
//! and behave the same. What differs is what blocking and async code can do:
//!
//! - Callbacks: async functions with time limits in the async clients; closures without time
//!   limits in the blocking one (a closure running on the reading thread cannot be
//!   interrupted; cancel from another thread instead).
//! - Dropping a call: an async call's future can be dropped mid-request (the request is then
//!   cancelled before the next call); a blocking call cannot be dropped, only its
//!   `RequestEvents` iterator (with the same cleanup).
//! - Aborting: an async session is woken at once; a blocked read of the blocking session
//!   notices within about 20 ms.
//! - Building blocks: `runtimeuse-async` exposes `Session::new`, `Session::query_once` and
//!   `Session::execute_commands_once` because the tokio and async-std crates build their
//!   `Client` on them; the blocking crate's sessions come only from `Client::session`, and its
//!   one-shot calls are `Client::query` and `Client::execute_commands`, as in every client.
//!
//! # Features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `rustls-tls-webpki-roots` | yes | `wss://` with rustls (ring provider) trusting the webpki roots |
//! | `rustls-tls-native-roots` | no | `wss://` with rustls (ring provider) trusting the system's roots |
//! | `schemars` | no | `QueryOptions::output_type::<T>()`: the answer's schema from a type |

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod client;
mod options;
mod session;

pub use client::{Client, ClientBuilder};
pub use options::{ExecuteCommandsOptions, QueryOptions};
pub use runtimeuse_client_core::AbortHandle;
pub use runtimeuse_client_core::callbacks::BlockingCallbacks;
pub use runtimeuse_client_core::options::{CallOptions, Parts, Wire};
pub use runtimeuse_client_core::read_ahead::ReadAheadStream;
pub use runtimeuse_client_core::{ClientSettings, DEFAULT_READ_BUFFER, Error};
pub use session::{RequestEvents, Session, Socket};

pub use runtimeuse_client_core;
/// The core's types of the client's signatures ([`runtimeuse_client_core::types`]).
#[doc(inline)]
pub use runtimeuse_client_core::types::*;
pub use runtimeuse_proto as proto;
pub use tungstenite;
