//! The clients' error type.

use std::time::Duration;

use runtimeuse_proto::resume::Refusal;
use runtimeuse_proto::{
    DecodeError, Diagnostics, FailReason, MessageKind, RuntimeError, TimeoutKind, UsageError,
};

/// Everything that can go wrong with a client call.
///
/// Variants that wrap another error return it from [`source`](std::error::Error::source) and
/// do not repeat its text in their own `Display`, as the Rust API guidelines ask: print the
/// chain (`{:#}` with anyhow, or walk `source()`) to see every cause once.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The runtime reported an error (`error_message`) that ended the request; the request's
    /// earlier ones are in its [`earlier`](RuntimeError::earlier).
    #[error(transparent)]
    Runtime(RuntimeError),
    /// The request was cancelled through the adapter's `AbortHandle` (or an async call's future
    /// was dropped and a later call cleaned up after it).
    #[error("request cancelled")]
    Cancelled,
    /// A timeout of the request expired.
    #[error("request timed out ({kind:?}) after {} messages (last: {:?})", diagnostics.message_count, diagnostics.last_message)]
    Timeout {
        /// Which timeout.
        kind: TimeoutKind,
        /// What was known when it expired.
        diagnostics: Diagnostics,
    },
    /// A callback did not return within its time limit; the request was cancelled (async
    /// clients, which can time a callback out).
    #[error("callback {callback} did not return within {limit:?}")]
    CallbackTimeout {
        /// Which callback.
        callback: &'static str,
        /// The limit.
        limit: Duration,
    },
    /// Connecting took longer than the connect timeout.
    #[error("connecting timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The URL, a header or the TLS settings are invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Connecting failed: name resolution, or the TCP connection (refused, unreachable). All
    /// three clients report these the same way.
    #[error("cannot connect to the runtime")]
    Connect(#[source] std::io::Error),
    /// The WebSocket connection failed (TLS, handshake, I/O, frame limits).
    #[error("websocket error")]
    WebSocket(#[from] tungstenite::Error),
    /// The runtime sent a terminal message that could not be understood.
    #[error("the runtime's terminal message could not be decoded")]
    Protocol(#[source] DecodeError),
    /// The runtime ended the request with the other kind of terminal message.
    #[error("unexpected terminal message {0}")]
    UnexpectedTerminal(MessageKind),
    /// The connection closed before the request finished.
    #[error("connection closed before the request finished")]
    ConnectionClosed,
    /// The runtime stopped answering keepalive pings.
    #[error("the runtime stopped answering keepalive pings")]
    KeepAliveTimeout,
    /// An earlier abandoned request never finished, so the session was ended.
    #[error("the session lost track of an abandoned request and was ended")]
    Desynchronized,
    /// The API was misused (e.g. artifact directories without an uploader).
    #[error("the client was misused")]
    Usage(#[from] UsageError),
    /// The runtime refused to resume the session of a resume token (it is gone, or the
    /// token's counts are outside what the runtime still holds).
    #[error("the runtime refused to resume the session")]
    ResumeRefused(#[source] Refusal),
    /// No resume token can be taken now; the text says why (the runtime did not grant
    /// resumption, the session is ending, or events of a frame already read wait to be handed
    /// out: read the next one first).
    #[error("no resume token: {0}")]
    NotResumable(&'static str),
    /// The structured result does not fit the requested type (what
    /// `QueryResult::deserialize` returns converts into it, so `?` works).
    #[error("structured output does not fit the requested type")]
    Deserialize(#[from] serde_json::Error),
}

impl Error {
    /// The runtime's error text, for [`Error::Runtime`].
    pub fn runtime_error(&self) -> Option<&str> {
        match self {
            Self::Runtime(e) => Some(&e.error),
            _ => None,
        }
    }
}

impl From<FailReason> for Error {
    fn from(reason: FailReason) -> Self {
        match reason {
            FailReason::Runtime(e) => Self::Runtime(e),
            FailReason::Cancelled => Self::Cancelled,
            FailReason::Timeout { kind, diagnostics } => Self::Timeout { kind, diagnostics },
            FailReason::Protocol(e) => Self::Protocol(e),
            FailReason::UnexpectedTerminal(k) => Self::UnexpectedTerminal(k),
            FailReason::KeepAliveTimeout => Self::KeepAliveTimeout,
            FailReason::Desynchronized => Self::Desynchronized,
            _ => Self::ConnectionClosed,
        }
    }
}
