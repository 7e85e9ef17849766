//! A persistent session over one blocking connection.

use std::collections::VecDeque;
use std::fmt;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use runtimeuse_proto as proto;
use runtimeuse_proto::{
    ArtifactUpload, ArtifactUploadRequest, CommandExecutionResult, Event, Input, Output,
    QueryResult, RequestEvent, RequestId, Routed, SessionEnd, Transmit,
};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::stream::MaybeTlsStream;

use runtimeuse_client_core::read_ahead::ReadAheadStream;
use tungstenite::{Message, WebSocket};

use runtimeuse_client_core::close::{CLOSE_AFTER_FAILURE, close_code, close_wait};

use crate::Error;
use crate::options::{Callbacks, ExecuteCommandsOptions, QueryOptions, UploaderFn};

pub(crate) type Socket = WebSocket<MaybeTlsStream<ReadAheadStream<TcpStream>>>;

/// The TCP socket under the WebSocket (and TLS), for its timeouts.
pub(crate) fn tcp(ws: &Socket) -> Option<&TcpStream> {
    match ws.get_ref() {
        MaybeTlsStream::Plain(s) => Some(s.get_ref()),
        #[cfg(feature = "__rustls")]
        MaybeTlsStream::Rustls(s) => Some(s.sock.get_ref()),
        _ => None,
    }
}

/// While a request runs, a blocked read wakes at least this often to notice an abort from
/// another thread (a blocking socket cannot be woken otherwise).
const ABORT_POLL: Duration = Duration::from_millis(20);

/// The current instant. The blocking client reads the clock; the core never does.
fn now() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

/// Cancels the request in flight of a [`Session`] from another thread. The `cancel_message`
/// goes out within about 20 ms even while the session's thread is blocked reading.
#[derive(Clone, Debug, Default)]
pub struct AbortHandle(Arc<AtomicBool>);

