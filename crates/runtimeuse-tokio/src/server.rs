//! The server side: accept WebSocket connections and drive a
//! [`RuntimeSession`] over each (feature `server`).
//!
//! [`RuntimeConnection`] is pull-driven like the client: [`next_event`](RuntimeConnection::next_event)
//! sends what the session queued, reads frames, fires heartbeats, and returns the client's
//! requests as [`RuntimeEvent`]s. The runtime answers through
//! [`session`](RuntimeConnection::session) and [`flush`](RuntimeConnection::flush)es.

use std::collections::VecDeque;

use runtimeuse_proto::Input;
use runtimeuse_proto::runtime::{RuntimeConfig, RuntimeEvent, RuntimeOutput, RuntimeSession};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use runtimeuse_async::Backend;
use runtimeuse_async::conn::{CLOSE_AFTER_FAILURE, CLOSE_AFTER_SUCCESS, Conn, Incoming};
use tokio_tungstenite::WebSocketStream;

use crate::{Error, Tokio};

/// Settings of accepted connections.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The runtime session's settings (frame limit, heartbeat interval, …).
    pub runtime: RuntimeConfig,
    /// When set, a connection must present this token, as `Authorization: Bearer <token>` or a
    /// `token` query parameter, or it is refused (HTTP 401) in the handshake.
    pub token: Option<String>,
    /// Most bytes waiting to be written to the client (`None`: no limit, tungstenite's
    /// default). Must hold the largest frame sent.
    pub max_write_buffer: Option<usize>,
    /// Bytes read from the socket at once, which is also the read buffer an idle connection
    /// keeps; larger frames still arrive whole. Default [`DEFAULT_SERVER_READ_BUFFER`].
    pub read_buffer_size: usize,
}

/// The default [`ServerConfig::read_buffer_size`]: 4 KiB. Clients send small frames (requests,
/// upload answers), and a runtime serving thousands of idle connections keeps one buffer
/// each; tungstenite's default, 128 KiB, made an idle connection cost about 140 KB.
pub const DEFAULT_SERVER_READ_BUFFER: usize = 4 << 10;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            runtime: RuntimeConfig::default(),
            token: None,
            max_write_buffer: None,
            read_buffer_size: DEFAULT_SERVER_READ_BUFFER,
        }
    }
}

/// One accepted connection and its runtime session.
#[derive(Debug)]
pub struct RuntimeConnection<S> {
    conn: Conn<WebSocketStream<S>, Tokio>,
    session: RuntimeSession,
    events: VecDeque<RuntimeEvent>,
    deadline: std::time::Instant,
}

/// Whether the handshake presents `token`: `Authorization: Bearer <token>` (the scheme in any
/// case) or a percent-encoded `token` query parameter, compared in constant time.
fn authorized(request: &Request, token: &str) -> bool {
    let bearer = request
        .headers()
        .get_all("authorization")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .any(|(_, t)| same(t.trim().as_bytes(), token.as_bytes()));
    let query = request.uri().query().unwrap_or("").split('&').any(|pair| {
        pair.split_once('=').is_some_and(|(k, v)| {
            k == "token" && percent_decode(v).is_some_and(|v| same(&v, token.as_bytes()))
        })
    });
    bearer || query
}

/// Compares in time that depends on the lengths only, not on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(!x);
    }
    diff == 0
}

/// Decodes `%XX` escapes and `+` (a space, in a query string); `None` for a bad escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

