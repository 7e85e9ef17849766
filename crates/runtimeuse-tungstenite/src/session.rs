//! A persistent session over one blocking connection.

use std::fmt;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use runtimeuse_client_core::requests::{self, Between, Ending, Requests, Step};
use runtimeuse_proto as proto;
use runtimeuse_proto::{
    ArtifactUpload, ArtifactUploadRequest, CommandExecutionResult, Event, Input, QueryResult,
    RequestEvent, RequestId, SessionEnd, Transmit,
};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

use tungstenite::Message;

use runtimeuse_client_core::close::{CLOSE_AFTER_FAILURE, close_code, close_wait};

pub use crate::connect::Socket;
use crate::connect::connect;
use crate::connect::tcp;
use crate::options::{ExecuteCommandsOptions, QueryOptions};
use crate::{AbortHandle, ClientSettings, Error};
use runtimeuse_client_core::callbacks::{
    BlockingCallbacks as Callbacks, BlockingUploader as UploaderFn, upload_with,
};
use runtimeuse_client_core::resume::{Attempt, Resumption};
use std::sync::Arc;

/// While a request runs, a blocked read wakes at least this often to notice an abort from
/// another thread (a blocking socket cannot be woken otherwise).
const ABORT_POLL: Duration = Duration::from_millis(20);

/// The current instant. The blocking client reads the clock; the core never does.
pub(crate) fn now() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

/// A persistent session over one connection: sequential queries and command batches, then a
/// graceful [`close`](Self::close).
pub struct Session {
    ws: Socket,
    /// The request bookkeeping every client shares (the core inside it).
    requests: Requests<UploaderFn>,
    abort: AbortHandle,
    /// The read timeout last set on the socket.
    read_timeout: Option<Duration>,
    /// The connection ended or failed (tungstenite must not be read again after an error).
    ended: bool,
    /// What the close still owes the peer once `ended`: the reply to its close frame, or a
    /// close code saying why a frame was refused.
    owed: Owed,
    /// The client side of a resumable session, when the runtime granted one.
    resume: Option<Box<Resuming>>,
}

/// A resumable session's client side: the bookkeeping, and the settings to reconnect with.
struct Resuming {
    state: Resumption,
    settings: Arc<ClientSettings>,
}

