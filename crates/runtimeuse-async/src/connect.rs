//! Connecting to a runtime, for a new session and for a resumed one.

use tungstenite::http::HeaderMap;

use crate::backend::{Backend, timeout};
use crate::{ClientSettings, Error};

/// Connects to the runtime with these extra handshake headers, within the connect timeout:
/// the socket and the response's headers.
///
/// # Errors
///
/// As [`Client::session`].
pub(crate) async fn connect<B: Backend>(
    s: &ClientSettings,
    extra: &[(&'static str, String)],
) -> Result<(B::Socket, HeaderMap), Error> {
    // Boxed: connecting (TLS, the handshake) takes a future of about 20 KB, which would
    // otherwise stay inline in every call's future for as long as the call runs.
    timeout::<B, _>(s.connect_timeout, Box::pin(B::connect(s, extra)))
        .await
        .ok_or(Error::ConnectTimeout(s.connect_timeout))?
        .map_err(|e| match e {
            // Name resolution and TCP, as the blocking client reports them; what fails once
            // connected (TLS: invalid data; a handshake cut short) stays a WebSocket error.
            Error::WebSocket(tungstenite::Error::Io(io)) if !after_connect(&io) => {
                Error::Connect(io)
            }
            e => e,
        })
}

/// Whether an I/O error of a connection attempt happened after the TCP connection was up.
fn after_connect(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::InvalidData
            | K::UnexpectedEof
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::BrokenPipe
    )
}