impl AbortHandle {
    /// A handle not tied to a session yet: give it to a one-shot call with
    /// `QueryOptions::abort_handle` (or `ExecuteCommandsOptions::abort_handle`) to be able to
    /// cancel that call from another thread.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether an abort is pending (requested and not yet acted on).
    pub fn is_aborted(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Cancels the request in flight, if any.
    pub fn abort(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

/// A persistent session over one connection: sequential queries and command batches, then a
/// graceful [`close`](Self::close).
pub struct Session {
    ws: Socket,
    proto: proto::Session,
    abort: AbortHandle,
    events: VecDeque<Event>,
    deadline: Instant,
    /// The last artifact uploader given, for requests between calls and during close.
    uploader: Option<UploaderFn>,
    /// A request whose iterator was dropped; cancelled before the next call.
    current: Option<RequestId>,
    /// The read timeout last set on the socket.
    read_timeout: Option<Duration>,
    /// The connection ended or failed (tungstenite must not be read again after an error).
    ended: bool,
    /// What the close still owes the peer once `ended`: the reply to its close frame, or a
    /// close code saying why a frame was refused.
    owed: Owed,
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
            .field("proto", &self.proto)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(ws: Socket, config: proto::Config) -> Self {
        let now = now();
        Self {
            ws,
            proto: proto::Session::new(config, now),
            abort: AbortHandle::default(),
            events: VecDeque::new(),
            deadline: now,
            uploader: None,
            current: None,
            read_timeout: None,
            ended: false,
            owed: Owed::Nothing,
        }
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

    /// Uses `handle` for this session's requests (one-shot calls take the options' handle).
    pub(crate) fn use_abort_handle(&mut self, handle: AbortHandle) {
        self.abort = handle;
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
        let mut callbacks = options.callbacks;
        let mut invocation = options.invocation;
        invocation.user_prompt = prompt.into();
        let id = self.start(|p, now| p.invoke(invocation, options.request, now))?;
        match self.run(id, &mut callbacks)? {
            RequestEvent::Result(r) => Ok(r),
            _ => Err(Error::UnexpectedTerminal(
                proto::MessageKind::CommandExecutionResult,
            )),
        }
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
        let mut callbacks = options.callbacks;
        let mut batch = options.batch;
        batch.commands = commands.into_iter().map(Into::into).collect();
        let id = self.start(|p, now| p.execute_commands(batch, options.request, now))?;
        match self.run(id, &mut callbacks)? {
            RequestEvent::CommandResult(r) => Ok(r),
            _ => Err(Error::UnexpectedTerminal(proto::MessageKind::Result)),
        }
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
        let mut invocation = options.invocation;
        invocation.user_prompt = prompt.into();
        if options.callbacks.uploader.is_some() {
            self.uploader = options.callbacks.uploader;
        }
        let id = self.start(|p, now| p.invoke(invocation, options.request, now))?;
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
        let mut batch = options.batch;
        batch.commands = commands.into_iter().map(Into::into).collect();
        if options.callbacks.uploader.is_some() {
            self.uploader = options.callbacks.uploader;
        }
        let id = self.start(|p, now| p.execute_commands(batch, options.request, now))?;
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
        self.close_socket(result.is_ok());
        result
    }

    fn end_gracefully(&mut self) -> Result<SessionEnd, Error> {
        self.clean_up_dropped_call();
        while self.proto.request_in_flight().is_some() {
            let _ = self.proto.cancel(now());
            self.next_event()?;
        }
        if let Some(end) = self.proto.end() {
            return Ok(end);
        }
        self.proto.end_session(now())?;
        loop {
            match self.next_event()? {
                Event::SessionEnded(end) => return Ok(end),
                Event::ArtifactUploadRequest(req) => self.answer(req),
                _ => {}
            }
        }
    }

    /// Closes the connection at once, without the end-of-session handshake (code 1000, at
    /// most 100 ms): for a session whose runtime misbehaved, or when nothing is owed. The
    /// runtime stops what still runs for it.
    pub fn disconnect(mut self) {
        self.close_socket(false);
    }

    /// Ends the connection: after a clean end (`ok`), a close frame with code 1000 and a wait
    /// of at most a second for the peer's; after a failure, within 100 ms: the reply to the
    /// peer's close, or the code that says why a frame was refused, or nothing.
    pub(crate) fn close_socket(&mut self, ok: bool) {
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
        let wait = close_wait(ok);
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
        start: impl FnOnce(&mut proto::Session, Instant) -> Result<RequestId, proto::UsageError>,
    ) -> Result<RequestId, Error> {
        self.clean_up_dropped_call();
        let id = start(&mut self.proto, now())?;
        tracing::debug!(request = id.as_u64(), "request started");
        self.abort.take();
        self.current = Some(id);
        Ok(id)
    }

    fn clean_up_dropped_call(&mut self) {
        if let Some(id) = self.current.take()
            && self.proto.request_in_flight() == Some(id)
        {
            let _ = self.proto.cancel(now());
        }
    }

    fn run(&mut self, id: RequestId, callbacks: &mut Callbacks) -> Result<RequestEvent, Error> {
        if callbacks.uploader.is_some() {
            self.uploader = callbacks.uploader.take();
        }
        loop {
            match self.next_item(id).ok_or(Error::ConnectionClosed)?? {
                RequestEvent::AssistantMessage(blocks) => {
                    if let Some(cb) = &mut callbacks.on_assistant_message {
                        cb(blocks);
                    }
                }
                RequestEvent::CommandOutput(output) => {
                    if let Some(cb) = &mut callbacks.on_command_output {
                        cb(output);
                    }
                }
                RequestEvent::ArtifactUploadRequest(req) => self.proto.decline_artifact_upload(req),
                item @ (RequestEvent::Result(_) | RequestEvent::CommandResult(_)) => {
                    return Ok(item);
                }
                _ => {}
            }
        }
    }

    /// The next item of request `id`; `None` once its terminal was handed out.
    fn next_item(&mut self, id: RequestId) -> Option<Result<RequestEvent, Error>> {
        loop {
            let event = match self.next_event() {
                Ok(e) => e,
                Err(e) => return Some(Err(e)),
            };
            let item = match event.route(id) {
                Routed::Item(RequestEvent::ArtifactUploadRequest(req))
                    if self.uploader.is_some() =>
                {
                    self.answer(req);
                    continue;
                }
                Routed::Item(item) => {
                    if item.is_terminal() {
                        self.current = None;
                    }
                    item
                }
                Routed::Failed(reason) => {
                    self.current = None;
                    return Some(Err(reason.into()));
                }
                Routed::SessionEnded(_) => return Some(Err(Error::ConnectionClosed)),
                _ => continue,
            };
            return Some(Ok(item));
        }
    }

    /// Answers an artifact request with the session's uploader, or declines it.
    fn answer(&mut self, req: ArtifactUploadRequest) {
        let Some(uploader) = self.uploader.as_mut() else {
            self.proto.decline_artifact_upload(req);
            return;
        };
        let upload = uploader(req.to_request());
        if let Err(e) = self.proto.respond_artifact_upload(req, upload, now()) {
            tracing::warn!(error = %e, "could not answer an artifact upload request");
        }
    }

    /// The next event of the core, driving the socket and the timers.
    fn next_event(&mut self) -> Result<Event, Error> {
        loop {
            self.drain();
            if let Err(e) = self.flush() {
                tracing::debug!(error = %e, "send failed");
                self.proto.handle_input(Input::TransportClosed(now()));
                self.drain();
            }
            if let Some(e) = self.events.pop_front() {
                return Ok(e);
            }
            if self.proto.is_finished() {
                return Err(Error::ConnectionClosed);
            }
            if self.abort.take() {
                if self.proto.request_in_flight().is_some() {
                    let _ = self.proto.cancel(now());
                }
                continue;
            }
            let mut wait = self.deadline.saturating_duration_since(now());
            if self.proto.request_in_flight().is_some() {
                wait = wait.min(ABORT_POLL);
            }
            // Whole milliseconds, so that the value repeats; a zero timeout would mean "block
            // forever".
            let wait =
                Duration::from_millis(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1));
            self.set_read_timeout(wait);
            let read = self.ws.read();
            let now = now();
            match read {
                Ok(Message::Text(t)) => self.proto.handle_input(Input::ReceiveText(now, &t)),
                Ok(Message::Binary(b)) => self.proto.handle_input(Input::Receive(now, &b)),
                Ok(Message::Pong(_)) => self.proto.handle_input(Input::Pong(now)),
                // tungstenite answers pings itself.
                Ok(Message::Ping(_) | Message::Frame(_)) => {}
                Ok(Message::Close(_)) => {
                    self.ended = true;
                    self.owed = Owed::Reply;
                    self.proto.handle_input(Input::TransportClosed(now));
                }
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    self.proto.handle_input(Input::Timeout(now));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "connection ended");
                    self.ended = true;
                    self.owed = close_code(&e).map_or(Owed::Nothing, Owed::Code);
                    self.proto.handle_input(Input::TransportClosed(now));
                }
            }
        }
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

    /// Moves the core's outputs to the socket and the event queue.
    fn drain(&mut self) {
        loop {
            match self.proto.poll_output() {
                Output::Transmit(Transmit::Text(s)) => self.write(Message::Text(s.into())),
                Output::Transmit(Transmit::Ping) => self.write(Message::Ping(Default::default())),
                Output::Event(e) => self.events.push_back(e),
                Output::Timeout(at) => {
                    self.deadline = at;
                    return;
                }
            }
        }
    }

    fn write(&mut self, message: Message) {
        // Queued in tungstenite's buffer; errors show up at the next flush or read.
        if let Err(e) = self.ws.write(message) {
            tracing::debug!(error = %e, "write failed");
        }
    }
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
        self.session
            .proto
            .respond_artifact_upload(request, upload, now())?;
        Ok(())
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
}

impl Iterator for RequestEvents<'_> {
    type Item = Result<RequestEvent, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.session.next_item(self.id);
        self.done = matches!(
            item,
            None | Some(Err(_))
                | Some(Ok(RequestEvent::Result(_) | RequestEvent::CommandResult(_)))
        );
        item
    }
}