/// What the close still owes the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    Nothing,
    /// The peer closed; tungstenite queued the reply.
    Reply,
    /// A frame was refused: close with this code (1007, 1009, 1002).
    Code(CloseCode),
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("requests", &self.requests)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(ws: Socket, config: proto::Config) -> Self {
        let now = now();
        Self {
            ws,
            requests: Requests::new(config, now),
            abort: AbortHandle::default(),
            read_timeout: None,
            ended: false,
            owed: Owed::Nothing,
            resume: None,
        }
    }

    /// Makes this session resumable, as the runtime granted at the handshake.
    pub(crate) fn make_resumable(&mut self, granted: Resumption, settings: Arc<ClientSettings>) {
        self.resume = Some(Box::new(Resuming {
            state: granted,
            settings,
        }));
    }

    /// A session taken over from a resume token ([`Client::resume`](crate::Client::resume)),
    /// on a socket the runtime resumed it on after processing `runtime_received` of the
    /// client's frames.
    pub(crate) fn take_over(
        ws: Socket,
        settings: Arc<ClientSettings>,
        mut resumption: Resumption,
        state: proto::SessionState,
        runtime_received: u64,
    ) -> Result<Self, Error> {
        let now = now();
        let frames = (resumption.resumed(runtime_received, now)).map_err(Error::ResumeRefused)?;
        let mut session = Self {
            ws,
            requests: Requests::import(settings.session.clone(), state, now),
            abort: AbortHandle::default(),
            read_timeout: None,
            ended: false,
            owed: Owed::Nothing,
            resume: Some(Box::new(Resuming {
                state: resumption,
                settings,
            })),
        };
        for frame in frames {
            if let Err(e) = session.ws.write(Message::Text(frame.into())) {
                tracing::debug!(error = %e, "write failed");
            }
        }
        Ok(session)
    }

    /// A [`ResumeToken`](crate::ResumeToken) of this session as it stands: what another
    /// process needs to take it over with [`Client::resume`](crate::Client::resume), the
    /// request in flight included. Store it (serde) where that process finds it; taking a
    /// token pins the runtime's replay at its count, so take a new one each time you store
    /// one (see [`ResumeToken`](crate::ResumeToken)).
    ///
    /// # Errors
    ///
    /// [`Error::NotResumable`] when the runtime did not grant resumption, while the session
    /// ends, and while events of frames already read wait to be handed out (rare: a frame
    /// that made two events; read the next one first).
    pub fn resume_token(&mut self) -> Result<crate::ResumeToken, Error> {
        if self.resume.is_none() {
            return Err(Error::NotResumable(
                "the runtime did not grant resumption to this session",
            ));
        }
        let (ws, resume) = (&mut self.ws, &mut self.resume);
        let state = self.requests.export(|t| send(ws, resume, t), now())?;
        let r = (self.resume.as_mut()).ok_or(Error::NotResumable("the session was given up"))?;
        Ok(r.state.token(&r.settings.url, state))
    }

    /// The events of the request in flight, if any, as an [`Iterator`]: for a session taken
    /// over with [`Client::resume`](crate::Client::resume), the rest of the request that was
    /// in flight when its token was taken (artifact upload requests come out as items, to
    /// answer with [`RequestEvents::respond_artifact_upload`]).
    pub fn request_events(&mut self) -> Option<RequestEvents<'_>> {
        let id = self.requests.current()?;
        Some(RequestEvents {
            session: self,
            id,
            done: false,
        })
    }

    /// Whether the runtime granted resumption to this session (see
    /// [`ClientBuilder::resume`](crate::ClientBuilder::resume)).
    pub fn is_resumable(&self) -> bool {
        self.resume.is_some()
    }

    /// A handle that cancels the request in flight from another thread.
    pub fn abort_handle(&self) -> AbortHandle {
        self.abort.clone()
    }

    /// Cancels the request in flight (the same as [`AbortHandle::abort`]; from the session's
    /// own thread, between two reads of a [`RequestEvents`], say).
    pub fn abort(&self) {
        self.abort.abort();
    }

    /// The underlying WebSocket (for its peer address and the like).
    pub fn websocket(&self) -> &Socket {
        &self.ws
    }

    /// Uses `handle` for this session's requests (one-shot calls take the options' handle).
    pub(crate) fn use_abort_handle(&mut self, handle: AbortHandle) {
        self.abort = handle;
    }

    /// Blocks while no request runs, keeping the connection alive (keepalive pings; late
    /// artifact requests answered with the last uploader given), until the connection ends;
    /// returns why: the blocking counterpart of the async clients' `Session::closed`, for a
    /// thread that has nothing to send until the runtime goes away.
    pub fn wait_closed(&mut self) -> Error {
        loop {
            let event = match self.next_event() {
                Ok(event) => event,
                Err(e) => return e,
            };
            match self.requests.between_calls(event) {
                Between::Nothing => {}
                Between::Upload(req, uploader) => {
                    let upload = upload_with(&uploader, req.to_request());
                    self.requests.answer(req, Some(upload), now());
                }
                Between::Ended => return Error::ConnectionClosed,
            }
        }
    }

    /// Runs a query and returns its result, calling the options' callbacks on the way.
    ///
    /// # Errors
    ///
    /// [`Error::Runtime`] when the runtime fails it, [`Error::Cancelled`], [`Error::Timeout`],
    /// [`Error::ConnectionClosed`] and the other variants of [`Error`].
    pub fn query(
        &mut self,
        prompt: impl Into<String>,
        options: QueryOptions,
    ) -> Result<QueryResult, Error> {
        let parts = options.into_parts();
        let mut invocation = parts.wire;
        invocation.user_prompt = prompt.into();
        let uploader = parts.callbacks.uploader().cloned();
        let id = self.start(|r, now| r.start_query(invocation, parts.request, uploader, now))?;
        requests::query_result(self.run(id, &parts.callbacks)?)
    }

    /// Runs a batch of shell commands and returns their results.
    ///
    /// # Errors
    ///
    /// As [`query`](Self::query); also [`Error::Usage`] for an empty batch.
    pub fn execute_commands<I, C>(
        &mut self,
        commands: I,
        options: ExecuteCommandsOptions,
    ) -> Result<CommandExecutionResult, Error>
    where
        I: IntoIterator<Item = C>,
        C: Into<proto::Command>,
    {
        let parts = options.into_parts();
        let mut batch = parts.wire;
        batch.commands = commands.into_iter().map(Into::into).collect();
        let uploader = parts.callbacks.uploader().cloned();
        let id = self.start(|r, now| r.start_commands(batch, parts.request, uploader, now))?;
        requests::commands_result(self.run(id, &parts.callbacks)?)
    }

    /// Starts a query and returns its events as an [`Iterator`]; the last item is the result.
    /// Callbacks in the options are not called, except the artifact uploader.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] if the options are invalid; nothing is sent then.
    pub fn query_events(
        &mut self,
        prompt: impl Into<String>,
        options: QueryOptions,
    ) -> Result<RequestEvents<'_>, Error> {
        let parts = options.into_parts();
        let mut invocation = parts.wire;
        invocation.user_prompt = prompt.into();
        let uploader = parts.callbacks.uploader().cloned();
        let id = self.start(|r, now| r.start_query(invocation, parts.request, uploader, now))?;
        Ok(RequestEvents {
            session: self,
            id,
            done: false,
        })
    }

    /// Starts a command batch and returns its events as an [`Iterator`].
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] if the options are invalid; nothing is sent then.
    pub fn execute_commands_events<I, C>(
        &mut self,
        commands: I,
        options: ExecuteCommandsOptions,
    ) -> Result<RequestEvents<'_>, Error>
    where
        I: IntoIterator<Item = C>,
        C: Into<proto::Command>,
    {
        let parts = options.into_parts();
        let mut batch = parts.wire;
        batch.commands = commands.into_iter().map(Into::into).collect();
        let uploader = parts.callbacks.uploader().cloned();
        let id = self.start(|r, now| r.start_commands(batch, parts.request, uploader, now))?;
        Ok(RequestEvents {
            session: self,
            id,
            done: false,
        })
    }

    /// Ends the session gracefully (end-of-session handshake, late artifact requests answered
    /// with the last uploader given) and closes the connection with code 1000. Returns how the
    /// session ended: [`SessionEnd::Confirmed`] when the runtime confirmed the end, else the
    /// end-of-session deadline passing or the connection closing first.
    ///
    /// # Errors
    ///
    /// [`Error::WebSocket`] if the connection fails on the way; it is closed anyway.
    pub fn close(mut self) -> Result<SessionEnd, Error> {
        let result = self.end_gracefully();
        self.close_socket(close_wait(result.is_ok()));
        result
    }

    fn end_gracefully(&mut self) -> Result<SessionEnd, Error> {
        let mut step = self.requests.end(now())?;
        loop {
            match step {
                Ending::Done(end) => return Ok(end),
                Ending::Upload(req, uploader) => {
                    let upload = upload_with(&uploader, req.to_request());
                    self.requests.answer(req, Some(upload), now());
                }
                Ending::Read => {}
            }
            let event = self.next_event()?;
            step = self.requests.end_on(event, now())?;
        }
    }

    /// Closes the connection at once, without the end-of-session handshake (code 1000, at
    /// most 100 ms): for a session whose runtime misbehaved, or when nothing is owed. The
    /// runtime stops what still runs for it.
    pub fn disconnect(mut self) {
        self.close_socket(CLOSE_AFTER_FAILURE);
    }

    /// Ends the connection: on an open connection, a close frame with code 1000 and a wait
    /// of at most `wait` for the peer's; once it failed, within 100 ms: the reply to the
    /// peer's close, or the code that says why a frame was refused, or nothing.
    pub(crate) fn close_socket(&mut self, wait: Duration) {
        if self.ended {
            self.set_read_timeout(CLOSE_AFTER_FAILURE);
            let _ = match std::mem::replace(&mut self.owed, Owed::Nothing) {
                Owed::Nothing => Ok(()),
                // Writes the reply tungstenite queued.
                Owed::Reply => self.ws.flush(),
                Owed::Code(code) => self.ws.close(Some(CloseFrame {
                    code,
                    reason: "".into(),
                })),
            };
            return;
        }
        self.ended = true;
        // Writes that block (a peer that stopped reading) end at the timeout too.
        self.set_write_timeout(wait);
        let _ = self.flush();
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        if self.ws.close(Some(frame)).is_ok() {
            let until = Instant::now() + wait;
            // Read until the peer's close so that the closing handshake completes.
            loop {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                self.set_read_timeout(left.max(Duration::from_millis(1)));
                if self.ws.read().is_err() {
                    break;
                }
            }
        }
    }

    // ----- internals -----

    fn start(
        &mut self,
        start: impl FnOnce(&mut Requests<UploaderFn>, Instant) -> Result<RequestId, Error>,
    ) -> Result<RequestId, Error> {
        let id = start(&mut self.requests, now())?;
        tracing::debug!(request = id.as_u64(), "request started");
        // An abort requested while nothing was in flight does not apply to this request.
        self.abort.take();
        Ok(id)
    }

    fn run(&mut self, id: RequestId, callbacks: &Callbacks) -> Result<RequestEvent, Error> {
        loop {
            match self.next_item(id).ok_or(Error::ConnectionClosed)?? {
                RequestEvent::AssistantMessage(blocks) => callbacks.assistant_message(blocks),
                RequestEvent::CommandOutput(output) => callbacks.command_output(output),
                RequestEvent::ArtifactUploadRequest(req) => self.requests.decline(req),
                item if item.is_terminal() => return Ok(item),
                _ => {}
            }
        }
    }

    /// The next item of request `id`; `None` once its terminal was handed out.
    fn next_item(&mut self, id: RequestId) -> Option<Result<RequestEvent, Error>> {
        loop {
            if let Some((attempts, received)) = self
                .resume
                .as_mut()
                .and_then(|r| r.state.take_reconnected())
            {
                return Some(Ok(RequestEvent::Reconnected { attempts, received }));
            }
            let event = match self.next_event() {
                Ok(e) => e,
                Err(e) => return Some(Err(e)),
            };
            match self.requests.route(event, id, None) {
                Step::Item(item) => return Some(Ok(item)),
                Step::Upload(req, uploader) => {
                    let upload = upload_with(&uploader, req.to_request());
                    self.requests.answer(req, Some(upload), now());
                }
                Step::Failed(e) => return Some(Err(e)),
                Step::Skip => {}
            }
        }
    }

    /// The next event of the core, driving the socket and the timers.
    fn next_event(&mut self) -> Result<Event, Error> {
        loop {
            let mut next = self.drain();
            if let Err(e) = self.flush() {
                tracing::debug!(error = %e, "send failed");
                // The event taken is the caller's whatever happens to the connection.
                if let Some(event) = next.take() {
                    self.requests.unread(event);
                }
                if self.lose_connection(None) {
                    self.reconnect();
                    continue;
                }
                self.requests
                    .session()
                    .handle_input(Input::TransportClosed(now()));
                next = self.drain();
            }
            if let Some(e) = next {
                return Ok(e);
            }
            if self.requests.is_finished() {
                return Err(Error::ConnectionClosed);
            }
            if self.abort.take() {
                self.requests.abort(now());
                continue;
            }
            let mut wait = self.requests.deadline().saturating_duration_since(now());
            if self.requests.is_busy() {
                wait = wait.min(ABORT_POLL);
            }
            // Whole milliseconds, so that the value repeats; a zero timeout would mean "block
            // forever".
            let wait =
                Duration::from_millis(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1));
            self.set_read_timeout(wait);
            let read = self.ws.read();
            let now = now();
            if let Some(r) = &mut self.resume {
                match &read {
                    Ok(Message::Text(_) | Message::Binary(_)) => {
                        if let Some(ack) = r.state.on_received(now)
                            && let Err(e) = self.ws.write(Message::Ping(ack.into()))
                        {
                            tracing::debug!(error = %e, "write failed");
                        }
                    }
                    Ok(Message::Ping(p)) => r.state.on_ping(p),
                    _ => {}
                }
            }
            let lost = match &read {
                Ok(Message::Close(frame)) => Some(frame.as_ref().map(|f| f.code)),
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    None
                }
                Err(_) => Some(None),
                Ok(_) => None,
            };
            if let Some(code) = lost
                && self.lose_connection(code)
            {
                self.reconnect();
                continue;
            }
            let session = self.requests.session();
            match read {
                Ok(Message::Text(t)) => session.handle_input(Input::ReceiveText(now, &t)),
                Ok(Message::Binary(b)) => session.handle_input(Input::Receive(now, &b)),
                Ok(Message::Pong(_)) => session.handle_input(Input::Pong(now)),
                // tungstenite answers pings itself.
                Ok(Message::Ping(_) | Message::Frame(_)) => {}
                Ok(Message::Close(_)) => {
                    session.handle_input(Input::TransportClosed(now));
                    self.ended = true;
                    self.owed = Owed::Reply;
                }
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    session.handle_input(Input::Timeout(now));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "connection ended");
                    session.handle_input(Input::TransportClosed(now));
                    self.ended = true;
                    self.owed = close_code(&e).map_or(Owed::Nothing, Owed::Code);
                }
            }
        }
    }

    /// The connection ended (with this close code from the runtime, if any) or failed:
    /// whether the session goes on reconnecting (resumable, not ending, and the runtime did
    /// not close it on purpose) rather than closing.
    fn lose_connection(&mut self, code: Option<CloseCode>) -> bool {
        let ending = self.requests.session().is_ending() || self.requests.is_finished();
        let now = now();
        let lost =
            (self.resume.as_mut()).is_some_and(|r| r.state.connection_lost(ending, code, now));
        if lost {
            self.requests.session().pause_keepalive(now);
        }
        lost
    }

    /// Reconnects within the grace period, serving the session's timers and aborts
    /// meanwhile; on success the session goes on over the new connection, else it ends as its
    /// connection did.
    fn reconnect(&mut self) {
        loop {
            let Some(r) = &mut self.resume else {
                return;
            };
            let Some(wait) = r.state.next_attempt(now()) else {
                tracing::info!(grace = ?r.state.grace(), "no reconnection within the grace period");
                return self.give_up();
            };
            self.wait_serving_timers(wait);
            let Some(r) = &mut self.resume else {
                return;
            };
            match attempt(&r.settings, &r.state) {
                Attempt::Resumed(ws, count) => {
                    let now = now();
                    let frames = match r.state.resumed(count, now) {
                        Ok(frames) => frames,
                        Err(refusal) => {
                            tracing::info!(why = refusal.token(), "could not resume the session");
                            return self.give_up();
                        }
                    };
                    tracing::info!(received = r.state.received(), "session resumed");
                    self.ws = *ws;
                    self.read_timeout = None;
                    for frame in frames {
                        if let Err(e) = self.ws.write(Message::Text(frame.into())) {
                            tracing::debug!(error = %e, "write failed");
                        }
                    }
                    self.requests.session().resume_keepalive(now);
                    return;
                }
                Attempt::Refused(refusal) => {
                    tracing::info!(
                        why = refusal.token(),
                        "the runtime refused to resume the session"
                    );
                    return self.give_up();
                }
                Attempt::Failed(e) => r.state.failed(&e),
            }
        }
    }

    /// Sleeps `wait`, feeding the session's timers (and an abort) as they come.
    fn wait_serving_timers(&mut self, wait: Duration) {
        let until = now() + wait;
        loop {
            let now = now();
            if now >= until {
                return;
            }
            if self.abort.take() {
                self.requests.abort(now);
            }
            let deadline = self.requests.deadline();
            if deadline <= now {
                self.requests.session().handle_input(Input::Timeout(now));
                // What the timers sent waits for the new connection (it is kept for it).
                self.drain_kept();
                continue;
            }
            std::thread::sleep(until.min(deadline).min(now + ABORT_POLL) - now);
        }
    }

    /// Moves the core's transmits into the resumption's keeping only (no socket): for the
    /// time without one. Events stay queued for the caller.
    fn drain_kept(&mut self) {
        let resume = &mut self.resume;
        let next = self.requests.drain(|t| {
            if let Some(r) = resume {
                r.state.on_transmit(&t);
            }
        });
        if let Some(e) = next {
            self.requests.unread(e);
        }
    }

    /// Resuming failed: the session ends as its connection did.
    fn give_up(&mut self) {
        self.resume = None;
        self.ended = true;
        self.requests
            .session()
            .handle_input(Input::TransportClosed(now()));
    }

    fn set_read_timeout(&mut self, timeout: Duration) {
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

    /// Bounds blocking writes (set only when closing).
    fn set_write_timeout(&mut self, timeout: Duration) {
        let result = tcp(&self.ws).map_or(Ok(()), |t| t.set_write_timeout(Some(timeout)));
        if let Err(e) = result {
            tracing::debug!(error = %e, "could not set the write timeout");
        }
    }

    fn flush(&mut self) -> Result<(), tungstenite::Error> {
        self.ws.flush()
    }

    /// Moves the core's outputs to the socket and the event queue; the next event.
    fn drain(&mut self) -> Option<Event> {
        let (ws, resume) = (&mut self.ws, &mut self.resume);
        self.requests.drain(|t| send(ws, resume, t))
    }
}

