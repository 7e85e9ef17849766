//! The client's connection to a runtime, sans-IO: everything between a WebSocket and the
//! calls of an application, written once for every I/O world.
//!
//! A [`Connection`] owns the core's [`Session`](runtimeuse_proto::Session) (inside the request
//! layer, [`Requests`]), the client side of a resumable session ([`Resumption`]: counts,
//! resend, the reconnection schedule within the grace), acknowledgements by bytes and by time,
//! and the keepalive and request timers. It reads no clock, does no I/O and spawns nothing, in
//! the shape of quinn-proto's `Connection`: frames and time in, frames, events, deadlines and
//! reconnections out.
//!
//! # The pump
//!
//! An adapter (async, blocking, a language binding) owns the socket and runs this loop:
//!
//! 1. take every [`poll_event`](Connection::poll_event) for its calls (they drain the core);
//! 2. write and flush every [`poll_transmit`](Connection::poll_transmit) before it waits;
//! 3. if [`poll_reconnect`](Connection::poll_reconnect) returns headers, open a new WebSocket
//!    with them and report how it went ([`connected`](Connection::connected),
//!    [`reconnect_failed`](Connection::reconnect_failed),
//!    [`reconnect_refused`](Connection::reconnect_refused));
//! 4. wait for the next frame (only while [`is_connected`](Connection::is_connected)) or until
//!    [`poll_timeout`](Connection::poll_timeout), then feed what happened:
//!    [`handle_frame`](Connection::handle_frame), [`handle_timeout`](Connection::handle_timeout)
//!    or [`connection_lost`](Connection::connection_lost).
//!
//! Nothing is due "when the next frame arrives": an acknowledgement, a keepalive ping, a
//! reconnection and every request timer are deadlines in `poll_timeout`.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use runtimeuse_client_core::connection::{Connection, Frame, Outgoing};
//!
//! /// One pass of a pump, at `now`: `read` waits for a text frame until the deadline it is
//! /// given (`None`: the deadline passed), `write` writes and flushes a frame.
//! fn pump(
//!     conn: &mut Connection<()>,
//!     now: impl Fn() -> Instant,
//!     mut read: impl FnMut(Instant) -> Option<String>,
//!     mut write: impl FnMut(Outgoing),
//! ) {
//!     while let Some(event) = conn.poll_event() {
//!         // hand the event to the call it belongs to (`Requests::route`)
//! #       drop(event);
//!     }
//!     while let Some(frame) = conn.poll_transmit() {
//!         write(frame);
//!     }
//!     match read(conn.poll_timeout()) {
//!         Some(text) => conn.handle_frame(now(), Frame::Text(&text)),
//!         None => conn.handle_timeout(now()),
//!     }
//! }
//!
//! // In virtual time: a fresh connection with its keepalive due in 20 s pings then.
//! let t0 = Instant::now();
//! let mut conn: Connection<()> = Connection::new(Default::default(), t0);
//! let mut sent = Vec::new();
//! pump(&mut conn, || t0 + Duration::from_secs(20), |_| None, |f| sent.push(f));
//! pump(&mut conn, || t0 + Duration::from_secs(20), |_| None, |f| sent.push(f));
//! assert_eq!(sent, [Outgoing::Ping(Vec::new())]);
//! ```

use std::collections::VecDeque;
use std::time::Instant;

use runtimeuse_proto::resume::Refusal;
use runtimeuse_proto::{Config, Event, Input, SessionState, Transmit};

use crate::Error;
use crate::requests::Requests;
use crate::resume::{ResumeToken, Resumption};

/// A frame the connection read, for [`Connection::handle_frame`].
#[derive(Debug, Clone, Copy)]
pub enum Frame<'a> {
    /// A text frame (already checked to be UTF-8 by the WebSocket).
    Text(&'a str),
    /// A binary frame.
    Binary(&'a [u8]),
    /// A ping, with its payload (the WebSocket answers it; its payload may acknowledge the
    /// client's frames).
    Ping(&'a [u8]),
    /// A pong.
    Pong,
}

/// A frame for the pump to write and flush ([`Connection::poll_transmit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A text frame: a protocol message.
    Text(String),
    /// A ping with this payload (empty: a keepalive; else an acknowledgement).
    Ping(Vec<u8>),
}

/// Where the connection's link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// A WebSocket is attached.
    Up,
    /// Lost; the next reconnection is due at this instant.
    Waiting(Instant),
    /// Lost; a reconnection is due now, for [`Connection::poll_reconnect`].
    Due,
    /// A reconnection was handed to the pump and has not been reported yet.
    Connecting,
    /// No WebSocket and none to come.
    Down,
}

