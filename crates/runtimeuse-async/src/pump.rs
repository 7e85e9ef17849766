//! The async pump: the client's sans-IO [`Connection`](runtimeuse_client_core::connection)
//! driven over a WebSocket and a timer of a [`Backend`]. It writes and flushes every frame
//! the connection produced, waits for the next frame or the connection's deadline, feeds what
//! came, and opens a new WebSocket when the connection asks for one. No protocol decision is
//! made here.

use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use futures_util::StreamExt;
use runtimeuse_client_core::connection::{Frame, Outgoing};
use runtimeuse_client_core::resume::Attempt;
use runtimeuse_proto::{ArtifactUpload, ArtifactUploadRequest, Event, RequestEvent, RequestId};
use tungstenite::Message;

use crate::backend::{Backend, timeout};
use crate::conn::{Conn, Incoming};
use crate::connect::connect;
use crate::options::BoxFuture;
use crate::session::Session;
use crate::{ClientSettings, Error};
use runtimeuse_client_core::callbacks::AsyncUploader as UploaderFn;
use runtimeuse_client_core::requests::Step;

/// How many back-to-back frames may share one clock reading.
const CLOCK_REUSE: u32 = 32;

impl<B: Backend> Session<B> {
    /// The next item of request `id`: `None` once its terminal was handed out. Artifact
    /// requests are answered with `uploader` (or the session's last one) when there is one.
    pub(crate) async fn next_item(
        &mut self,
        id: RequestId,
        uploader: Option<&UploaderFn>,
    ) -> Option<Result<RequestEvent, Error>> {
        std::future::poll_fn(|cx| self.poll_item(cx, id, uploader)).await
    }

    /// Polls [`next_item`](Self::next_item).
    pub(crate) fn poll_item(
        &mut self,
        cx: &mut Context<'_>,
        id: RequestId,
        uploader: Option<&UploaderFn>,
    ) -> Poll<Option<Result<RequestEvent, Error>>> {
        loop {
            if let Some((attempts, received)) = self.conn.take_reconnected() {
                return Poll::Ready(Some(Ok(RequestEvent::Reconnected { attempts, received })));
            }
            ready!(self.poll_upload(cx));
            let event = match ready!(self.poll_event(cx)) {
                Ok(e) => e,
                Err(e) => return Poll::Ready(Some(Err(e))),
            };
            match self.conn.requests().route(event, id, uploader) {
                Step::Item(item) => return Poll::Ready(Some(Ok(item))),
                Step::Upload(req, uploader) => self.start_upload(&uploader, req),
                Step::Failed(e) => return Poll::Ready(Some(Err(e))),
                Step::Skip => {}
            }
        }
    }

    pub(crate) fn start_upload(&mut self, uploader: &UploaderFn, req: ArtifactUploadRequest) {
        let answer = uploader(req.to_request());
        let answer: BoxFuture<Option<ArtifactUpload>> = match self.upload_timeout {
            Some(limit) => Box::pin(async move { timeout::<B, _>(limit, answer).await.flatten() }),
            None => answer,
        };
        self.uploading = Some((answer, req));
    }

    /// Drives the uploader's answer in progress, if any, and sends it.
    #[inline]
    pub(crate) fn poll_upload(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some((fut, _)) = &mut self.uploading {
            let upload = ready!(fut.as_mut().poll(cx));
            if let Some((_, req)) = self.uploading.take() {
                self.conn.requests().answer(req, upload, B::now());
            }
        }
        Poll::Ready(())
    }

    /// The next event of the connection, driving the socket and the timers. Cancel safe.
    pub(crate) async fn next_event(&mut self) -> Result<Event, Error> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// Polls [`next_event`](Self::next_event): the pump.
    #[inline]
    pub(crate) fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<Event, Error>> {
        loop {
            let mut next = self.conn.poll_event();
            self.write_out();
            if self.conn.is_connected()
                && let Poll::Ready(Err(e)) = self.ws.poll_flush(cx)
            {
                tracing::debug!(error = %e, "send failed");
                // The event taken is the caller's whatever happens to the connection.
                if let Some(event) = next.take() {
                    self.conn.unread(event);
                }
                self.conn.connection_lost(B::now(), None);
                continue;
            }
            if let Some(e) = next {
                return Poll::Ready(Ok(e));
            }
            if self.conn.is_finished() {
                return Poll::Ready(Err(Error::ConnectionClosed));
            }
            if self.abort.take() {
                self.conn.abort(B::now());
                continue;
            }
            if let Some(headers) = self.conn.poll_reconnect() {
                self.start_attempt(headers);
            }
            if !self.conn.is_connected() {
                ready!(self.poll_offline(cx));
                continue;
            }
            match self.ws.poll_recv(cx, self.conn.poll_timeout()) {
                Poll::Ready(incoming) => {
                    self.feed(incoming);
                    // The common case, one frame and one event with nothing to send: hand it
                    // out at once. The deadline is brought up to date by the next call.
                    if !self.conn.wants_write()
                        && let Some(e) = self.conn.quick_event()
                    {
                        return Poll::Ready(Ok(e));
                    }
                }
                Poll::Pending => {
                    // Whatever arrives next arrives later: read the clock again.
                    self.clock = None;
                    ready!(self.park(cx));
                }
            }
        }
    }

