//! How a client command fails: the exit code, the message and a hint, from a client error.

use runtimeuse_tokio::Error;
use serde_json::Value;

use crate::exit;

/// A failure of the command, with its exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
    /// The runtime's error metadata, printed after the message.
    pub(crate) metadata: Option<Value>,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            code: exit::USAGE,
            message: message.into(),
            hint: None,
            metadata: None,
        }
    }

    /// A failure of the system under a server command (`serve`, `proxy`): it cannot listen,
    /// or an I/O call failed.
    pub(crate) fn system(message: impl Into<String>) -> Self {
        Self {
            code: exit::SYSTEM,
            ..Self::usage(message)
        }
    }

    /// `serve` or `proxy` cannot listen on `addr`, with a hint for the usual causes.
    pub(crate) fn cannot_listen(addr: &str, e: &std::io::Error) -> Self {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => Some(
                "another process listens there (a runtime already running?); \
                 choose another port, or port 0 for a free one"
                    .to_owned(),
            ),
            std::io::ErrorKind::AddrNotAvailable => Some(
                "no interface of this machine has that address; \
                 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
                    .to_owned(),
            ),
            std::io::ErrorKind::PermissionDenied => {
                Some("ports below 1024 need privileges; choose one above".to_owned())
            }
            _ => None,
        };
        Self {
            hint,
            ..Self::system(format!("cannot listen on {addr}: {e}"))
        }
    }
}

/// The kind of a client error, as `--json` names it.
pub(super) fn kind(e: &Error) -> &'static str {
    match e {
        Error::Runtime { .. } => "runtime",
        Error::Cancelled => "cancelled",
        Error::Timeout { .. } | Error::CallbackTimeout { .. } | Error::ConnectTimeout(_) => {
            "timeout"
        }
        Error::Usage(_) | Error::Config(_) => "usage",
        Error::WebSocket(runtimeuse_tokio::tokio_tungstenite::tungstenite::Error::Http(r))
            if matches!(r.status().as_u16(), 401 | 403) =>
        {
            "auth"
        }
        Error::Protocol(_) | Error::UnexpectedTerminal(_) | Error::Desynchronized => "protocol",
        _ => "connection",
    }
}

/// The exit code, message and hint of a client error (`token`: whether one was passed).
pub(super) fn failure(e: &Error, url: &str, token: bool) -> Failure {
    let code = match kind(e) {
        "runtime" => exit::RUNTIME,
        "cancelled" => exit::CANCELLED,
        "timeout" => exit::TIMEOUT,
        "usage" => exit::USAGE,
        "protocol" => exit::PROTOCOL,
        "auth" => exit::AUTH,
        _ => exit::CONNECTION,
    };
    let message = match e {
        Error::Timeout { kind, diagnostics } => timeout_message(*kind, diagnostics),
        // Its fields follow on lines of their own (`metadata`); the earlier errors it carries
        // are said here unless they repeat it.
        Error::Runtime(r) => {
            let mut message = format!("runtime error: {}", r.error);
            for e in r.earlier.iter().filter(|e| e.error != r.error) {
                message.push_str(&format!("\n  before it, the runtime reported: {}", e.error));
            }
            message
        }
        e => crate::chain(e),
    };
    let hint = hint(e, url, token);
    let metadata = match e {
        Error::Runtime(r) => Some(r.metadata.clone()),
        _ => None,
    };
    Failure {
        code,
        message,
        hint,
        metadata,
    }
}

/// What to try after a client error (`token`: whether one was passed).
fn hint(e: &Error, url: &str, token: bool) -> Option<String> {
    let tls = url.starts_with("wss://");
    match e {
        Error::Connect(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => Some(format!(
            "nothing listens at {url}: is the runtime running (`runtimeuse serve`)?"
        )),
        Error::Connect(_) => Some(format!("check the host and port of {url}")),
        Error::ConnectTimeout(d) => Some(format!(
            "{url} accepted nothing within {} s: a firewall, or not a runtime?",
            d.as_secs_f64()
        )),
        Error::WebSocket(runtimeuse_tokio::tokio_tungstenite::tungstenite::Error::Http(r)) => {
            Some(match r.status().as_u16() {
                401 | 403 if token => {
                    "the runtime refused the token: check --token (or RUNTIMEUSE_TOKEN)".to_owned()
                }
                401 | 403 => {
                    "the runtime wants a token: pass --token (or RUNTIMEUSE_TOKEN)".to_owned()
                }
                s => format!(
                    "{url} answered HTTP {s} instead of a WebSocket upgrade: is this port a runtimeuse runtime?"
                ),
            })
        }
        Error::WebSocket(runtimeuse_tokio::tokio_tungstenite::tungstenite::Error::Protocol(_)) => {
            Some(format!(
                "{url} did not answer as a WebSocket server: is this port a runtimeuse runtime?"
            ))
        }
        Error::WebSocket(runtimeuse_tokio::tokio_tungstenite::tungstenite::Error::Tls(_))
            if tls =>
        {
            Some(format!(
                "the TLS handshake failed: if the runtime listens without TLS, use {}",
                url.replacen("wss://", "ws://", 1)
            ))
        }
        Error::WebSocket(runtimeuse_tokio::tokio_tungstenite::tungstenite::Error::Io(io))
            if tls && io.kind() == std::io::ErrorKind::InvalidData =>
        {
            Some(format!(
                "the TLS handshake failed: if the runtime listens without TLS, use {}",
                url.replacen("wss://", "ws://", 1)
            ))
        }
        Error::WebSocket(_) | Error::ConnectionClosed if tls => Some(format!(
            "the connection ended during setup or the request; TLS to a plain port? try {}",
            url.replacen("wss://", "ws://", 1)
        )),
        Error::Timeout { .. } => {
            Some("raise --timeout or --idle-timeout if the work takes longer".to_owned())
        }
        _ => None,
    }
}

/// A timeout as a person reads it: which limit, and how far the request got.
fn timeout_message(
    kind: runtimeuse_tokio::proto::TimeoutKind,
    d: &runtimeuse_tokio::proto::Diagnostics,
) -> String {
    use runtimeuse_tokio::proto::TimeoutKind;
    let limit = match kind {
        TimeoutKind::Idle(limit) => format!(
            "nothing arrived for {} (the --idle-timeout limit)",
            seconds(limit)
        ),
        TimeoutKind::Overall(limit) => {
            format!("no result within {} (the --timeout limit)", seconds(limit))
        }
        _ => "a time limit passed".to_owned(),
    };
    let progress = match (d.message_count, d.last_message) {
        (0, _) | (_, None) => "the runtime had sent nothing for this request".to_owned(),
        (n, Some(last)) => format!("the runtime had sent {n} messages, the last a {last}"),
    };
    format!("{limit}; {progress}")
}

fn seconds(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s} s")
    }
}
