//! Errors: [`UsageError`] for misuse of the API, [`FailReason`] for why a request ended badly.
//! [`DecodeError`], for frames that could not be understood, lives with the decoder in `wire`.

use std::time::Duration;

use serde_json::Value;

use crate::wire::{DecodeError, MessageKind};

/// The application misused the API. Returned synchronously; nothing was sent.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// A request is already in flight on this session; one runs at a time.
    #[error("a request is already in flight on this session")]
    RequestInFlight,
    /// There is no request in flight to cancel.
    #[error("no request is in flight")]
    NoRequestInFlight,
    /// The session is ending (end of session was asked for).
    #[error("the session is ending")]
    SessionEnding,
    /// The session has finished; create a new one.
    #[error("the session has finished")]
    SessionFinished,
    /// Artifact directories were given without an artifact uploader.
    #[error("artifacts directories need an artifact uploader")]
    ArtifactDirsWithoutUploader,
    /// An artifact uploader was given without artifact directories.
    #[error("an artifact uploader needs artifacts directories")]
    UploaderWithoutArtifactDirs,
    /// A command batch must hold at least one command.
    #[error("a command batch needs at least one command")]
    NoCommands,
    /// The schema given for structured output is not a JSON Schema object (or not JSON).
    #[error("invalid output schema: {0}")]
    InvalidOutputSchema(String),
    /// The artifact upload request is not pending on this session.
    #[error("that artifact upload request is not pending on this session")]
    UnknownArtifactRequest,
}

/// Which timeout expired. Each variant carries the configured limit that expired; how long the
/// request had run is [`Diagnostics::elapsed`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutKind {
    /// The overall per-request timeout, this long.
    Overall(Duration),
    /// The idle limit: no message arrived for this long.
    Idle(Duration),
}

/// Where a request stood when it timed out.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Nothing had arrived for the request yet.
    WaitingForFirstMessage,
    /// Messages were arriving.
    ReceivingMessages,
}

/// What the session knew about a request when a timer ended it.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Diagnostics {
    /// The kind of the last message received for the request, if any.
    pub last_message: Option<MessageKind>,
    /// How many messages were received for the request.
    pub message_count: u64,
    /// Where the request stood.
    pub phase: Phase,
    /// How long the request had been running.
    pub elapsed: Duration,
}

/// Why a request ended without a result. Delivered as [`Event::Failed`](crate::Event::Failed).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum FailReason {
    /// The runtime reported an error (`error_message`): the request's terminal one, with the
    /// request's earlier ones in [`RuntimeError::earlier`].
    #[error(transparent)]
    Runtime(RuntimeError),
    /// The application cancelled the request.
    #[error("request cancelled")]
    Cancelled,
    /// A timeout expired.
    #[error("request timed out ({kind:?}) after {} messages, last {:?}", diagnostics.message_count, diagnostics.last_message)]
    Timeout {
        /// Which timeout.
        kind: TimeoutKind,
        /// What was known at the time.
        diagnostics: Diagnostics,
    },
    /// The runtime sent a terminal message that could not be decoded.
    #[error("malformed terminal message")]
    Protocol(#[source] DecodeError),
    /// The runtime ended the request with the terminal of the other request kind (a
    /// `result_message` for a command batch, or the reverse).
    #[error("unexpected terminal message {0} for this request")]
    UnexpectedTerminal(MessageKind),
    /// The connection closed before the request's terminal message arrived.
    #[error("connection closed before the request finished")]
    TransportClosed,
    /// The peer stopped answering keepalive pings.
    #[error("the runtime stopped answering keepalive pings")]
    KeepAliveTimeout,
    /// A request abandoned earlier (cancelled or timed out) never reached its terminal message,
    /// so this session cannot tell its messages from the next request's; it was ended.
    #[error("the previous request never finished; the session was ended")]
    Desynchronized,
}

/// An `error_message` the runtime sent: the one type for it everywhere (a non-terminal one in
/// [`Event::RuntimeError`](crate::Event::RuntimeError) and
/// [`RequestEvent::RuntimeError`](crate::RequestEvent::RuntimeError), the terminal one in
/// [`FailReason::Runtime`] and the clients' `Error::Runtime`).
///
/// Its `Display` shows the text, the metadata and a note of the earlier errors.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error(
    "runtime error: {error} (metadata: {metadata}{})",
    earlier_note(earlier)
)]
pub struct RuntimeError {
    /// The error text.
    pub error: String,
    /// The metadata as sent (`Null` when absent).
    pub metadata: Value,
    /// For the error that ended a request: the request's earlier `error_message`s, oldest
    /// first (a handler's own error before the runtime's terminal one, say), so that nothing
    /// the runtime said is dropped (at most 16 are kept). Empty for an error that did not end
    /// its request.
    pub earlier: Vec<RuntimeError>,
}

impl RuntimeError {
    /// An error with this text and metadata, and no earlier errors.
    pub fn new(error: impl Into<String>, metadata: Value) -> Self {
        Self {
            error: error.into(),
            metadata,
            earlier: Vec::new(),
        }
    }

    /// The same error with these earlier errors.
    #[must_use]
    pub fn with_earlier(mut self, earlier: Vec<RuntimeError>) -> Self {
        self.earlier = earlier;
        self
    }
}

fn earlier_note(earlier: &[RuntimeError]) -> String {
    match earlier {
        [] => String::new(),
        [one] => format!("; before it: {}", one.error),
        [first, ..] => format!(
            "; {} earlier errors, the first: {}",
            earlier.len(),
            first.error
        ),
    }
}

impl FailReason {
    /// The runtime's error text, when the runtime reported the error.
    pub fn runtime_error(&self) -> Option<&str> {
        match self {
            Self::Runtime(e) => Some(&e.error),
            _ => None,
        }
    }
}
