//! What the session tells the application: [`Event`]s and the data they carry.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{FailReason, RuntimeError};

/// Identifies one request (query or command batch) of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub(crate) u64);

impl RequestId {
    /// The request's number within its session, from 0.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request {}", self.0)
    }
}

/// Something the application should know. Polled with
/// [`Session::poll_output`](crate::Session::poll_output).
///
/// Every request ends with exactly one terminal event: [`Event::Result`],
/// [`Event::CommandResult`] or [`Event::Failed`].
#[non_exhaustive]
#[derive(Debug)]
pub enum Event {
    // ----- progress of the request in flight -----
    /// The agent streamed assistant text. Not delivered after the request was cancelled.
    AssistantMessage {
        /// The request.
        request: RequestId,
        /// The message's text blocks.
        text_blocks: Vec<String>,
    },
    /// A command printed output. Not delivered after the request was cancelled.
    CommandOutput(CommandOutput),
    /// The runtime sent a heartbeat while the request ran.
    Heartbeat {
        /// The request.
        request: RequestId,
        /// The runtime's phase, e.g. `request_in_flight`.
        phase: Option<String>,
        /// Milliseconds since the request started, by the runtime's clock.
        elapsed_ms: Option<u64>,
    },
    /// The runtime sent an `error_message` that turned out not to end the request (more
    /// messages of the request followed it).
    RuntimeError {
        /// The request.
        request: RequestId,
        /// The error (its [`earlier`](RuntimeError::earlier) is empty).
        error: RuntimeError,
    },

    // ----- obligations -----
    /// The runtime asks where to upload an artifact. May arrive during a request, between
    /// requests, and while the session ends. Answer with
    /// [`Session::respond_artifact_upload`](crate::Session::respond_artifact_upload).
    ArtifactUploadRequest(ArtifactUploadRequest),

    // ----- terminals: exactly one per request -----
    /// A query finished with a result.
    Result {
        /// The request.
        request: RequestId,
        /// The result.
        result: QueryResult,
    },
    /// A command batch finished.
    CommandResult {
        /// The request.
        request: RequestId,
        /// The results.
        result: CommandExecutionResult,
    },
    /// The request ended without a result.
    Failed {
        /// The request.
        request: RequestId,
        /// Why.
        reason: FailReason,
    },

    // ----- the session -----
    /// The session has finished; the adapter should close the connection (code 1000) once the
    /// transmits are drained. Fires once, after the terminal of any request in flight.
    SessionEnded(SessionEnd),
}

impl Event {
    /// The request this event belongs to, if any.
    pub fn request(&self) -> Option<RequestId> {
        match self {
            Self::AssistantMessage { request, .. }
            | Self::Heartbeat { request, .. }
            | Self::RuntimeError { request, .. }
            | Self::Result { request, .. }
            | Self::CommandResult { request, .. }
            | Self::Failed { request, .. } => Some(*request),
            Self::CommandOutput(o) => Some(o.request),
            Self::ArtifactUploadRequest(r) => r.request,
            Self::SessionEnded(_) => None,
        }
    }

    /// Whether this is a request's terminal event.
    #[inline]
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Result { .. } | Self::CommandResult { .. } | Self::Failed { .. }
        )
    }
}

/// An event as seen by the caller waiting on one request: what [`Event::route`] hands out.
///
/// The adapters' event streams and iterators yield these; the last item of a request is
/// [`RequestEvent::Result`] or [`RequestEvent::CommandResult`] (or an error).
#[non_exhaustive]
#[derive(Debug)]
pub enum RequestEvent {
    /// The agent streamed assistant text.
    AssistantMessage(Vec<String>),
    /// A command printed output.
    CommandOutput(CommandOutput),
    /// The runtime is alive.
    Heartbeat {
        /// The runtime's phase.
        phase: Option<String>,
        /// Milliseconds since the request started, by the runtime's clock.
        elapsed_ms: Option<u64>,
    },
    /// The runtime reported an error that did not end the request.
    RuntimeError(RuntimeError),
    /// The runtime asks where to upload an artifact (whatever request it belongs to).
    ArtifactUploadRequest(ArtifactUploadRequest),
    /// The connection was lost and the client resumed the session on a new one (resumable
    /// sessions only): nothing was lost. A diagnostic; the request goes on.
    Reconnected {
        /// The connections tried before one resumed the session.
        attempts: u32,
        /// The runtime's data frames the client had processed when it resumed.
        received: u64,
    },
    /// The query's result: the last item.
    Result(QueryResult),
    /// The command batch's result: the last item.
    CommandResult(CommandExecutionResult),
}

