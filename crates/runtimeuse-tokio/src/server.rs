//! The server side: accept WebSocket connections and drive a
//! [`RuntimeSession`] over each (feature `server`).
//!
//! [`RuntimeConnection`] is pull-driven like the client: [`next_event`](RuntimeConnection::next_event)
//! sends what the session queued, reads frames, fires heartbeats, and returns the client's
//! requests as [`RuntimeEvent`]s. The runtime answers through
//! [`session`](RuntimeConnection::session) and [`flush`](RuntimeConnection::flush)es.
//!
//! # Memory and slow clients
//!
//! A connection holds the frames its client has not taken yet, and counts their bytes in its
//! [`Backlog`]: what produces output for a client waits on that count
//! ([`Backlog::wait_until`]), so that a client that reads slowly slows its producers instead
//! of filling memory. A client that takes no bytes at all for
//! [`ServerConfig::write_stall_timeout`] while frames wait for it is dropped. Pings are
//! answered one at a time: while a pong waits to be written, nothing more is read, so a ping
//! flood from a client that does not read costs one pong.
//!
//! # Resumable sessions
//!
//! [`enable_resume`](RuntimeConnection::enable_resume) keeps every data frame sent until the
//! client acknowledges it ([`runtimeuse_proto::resume`], the repository's `docs/resume.md`),
//! acknowledges the client's frames, and makes [`next`](RuntimeConnection::next) report a
//! lost connection as [`Step::Detached`] instead of ending the session: the session goes on
//! without a socket, what it sends waits in the replay buffer (and counts in the backlog), and
//! [`resume`](RuntimeConnection::resume) attaches the socket of a resuming client.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use runtimeuse_proto::Input;
use runtimeuse_proto::resume::{self, Refusal, ReplayBuffer};
use runtimeuse_proto::runtime::{RuntimeConfig, RuntimeEvent, RuntimeOutput, RuntimeSession};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use runtimeuse_async::Backend;
use runtimeuse_async::conn::{CLOSE_AFTER_FAILURE, CLOSE_AFTER_SUCCESS, Conn, Incoming};
use tokio_tungstenite::WebSocketStream;

use crate::{Error, Tokio};

mod backlog;
mod inbound;

pub use backlog::Backlog;
pub use inbound::{INBOUND_ALLOWANCE, InboundBudget};

/// Settings of accepted connections.
#[non_exhaustive]
#[derive(Clone)]
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
    /// How long a client may take no bytes at all while frames wait for it; then the
    /// connection is dropped (see [`RuntimeConnection::flush`]). `None`: no limit. Default
    /// [`DEFAULT_WRITE_STALL_TIMEOUT`].
    pub write_stall_timeout: Option<Duration>,
    /// While more bytes than this wait to be sent to the client, its frames are not read, so
    /// that what the session answers to them (an error for each malformed frame) cannot pile
    /// up. Default [`DEFAULT_MAX_QUEUED_FOR_READING`].
    pub max_queued_for_reading: usize,
    /// When set, each connection's [`Backlog`] also counts into this one: the server's total.
    pub total_backlog: Option<Backlog>,
    /// When set, every connection counts the data frames it sends, and their bytes, here (a
    /// server's metrics).
    pub sent: Option<SentTally>,
    /// When set, what the connections hold of unfinished frames from their clients counts
    /// here, and over its limit they read one at a time (see [`InboundBudget`]). Default none.
    pub inbound: Option<InboundBudget>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("runtime", &self.runtime)
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .field("max_write_buffer", &self.max_write_buffer)
            .field("read_buffer_size", &self.read_buffer_size)
            .field("write_stall_timeout", &self.write_stall_timeout)
            .field("max_queued_for_reading", &self.max_queued_for_reading)
            .field("total_backlog", &self.total_backlog)
            .field("sent", &self.sent)
            .field("inbound", &self.inbound)
            .finish()
    }
}

/// A count of data frames sent and their bytes, shared by the connections of a server
/// ([`ServerConfig::sent`]). Cloning shares the count.
#[derive(Clone, Debug, Default)]
pub struct SentTally(Arc<[std::sync::atomic::AtomicU64; 2]>);