/// Sends a transmit of the core, noting it for a resumable session.
fn send(ws: &mut Socket, resume: &mut Option<Box<Resuming>>, t: Transmit) {
    if let Some(r) = resume {
        r.state.on_transmit(&t);
    }
    let message = match t {
        Transmit::Text(s) => Message::Text(s.into()),
        Transmit::Ping => Message::Ping(Default::default()),
    };
    // Queued in tungstenite's buffer; errors show up at the next flush or read.
    if let Err(e) = ws.write(message) {
        tracing::debug!(error = %e, "write failed");
    }
}

/// One reconnection of a resumable session (its socket boxed: it is large).
pub(crate) fn attempt(settings: &ClientSettings, state: &Resumption) -> Attempt<Box<Socket>> {
    let mut ws = match connect(settings, &state.resume_headers()) {
        Ok((ws, _)) => ws,
        Err(e) => return Attempt::from_error(e),
    };
    if let Some(t) = tcp(&ws) {
        let _ = t.set_read_timeout(Some(settings.connect_timeout));
    }
    // The runtime's first frame is its count of the client's frames.
    let first = ws.read();
    Attempt::from_first_frame(Box::new(ws), first)
}

/// The events of one request, as an [`Iterator`]; the last item is the result (or an error).
/// Dropping it before the end leaves the session usable: the request is cancelled before the
/// next call.
pub struct RequestEvents<'a> {
    session: &'a mut Session,
    id: RequestId,
    done: bool,
}

