//! The socket pump under the client (and under `runtimeuse-tokio`'s server driver): a WebSocket
//! whose outgoing frames wait in a struct field, so that dropping a future never loses one, and
//! whose reads race a deadline.

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use runtimeuse_proto::Transmit;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Error as WsError, Message};

use crate::backend::{Backend, timeout};

/// What a read produced.
#[derive(Debug)]
pub enum Incoming {
    /// A data frame; its payload is `Message::Text` or `Message::Binary`.
    Data(Message),
    /// A pong.
    Pong,
    /// The peer closed, the stream ended, or the connection failed.
    Closed(Option<WsError>),
    /// The deadline passed.
    Deadline,
}

impl Incoming {
    /// The session input for a data frame: text frames were validated as UTF-8 already.
    pub fn input(message: &Message, now: Instant) -> runtimeuse_proto::Input<'_> {
        match message {
            Message::Text(t) => runtimeuse_proto::Input::ReceiveText(now, t.as_str()),
            Message::Binary(b) => runtimeuse_proto::Input::Receive(now, b),
            _ => runtimeuse_proto::Input::Timeout(now),
        }
    }
}

pub use runtimeuse_client_core::close::{CLOSE_AFTER_FAILURE, CLOSE_AFTER_SUCCESS};

/// Ping payloads a [`Conn`] keeps for [`Conn::take_pings`].
pub const MAX_PINGS_KEPT: usize = 16;

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// The peer sent its close frame; tungstenite queued the reply.
    PeerClosed,
    /// Reading failed; the close code that says why, when there is one to send.
    Failed(Option<CloseCode>),
    /// Closed: nothing more to send or read.
    Done,
}

/// A WebSocket `W` with a queue of outgoing frames and a read deadline on `B`'s timer.
pub struct Conn<W, B: Backend> {
    ws: W,
    /// Frames taken from the session, not yet handed to the socket.
    pending: VecDeque<Message>,
    /// Bytes of the payloads in `pending`.
    pending_bytes: usize,
    /// Frames handed to the socket since its last flush.
    unflushed: bool,
    /// tungstenite queued a pong that has not been flushed yet. No more frames are read until
    /// it is out: each ping read while the peer does not read would otherwise add a pong to
    /// tungstenite's write buffer, and a ping flood would cost memory without bound.
    pong_owed: bool,
    /// The payloads of the pings read, until [`take_pings`](Conn::take_pings) takes them (at
    /// most [`MAX_PINGS_KEPT`], the newest).
    pings: VecDeque<tungstenite::Bytes>,
    /// The code of the peer's close frame, once one arrived.
    peer_close: Option<CloseCode>,
    state: State,
    /// The read timer, kept across reads: resetting a timer per frame is costly, and the
    /// session's deadline moves with every frame (keepalive). It is reset only when the new
    /// deadline is earlier, or after it fired; firing early is harmless (the session ignores
    /// early timeouts).
    sleep: B::Timer,
    sleep_at: Option<Instant>,
    backend: PhantomData<B>,
}

impl<W, B: Backend> fmt::Debug for Conn<W, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("pending", &self.pending.len())
            .field("pending_bytes", &self.pending_bytes)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<W, B> Conn<W, B>
