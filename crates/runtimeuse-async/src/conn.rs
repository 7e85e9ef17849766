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

/// A WebSocket `W` with a queue of outgoing frames and a read deadline on `B`'s timer.
pub struct Conn<W, B: Backend> {
    ws: W,
    /// Frames taken from the session, not yet handed to the socket.
    pending: VecDeque<Message>,
    /// Frames handed to the socket since its last flush.
    unflushed: bool,
    closed: bool,
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
            .field("closed", &self.closed)
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
            unflushed: false,
            closed: false,
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
        let message = match t {
            // Takes ownership of the String: no copy.
            Transmit::Text(s) => Message::Text(s.into()),
            Transmit::Ping => Message::Ping(Default::default()),
        };
        self.pending.push_back(message);
    }

    /// Sends every queued frame. Cancel safe: a frame leaves the queue only when the socket
    /// has accepted it.
    pub async fn flush(&mut self) -> Result<(), WsError> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Polls [`flush`](Self::flush).
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        if self.closed {
            self.pending.clear();
            return Poll::Ready(Ok(()));
        }
        if self.pending.is_empty() && !self.unflushed {
            return Poll::Ready(Ok(()));
        }
        while !self.pending.is_empty() {
            ready!(Pin::new(&mut self.ws).poll_ready(cx))?;
            if let Some(message) = self.pending.pop_front() {
                Pin::new(&mut self.ws).start_send(message)?;
                self.unflushed = true;
            }
        }
        ready!(Pin::new(&mut self.ws).poll_flush(cx))?;
        self.unflushed = false;
        Poll::Ready(Ok(()))
    }

    /// Reads the next frame, or returns [`Incoming::Deadline`] at `deadline`. Cancel safe.
    pub async fn recv(&mut self, deadline: Instant) -> Incoming {
        poll_fn(|cx| self.poll_recv(cx, deadline)).await
    }

    /// Polls [`recv`](Self::recv).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<Incoming> {
        if self.closed {
            return Poll::Ready(Incoming::Closed(None));
        }
        if self.sleep_at.is_none_or(|at| deadline < at) {
            B::reset(&mut self.sleep, deadline);
            self.sleep_at = Some(deadline);
        }
        loop {
            match self.ws.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(m @ (Message::Text(_) | Message::Binary(_))))) => {
                    return Poll::Ready(Incoming::Data(m));
                }
                Poll::Ready(Some(Ok(Message::Pong(_)))) => return Poll::Ready(Incoming::Pong),
                // tungstenite answers pings itself.
                Poll::Ready(Some(Ok(Message::Ping(_) | Message::Frame(_)))) => continue,
                Poll::Ready(Some(Ok(Message::Close(_))) | None) => {
                    self.closed = true;
                    return Poll::Ready(Incoming::Closed(None));
                }
                Poll::Ready(Some(Err(e))) => {
                    self.closed = true;
                    return Poll::Ready(Incoming::Closed(Some(e)));
                }
                Poll::Pending => break,
            }
        }
        ready!(B::poll_timer(&mut self.sleep, cx));
        self.sleep_at = None;
        Poll::Ready(Incoming::Deadline)
    }

    /// Sends the queued frames, then closes with code 1000 and waits briefly for the peer's
    /// close. Errors are logged: the connection is done either way.
    pub async fn close(&mut self) {
        if let Err(e) = self.flush().await {
            tracing::debug!(error = %e, "flush before close failed");
        }
        if self.closed {
            return;
        }
        self.closed = true;
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let closing = async {
            self.ws.send(Message::Close(Some(frame))).await?;
            // Read until the peer's close (or the end) so that the handshake completes.
            while let Some(m) = self.ws.next().await {
                m?;
            }
            Ok::<_, WsError>(())
        };
        match timeout::<B, _>(Duration::from_secs(2), closing).await {
            Some(Ok(())) | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {}
            Some(Err(e)) => tracing::debug!(error = %e, "close handshake failed"),
            None => tracing::debug!("peer did not answer the close frame in time"),
        }
    }
}