impl fmt::Debug for RequestEvents<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestEvents")
            .field("request", &self.id)
            .finish_non_exhaustive()
    }
}

impl RequestEvents<'_> {
    /// Answers an artifact upload request handed out by this iterator.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] if the request is not pending on this session.
    pub fn respond_artifact_upload(
        &mut self,
        request: ArtifactUploadRequest,
        upload: ArtifactUpload,
    ) -> Result<(), Error> {
        self.session.requests.respond(request, upload, now())
    }

    /// Declines an artifact upload request handed out by this iterator: the runtime is told
    /// no upload will happen.
    pub fn decline_artifact_upload(&mut self, request: ArtifactUploadRequest) {
        self.session.requests.decline(request);
    }

    /// A handle that cancels this request from another thread.
    pub fn abort_handle(&self) -> AbortHandle {
        self.session.abort_handle()
    }

    /// Cancels this request: the iterator goes on to the runtime's terminal and ends with
    /// [`Error::Cancelled`].
    pub fn abort(&self) {
        self.session.abort();
    }

    /// A resume token of the session, between two items of this iterator: as
    /// [`Session::resume_token`].
    ///
    /// # Errors
    ///
    /// As [`Session::resume_token`].
    pub fn resume_token(&mut self) -> Result<crate::ResumeToken, Error> {
        self.session.resume_token()
    }
}

