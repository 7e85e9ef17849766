//! The runtimeuse client for synchronous programs: talk to an agent runtime over a blocking
//! WebSocket, with no async runtime in the dependency tree.
//!
//! A thin driver of the sans-IO core [`runtimeuse_proto`] over tungstenite: the core's
//! deadlines become socket read timeouts. The API follows `runtimeuse-tokio`:
//! [`Client::query`] and [`Client::execute_commands`] for one-shot calls, [`Client::session`]
//! for persistent sessions, [`Session::query_events`] for events as an [`Iterator`], plain
//! closures as callbacks, and an [`AbortHandle`] that cancels from another thread.
//!
//! Every type of the API is named at this crate's root ([`SessionEnd`], [`TimeoutKind`],
//! [`RuntimeError`], …).
//!
//! # A query and a command batch
//!
//! ```no_run
//! use runtimeuse_tungstenite::{Client, ExecuteCommandsOptions, QueryOptions};
//!
//! let client = Client::new("ws://localhost:8080");
//! let options = QueryOptions::new("You are a helpful assistant.", "gpt-4o")
//!     .on_assistant_message(|blocks| println!("{}", blocks.join("")));
//! let result = client.query("What is 2 + 2?", options)?;
//! println!("{:?}", result.text());
//! let options = ExecuteCommandsOptions::new().on_command_output(|o| print!("{}", o.text));
//! let out = client.execute_commands(["echo hello"], options)?;
//! assert_eq!(out.results[0].exit_code, 0);
//! # Ok::<(), runtimeuse_tungstenite::Error>(())
//! ```
//!
//! # Sessions and events
//!
//! ```no_run
//! use runtimeuse_tungstenite::{Client, QueryOptions, RequestEvent, SessionEnd};
//!
//! let mut session = Client::new("ws://localhost:8080").session()?;
//! for item in session.query_events("Fix the failing test", QueryOptions::new("", "gpt-4o"))? {
//!     match item? {
//!         RequestEvent::AssistantMessage(blocks) => println!("{}", blocks.join("")),
//!         RequestEvent::Result(result) => println!("done: {:?}", result.text()),
//!         _ => {}
//!     }
//! }
//! // `SessionEnd` is #[must_use]: only `Confirmed` says the runtime confirmed the end.
//! if session.close()? != SessionEnd::Confirmed {
//!     eprintln!("the runtime did not confirm the end of the session");
//! }
//! # Ok::<(), runtimeuse_tungstenite::Error>(())
//! ```
//!
//! # Structured results into a Rust type
//!
//! ```no_run
//! use runtimeuse_tungstenite::{Client, QueryOptions};
//!
//! #[derive(serde::Deserialize)]
//! struct Answer {
//!     answer: u32,
//! }
//!
//! let schema = serde_json::json!({"type": "object", "properties": {"answer": {"type": "integer"}}});
//! let options = QueryOptions::new("Answer in JSON.", "gpt-4o").output_schema(schema);
//! let answer: Answer = Client::new("ws://localhost:8080").query("2 + 2?", options)?.deserialize()?;
//! // With the feature `schemars`: `.output_type::<Answer>()` derives the schema from the type.
//! # Ok::<(), runtimeuse_tungstenite::Error>(())
//! ```
//!
//! # Cancelling from another thread, and timeouts
//!
//! ```no_run
//! use std::time::Duration;
//! use runtimeuse_tungstenite::{AbortHandle, Client, Error, ExecuteCommandsOptions, TimeoutKind};
//!
//! let handle = AbortHandle::new();
//! let cancel = handle.clone();
//! std::thread::spawn(move || {
//!     std::thread::sleep(Duration::from_secs(5));
//!     cancel.abort();
//! });
//! let options = ExecuteCommandsOptions::new()
//!     .abort_handle(&handle)
//!     .timeout(Duration::from_secs(600))
//!     .idle_timeout(Duration::from_secs(120));
//! match Client::new("ws://localhost:8080").execute_commands(["make -j2"], options) {
//!     Err(Error::Cancelled) => println!("cancelled"),
//!     Err(Error::Timeout { kind: TimeoutKind::Overall(limit), .. }) => println!("over {limit:?}"),
//!     Err(Error::Timeout { kind, .. }) => println!("timed out: {kind:?}"),
//!     other => println!("{other:?}"),
//! }
//! ```
//!
//! # Artifacts
//!
//! ```no_run
//! use runtimeuse_tungstenite::{ArtifactUpload, Client, ExecuteCommandsOptions};
//!
//! # fn presign(_: &str) -> String { String::new() }
//! let options = ExecuteCommandsOptions::new()
//!     .artifacts_dir("/workspace/out")
//!     .on_artifact_upload_request(|request| {
//!         ArtifactUpload::new(presign(&request.filename), "application/octet-stream")
//!     });
//! Client::new("ws://localhost:8080").execute_commands(["cp report.pdf /workspace/out/"], options)?;
//! # Ok::<(), runtimeuse_tungstenite::Error>(())
//! ```
//!
//! # Blocking and async clients
//!
//! The blocking client (`runtimeuse-tungstenite`) and the async ones (`runtimeuse-tokio` and
//! `runtimeuse-async-std`, both over `runtimeuse-async`) are pumps over one sans-IO
//! connection (`runtimeuse_client_core::connection`: the request layer, resumption,
//! acknowledgements, keepalive and every timer), share their options type, [`AbortHandle`]
//! and [`Error`], and behave the same. What differs is what blocking and async code can do:
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
//! | `schemars` | no | [`CallOptions::output_type`]: the answer's schema from a type |

#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod client;
mod connect;
mod events;
mod options;
mod pump;
mod session;

pub use client::{Client, ClientBuilder};
pub use connect::{connect_session, resume_socket, tcp};
pub use events::RequestEvents;
pub use options::{ExecuteCommandsOptions, QueryOptions};
pub use runtimeuse_client_core::AbortHandle;
pub use runtimeuse_client_core::callbacks::BlockingCallbacks;
pub use runtimeuse_client_core::options::{CallOptions, Parts, Wire};
pub use runtimeuse_client_core::read_ahead::ReadAheadStream;
pub use runtimeuse_client_core::{ClientSettings, DEFAULT_READ_BUFFER, Error};
pub use session::{Session, Socket};

pub use runtimeuse_client_core;
/// The core's types of the client's signatures ([`runtimeuse_client_core::types`]).
#[doc(inline)]
pub use runtimeuse_client_core::types::*;
pub use runtimeuse_proto as proto;
pub use tungstenite;

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