where
    W: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
    B: Backend,
{
    /// Wraps a connected WebSocket.
    pub fn new(ws: W) -> Self {
        Self {
            ws,
            pending: VecDeque::new(),
            pending_bytes: 0,
            unflushed: false,
            pong_owed: false,
            pings: VecDeque::new(),
            peer_close: None,
            state: State::Open,
            sleep: B::timer(B::now()),
            sleep_at: None,
            backend: PhantomData,
        }
    }

    /// The WebSocket.
    pub fn get_ref(&self) -> &W {
        &self.ws
    }

    /// Queues a transmit; [`flush`](Self::flush) sends it.
    pub fn queue(&mut self, t: Transmit) {
        self.queue_message(Self::message(t));
    }

    /// The frame of a transmit. A text's `String` is moved, not copied.
    pub fn message(t: Transmit) -> Message {
        match t {
            Transmit::Text(s) => Message::Text(s.into()),
            Transmit::Ping => Message::Ping(Default::default()),
        }
    }

    /// Queues a frame as it is; [`flush`](Self::flush) sends it.
    pub fn queue_message(&mut self, message: Message) {
        self.pending_bytes += message.len();
        self.pending.push_back(message);
    }

    /// The payloads of the pings read since the last call, oldest first (pings are answered
    /// by the socket itself; this is for their payload, such as a resumable session's
    /// acknowledgements). At most the newest [`MAX_PINGS_KEPT`] are kept.
    pub fn take_pings(&mut self) -> impl Iterator<Item = tungstenite::Bytes> + '_ {
        self.pings.drain(..)
    }

    /// The code of the peer's close frame, if it sent one.
    pub fn peer_close_code(&self) -> Option<CloseCode> {
        self.peer_close
    }

    /// Whether the connection is still open both ways.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Bytes of the queued frames' payloads not yet handed to the socket. The socket's own
    /// write buffer (tungstenite's) holds at most one more frame beyond its write-buffer
    /// size: a frame is handed over only once the buffer before it was written out.
    pub fn queued_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Sends every queued frame. Cancel safe: a frame leaves the queue only when the socket
    /// has accepted it.
    pub async fn flush(&mut self) -> Result<(), WsError> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Polls [`flush`](Self::flush).
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        if self.state != State::Open {
            self.clear();
            return Poll::Ready(Ok(()));
        }
        if self.pending.is_empty() && !self.unflushed {
            return Poll::Ready(Ok(()));
        }
        while !self.pending.is_empty() {
            ready!(Pin::new(&mut self.ws).poll_ready(cx))?;
            if let Some(message) = self.pending.pop_front() {
                self.pending_bytes -= message.len();
                Pin::new(&mut self.ws).start_send(message)?;
                self.unflushed = true;
            }
        }
        ready!(Pin::new(&mut self.ws).poll_flush(cx))?;
        self.unflushed = false;
        self.pong_owed = false;
        Poll::Ready(Ok(()))
    }

    fn clear(&mut self) {
        self.pending.clear();
        self.pending_bytes = 0;
    }

    /// Reads the next frame, or returns [`Incoming::Deadline`] at `deadline`. Cancel safe.
    pub async fn recv(&mut self, deadline: Instant) -> Incoming {
        poll_fn(|cx| self.poll_recv(cx, deadline)).await
    }

    /// Polls [`recv`](Self::recv).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<Incoming> {
        if self.state != State::Open {
            return Poll::Ready(Incoming::Closed(None));
        }
        if self.sleep_at.is_none_or(|at| deadline < at) {
            B::reset(&mut self.sleep, deadline);
            self.sleep_at = Some(deadline);
        }
        loop {
            if self.pong_owed {
                // Writes out the socket's buffer (the pong, and frames handed over before it),
                // not this queue: a stream of output to a client that reads does not hold
                // reading up.
                match Pin::new(&mut self.ws).poll_flush(cx) {
                    Poll::Ready(Ok(())) => {
                        self.pong_owed = false;
                        self.unflushed = false;
                    }
                    Poll::Ready(Err(e)) => {
                        self.state = State::Failed(None);
                        return Poll::Ready(Incoming::Closed(Some(e)));
                    }
                    // The peer reads nothing: neither do we, until it does (or the deadline).
                    Poll::Pending => break,
                }
            }
            match self.ws.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(m @ (Message::Text(_) | Message::Binary(_))))) => {
                    return Poll::Ready(Incoming::Data(m));
                }
                Poll::Ready(Some(Ok(Message::Pong(_)))) => return Poll::Ready(Incoming::Pong),
                // tungstenite queued the answer; it goes out before anything more is read.
                Poll::Ready(Some(Ok(Message::Ping(payload)))) => {
                    if self.pings.len() == MAX_PINGS_KEPT {
                        self.pings.pop_front();
                    }
                    self.pings.push_back(payload);
                    self.pong_owed = true;
                    self.unflushed = true;
                }
                Poll::Ready(Some(Ok(Message::Frame(_)))) => continue,
                Poll::Ready(Some(Ok(Message::Close(frame)))) => {
                    self.peer_close = frame.map(|f| f.code);
                    self.state = State::PeerClosed;
                    return Poll::Ready(Incoming::Closed(None));
                }
                Poll::Ready(None) => {
                    self.state = State::Done;
                    return Poll::Ready(Incoming::Closed(None));
                }
                Poll::Ready(Some(Err(e))) => {
                    self.state = State::Failed(runtimeuse_client_core::close::close_code(&e));
                    return Poll::Ready(Incoming::Closed(Some(e)));
                }
                Poll::Pending => break,
            }
        }
        ready!(B::poll_timer(&mut self.sleep, cx));
        self.sleep_at = None;
        Poll::Ready(Incoming::Deadline)
    }

    /// Ends the connection with a close frame of this code and reason, dropping what is
    /// queued, and waits at most `wait` for the peer's close.
    pub async fn close_with(&mut self, code: u16, reason: &str, wait: Duration) {
        self.clear();
        if std::mem::replace(&mut self.state, State::Done) != State::Open {
            return;
        }
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_owned().into(),
        };
        let closing = async {
            self.ws.send(Message::Close(Some(frame))).await?;
            while let Some(m) = self.ws.next().await {
                m?;
            }
            Ok::<_, WsError>(())
        };
        if let Some(Err(e)) = timeout::<B, _>(wait, closing).await {
            tracing::debug!(error = %e, "close failed");
        }
    }

    /// Ends the connection, at most `wait` after the queued frames went out: on an open
    /// connection, sends the queued frames and a close frame with code 1000 and waits (at
    /// most `wait`) for the peer's; after the peer's close, sends the reply tungstenite
    /// queued; after a read failure, sends the close code that says why (1007, 1009, 1002),
    /// without waiting for an answer. Errors are logged: the connection is done either way.
    pub async fn close(&mut self, wait: Duration) {
        let state = std::mem::replace(&mut self.state, State::Done);
        let closing = async {
            match state {
                State::Done => Ok(()),
                State::PeerClosed => {
                    // Flushes the close reply; the peer closes the TCP connection after it.
                    self.ws.close().await
                }
                State::Failed(None) => Ok(()),
                State::Failed(Some(code)) => {
                    let frame = CloseFrame {
                        code,
                        reason: "".into(),
                    };
                    self.ws.send(Message::Close(Some(frame))).await
                }
                State::Open => {
                    self.state = State::Open;
                    if let Err(e) = self.flush().await {
                        tracing::debug!(error = %e, "flush before close failed");
                    }
                    self.state = State::Done;
                    let frame = CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    };
                    self.ws.send(Message::Close(Some(frame))).await?;
                    // Read until the peer's close (or the end) so that the handshake completes.
                    while let Some(m) = self.ws.next().await {
                        m?;
                    }
                    Ok::<_, WsError>(())
                }
            }
        };
        let limit = match state {
            State::Open => wait,
            _ => wait.min(CLOSE_AFTER_FAILURE),
        };
        match timeout::<B, _>(limit, closing).await {
            Some(Ok(())) | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {}
            Some(Err(e)) => tracing::debug!(error = %e, "close handshake failed"),
            None => tracing::debug!(?limit, "the peer did not finish the close in time"),
        }
        self.clear();
    }
}