impl Iterator for RequestEvents<'_> {
    type Item = Result<RequestEvent, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.session.next_item(self.id);
        self.done = requests::ends_stream(&item);
        item
    }
}

#[cfg(test)]
mod tests {
    //! The blocking session over a loopback socket pair against a scripted fake runtime on
    //! another thread.

    use std::net::{TcpListener, TcpStream};

    use runtimeuse_client_core::read_ahead::ReadAheadStream;
    use serde_json::{Value, json};
    use tungstenite::protocol::Role;
    use tungstenite::stream::MaybeTlsStream;
    use tungstenite::{Message, WebSocket};

    use super::Session;
    use crate::{Error, QueryOptions};

    struct Runtime(WebSocket<TcpStream>);

    impl Runtime {
        fn recv(&mut self) -> Value {
            loop {
                match self.0.read().expect("read") {
                    Message::Text(t) => return serde_json::from_str(&t).expect("JSON"),
                    Message::Close(_) => panic!("the client closed"),
                    _ => {}
                }
            }
        }

        fn send(&mut self, v: Value) {
            self.0
                .send(Message::Text(v.to_string().into()))
                .expect("send");
        }

        fn result(&mut self, text: &str) {
            self.send(json!({
                "message_type": "result_message",
                "metadata": {},
                "data": {"type": "text", "text": text}
            }));
        }
    }