impl SentTally {
    /// A tally from zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Data frames sent so far.
    pub fn frames(&self) -> u64 {
        self.0[0].load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Their bytes (the payloads).
    pub fn bytes(&self) -> u64 {
        self.0[1].load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self, bytes: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.0[0].fetch_add(1, Relaxed);
        self.0[1].fetch_add(u64::try_from(bytes).unwrap_or(u64::MAX), Relaxed);
    }
}

/// The default [`ServerConfig::max_queued_for_reading`]: 2 MiB.
pub const DEFAULT_MAX_QUEUED_FOR_READING: usize = 2 << 20;

/// The default [`ServerConfig::write_stall_timeout`]: 60 s.
pub const DEFAULT_WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(60);

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
            write_stall_timeout: Some(DEFAULT_WRITE_STALL_TIMEOUT),
            max_queued_for_reading: DEFAULT_MAX_QUEUED_FOR_READING,
            total_backlog: None,
            sent: None,
            inbound: None,
        }
    }
}

/// What the application decides about a handshake
/// ([`RuntimeConnection::accept_with`]), once the token (when one is set) was found right.
#[derive(Debug)]
pub enum Admit {
    /// Accept it, with these extra response headers.
    Accept(Vec<(&'static str, String)>),
    /// Refuse it.
    Refuse {
        /// The HTTP status.
        status: u16,
        /// Extra response headers.
        headers: Vec<(&'static str, String)>,
        /// The response's body, a sentence for people.
        body: String,
    },
}

impl Admit {
    /// The refusal of a resumption: its status, its token in
    /// [`REFUSED_HEADER`](resume::REFUSED_HEADER) and its sentence.
    pub fn refuse_resume(refusal: Refusal) -> Self {
        Self::Refuse {
            status: refusal.status(),
            headers: vec![(resume::REFUSED_HEADER, refusal.token().to_owned())],
            body: refusal.message(),
        }
    }
}

/// The replay window of a resumable session, shared with whoever judges resuming handshakes
/// before their socket reaches the connection: the frames a resuming client may say it
/// processed, from the acknowledged count to the sent count. Kept up to date as frames are
/// sent and acknowledged.
#[derive(Debug, Default)]
pub struct ReplayWindow {
    acked: AtomicU64,
    sent: AtomicU64,
}

impl ReplayWindow {
    /// Whether a client that processed `received` frames can be served. (The connection
    /// judges again when the socket arrives: the window may have moved.)
    pub fn contains(&self, received: u64) -> bool {
        let acked = self.acked.load(Ordering::Relaxed);
        let sent = self.sent.load(Ordering::Relaxed);
        (acked..=sent).contains(&received)
    }

    fn set(&self, acked: u64, sent: u64) {
        self.acked.store(acked, Ordering::Relaxed);
        self.sent.store(sent, Ordering::Relaxed);
    }
}

/// What [`RuntimeConnection::next`] produced. Closed, as the core's `Output` is: a new kind
/// of step breaks the loops that drive connections, on purpose.
// An event is as large as `Option<RuntimeEvent>` was, and is moved once: not worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Step {
    /// A request of the client.
    Event(RuntimeEvent),
    /// The connection of a resumable session was lost: the session goes on without a socket
    /// until [`resume`](RuntimeConnection::resume) or [`abandon`](RuntimeConnection::abandon).
    Detached,
}

/// One accepted connection and its runtime session.
#[derive(Debug)]
pub struct RuntimeConnection<S> {
    conn: Conn<WebSocketStream<Metered<S>>, Tokio>,
    session: RuntimeSession,
    /// The frames sent and not acknowledged, when the session is resumable, and their window
    /// as others see it.
    replay: Option<(ReplayBuffer<Message>, Arc<ReplayWindow>)>,
    /// The client's data frames processed (counted when the session is resumable).
    received: u64,
    /// The socket was lost and the session goes on without one.
    detached: bool,
    /// Most bytes kept for an attached client's acknowledgement.
    replay_limit: usize,
    events: VecDeque<RuntimeEvent>,
    deadline: std::time::Instant,
    backlog: Backlog,
    /// The bytes of `conn`'s queue counted in `backlog`.
    counted: usize,
    stall_limit: Option<Duration>,
    read_limit: usize,
    stall: Stall,
    /// The server's tally of what is sent, when it keeps one.
    sent: Option<SentTally>,
    /// What the socket read of the client's unfinished frame, in the server's budget.
    held: Option<Arc<inbound::Held>>,
}

/// While a flush waits on the client: since when the socket took no bytes, and the timer
/// that checks it (kept, so that a slow reader does not make one per frame).
#[derive(Debug, Default)]
struct Stall {
    waiting_since: Option<tokio::time::Instant>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// A stream that counts the bytes it took for writing, so that a stalled client can be told
/// from a slow one, and the bytes it read of unfinished frames into the server's inbound
/// budget, reading only while the budget leaves it room.
#[derive(Debug)]
struct Metered<S> {
    inner: S,
    written: u64,
    held: Option<Arc<inbound::Held>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(held) = &self.held
            && held.poll_room(cx).is_pending()
        {
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Some(held) = &self.held {
            held.add(buf.filled().len() - before);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written += n as u64;
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.written += n as u64;
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Adds headers to a handshake response; a value that cannot be a header is left out.
fn add_headers(
    map: &mut tokio_tungstenite::tungstenite::http::HeaderMap,
    headers: Vec<(&'static str, String)>,
) {
    use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
    for (name, value) in headers {
        match HeaderValue::from_str(&value) {
            Ok(v) => {
                map.insert(HeaderName::from_static(name), v);
            }
            Err(_) => tracing::warn!(header = name, "response header value refused"),
        }
    }
}

/// Whether the handshake presents `token` ([`runtimeuse_proto::auth::authorized`] of its
/// head).
fn authorized(request: &Request, token: &str) -> bool {
    let headers: Vec<&[u8]> = request
        .headers()
        .get_all("authorization")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    runtimeuse_proto::auth::authorized(&headers, request.uri().query(), token)
}

impl<S: AsyncRead + AsyncWrite + Unpin> RuntimeConnection<S> {
    /// Runs the WebSocket handshake on an accepted stream (checking the token, when set).
    ///
    /// # Errors
    ///
    /// [`Error::WebSocket`] if the handshake fails or the token is missing or wrong.
    pub async fn accept(stream: S, config: ServerConfig) -> Result<Self, Error> {
        Self::accept_with(stream, config, |_| Admit::Accept(Vec::new())).await
    }

    /// Runs the WebSocket handshake, checking the token (when set) and then asking `decide`,
    /// which sees the request's headers and may add response headers or refuse.
    ///
    /// # Errors
    ///
    /// [`Error::WebSocket`] if the handshake fails, the token is missing or wrong, or `decide`
    /// refused.
    pub async fn accept_with(
        stream: S,
        config: ServerConfig,
        decide: impl FnOnce(&Request) -> Admit + Unpin,
    ) -> Result<Self, Error> {
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
        let check = move |request: &Request, mut response: Response| {
            if let Some(t) = &token
                && !authorized(request, t)
            {
                let mut refusal = ErrorResponse::new(Some("missing or wrong token".into()));
                *refusal.status_mut() = StatusCode::UNAUTHORIZED;
                return Err(refusal);
            }
            match decide(request) {
                Admit::Accept(headers) => {
                    add_headers(response.headers_mut(), headers);
                    Ok(response)
                }
                Admit::Refuse {
                    status,
                    headers,
                    body,
                } => {
                    let mut refusal = ErrorResponse::new(Some(body));
                    *refusal.status_mut() =
                        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                    add_headers(refusal.headers_mut(), headers);
                    Err(refusal)
                }
            }
        };
        // The handshake is not counted: it has its own bounds.
        let stream = Metered {
            inner: stream,
            written: 0,
            held: None,
        };
        let mut ws =
            tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(ws_config)).await?;
        let held = config.inbound.as_ref().map(InboundBudget::share);
        ws.get_mut().held.clone_from(&held);
        let now = Tokio::now();
        let backlog = match &config.total_backlog {
            Some(total) => Backlog::within(total),
            None => Backlog::new(),
        };
        Ok(Self {
            conn: Conn::new(ws),
            session: RuntimeSession::new(config.runtime, now),
            replay: None,
            received: 0,
            detached: false,
            replay_limit: usize::MAX,
            events: VecDeque::new(),
            deadline: now,
            backlog,
            counted: 0,
            stall_limit: config.write_stall_timeout,
            sent: config.sent.clone(),
            read_limit: config.max_queued_for_reading,
            stall: Stall::default(),
            held,
        })
    }

    /// The count of bytes this connection holds for its client: the frames the socket has
    /// not taken yet, and whatever the application counts in it. Clone it into the tasks
    /// that produce output, to [`wait_until`](Backlog::wait_until) there is room.
    pub fn backlog(&self) -> &Backlog {
        &self.backlog
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
    /// [`Error::WebSocket`] if sending fails, or (an I/O error of kind `TimedOut`) if the
    /// client took no bytes for [`ServerConfig::write_stall_timeout`]; the session then counts
    /// as closed. A stalled client is dropped without a close frame: one would wait behind the
    /// bytes it does not read, so it sees the connection end (1006).
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.drain();
        if let Err(e) = poll_fn(|cx| self.poll_send(cx)).await {
            self.send_failed(&e).await;
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
    ///
    /// It sends what the session queued while it reads the client's frames; it reads none while
    /// more than [`ServerConfig::max_queued_for_reading`] bytes wait for the client, so that
    /// what the session answers to them cannot pile up.
    ///
    /// A resumable session's lost connection is not an event here: the session goes on without
    /// a socket (use [`next`](Self::next) to see it).
    pub async fn next_event(&mut self) -> Option<RuntimeEvent> {
        loop {
            match self.next().await? {
                Step::Event(e) => return Some(e),
                Step::Detached => {}
            }
        }
    }

    /// [`next_event`](Self::next_event), and [`Step::Detached`] when the connection of a
    /// resumable session is lost (not closed normally, and no end of session asked). Cancel
    /// safe.
    pub async fn next(&mut self) -> Option<Step> {
        loop {
            self.drain();
            if let Some(e) = self.events.pop_front() {
                if self.events.is_empty() {
                    // Events are large (a request's whole settings) and come a few at a
                    // time: an idle connection keeps no room for them.
                    self.events = VecDeque::new();
                }
                return Some(Step::Event(e));
            }
            if self.session.is_finished() {
                if let Err(e) = self.flush().await {
                    tracing::debug!(error = %e, "send failed");
                }
                if self.events.is_empty() {
                    return None;
                }
                continue;
            }
            if self.detached {
                // No socket: only the session's timers (heartbeats) move it.
                tokio::time::sleep_until(self.deadline.into()).await;
                self.session.handle_input(Input::Timeout(Tokio::now()));
                continue;
            }
            let incoming = match poll_fn(|cx| self.poll_step(cx)).await {
                Ok(incoming) => incoming,
                Err(e) => {
                    tracing::debug!(error = %e, "send failed");
                    if self.detaches() {
                        return Some(Step::Detached);
                    }
                    self.send_failed(&e).await;
                    continue;
                }
            };
            let now = Tokio::now();
            match incoming {
                Incoming::Data(m) => {
                    self.session.handle_input(Incoming::input(&m, now));
                    if self.replay.is_some() {
                        self.received += 1;
                        let ack = resume::ack_payload(self.received);
                        self.conn.queue_message(Message::Ping(ack.into()));
                    }
                }
                Incoming::Pong => self.session.handle_input(Input::Pong(now)),
                Incoming::Deadline => self.session.handle_input(Input::Timeout(now)),
                Incoming::Closed(err) => {
                    if let Some(e) = err {
                        tracing::debug!(error = %e, "client connection failed");
                    }
                    if self.detaches() {
                        return Some(Step::Detached);
                    }
                    // Answer the client's close, or say why its frame was refused (1007,
                    // 1009), before the session reports the end.
                    self.conn.close(CLOSE_AFTER_FAILURE).await;
                    self.session.handle_input(Input::TransportClosed(now));
                }
            }
        }
    }

    /// Makes the session resumable: every data frame sent is kept until the client
    /// acknowledges it, and the client's frames are acknowledged; `window` follows what is
    /// kept. Call right after the handshake that granted resumption, before anything was sent.
    ///
    /// A client that does not acknowledge (one behind a proxy that passed its request for
    /// resumption on but not the runtime's answer, say) would hold its own stream up: once
    /// more than `limit` bytes wait for its acknowledgement while it is attached, the session
    /// stops being resumable instead.
    pub fn enable_resume(&mut self, window: Arc<ReplayWindow>, limit: usize) {
        self.replay = Some((ReplayBuffer::new(), window));
        self.replay_limit = limit;
    }

    /// Whether the session goes on without a socket ([`Step::Detached`]).
    pub fn is_detached(&self) -> bool {
        self.detached
    }

    /// Bytes of the frames sent and not acknowledged (0 unless resumable).
    pub fn replay_bytes(&self) -> usize {
        self.replay.as_ref().map_or(0, |(r, _)| r.bytes())
    }

    /// Attaches the socket of a client that resumes this session, having processed `received`
    /// of its data frames: any older socket still attached is closed (code
    /// [`CLOSE_SUPERSEDED`](resume::CLOSE_SUPERSEDED)); the new one gets an acknowledgement of
    /// the client's frames processed here, then every frame after `received`, then the live
    /// stream.
    ///
    /// # Errors
    ///
    /// [`Refusal::OutOfWindow`] when `received` is outside the [`ReplayWindow`]
    /// (the new socket is closed with code [`CLOSE_REFUSED`](resume::CLOSE_REFUSED)), and
    /// [`Refusal::UnknownSession`] when this session is not resumable.
    pub async fn resume(&mut self, mut other: Self, received: u64) -> Result<(), Refusal> {
        let refusal = match &self.replay {
            None => Some(Refusal::UnknownSession),
            Some((r, _)) if !r.in_window(received) => Some(Refusal::OutOfWindow),
            Some(_) => None,
        };
        if let Some(refusal) = refusal {
            let code = resume::CLOSE_REFUSED;
            other
                .conn
                .close_with(code, refusal.token(), CLOSE_AFTER_FAILURE)
                .await;
            return Err(refusal);
        }
        if !self.detached {
            let code = resume::CLOSE_SUPERSEDED;
            self.conn
                .close_with(code, "resumed elsewhere", CLOSE_AFTER_FAILURE)
                .await;
        }
        std::mem::swap(&mut self.conn, &mut other.conn);
        std::mem::swap(&mut self.held, &mut other.held);
        drop(other);
        let frames = match self.replay.as_mut() {
            Some((r, window)) => {
                let frames = r.replay_after(received)?;
                window.set(r.acked(), r.sent());
                frames
            }
            None => return Err(Refusal::UnknownSession),
        };
        let ack = resume::ack_payload(self.received);
        self.conn.queue_message(Message::Ping(ack.into()));
        for frame in frames {
            self.conn.queue_message(frame);
        }
        self.detached = false;
        self.stall = Stall::default();
        self.count();
        Ok(())
    }

    /// Sends what is queued (within the write stall limit), then closes the connection with
    /// code 1001 (going away): for a server that shuts down. The session ends.
    pub async fn go_away(&mut self) {
        if let Err(e) = self.flush().await {
            tracing::debug!(error = %e, "could not send everything before going away");
        }
        self.conn
            .close_with(1001, "the runtime is shutting down", CLOSE_AFTER_SUCCESS)
            .await;
        self.session
            .handle_input(Input::TransportClosed(Tokio::now()));
        self.drain();
    }

    /// Refuses the resumption this connection's handshake asked for: closes it with code
    /// [`CLOSE_REFUSED`](resume::CLOSE_REFUSED) and the refusal's token as the reason.
    pub async fn refuse(mut self, refusal: Refusal) {
        let code = resume::CLOSE_REFUSED;
        self.conn
            .close_with(code, refusal.token(), CLOSE_AFTER_FAILURE)
            .await;
    }

    /// Gives up a detached session: it ends as if its connection had just closed (its
    /// request is cancelled).
    pub fn abandon(&mut self) {
        self.detached = false;
        self.session
            .handle_input(Input::TransportClosed(Tokio::now()));
        self.drain();
    }

    /// After the socket was lost: whether the session goes on without it (resumable, not
    /// ending, and the client did not close normally).
    fn detaches(&mut self) -> bool {
        let closed_normally = self.conn.peer_close_code() == Some(CloseCode::Normal);
        if self.replay.is_none() || self.session.is_ending() || closed_normally {
            return false;
        }
        tracing::debug!("connection lost; the session waits for its client to resume");
        self.detached = true;
        self.stall = Stall::default();
        true
    }

    /// Sends and reads at once: the next frame (or deadline) read, or a failed send.
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Result<Incoming, WsError>> {
        if let Poll::Ready(Err(e)) = self.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        if self.conn.queued_bytes() > self.read_limit {
            // The send above is pending on the socket: its progress wakes this.
            return Poll::Pending;
        }
        let polled = self.conn.poll_recv(cx, self.deadline).map(Ok);
        let whole = matches!(&polled, Poll::Ready(Ok(i)) if !matches!(i, Incoming::Deadline));
        if self.take_ack() || whole {
            // A frame was whole: what was read of it leaves the inbound budget.
            if let Some(held) = &self.held {
                held.release();
            }
        }
        polled
    }

    /// Forgets the frames the client acknowledged (in a ping) since the last look; whether
    /// the client sent pings since.
    fn take_ack(&mut self) -> bool {
        let mut pinged = false;
        let newest = self
            .conn
            .take_pings()
            .inspect(|_| pinged = true)
            .filter_map(|p| resume::parse_ack(&p))
            .max();
        if let (Some(count), Some((replay, window))) = (newest, &mut self.replay)
            && replay.ack(count)
        {
            window.set(replay.acked(), replay.sent());
            self.count();
        }
        pinged
    }

    /// After a failed send: the session counts as closed; a stalled client is let go at once.
    async fn send_failed(&mut self, e: &WsError) {
        if is_stall(e) {
            tracing::info!(
                limit = ?self.stall_limit.unwrap_or_default(),
                queued = self.conn.queued_bytes(),
                "the client took no bytes within the write stall limit; connection dropped"
            );
            self.conn.close(Duration::ZERO).await;
        }
        self.session
            .handle_input(Input::TransportClosed(Tokio::now()));
        self.drain();
    }

    fn drain(&mut self) {
        loop {
            match self.session.poll_output() {
                RuntimeOutput::Transmit(t) => {
                    let message = Conn::<WebSocketStream<Metered<S>>, Tokio>::message(t);
                    if let Some((replay, window)) = &mut self.replay
                        && message.is_text()
                    {
                        replay.push(message.clone(), message.len());
                        window.set(replay.acked(), replay.sent());
                        if !self.detached && replay.bytes() > self.replay_limit {
                            tracing::warn!(
                                limit = self.replay_limit,
                                "the client does not acknowledge what it receives; the session is no longer resumable"
                            );
                            window.set(u64::MAX, 0);
                            self.replay = None;
                        }
                    }
                    if let Some(sent) = &self.sent
                        && message.is_text()
                    {
                        sent.count(message.len());
                    }
                    if !self.detached {
                        self.conn.queue_message(message);
                    }
                }
                RuntimeOutput::Event(e) => self.events.push_back(e),
                RuntimeOutput::Timeout(at) => {
                    self.deadline = at;
                    self.count();
                    return;
                }
            }
        }
    }

    /// Brings the backlog up to date with the queue (with the frames not acknowledged, for a
    /// resumable session: they are held until then).
    fn count(&mut self) {
        let now = match &self.replay {
            // The queued frames are among them (all but the acknowledgement pings).
            Some((replay, _)) => replay.bytes().max(self.conn.queued_bytes()),
            None => self.conn.queued_bytes(),
        };
        if now > self.counted {
            self.backlog.add(now - self.counted);
        } else {
            self.backlog.sub(self.counted - now);
        }
        self.counted = now;
    }

    /// Polls the queue out to the socket, failing once the client took no bytes for the stall
    /// limit.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let before = self.written();
        let polled = self.conn.poll_flush(cx);
        self.count();
        if polled.is_ready() {
            self.stall.waiting_since = None;
            return polled;
        }
        let Some(limit) = self.stall_limit else {
            return Poll::Pending;
        };
        let now = tokio::time::Instant::now();
        let progressed = self.written() != before;
        let since = self.stall.waiting_since.get_or_insert(now);
        if progressed {
            *since = now;
        }
        let due = *since + limit;
        if now >= due {
            let e = io::Error::new(io::ErrorKind::TimedOut, STALLED);
            return Poll::Ready(Err(WsError::Io(e)));
        }
        // The timer is moved only when it fires before the limit (the socket took bytes since
        // it was set), not at each write: resetting a timer per frame is costly.
        let timer = self
            .stall
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if timer.deadline() > due {
            timer.as_mut().reset(due);
        }
        if timer.as_mut().poll(cx).is_ready() {
            timer.as_mut().reset(due);
            if timer.as_mut().poll(cx).is_ready() {
                // Due now: the next poll finds it so.
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    }

    fn written(&self) -> u64 {
        self.conn.get_ref().get_ref().written
    }
}

impl<S> Drop for RuntimeConnection<S> {
    fn drop(&mut self) {
        self.backlog.sub(self.counted);
    }
}

const STALLED: &str = "the client took no bytes within the write stall limit";

fn is_stall(e: &WsError) -> bool {
    matches!(e, WsError::Io(io) if io.kind() == io::ErrorKind::TimedOut
        && io.get_ref().is_some_and(|inner| inner.to_string() == STALLED))
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
    fn the_head_reaches_the_token_check() {
        let t = "s3cret/+&=x";
        assert!(authorized(&request(Some("Bearer s3cret/+&=x"), ""), t));
        assert!(authorized(&request(None, "?token=s3cret%2F%2B%26%3Dx"), t));
        assert!(!authorized(&request(None, ""), t));
        let mut twice = request(Some("Bearer s3cret/+&=x"), "");
        twice
            .headers_mut()
            .append("authorization", "Bearer s3cret/+&=x".parse().unwrap());
        assert!(!authorized(&twice, t));
    }
}
