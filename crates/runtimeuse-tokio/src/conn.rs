//! The pump shared by the client and the server driver: a WebSocket whose outgoing frames wait
//! in a struct field (so that dropping a future never loses one) and whose reads race a
//! deadline.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
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
    /// The payload of a data frame.
    pub(crate) fn payload(message: &Message) -> &[u8] {
        match message {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
            _ => &[],
        }
    }
}

#[derive(Debug)]
pub(crate) struct Conn<S> {
    ws: WebSocketStream<S>,
    /// Frames taken from the session, not yet handed to the socket.
    pending: VecDeque<Message>,
    closed: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub(crate) fn new(ws: WebSocketStream<S>) -> Self {
        Self {
            ws,
            pending: VecDeque::new(),
            closed: false,
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
        if self.closed {
            self.pending.clear();
            return Ok(());
        }
        poll_fn(|cx| {
            while !self.pending.is_empty() {
                std::task::ready!(Pin::new(&mut self.ws).poll_ready(cx))?;
                if let Some(message) = self.pending.pop_front() {
                    Pin::new(&mut self.ws).start_send(message)?;
                }
            }
            Pin::new(&mut self.ws).poll_flush(cx)
        })
        .await
    }

    /// Reads the next frame, or returns [`Incoming::Deadline`] at `deadline`. Cancel safe.
    pub(crate) async fn recv(&mut self, deadline: Instant) -> Incoming {
        if self.closed {
            return Incoming::Closed(None);
        }
        let sleep = tokio::time::sleep_until(deadline.into());
        tokio::pin!(sleep);
        loop {
            let message = tokio::select! {
                biased;
                m = self.ws.next() => m,
                () = &mut sleep => return Incoming::Deadline,
            };
            return match message {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => Incoming::Data(m),
                Some(Ok(Message::Pong(_))) => Incoming::Pong,
                // tungstenite answers pings itself.
                Some(Ok(Message::Ping(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_))) | None => {
                    self.closed = true;
                    Incoming::Closed(None)
                }
                Some(Err(e)) => {
                    self.closed = true;
                    Incoming::Closed(Some(e))
                }
            };
        }
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