impl RequestEvent {
    /// Whether this is the request's last item.
    #[inline]
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Result(_) | Self::CommandResult(_))
    }
}

/// Where an [`Event`] goes for a caller waiting on one request ([`Event::route`]).
#[non_exhaustive]
#[derive(Debug)]
pub enum Routed {
    /// Something for the caller (artifact requests included, whatever request they belong
    /// to: they are obligations of the session).
    Item(RequestEvent),
    /// The request failed: its terminal.
    Failed(FailReason),
    /// The session ended (after the request's terminal, if it was in flight).
    SessionEnded(SessionEnd),
    /// An event of another request: drop it.
    Unrelated,
}

impl Event {
    /// Routes this event for a caller waiting on request `id`. Every adapter's per-request
    /// stream is this function applied to the session's events.
    #[inline]
    pub fn route(self, id: RequestId) -> Routed {
        if let Self::ArtifactUploadRequest(r) = self {
            return Routed::Item(RequestEvent::ArtifactUploadRequest(r));
        }
        if let Self::SessionEnded(end) = self {
            return Routed::SessionEnded(end);
        }
        if self.request() != Some(id) {
            return Routed::Unrelated;
        }
        Routed::Item(match self {
            Self::AssistantMessage { text_blocks, .. } => {
                RequestEvent::AssistantMessage(text_blocks)
            }
            Self::CommandOutput(o) => RequestEvent::CommandOutput(o),
            Self::Heartbeat {
                phase, elapsed_ms, ..
            } => RequestEvent::Heartbeat { phase, elapsed_ms },
            Self::RuntimeError { error, .. } => RequestEvent::RuntimeError(error),
            Self::Result { result, .. } => RequestEvent::Result(result),
            Self::CommandResult { result, .. } => RequestEvent::CommandResult(result),
            Self::Failed { reason, .. } => return Routed::Failed(reason),
            Self::ArtifactUploadRequest(_) | Self::SessionEnded(_) => return Routed::Unrelated,
        })
    }
}

/// How a session ended.
///
/// `#[must_use]`: only [`SessionEnd::Confirmed`] says the runtime confirmed the end (and so
/// finished every artifact upload it owed); anything else is an end it never confirmed.
/// Ignoring what `close()` returns is a warning:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// # use runtimeuse_proto::SessionEnd;
/// # fn close() -> Result<SessionEnd, ()> { Ok(SessionEnd::Confirmed) }
/// fn run() -> Result<(), ()> {
///     close()?; // error: unused `SessionEnd` that must be used
///     Ok(())
/// }
/// ```
///
/// ```
/// #![deny(unused_must_use)]
/// # use runtimeuse_proto::SessionEnd;
/// # fn close() -> Result<SessionEnd, ()> { Ok(SessionEnd::Confirmed) }
/// fn run() -> Result<(), ()> {
///     let end = close()?;
///     if end != SessionEnd::Confirmed {
///         eprintln!("the runtime did not confirm the end: {end:?}");
///     }
///     Ok(())
/// }
/// ```
#[must_use = "only `SessionEnd::Confirmed` says the runtime confirmed the end of the session"]
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The runtime confirmed the end of the session.
    Confirmed,
    /// The end-of-session handshake did not finish in time.
    EndSessionTimeout,
    /// The connection closed.
    TransportClosed,
    /// The peer stopped answering keepalive pings.
    KeepAliveTimeout,
    /// An abandoned request never reached its terminal, so the session could not go on.
    Desynchronized,
}

/// Which stream a command wrote to.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl OutputStream {
    /// `"stdout"` or `"stderr"`, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// A chunk of a command's output.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutput {
    /// The request.
    pub request: RequestId,
    /// Which stream.
    pub stream: OutputStream,
    /// The text, split anywhere (even mid-line) by the runtime.
    pub text: String,
    /// The command that printed it. Shared between consecutive chunks of the same command.
    pub command: Arc<str>,
}

/// What the runtime asks to upload: the data of an [`ArtifactUploadRequest`] (its
/// [`to_request`](ArtifactUploadRequest::to_request)), and what the adapters' uploader
/// callbacks receive. The token is the obligation to answer; this is only what it asks.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactRequest {
    /// The file's name.
    pub filename: String,
    /// The file's path in the runtime.
    pub filepath: String,
}

