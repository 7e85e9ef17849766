//! The blocking pump: the client's sans-IO [`Connection`](runtimeuse_client_core::connection)
//! driven over a blocking WebSocket whose read timeout follows the connection's deadline. It
//! writes and flushes every frame the connection produced, reads until the deadline, feeds
//! what came, and opens a new WebSocket when the connection asks for one. No protocol
//! decision is made here.

use std::io::ErrorKind;
use std::time::Duration;

use runtimeuse_client_core::callbacks::upload_with;
use runtimeuse_client_core::close::close_code;
use runtimeuse_client_core::connection::{Frame, Outgoing};
use runtimeuse_client_core::requests::Step;
use runtimeuse_client_core::resume::Attempt;
use runtimeuse_proto::{Event, RequestEvent, RequestId};
use tungstenite::Message;

use crate::Error;
use crate::connect::{resume_socket, tcp};
use crate::session::{Owed, Session, now};

/// While a request runs, a blocked read wakes at least this often to notice an abort from
/// another thread (a blocking socket cannot be woken otherwise).
pub(crate) const ABORT_POLL: Duration = Duration::from_millis(20);

impl Session {
    /// The next item of request `id`; `None` once its terminal was handed out.
    pub(crate) fn next_item(&mut self, id: RequestId) -> Option<Result<RequestEvent, Error>> {
        loop {
            if let Some((attempts, received)) = self.conn.take_reconnected() {
                return Some(Ok(RequestEvent::Reconnected { attempts, received }));
            }
            let event = match self.next_event() {
                Ok(e) => e,
                Err(e) => return Some(Err(e)),
            };
            match self.conn.requests().route(event, id, None) {
                Step::Item(item) => return Some(Ok(item)),
                Step::Upload(req, uploader) => {
                    let upload = upload_with(&uploader, req.to_request());
                    self.conn.requests().answer(req, Some(upload), now());
                }
                Step::Failed(e) => return Some(Err(e)),
                Step::Skip => {}
            }
        }
    }

    /// The next event of the connection, driving the socket and the timers: the pump.
    pub(crate) fn next_event(&mut self) -> Result<Event, Error> {
        loop {
            let mut next = self.conn.poll_event();
            if self.conn.is_connected()
                && let Err(e) = self.write_out()
            {
                tracing::debug!(error = %e, "send failed");
                // The event taken is the caller's whatever happens to the connection.
                if let Some(event) = next.take() {
                    self.conn.unread(event);
                }
                self.socket_ended(Owed::Nothing, None);
                continue;
            }
            if let Some(e) = next {
                return Ok(e);
            }
            if self.conn.is_finished() {
                return Err(Error::ConnectionClosed);
            }
            if self.abort.take() {
                self.conn.abort(now());
                continue;
            }
            if let Some(headers) = self.conn.poll_reconnect() {
                self.reconnect(headers);
                continue;
            }
            if !self.conn.is_connected() {
                self.sleep_until_due();
                continue;
            }
            self.read_one();
        }
    }

    /// Reads one frame, or times out at the connection's deadline, and feeds it.
    fn read_one(&mut self) {
        let mut wait = self.conn.poll_timeout().saturating_duration_since(now());
        if self.conn.requests().is_busy() {
            wait = wait.min(ABORT_POLL);
        }
        // Whole milliseconds, so that the value repeats; a zero timeout would mean "block
        // forever".
        let wait =
            Duration::from_millis(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1));
        self.set_read_timeout(wait);
        let read = self.ws.read();
        let now = now();
        let conn = &mut self.conn;
        match read {
            Ok(Message::Text(t)) => conn.handle_frame(now, Frame::Text(&t)),
            Ok(Message::Binary(b)) => conn.handle_frame(now, Frame::Binary(&b)),
            // tungstenite queued the pong; the next flush sends it.
            Ok(Message::Ping(p)) => conn.handle_frame(now, Frame::Ping(&p)),
            Ok(Message::Pong(_)) => conn.handle_frame(now, Frame::Pong),
            Ok(Message::Frame(_)) => {}
            Ok(Message::Close(frame)) => {
                self.socket_ended(Owed::Reply, frame.map(|f| u16::from(f.code)));
            }
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                conn.handle_timeout(now);
            }
            Err(e) => {
                tracing::debug!(error = %e, "connection ended");
                let owed = close_code(&e).map_or(Owed::Nothing, Owed::Code);
                self.socket_ended(owed, None);
            }
        }
    }

    /// The socket ended (tungstenite must not be read again); `owed` is what its close still
    /// owes the peer, `code` the runtime's close code.
    fn socket_ended(&mut self, owed: Owed, code: Option<u16>) {
        self.ended = true;
        self.owed = owed;
        self.conn.connection_lost(now(), code);
    }

    /// Writes and flushes what the connection produced.
    fn write_out(&mut self) -> Result<(), tungstenite::Error> {
        while let Some(frame) = self.conn.poll_transmit() {
            let message = match frame {
                Outgoing::Text(text) => Message::Text(text.into()),
                Outgoing::Ping(payload) => Message::Ping(payload.into()),
            };
            // Queued in tungstenite's buffer; errors show up at the flush.
            if let Err(e) = self.ws.write(message) {
                tracing::debug!(error = %e, "write failed");
            }
        }
        self.ws.flush()
    }

    /// One reconnection, with these headers; the connection hears how it went.
    fn reconnect(&mut self, headers: [(&'static str, String); 2]) {
        let Some(settings) = self.settings.clone() else {
            // A session made resumable is given its settings with it: not reached.
            return self.conn.cannot_reconnect(now());
        };
        match resume_socket(&settings, &headers) {
            Attempt::Resumed(ws, count) => {
                self.ws = *ws;
                self.read_timeout = None;
                self.ended = false;
                self.owed = Owed::Nothing;
                self.conn.connected(now(), count);
            }
            Attempt::Refused(refusal) => self.conn.reconnect_refused(now(), refusal),
            Attempt::Failed(e) => {
                tracing::debug!(error = %e, "reconnection failed");
                self.conn.reconnect_failed(now(), &e);
            }
        }
    }

    /// With no socket: sleeps until the connection's deadline (waking to notice an abort).
    fn sleep_until_due(&mut self) {
        let now = now();
        let due = self.conn.poll_timeout();
        if due <= now {
            self.conn.handle_timeout(now);
            return;
        }
        std::thread::sleep((due - now).min(ABORT_POLL));
    }

    pub(crate) fn set_read_timeout(&mut self, timeout: Duration) {
        // A system call: only when the value changes (it mostly stays at ABORT_POLL).
        if self.read_timeout == Some(timeout) {
            return;
        }
        self.read_timeout = Some(timeout);
        let result = tcp(&self.ws).map_or(Ok(()), |t| t.set_read_timeout(Some(timeout)));
        if let Err(e) = result {
            tracing::debug!(error = %e, "could not set the read timeout");
        }
    }
}
