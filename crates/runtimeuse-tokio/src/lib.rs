//! The runtimeuse client for tokio: talk to an agent runtime over WebSocket.
//!
//! A thin driver of the sans-IO core [`runtimeuse_proto`] over tokio-tungstenite: the generic
//! client of [`runtimeuse_async`] with tokio's clock, timers and sockets ([`Tokio`]). Everything
//! the Python client `runtimeuse-client` 0.15.1 does:
//!
//! - one-shot calls: [`Client::query`](runtimeuse_async::Client::query) and
//!   [`Client::execute_commands`](runtimeuse_async::Client::execute_commands) connect, run one
//!   request and close;
//! - persistent sessions: [`Client::session`](runtimeuse_async::Client::session) gives
//!   sequential queries and command batches over one connection, then a graceful
//!   [`close`](runtimeuse_async::Session::close);
//! - streaming as a [`Stream`](futures_util::Stream)
//!   ([`Session::query_events`](runtimeuse_async::Session::query_events)) or the callback
//!   style ([`CallOptions::on_assistant_message`] and friends);
//! - cancellation from anywhere ([`AbortHandle`]), overall and idle timeouts, keepalive pings;
//! - structured output into a Rust type;
//! - sessions that survive a lost connection ([resumable sessions](#resumable-sessions));
//! - artifact uploads answered with presigned URLs;
//! - `wss://` with rustls (ring) and the webpki roots, extra root certificates, extra headers.
//!
//! Every type of the API is named at this crate's root ([`SessionEnd`], [`TimeoutKind`],
//! [`RuntimeError`], …); [`proto`] is the whole core, for what goes beyond it.
//!
//! # A query and a command batch
//!
//! ```no_run
//! use runtimeuse_tokio::{Client, ExecuteCommandsOptions, QueryOptions};
//!
//! # async fn run() -> Result<(), runtimeuse_tokio::Error> {
//! let client = Client::new("ws://localhost:8080");
//! let options = QueryOptions::new("You are a helpful assistant.", "gpt-4o")
//!     .on_assistant_message(|blocks| async move { println!("{}", blocks.join("")) });
//! let result = client.query("What is 2 + 2?", options).await?;
//! println!("{:?}", result.text());
//!
//! let options = ExecuteCommandsOptions::new()
//!     .on_command_output(|o| async move { print!("{}", o.text) });
//! let out = client.execute_commands(["echo hello", "uname -s"], options).await?;
//! assert!(out.success());
//! # Ok(()) }
//! ```
//!
//! # Sessions
//!
//! A session runs requests one after another over one connection. [`close`](Session::close)
//! ends it gracefully and says how it ended; the [`SessionEnd`] is `#[must_use]`, because only
//! [`SessionEnd::Confirmed`] says the runtime confirmed the end (and finished the artifact
//! uploads it owed).
//!
//! ```no_run
//! use runtimeuse_tokio::{Client, ExecuteCommandsOptions, QueryOptions, RequestEvent, SessionEnd};
//!
//! # async fn run() -> Result<(), runtimeuse_tokio::Error> {
//! let mut session = Client::new("ws://localhost:8080").session().await?;
//! session.execute_commands(["git clone https://example.com/repo"], ExecuteCommandsOptions::new()).await?;
//!
//! // The events of one request as a stream; the last item is the result.
//! let mut events = session.query_events("Fix the failing test", QueryOptions::new("", "gpt-4o"))?;
//! while let Some(item) = events.next().await {
//!     match item? {
//!         RequestEvent::AssistantMessage(blocks) => println!("{}", blocks.join("")),
//!         RequestEvent::CommandOutput(o) => print!("{}", o.text),
//!         RequestEvent::Result(result) => println!("done: {:?}", result.text()),
//!         _ => {}
//!     }
//! }
//!
//! if session.close().await? != SessionEnd::Confirmed {
//!     eprintln!("the runtime did not confirm the end of the session");
//! }
//! # Ok(()) }
//! ```
//!
//! Ignoring how a session ended does not compile under `#![deny(unused_must_use)]`:
//!
//! ```compile_fail
//! #![deny(unused_must_use)]
//! # async fn run(session: runtimeuse_tokio::Session) -> Result<(), runtimeuse_tokio::Error> {
//! session.close().await?;
//! # Ok(()) }
//! ```
//!
//! # Structured results into a Rust type
//!
//! [`output_schema`](CallOptions::output_schema) takes a JSON Schema as a `serde_json::Value`
//! or as JSON text; [`QueryResult::deserialize`] reads the answer into your type, and its error
//! converts into [`Error`], so `?` works. With the feature `schemars`,
//! [`output_type::<T>()`](CallOptions::output_type) derives the schema from `T`, so that the
//! two cannot disagree.
//!
//! ```no_run
//! use runtimeuse_tokio::{Client, QueryOptions};
//!
//! #[derive(serde::Deserialize)]
//! struct Answer {
//!     answer: u32,
//! }
//!
//! # async fn run() -> Result<(), runtimeuse_tokio::Error> {
//! let schema = r#"{"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}"#;
//! let options = QueryOptions::new("Answer in JSON.", "gpt-4o").output_schema(schema);
//! let result = Client::new("ws://localhost:8080").query("What is 2 + 2?", options).await?;
//! let answer: Answer = result.deserialize()?;
//! assert_eq!(answer.answer, 4);
//! # Ok(()) }
//! ```
//!
//! ```no_run
//! # #[cfg(feature = "schemars")]
//! # async fn run() -> Result<(), runtimeuse_tokio::Error> {
//! // Cargo.toml: runtimeuse-tokio = { features = ["schemars"] }, schemars = "1", serde
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! struct Answer {
//!     answer: u32,
//! }
//!
//! let options = runtimeuse_tokio::QueryOptions::new("Answer in JSON.", "gpt-4o").output_type::<Answer>();
//! let result = runtimeuse_tokio::Client::new("ws://localhost:8080").query("2 + 2?", options).await?;
//! let answer: Answer = result.deserialize()?;
//! # Ok(()) }
//! ```
//!
//! # Cancelling: abort handles
//!
//! An [`AbortHandle`] cancels from anywhere (another task, a signal handler): the request
//! fails with [`Error::Cancelled`] once the runtime confirmed. A one-shot call takes one in its
//! options; a session has its own. Dropping a call's future cancels its request too, before the
//! session's next call.
//!
//! ```no_run
//! use std::time::Duration;
//! use runtimeuse_tokio::{AbortHandle, Client, Error, ExecuteCommandsOptions};
//!
//! # async fn run() -> Result<(), Error> {
//! let client = Client::new("ws://localhost:8080");
//! let handle = AbortHandle::new();
//! let cancel = handle.clone();
//! tokio::spawn(async move {
//!     tokio::time::sleep(Duration::from_secs(5)).await;
//!     cancel.abort();
//! });
//! let options = ExecuteCommandsOptions::new().abort_handle(&handle);
//! match client.execute_commands(["sleep 60"], options).await {
//!     Err(Error::Cancelled) => println!("cancelled"),
//!     other => println!("{other:?}"),
//! }
//!
//! // In a session: its handle cancels the request in flight.
//! let mut session = client.session().await?;
//! let abort = session.abort_handle();
//! # drop(abort);
//! # Ok(()) }
//! ```
//!
//! # Timeouts
//!
//! [`timeout`](CallOptions::timeout) limits a request's whole run,
//! [`idle_timeout`](CallOptions::idle_timeout) the silence between its messages (heartbeats
//! count; 60 s by default). Either fails it with [`Error::Timeout`], whose [`TimeoutKind`]
//! carries the limit that expired and whose [`Diagnostics`] say how long it ran and what
//! arrived. Connecting has its own limit ([`ClientBuilder`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use runtimeuse_tokio::{Client, Error, QueryOptions, TimeoutKind};
//!
//! # async fn run() -> Result<(), Error> {
//! let client = Client::builder("ws://localhost:8080")
//!     .connect_timeout(Duration::from_secs(10))
//!     .build();
//! let options = QueryOptions::new("", "gpt-4o")
//!     .timeout(Duration::from_secs(600))
//!     .idle_timeout(Duration::from_secs(120));
//! match client.query("Refactor the parser", options).await {
//!     Err(Error::Timeout { kind: TimeoutKind::Overall(limit), diagnostics }) => {
//!         println!("gave up after {limit:?} ({} messages)", diagnostics.message_count)
//!     }
//!     Err(Error::Timeout { kind, .. }) => println!("timed out: {kind:?}"),
//!     other => println!("{other:?}"),
//! }
//! # Ok(()) }
//! ```
//!
//! # Artifacts
//!
//! The runtime watches the artifacts directories a request names and asks where to upload each
//! file it finds; the uploader answers with a presigned URL (an S3 or GCS signed PUT, say) and
//! a content type. Directories and an uploader go together, or the call fails before anything
//! is sent. A session keeps the last uploader, for files that appear between calls.
//!
//! ```no_run
//! use runtimeuse_tokio::{ArtifactUpload, Client, ExecuteCommandsOptions};
//!
//! # async fn presign(_: &str) -> String { String::new() }
//! # async fn run() -> Result<(), runtimeuse_tokio::Error> {
//! let options = ExecuteCommandsOptions::new()
//!     .artifacts_dir("/workspace/out")
//!     .on_artifact_upload_request(|request| async move {
//!         let url = presign(&request.filename).await;
//!         ArtifactUpload::new(url, "application/octet-stream")
//!     });
//! Client::new("ws://localhost:8080")
//!     .execute_commands(["make report && cp report.pdf /workspace/out/"], options)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Resumable sessions
//!
//! Asked for with [`ClientBuilder::resume`], a session survives a lost connection (a proxy's
//! idle timeout, a network blip): the runtime keeps it for its grace period with the request
//! running, the client reconnects and gets everything it missed. An event stream shows it as
//! [`RequestEvent::Reconnected`]; nothing is lost or repeated. The extension is specified in
//! the repository's `docs/resume.md`; a runtime that does not know it sees no difference.
//!
//! ```no_run
//! use runtimeuse_tokio::{Client, ExecuteCommandsOptions, RequestEvent};
//!
//! # async fn run() -> Result<(), runtimeuse_tokio::Error> {
//! let client = Client::builder("wss://sandbox.example.com/runtime").resume(true).build();
//! let mut session = client.session().await?;
//! println!("resumable: {}", session.is_resumable());
//! let mut events = session.execute_commands_events(["make test"], ExecuteCommandsOptions::new())?;
//! while let Some(item) = events.next().await {
//!     match item? {
//!         RequestEvent::CommandOutput(o) => print!("{}", o.text),
//!         RequestEvent::Reconnected { attempts, .. } => eprintln!("resumed after {attempts} attempt(s)"),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `rustls-tls-webpki-roots` | yes | `wss://` with rustls (ring provider) trusting the webpki roots |
//! | `rustls-tls-native-roots` | no | `wss://` with rustls (ring provider) trusting the system's roots |
//! | `schemars` | no | [`CallOptions::output_type`]: the answer's schema from a type |
//! | `server` | no | the [`server`] module: accept connections and drive [`runtimeuse_proto::runtime::RuntimeSession`]s |
//!
//! Items that need a feature say so in these docs. (`ClientSettings`' TLS items are marked
//! `rustls`: the client core's feature, which either TLS feature above turns on.)

#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod client;
#[cfg(feature = "server")]
pub mod server;

pub use client::Tokio;
pub use runtimeuse_async::{
    AbortHandle, AsyncCallbacks, BoxFuture, CallOptions, ClientSettings, DEFAULT_READ_BUFFER,
    Error, ExecuteCommandsOptions, Parts, QueryOptions, Wire,
};

runtimeuse_async::adapter!(Tokio);

pub use runtimeuse_async;

/// The core's types of the client's signatures ([`runtimeuse_client_core::types`]).
#[doc(inline)]
pub use runtimeuse_client_core::types::*;
pub use runtimeuse_proto as proto;
pub use tokio_tungstenite;

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
