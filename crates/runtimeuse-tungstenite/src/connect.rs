//! Connecting to a runtime, for a new session and for a resumed one.

use std::net::{TcpStream, ToSocketAddrs};
#[cfg(feature = "__rustls")]
use std::sync::Arc;
use std::time::Duration;

use runtimeuse_client_core::ClientSettings;
use runtimeuse_client_core::read_ahead::ReadAheadStream;
use runtimeuse_client_core::resume::{Attempt, Resumption};
use runtimeuse_proto::resume::{RESUME_HEADER, RESUME_VERSION};
use tungstenite::WebSocket;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::stream::MaybeTlsStream;

use crate::Error;

/// The blocking client's WebSocket: over TLS when the URL is `wss://`, reading through a
/// read-ahead buffer.
pub type Socket = WebSocket<MaybeTlsStream<ReadAheadStream<TcpStream>>>;

/// The TCP socket under a [`Socket`] (and its TLS): for its timeouts, its blocking mode, its
/// file descriptor.
pub fn tcp(ws: &Socket) -> Option<&TcpStream> {
    match ws.get_ref() {
        MaybeTlsStream::Plain(s) => Some(s.get_ref()),
        #[cfg(feature = "__rustls")]
        MaybeTlsStream::Rustls(s) => Some(s.sock.get_ref()),
        _ => None,
    }
}

/// Connects as [`Client::session`](crate::Client::session) does, without a session: the
/// socket (blocking, without timeouts) and, when the settings ask for resumption
/// ([`ClientSettings::resume`]) and the runtime granted it, the session's [`Resumption`], for
/// a driver of its own over the shared [`Connection`](runtimeuse_client_core::connection)
/// (`Connection::make_resumable`). Reconnect it with [`resume_socket`].
///
/// # Errors
///
/// As [`Client::session`](crate::Client::session).
pub fn connect_session(settings: &ClientSettings) -> Result<(Socket, Option<Resumption>), Error> {
    let ask = [(RESUME_HEADER, RESUME_VERSION.to_owned())];
    let extra: &[_] = if settings.resume { &ask } else { &[] };
    let (ws, headers) = connect(settings, extra)?;
    if let Some(t) = tcp(&ws) {
        t.set_read_timeout(None).map_err(Error::Connect)?;
    }
    let granted = settings
        .resume
        .then(|| Resumption::granted(&headers))
        .flatten();
    if settings.resume && granted.is_none() {
        tracing::debug!("the runtime did not grant resumption");
    }
    Ok((ws, granted))
}

/// One attempt to resume a session on a new socket, with the handshake headers the
/// connection asked for (`Connection::poll_reconnect`, or
/// [`Resumption::resume_headers`] for a token): the socket and the count of the client's
/// frames the runtime processed, its refusal, or a failure worth another try. Blocks for at
/// most about twice the settings' connect timeout; the socket is left blocking with that
/// read timeout.
pub fn resume_socket(
    settings: &ClientSettings,
    headers: &[(&'static str, String)],
) -> Attempt<Box<Socket>> {
    let mut ws = match connect(settings, headers) {
        Ok((ws, _)) => ws,
        Err(e) => return Attempt::from_error(e),
    };
    if let Some(t) = tcp(&ws) {
        let _ = t.set_read_timeout(Some(settings.connect_timeout));
    }
    let first = ws.read();
    Attempt::from_first_frame(Box::new(ws), first)
}

/// Connects with these extra handshake headers: the socket and the response's headers.
pub(crate) fn connect(
    s: &ClientSettings,
    extra: &[(&'static str, String)],
) -> Result<(Socket, tungstenite::http::HeaderMap), Error> {
    let (request, config) = s.handshake_with(extra)?;
    let (host, port) = s.host_and_port(&request)?;
    s.require_tls(&request, cfg!(feature = "__rustls"))?;
    let socket = connect_tcp(&host, port, s.connect_timeout)?;
    // The handshake gets the same limit; reads are timed per call afterwards.
    socket
        .set_read_timeout(Some(s.connect_timeout))
        .map_err(Error::Connect)?;
    socket
        .set_write_timeout(Some(s.connect_timeout))
        .map_err(Error::Connect)?;
    let (ws, response) = handshake(s, request, socket, config)?;
    if let Some(t) = tcp(&ws) {
        let _ = t.set_write_timeout(None);
    }
    Ok((ws, response.into_parts().0.headers))
}

fn handshake(
    s: &ClientSettings,
    request: tungstenite::handshake::client::Request,
    tcp: TcpStream,
    config: WebSocketConfig,
) -> Result<(Socket, tungstenite::handshake::client::Response), Error> {
    #[cfg(feature = "__rustls")]
    let handshake = {
        let connector = tungstenite::Connector::Rustls(Arc::new(s.tls_config()?));
        tungstenite::client_tls_with_config(
            request,
            ReadAheadStream::new(tcp),
            Some(config),
            Some(connector),
        )
    };
    #[cfg(not(feature = "__rustls"))]
    let handshake = {
        let stream = tungstenite::stream::MaybeTlsStream::Plain(ReadAheadStream::new(tcp));
        tungstenite::client::client_with_config(request, stream, Some(config))
    };
    handshake.map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => Error::WebSocket(e),
        tungstenite::HandshakeError::Interrupted(_) => Error::ConnectTimeout(s.connect_timeout),
    })
}

fn connect_tcp(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, Error> {
    let addrs = (host, port).to_socket_addrs().map_err(Error::Connect)?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                last = Some(Error::ConnectTimeout(timeout));
            }
            Err(e) => last = Some(Error::Connect(e)),
        }
    }
    Err(last.unwrap_or_else(|| Error::Config(format!("{host}: no address"))))
}
