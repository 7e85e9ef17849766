//! The pump shared by the client and the server driver: a WebSocket whose outgoing frames wait
//! in a struct field (so that dropping a future never loses one) and whose reads race a
//! deadline.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use futures_util::{Sink, StreamExt};
use runtimeuse_proto::Transmit;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The current instant, from tokio's clock, so that `tokio::time::pause` drives it in tests.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// What a read produced.
#[derive(Debug)]
pub(crate) enum Incoming {
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
    pub(crate) fn input(message: &Message, now: Instant) -> runtimeuse_proto::Input<'_> {
        match message {
            Message::Text(t) => runtimeuse_proto::Input::ReceiveText(now, t.as_str()),
            Message::Binary(b) => runtimeuse_proto::Input::Receive(now, b),
            _ => runtimeuse_proto::Input::Timeout(now),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Conn<S> {
    ws: WebSocketStream<S>,
    /// Frames taken from the session, not yet handed to the socket.
    pending: VecDeque<Message>,
    /// Frames handed to the socket since its last flush.
    unflushed: bool,
    closed: bool,
    /// The read timer, kept across reads: resetting a tokio timer per frame is costly, and the
    /// session's deadline moves with every frame (keepalive). It is reset only when the new
    /// deadline is earlier, or after it fired; firing early is harmless (the session ignores
    /// early timeouts).
    sleep: Pin<Box<tokio::time::Sleep>>,
    sleep_at: Option<Instant>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub(crate) fn new(ws: WebSocketStream<S>) -> Self {
        Self {
            ws,
            pending: VecDeque::new(),
            unflushed: false,
            closed: false,
            sleep: Box::pin(tokio::time::sleep(std::time::Duration::ZERO)),
            sleep_at: None,
        }
    }

    pub(crate) fn get_ref(&self) -> &WebSocketStream<S> {
        &self.ws
    }

    /// Queues a transmit; [`flush`](Self::flush) sends it.
    pub(crate) fn queue(&mut self, t: Transmit) {
        let message = match t {
            // Takes ownership of the String: no copy.
            Transmit::Text(s) => Message::Text(s.into()),
            Transmit::Ping => Message::Ping(Default::default()),
        };
        self.pending.push_back(message);
    }

    /// Sends every queued frame. Cancel safe: a frame leaves the queue only when the socket
    /// has accepted it.
    pub(crate) async fn flush(&mut self) -> Result<(), WsError> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Polls [`flush`](Self::flush).
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
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
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) async fn recv(&mut self, deadline: Instant) -> Incoming {
        poll_fn(|cx| self.poll_recv(cx, deadline)).await
    }

    /// Polls [`recv`](Self::recv).
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<Incoming> {
        if self.closed {
            return Poll::Ready(Incoming::Closed(None));
        }
        if self.sleep_at.is_none_or(|at| deadline < at) {
            self.sleep.as_mut().reset(deadline.into());
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
        ready!(self.sleep.as_mut().poll(cx));
        self.sleep_at = None;
        Poll::Ready(Incoming::Deadline)
    }

    /// Sends the queued frames, then closes with code 1000 and waits briefly for the peer's
    /// close. Errors are logged: the connection is done either way.
    pub(crate) async fn close(&mut self) {
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
            self.ws.close(Some(frame)).await?;
            // Read until the peer's close (or the end) so that the handshake completes.
            while let Some(m) = self.ws.next().await {
                m?;
            }
            Ok::<_, WsError>(())
        };
        match tokio::time::timeout(std::time::Duration::from_secs(2), closing).await {
            Ok(Ok(())) | Ok(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "close handshake failed"),
            Err(_) => tracing::debug!("peer did not answer the close frame in time"),
        }
    }
}