impl ArtifactRequest {
    /// A request for this file.
    pub fn new(filename: impl Into<String>, filepath: impl Into<String>) -> Self {
        Self {
            filename: filename.into(),
            filepath: filepath.into(),
        }
    }
}

/// An artifact upload request: an obligation to answer.
///
/// Not `Clone`: hand it back to [`Session::respond_artifact_upload`](crate::Session::respond_artifact_upload)
/// (or [`Session::decline_artifact_upload`](crate::Session::decline_artifact_upload)). Dropping
/// it unanswered logs a warning.
pub struct ArtifactUploadRequest {
    pub(crate) id: u64,
    pub(crate) request: Option<RequestId>,
    pub(crate) filename: String,
    pub(crate) filepath: String,
    pub(crate) answered: bool,
}

impl ArtifactUploadRequest {
    /// The file's name.
    pub fn filename(&self) -> &str {
        &self.filename
    }

    /// The file's path in the runtime.
    pub fn filepath(&self) -> &str {
        &self.filepath
    }

    /// The request in flight when it arrived, if any.
    pub fn request(&self) -> Option<RequestId> {
        self.request
    }

    /// What it asks, as the owned [`ArtifactRequest`] that uploader callbacks receive.
    #[must_use]
    pub fn to_request(&self) -> ArtifactRequest {
        ArtifactRequest {
            filename: self.filename.clone(),
            filepath: self.filepath.clone(),
        }
    }

    pub(crate) fn disarm(&mut self) -> (String, String) {
        self.answered = true;
        (
            std::mem::take(&mut self.filename),
            std::mem::take(&mut self.filepath),
        )
    }
}

impl fmt::Debug for ArtifactUploadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArtifactUploadRequest")
            .field("filename", &self.filename)
            .field("filepath", &self.filepath)
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

impl Drop for ArtifactUploadRequest {
    fn drop(&mut self) {
        if !self.answered {
            tracing::warn!(
                filename = %self.filename,
                "artifact upload request dropped without an answer; the runtime will not upload it"
            );
        }
    }
}

/// The result of a query.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub struct QueryResult {
    /// The result's data.
    pub data: ResultData,
    /// The result's metadata as sent (`Null` when absent).
    pub metadata: Value,
}

impl QueryResult {
    /// A result with this data and metadata (`Null` or an object).
    pub fn new(data: ResultData, metadata: Value) -> Self {
        Self { data, metadata }
    }

    /// The text, for a text result.
    pub fn text(&self) -> Option<&str> {
        match &self.data {
            ResultData::Text(t) => Some(t),
            ResultData::StructuredOutput(_) => None,
        }
    }

    /// The structured output, for a structured result.
    pub fn structured_output(&self) -> Option<&Value> {
        match &self.data {
            ResultData::StructuredOutput(v) => Some(v),
            ResultData::Text(_) => None,
        }
    }

    /// Deserializes the structured output into `T`.
    ///
    /// # Errors
    ///
    /// If the result is text, or the output does not fit `T`.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        match &self.data {
            ResultData::StructuredOutput(v) => T::deserialize(v),
            ResultData::Text(_) => Err(serde::de::Error::custom(
                "the result is text, not structured output",
            )),
        }
    }
}

/// A query's result data.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub enum ResultData {
    /// A text result.
    Text(String),
    /// A structured result (when an output schema was given).
    StructuredOutput(Value),
}

/// The result of a command batch.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandExecutionResult {
    /// One item per command that ran; the batch stops at the first failure.
    pub results: Vec<CommandResultItem>,
}

impl CommandExecutionResult {
    /// A result with these items.
    pub fn new(results: Vec<CommandResultItem>) -> Self {
        Self { results }
    }

    /// Whether every command that ran exited with 0.
    pub fn success(&self) -> bool {
        self.results.iter().all(|r| r.exit_code == 0)
    }
}

/// The outcome of one command.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandResultItem {
    /// The command.
    pub command: String,
    /// Its exit code (`-1` when the runtime killed it).
    pub exit_code: i64,
    /// Its collected stdout (`None` when it printed nothing).
    pub stdout: Option<String>,
}

impl CommandResultItem {
    /// The outcome of `command`.
    pub fn new(command: impl Into<String>, exit_code: i64, stdout: Option<String>) -> Self {
        Self {
            command: command.into(),
            exit_code,
            stdout,
        }
    }
}