    fn pair() -> (Session, Runtime) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let stream = MaybeTlsStream::Plain(ReadAheadStream::new(client));
        let ws = WebSocket::from_raw_socket(stream, Role::Client, None);
        let session = Session::new(ws, runtimeuse_proto::Config::default());
        (
            session,
            Runtime(WebSocket::from_raw_socket(server, Role::Server, None)),
        )
    }

    fn opts() -> QueryOptions {
        QueryOptions::new("system", "model")
    }

    #[test]
    fn a_query_gets_its_result_and_callbacks_run() {
        let (mut session, mut runtime) = pair();
        let fake = std::thread::spawn(move || {
            assert_eq!(runtime.recv()["user_prompt"], "hello");
            runtime.send(json!({"message_type": "assistant_message", "text_blocks": ["hi"]}));
            runtime.result("world");
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let options = opts().on_assistant_message(move |blocks| tx.send(blocks).unwrap());
        let result = session.query("hello", options).unwrap();
        assert_eq!(result.text(), Some("world"));
        assert_eq!(rx.try_recv().unwrap(), vec!["hi".to_owned()]);
        fake.join().unwrap();
    }

    #[test]
    fn a_dropped_iterator_is_cancelled_and_its_terminal_never_reaches_the_next_call() {
        let (mut session, mut runtime) = pair();
        let fake = std::thread::spawn(move || {
            assert_eq!(runtime.recv()["user_prompt"], "first");
            runtime.send(json!({"message_type": "assistant_message", "text_blocks": ["1"]}));
            assert_eq!(runtime.recv()["message_type"], "cancel_message");
            runtime.result("first's late result");
            assert_eq!(runtime.recv()["user_prompt"], "second");
            runtime.result("second");
        });
        {
            let mut events = session.query_events("first", opts()).unwrap();
            assert!(matches!(
                events.next(),
                Some(Ok(runtimeuse_proto::RequestEvent::AssistantMessage(_)))
            ));
        }
        let second = session.query("second", opts()).unwrap();
        assert_eq!(second.text(), Some("second"));
        fake.join().unwrap();
    }

    #[test]
    fn an_abort_from_another_thread_cancels_a_blocked_read() {
        let (mut session, mut runtime) = pair();
        let abort = session.abort_handle();
        let fake = std::thread::spawn(move || {
            runtime.recv();
            // The session is blocked reading; the abort reaches the wire anyway.
            abort.abort();
            assert_eq!(runtime.recv()["message_type"], "cancel_message");
            runtime.send(json!({
                "message_type": "error_message", "error": "Request cancelled", "metadata": {}
            }));
            runtime
        });
        let err = session.query("x", opts()).unwrap_err();
        assert!(matches!(err, Error::Cancelled), "{err}");
        fake.join().unwrap();
    }

    #[test]
    fn close_reports_the_confirmed_end() {
        let (session, mut runtime) = pair();
        let fake = std::thread::spawn(move || {
            assert_eq!(runtime.recv()["message_type"], "end_session_message");
            runtime.send(json!({"message_type": "end_session_confirm_message"}));
            loop {
                match runtime.0.read() {
                    Ok(Message::Close(Some(frame))) => return u16::from(frame.code),
                    Ok(_) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        });
        assert_eq!(
            session.close().unwrap(),
            runtimeuse_proto::SessionEnd::Confirmed
        );
        assert_eq!(fake.join().unwrap(), 1000);
    }
}