    /// Waits: `Pending`, unless an abort arrived meanwhile. With no handle given out nothing
    /// can abort from elsewhere while a call waits (the call borrows the session, and a handle
    /// needs it); otherwise register, then look again, so that an abort in between is not lost.
    fn park(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.abort.is_shared() || !self.abort.register(cx.waker()) {
            return Poll::Pending;
        }
        Poll::Ready(())
    }

    /// Writes what the connection produced to the socket's queue; the flush sends it.
    fn write_out(&mut self) {
        while let Some(frame) = self.conn.poll_transmit() {
            self.ws.queue_message(match frame {
                Outgoing::Text(text) => Message::Text(text.into()),
                Outgoing::Ping(payload) => Message::Ping(payload.into()),
            });
        }
    }

    /// A reconnection the connection asked for, with these headers.
    fn start_attempt(&mut self, headers: [(&'static str, String); 2]) {
        match &self.settings {
            Some(settings) => {
                self.attempt = Some(Box::pin(attempt::<B>(Arc::clone(settings), headers)));
            }
            // A session made resumable is given its settings with it: not reached.
            None => self.conn.cannot_reconnect(B::now()),
        }
    }

    /// With no socket: drives the reconnection in progress and the connection's timer.
    /// `Ready` once either moved the connection on.
    fn poll_offline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(attempt) = &mut self.attempt
            && let Poll::Ready(outcome) = attempt.as_mut().poll(cx)
        {
            self.attempt = None;
            let now = B::now();
            match outcome {
                Attempt::Resumed(socket, count) => {
                    self.ws = Conn::new(socket);
                    self.conn.connected(now, count);
                }
                Attempt::Refused(refusal) => self.conn.reconnect_refused(now, refusal),
                Attempt::Failed(e) => {
                    tracing::debug!(error = %e, "reconnection failed");
                    self.conn.reconnect_failed(now, &e);
                }
            }
            return Poll::Ready(());
        }
        let deadline = self.conn.poll_timeout();
        let timer = self.timer.get_or_insert_with(|| B::timer(deadline));
        B::reset(timer, deadline);
        if B::poll_timer(timer, cx).is_ready() {
            self.conn.handle_timeout(B::now());
            return Poll::Ready(());
        }
        self.park(cx)
    }

    fn feed(&mut self, incoming: Incoming) {
        let now = match incoming {
            Incoming::Data(_) => self.data_clock(),
            _ => {
                self.clock = None;
                B::now()
            }
        };
        for ping in self.ws.take_pings() {
            self.conn.handle_frame(now, Frame::Ping(&ping));
        }
        match incoming {
            Incoming::Data(Message::Text(t)) => {
                self.conn.handle_frame(now, Frame::Text(t.as_str()));
            }
            Incoming::Data(Message::Binary(b)) => {
                self.conn.handle_frame(now, Frame::Binary(&b[..]))
            }
            Incoming::Data(_) | Incoming::Deadline => self.conn.handle_timeout(now),
            Incoming::Pong => self.conn.handle_frame(now, Frame::Pong),
            Incoming::Closed(err) => {
                if let Some(e) = err {
                    tracing::debug!(error = %e, "connection failed");
                }
                let code = self.ws.peer_close_code().map(u16::from);
                self.conn.connection_lost(now, code);
            }
        }
    }

    /// The instant of a data frame. Frames that were already buffered when the previous one
    /// was read share one clock reading, up to [`CLOCK_REUSE`] of them: reading the clock was
    /// a few percent of a flood's time, and such a reading is at most microseconds old.
    fn data_clock(&mut self) -> Instant {
        match &mut self.clock {
            Some((now, uses)) if *uses < CLOCK_REUSE => {
                *uses += 1;
                *now
            }
            _ => {
                let now = B::now();
                self.clock = Some((now, 1));
                now
            }
        }
    }
}

/// One reconnection: a resuming handshake with `headers`, then the runtime's count of the
/// client's frames (its first frame).
pub(crate) async fn attempt<B: Backend>(
    settings: Arc<ClientSettings>,
    headers: [(&'static str, String); 2],
) -> Attempt<B::Socket> {
    let mut socket = match connect::<B>(&settings, &headers).await {
        Ok((socket, _)) => socket,
        Err(e) => return Attempt::from_error(e),
    };
    match timeout::<B, _>(settings.connect_timeout, socket.next()).await {
        Some(Some(first)) => Attempt::from_first_frame(socket, first),
        _ => Attempt::Failed(Error::ConnectionClosed),
    }
}