/// The client's sans-IO connection to a runtime (see the [module](self) for the pump).
///
/// `U` is the adapter's artifact uploader (see [`Requests`]).
pub struct Connection<U> {
    requests: Requests<U>,
    resume: Option<Resumption>,
    /// Frames for the socket, in order.
    out: VecDeque<Outgoing>,
    link: Link,
    /// An input arrived since the core was last drained.
    dirty: bool,
}

impl<U> std::fmt::Debug for Connection<U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("requests", &self.requests)
            .field("resumable", &self.resume.is_some())
            .field("link", &self.link)
            .field("queued", &self.out.len())
            .finish()
    }
}

impl<U: Clone> Connection<U> {
    /// A connection over a WebSocket just opened, with `config`, at `now`.
    pub fn new(config: Config, now: Instant) -> Self {
        Self::with(Requests::new(config, now))
    }

    fn with(requests: Requests<U>) -> Self {
        Self {
            requests,
            resume: None,
            out: VecDeque::new(),
            link: Link::Up,
            dirty: true,
        }
    }

    /// Makes the connection's session resumable, as the runtime granted at the handshake.
    pub fn make_resumable(&mut self, granted: Resumption) {
        self.resume = Some(granted);
    }

    /// A connection taken over from a resume token (its [`Resumption`] and the request
    /// layer's `state`, from [`Resumption::from_token`]), on a WebSocket the runtime resumed
    /// the session on after processing `runtime_received` of the client's frames.
    ///
    /// # Errors
    ///
    /// [`Error::ResumeRefused`] when that count is outside what the token can serve.
    pub fn take_over(
        config: Config,
        resumption: Resumption,
        state: SessionState,
        runtime_received: u64,
        now: Instant,
    ) -> Result<Self, Error> {
        let mut conn = Self::with(Requests::import(config, state, now));
        conn.resume = Some(resumption);
        conn.link = Link::Connecting;
        conn.resumed(runtime_received, now)
            .map_err(Error::ResumeRefused)?;
        Ok(conn)
    }

    // ----- getters -----

    /// The request layer, to start calls, route events and answer artifact requests.
    pub fn requests(&mut self) -> &mut Requests<U> {
        self.dirty = true;
        &mut self.requests
    }

    /// Whether the runtime granted resumption (and the session was not given up since).
    pub fn is_resumable(&self) -> bool {
        self.resume.is_some()
    }

    /// Whether a WebSocket is attached: the pump reads frames only then.
    pub fn is_connected(&self) -> bool {
        self.link == Link::Up
    }

    /// Whether the session finished: nothing more will come.
    pub fn is_finished(&self) -> bool {
        self.requests.is_finished()
    }