impl<S: AsyncRead + AsyncWrite + Unpin> RuntimeConnection<S> {
    /// Runs the WebSocket handshake on an accepted stream (checking the token, when set).
    ///
    /// # Errors
    ///
    /// [`Error::WebSocket`] if the handshake fails or the token is missing or wrong.
    pub async fn accept(stream: S, config: ServerConfig) -> Result<Self, Error> {
        let max = config.runtime.max_frame_size;
        let mut ws_config = WebSocketConfig::default()
            .max_message_size(Some(max))
            .max_frame_size(Some(max))
            .read_buffer_size(config.read_buffer_size);
        if let Some(limit) = config.max_write_buffer {
            // tungstenite requires it above its write buffer size.
            ws_config = ws_config.max_write_buffer_size(limit.max(ws_config.write_buffer_size + 1));
        }
        let token = config.token.clone();
        // The shape of this callback (and its large error type) is tungstenite's.
        #[allow(clippy::result_large_err)]
        let check = move |request: &Request, response: Response| match &token {
            Some(t) if !authorized(request, t) => {
                let mut refusal = ErrorResponse::new(Some("missing or wrong token".into()));
                *refusal.status_mut() = StatusCode::UNAUTHORIZED;
                Err(refusal)
            }
            _ => Ok(response),
        };
        let ws =
            tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(ws_config)).await?;
        let now = Tokio::now();
        Ok(Self {
            conn: Conn::new(ws),
            session: RuntimeSession::new(config.runtime, now),
            events: VecDeque::new(),
            deadline: now,
        })
    }

    /// The runtime session, to answer requests. [`flush`](Self::flush) afterwards (or call
    /// [`next_event`](Self::next_event), which flushes first).
    pub fn session(&mut self) -> &mut RuntimeSession {
        &mut self.session
    }

    /// Sends what the session queued. Cancel safe.
    ///
    /// # Errors
    ///
    /// [`Error::WebSocket`] if sending fails; the session then counts as closed.
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.drain();
        if let Err(e) = self.conn.flush().await {
            self.session
                .handle_input(Input::TransportClosed(Tokio::now()));
            self.drain();
            return Err(e.into());
        }
        if self.session.is_finished() && self.events.is_empty() {
            self.conn.close(CLOSE_AFTER_SUCCESS).await;
        }
        Ok(())
    }

    /// The next request of the client. Returns `None` once the session finished (end of
    /// session confirmed, or the connection closed after [`RuntimeEvent::Closed`]). Cancel
    /// safe, so it can race the runtime's own work in `tokio::select!`.
    pub async fn next_event(&mut self) -> Option<RuntimeEvent> {
        loop {
            if let Err(e) = self.flush().await {
                tracing::debug!(error = %e, "send failed");
            }
            if let Some(e) = self.events.pop_front() {
                if self.events.is_empty() {
                    // Events are large (a request's whole settings) and come a few at a
                    // time: an idle connection keeps no room for them.
                    self.events = VecDeque::new();
                }
                return Some(e);
            }
            if self.session.is_finished() {
                return None;
            }
            let incoming = self.conn.recv(self.deadline).await;
            let now = Tokio::now();
            match incoming {
                Incoming::Data(m) => self.session.handle_input(Incoming::input(&m, now)),
                Incoming::Pong => self.session.handle_input(Input::Pong(now)),
                Incoming::Deadline => self.session.handle_input(Input::Timeout(now)),
                Incoming::Closed(err) => {
                    if let Some(e) = err {
                        tracing::debug!(error = %e, "client connection failed");
                    }
                    // Answer the client's close, or say why its frame was refused (1007,
                    // 1009), before the session reports the end.
                    self.conn.close(CLOSE_AFTER_FAILURE).await;
                    self.session.handle_input(Input::TransportClosed(now));
                }
            }
        }
    }

    fn drain(&mut self) {
        loop {
            match self.session.poll_output() {
                RuntimeOutput::Transmit(t) => self.conn.queue(t),
                RuntimeOutput::Event(e) => self.events.push_back(e),
                RuntimeOutput::Timeout(at) => {
                    self.deadline = at;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(auth: Option<&str>, query: &str) -> Request {
        let mut r = Request::builder().uri(format!("ws://localhost/{query}"));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.body(()).unwrap()
    }

    #[test]
    fn token_variants() {
        let t = "s3cret/+&=x";
        assert!(authorized(&request(Some("Bearer s3cret/+&=x"), ""), t));
        assert!(authorized(&request(Some("bearer s3cret/+&=x"), ""), t));
        assert!(authorized(&request(Some("BEARER  s3cret/+&=x "), ""), t));
        assert!(authorized(&request(None, "?token=s3cret%2F%2B%26%3Dx"), t));
        assert!(authorized(
            &request(None, "?a=1&token=s3cret%2f%2b%26%3dx"),
            t
        ));
        assert!(!authorized(&request(Some("Basic s3cret/+&=x"), ""), t));
        assert!(!authorized(&request(Some("Bearer s3cret"), ""), t));
        assert!(!authorized(&request(None, "?token=s3cret%2"), t));
        assert!(!authorized(&request(None, "?token=s3cret/+&=x"), t));
        assert!(!authorized(&request(None, ""), t));
    }

    #[test]
    fn same_compares_whole_values() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"ab", b"abc"));
        assert!(!same(b"abc", b"ab"));
        assert!(same(b"", b""));
    }
}
