//! The sans-IO core of the runtimeuse agent-runtime protocol (version 0.15.1).
//!
//! An agent runtime runs inside a sandbox and speaks JSON over WebSocket. A client connects,
//! sends a query ([`Invocation`]) or a batch of shell commands ([`CommandBatch`]), and receives
//! a stream back: assistant text, command output, heartbeats, artifact upload requests it must
//! answer, and one terminal result or error.
//!
//! This crate holds every protocol decision and does no I/O: no sockets, no `async`, no clock,
//! no threads. The owner of the socket feeds bytes and time into a [`Session`] and polls frames
//! to send, events and the next deadline out of it (see [`Session`] for the run loop). The
//! adapters `runtimeuse-tokio`, `runtimeuse-async-std` and `runtimeuse-tungstenite` are thin
//! loops around it.
//!
//! The runtime side has its own state machine, [`runtime::RuntimeSession`], for agent runtimes
//! that embed the protocol (the `runtimeuse-runtime` crate is one).
//!
//! # Example
//!
//! One query, with the runtime's answer given by hand instead of read from a socket:
//!
//! ```
//! use std::time::Instant;
//! use runtimeuse_proto::{Config, Event, Input, Invocation, Output, RequestOptions, Session, Transmit};
//!
//! let now = Instant::now();
//! let mut session = Session::new(Config::default(), now);
//! let request = session.invoke(Invocation::new("Say hi", "gpt-4o"), RequestOptions::default(), now)?;
//!
//! // After every call, drain the outputs until the next deadline: here, the frame to send.
//! let mut frames = Vec::new();
//! loop {
//!     match session.poll_output() {
//!         Output::Transmit(Transmit::Text(frame)) => frames.push(frame), // send it
//!         Output::Timeout(_deadline) => break, // wake the session then, or on the next frame
//!         _ => {}
//!     }
//! }
//! assert!(frames[0].contains(r#""message_type":"invocation_message""#));
//!
//! // The runtime's frames go in as they arrive; its terminal becomes the request's outcome.
//! let reply = r#"{"message_type":"result_message","metadata":{},"data":{"type":"text","text":"hi"}}"#;
//! session.handle_input(Input::ReceiveText(now, reply));
//! let outcome = loop {
//!     match session.poll_output() {
//!         Output::Event(Event::Result { request: r, result }) if r == request => break result,
//!         Output::Timeout(_) => panic!("no result"),
//!         _ => {}
//!     }
//! };
//! assert_eq!(outcome.text(), Some("hi"));
//! # Ok::<(), runtimeuse_proto::UsageError>(())
//! ```
//!
//! # Time
//!
//! Every input and command takes the current [`Instant`](std::time::Instant); the session never
//! reads a clock. [`Output::Timeout`] says when it wants to be woken; calling
//! [`Session::handle_input`] with [`Input::Timeout`] early or twice is harmless. Tests drive
//! time by hand, so every timeout is testable without sleeping.
//!
//! # Errors versus panics
//!
//! - [`UsageError`]: the application misused the API (a second request in flight, artifact
//!   directories without an uploader, …). Returned synchronously; nothing is sent.
//! - [`FailReason`]: the runtime, the connection or a timer ended a request. It arrives as the
//!   request's terminal [`Event::Failed`], not as an `Err`.
//! - [`DecodeError`]: a frame could not be understood. A malformed terminal fails the request
//!   ([`FailReason::Protocol`]); anything else is logged with `tracing` and skipped.
//!
//! No input, however malformed, makes the session panic, and every size read from the network
//! is bounded ([`Config::max_frame_size`], serde_json's nesting limit,
//! [`Config::max_pending_artifact_requests`]).
//!
//! # Wire compatibility
//!
//! Frames are encoded as the Python client `runtimeuse-client` 0.15.1 encodes them (every
//! optional field present, `null` when unset). Decoding ignores unknown fields, treats `null` as
//! absent, skips unknown message types and non-JSON frames, and accepts binary frames holding
//! JSON.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

pub mod auth;
mod config;
mod error;
mod event;
mod fast;
mod request;
pub mod resume;
pub mod runtime;
mod session;
mod timer;
mod wire;

/// The fuzz targets' bodies and their invariants (panics and a clock included): built only
/// under cargo-fuzz (`cfg(fuzzing)`) or with the private `__fuzzing` feature this crate's own
/// tests turn on, never in a normal build.
#[cfg(any(fuzzing, feature = "__fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

pub use config::Config;
pub use error::{Diagnostics, FailReason, Phase, RuntimeError, TimeoutKind, UsageError};
pub use event::{
    ArtifactRequest, ArtifactUploadRequest, CommandExecutionResult, CommandOutput,
    CommandResultItem, Event, OutputStream, QueryResult, RequestEvent, RequestId, ResultData,
    Routed, SessionEnd,
};
pub use request::{
    ArtifactUpload, Command, CommandBatch, Downloadable, IntoSchema, Invocation, RequestOptions,
};
pub use session::{Input, Output, Session, SessionState, Transmit};
pub use timer::Timer;
pub use wire::{ClientMessageKind, DecodeError, MessageKind};