    /// Whether frames wait in [`poll_transmit`](Self::poll_transmit)'s queue.
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }

    /// The runtime's data frames processed so far, on a resumable session.
    pub fn received(&self) -> Option<u64> {
        self.resume.as_ref().map(Resumption::received)
    }

    // ----- handling input -----

    /// A frame was read at `now`.
    pub fn handle_frame(&mut self, now: Instant, frame: Frame<'_>) {
        self.dirty = true;
        match frame {
            Frame::Text(text) => {
                self.ack_received(now, text.len());
                self.requests
                    .session()
                    .handle_input(Input::ReceiveText(now, text));
            }
            Frame::Binary(bytes) => {
                self.ack_received(now, bytes.len());
                self.requests
                    .session()
                    .handle_input(Input::Receive(now, bytes));
            }
            Frame::Ping(payload) => {
                if let Some(r) = &mut self.resume {
                    r.on_ping(payload);
                }
            }
            Frame::Pong => self.requests.session().handle_input(Input::Pong(now)),
        }
    }

    fn ack_received(&mut self, now: Instant, len: usize) {
        if let Some(r) = &mut self.resume
            && let Some(ack) = r.on_received(now, len)
        {
            self.out.push_back(Outgoing::Ping(ack));
        }
    }

    /// The time is `now` (at or after [`poll_timeout`](Self::poll_timeout), or earlier:
    /// early calls do nothing but what is due).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.dirty = true;
        if self.link == Link::Up
            && let Some(ack) = self.resume.as_mut().and_then(|r| r.on_timeout(now))
        {
            self.out.push_back(Outgoing::Ping(ack));
        }
        if let Link::Waiting(at) = self.link
            && at <= now
        {
            self.link = Link::Due;
        }
        self.requests.session().handle_input(Input::Timeout(now));
    }

    /// The WebSocket ended or failed at `now`; `code` is the runtime's close code, if it sent
    /// one. A resumable session that was not ending (and that the runtime did not close on
    /// purpose: 1000, 4000, 4009) reconnects ([`poll_reconnect`](Self::poll_reconnect));
    /// otherwise the session ends as its connection did.
    pub fn connection_lost(&mut self, now: Instant, code: Option<u16>) {
        self.dirty = true;
        if self.link != Link::Up {
            return;
        }
        // What waited for this socket is kept by the resumption, and sent again if the
        // runtime did not process it.
        self.out.clear();
        let ending = self.requests.session().is_ending() || self.requests.is_finished();
        let code = code.map(tungstenite::protocol::frame::coding::CloseCode::from);
        let lost = (self.resume.as_mut()).is_some_and(|r| r.connection_lost(ending, code, now));
        if !lost {
            return self.give_up(now);
        }
        self.requests.session().pause_keepalive(now);
        self.schedule(now);
    }

    /// The reconnection [`poll_reconnect`](Self::poll_reconnect) asked for gave a WebSocket on
    /// which the runtime took the session back, having processed `runtime_received` of the
    /// client's frames (its first ping). The frames it missed go out first.
    pub fn connected(&mut self, now: Instant, runtime_received: u64) {
        self.dirty = true;
        if self.link != Link::Connecting {
            return;
        }
        if let Err(refusal) = self.resumed(runtime_received, now) {
            tracing::info!(why = refusal.token(), "could not resume the session");
            self.give_up(now);
        }
    }

    fn resumed(&mut self, runtime_received: u64, now: Instant) -> Result<(), Refusal> {
        let r = self.resume.as_mut().ok_or(Refusal::UnknownSession)?;
        let frames = r.resumed(runtime_received)?;
        tracing::info!(received = r.received(), "session resumed");
        self.out.clear();
        self.out.extend(frames.into_iter().map(Outgoing::Text));
        self.link = Link::Up;
        self.requests.session().resume_keepalive(now);
        Ok(())
    }

    /// The reconnection [`poll_reconnect`](Self::poll_reconnect) asked for failed with `e`
    /// (worth another try within the grace, unless nothing listens at the address).
    pub fn reconnect_failed(&mut self, now: Instant, e: &Error) {
        self.dirty = true;
        if self.link != Link::Connecting {
            return;
        }
        if let Some(r) = &mut self.resume {
            r.failed(e);
        }
        self.schedule(now);
    }

    /// The runtime refused to resume the session: it is gone.
    pub fn reconnect_refused(&mut self, now: Instant, refusal: Refusal) {
        self.dirty = true;
        tracing::info!(
            why = refusal.token(),
            "the runtime refused to resume the session"
        );
        self.give_up(now);
    }

    /// The pump cannot reconnect (it has no way to open a WebSocket): the session ends as its
    /// connection did.
    pub fn cannot_reconnect(&mut self, now: Instant) {
        self.dirty = true;
        tracing::debug!("no way to reconnect; the session ends with its connection");
        self.give_up(now);
    }

    /// Cancels the request in flight, if any (an abort handle fired).
    pub fn abort(&mut self, now: Instant) {
        self.dirty = true;
        self.requests.abort(now);
    }

    /// The next reconnection, now or later within the grace; gives up past it.
    fn schedule(&mut self, now: Instant) {
        let next = self.resume.as_mut().and_then(|r| r.next_attempt(now));
        match next {
            Some(wait) if wait.is_zero() => self.link = Link::Due,
            Some(wait) => self.link = Link::Waiting(now + wait),
            None => {
                if let Some(r) = &self.resume {
                    tracing::info!(grace = ?r.grace(), "no reconnection within the grace period");
                }
                self.give_up(now);
            }
        }
    }

    /// The session ends as its connection did.
    fn give_up(&mut self, now: Instant) {
        self.resume = None;
        self.link = Link::Down;
        self.out.clear();
        self.requests
            .session()
            .handle_input(Input::TransportClosed(now));
    }

    // ----- output -----

    /// The next event of the core, its frames moved to [`poll_transmit`](Self::poll_transmit)'s
    /// queue. `None` when there is none now.
    pub fn poll_event(&mut self) -> Option<Event> {
        let (out, resume, link) = (&mut self.out, &mut self.resume, self.link);
        let event = self.requests.drain(|t| emit(out, resume, link, t));
        self.dirty = event.is_some();
        event
    }

    /// After one [`handle_frame`](Self::handle_frame) with nothing queued: its event at once
    /// when it made exactly one (the common case, which skips the queue); else `None`, and
    /// [`poll_event`](Self::poll_event) tells.
    #[inline]
    pub fn quick_event(&mut self) -> Option<Event> {
        let (out, resume, link) = (&mut self.out, &mut self.resume, self.link);
        self.requests.quick_event(|t| emit(out, resume, link, t))
    }

    /// Puts an event taken from [`poll_event`](Self::poll_event) back, for the next call
    /// (the socket failed before it could be handed out, say).
    pub fn unread(&mut self, event: Event) {
        self.requests.unread(event);
    }

    /// The next frame to write. Write and flush every one before waiting.
    pub fn poll_transmit(&mut self) -> Option<Outgoing> {
        if self.dirty {
            self.settle();
        }
        self.out.pop_front()
    }

    /// When the connection wants [`handle_timeout`](Self::handle_timeout): the earliest of
    /// the request and keepalive timers, a due acknowledgement and the next reconnection.
    pub fn poll_timeout(&mut self) -> Instant {
        if self.dirty {
            self.settle();
        }
        let mut at = self.requests.deadline();
        if self.link == Link::Up
            && let Some(ack) = self.resume.as_ref().and_then(Resumption::ack_deadline)
        {
            at = at.min(ack);
        }
        if let Link::Waiting(retry) = self.link {
            at = at.min(retry);
        }
        at
    }

    /// Headers of a resuming handshake to open now, when a reconnection is due; the pump
    /// reports how it went. `None` otherwise.
    pub fn poll_reconnect(&mut self) -> Option<[(&'static str, String); 2]> {
        if self.link != Link::Due {
            return None;
        }
        self.link = Link::Connecting;
        self.resume.as_ref().map(Resumption::resume_headers)
    }

    /// A resumption that succeeded, once, for the caller's event stream: the reconnections it
    /// took and the runtime's frames processed then.
    pub fn take_reconnected(&mut self) -> Option<(u32, u64)> {
        self.resume.as_mut().and_then(Resumption::take_reconnected)
    }

    /// A resume token of the session as it stands, for the runtime at `url` (see
    /// [`ResumeToken`]).
    ///
    /// # Errors
    ///
    /// [`Error::NotResumable`] when the runtime did not grant resumption, while the session
    /// ends, and while events of frames already read wait to be handed out.
    pub fn resume_token(&mut self, url: &str, now: Instant) -> Result<ResumeToken, Error> {
        if self.resume.is_none() {
            return Err(Error::NotResumable(
                "the runtime did not grant resumption to this session",
            ));
        }
        let (out, resume, link) = (&mut self.out, &mut self.resume, self.link);
        let state = self.requests.export(|t| emit(out, resume, link, t), now)?;
        let r = self
            .resume
            .as_mut()
            .ok_or(Error::NotResumable("the session was given up"))?;
        Ok(r.token(url, state))
    }

    /// Drains the core: frames to the queue, events kept for `poll_event`.
    fn settle(&mut self) {
        if let Some(event) = self.poll_event() {
            self.requests.unread(event);
        }
        self.dirty = false;
    }
}

/// A transmit of the core: noted by the resumption (kept until the runtime acknowledges it,
/// sent again after a reconnection), and queued for the socket while one is attached.
fn emit(out: &mut VecDeque<Outgoing>, resume: &mut Option<Resumption>, link: Link, t: Transmit) {
    if let Some(r) = resume {
        r.on_transmit(&t);
    }
    if link != Link::Up {
        // No socket: a keepalive ping has no use; a text is in the resumption's keeping.
        return;
    }
    out.push_back(match t {
        Transmit::Text(text) => Outgoing::Text(text),
        Transmit::Ping => Outgoing::Ping(Vec::new()),
    });
}

#[cfg(test)]
mod tests;
