//! The client [`Session`]: the protocol state machine of the program that talks to a runtime.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::RuntimeError;
use crate::error::{Diagnostics, FailReason, Phase, TimeoutKind, UsageError};
use crate::event::{
    ArtifactUploadRequest, CommandExecutionResult, CommandOutput, CommandResultItem, Event,
    OutputStream, QueryResult, RequestId, ResultData, SessionEnd,
};
use crate::request::{ArtifactUpload, CommandBatch, Invocation, RequestOptions};
use crate::timer::{Timer, TimerTable};
use crate::wire::{self, DecodeError, Decoded, Frame, MessageKind, RuntimeMessage, WireResultData};

mod export;
pub use export::SessionState;

/// Input to a session: something that happened on the connection, or time passing.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// A complete data frame arrived (binary, or text not yet known to be UTF-8).
    Receive(Instant, &'a [u8]),
    /// A complete text frame arrived, already validated as UTF-8 by the WebSocket layer.
    ReceiveText(Instant, &'a str),
    /// A WebSocket pong arrived.
    Pong(Instant),
    /// Time passed; call when the instant from [`Output::Timeout`] is reached (earlier or extra
    /// calls do nothing harmful).
    Timeout(Instant),
    /// The connection closed (close frame, end of stream or error).
    TransportClosed(Instant),
}

/// Output of a session, from [`Session::poll_output`].
#[derive(Debug)]
pub enum Output {
    /// Send this to the peer.
    Transmit(Transmit),
    /// Tell the application.
    Event(Event),
    /// Nothing more to do now: call [`Session::handle_input`] with [`Input::Timeout`] at this
    /// instant, or earlier if something arrives.
    Timeout(Instant),
}

/// Something to send on the WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// A text frame holding this JSON.
    Text(String),
    /// A WebSocket ping (the payload is the adapter's choice).
    Ping,
}

/// What kind of request is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestKind {
    Query,
    Commands,
}

/// The request in flight, attached to the application.
#[derive(Debug)]
struct Active {
    id: RequestId,
    kind: RequestKind,
    started: Instant,
    timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    last_message: Option<MessageKind>,
    /// When the last message of the request arrived (or when it was sent). The idle timer is
    /// re-armed from this lazily, when it fires, rather than on every message.
    last_message_at: Instant,
    message_count: u64,
    /// An `error_message` that ends the request unless more of the request follows.
    pending_error: Option<RuntimeError>,
    /// The request's `error_message`s that turned out not to be its terminal (bounded).
    earlier_errors: Vec<RuntimeError>,
}

/// A request given up on (cancelled or timed out) whose terminal is still to be read.
#[derive(Debug)]
struct Drain {
    /// An `error_message` arrived and may have been the terminal.
    settling: bool,
}

/// Most earlier `error_message`s a request keeps for its failure.
const MAX_EARLIER_ERRORS: usize = 16;

/// A request started while an abandoned one drains; its frame waits.
#[derive(Debug)]
struct Queued {
    id: RequestId,
    kind: RequestKind,
    frame: String,
    started: Instant,
    timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
}

/// A client session over one connection: the sans-IO state machine.
///
/// The owner of the socket feeds it with [`handle_input`](Self::handle_input), issues commands
/// ([`invoke`](Self::invoke), [`execute_commands`](Self::execute_commands),
/// [`cancel`](Self::cancel), [`end_session`](Self::end_session),
/// [`respond_artifact_upload`](Self::respond_artifact_upload)), and after **every** one of
/// those drains [`poll_output`](Self::poll_output) until it returns [`Output::Timeout`]:
///
/// 1. send each [`Output::Transmit`] on the socket, in order;
/// 2. hand each [`Output::Event`] to the application;
/// 3. sleep until the [`Output::Timeout`] instant or until a frame arrives, whichever is first,
///    and feed that in;
/// 4. once [`is_finished`](Self::is_finished) and the transmits are drained, close the
///    connection with code 1000.
///
/// ```no_run
/// use std::time::Instant;
/// use runtimeuse_proto::{Config, Event, Input, Invocation, Output, RequestOptions, Session, Transmit};
///
/// # fn socket_send(_: String) {}
/// # fn socket_ping() {}
/// # fn socket_recv_until(_: Instant) -> Option<Vec<u8>> { None }
/// let mut session = Session::new(Config::default(), Instant::now());
/// session.invoke(Invocation::new("ECHO:hi", "echo"), RequestOptions::default(), Instant::now())?;
/// loop {
///     let deadline = loop {
///         match session.poll_output() {
///             Output::Transmit(Transmit::Text(json)) => socket_send(json),
///             Output::Transmit(Transmit::Ping) => socket_ping(),
///             Output::Event(Event::Result { result, .. }) => println!("{:?}", result.text()),
///             Output::Event(event) if event.is_terminal() => return Ok(()),
///             Output::Event(_) => {}
///             Output::Timeout(at) => break at,
///         }
///     };
///     match socket_recv_until(deadline) {
///         Some(frame) => session.handle_input(Input::Receive(Instant::now(), &frame)),
///         None => session.handle_input(Input::Timeout(Instant::now())),
///     }
/// }
/// # Ok::<(), runtimeuse_proto::UsageError>(())
/// ```
///
/// # Invariants
///
/// - One request at a time. Every request that [`invoke`](Self::invoke) or
///   [`execute_commands`](Self::execute_commands) accepted ends with exactly one terminal event
///   ([`Event::Result`], [`Event::CommandResult`] or [`Event::Failed`]).
/// - A cancelled or timed-out request fails at once, and the session keeps reading until its
///   terminal message arrives, so that nothing of it leaks into the next request: a request
///   started meanwhile is held back until then.
/// - An `error_message` ends the request only if nothing else of the request follows within
///   [`Config::error_settle`]; otherwise it is reported as [`Event::RuntimeError`].
/// - No input panics, and nothing is sent after the session finished.
#[derive(Debug)]
pub struct Session {
    config: Config,
    next_request: u64,
    next_artifact: u64,
    active: Option<Active>,
    drain: Option<Drain>,
    queued: Option<Queued>,
    ending: bool,
    finished: bool,
    end: Option<SessionEnd>,
    /// The artifact upload requests not answered yet: their file names and paths (kept for
    /// [`export`](Self::export)).
    pending_artifacts: HashMap<u64, (String, String)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    timers: TimerTable,
    last_now: Instant,
    /// When anything last arrived. The keepalive timer is re-armed from this lazily, when it
    /// fires, rather than on every frame.
    last_activity: Instant,
    last_command: Option<Arc<str>>,
}

fn after(now: Instant, d: Duration) -> Option<Instant> {
    now.checked_add(d)
}

impl Session {
    /// A new session on a freshly opened connection.
    pub fn new(config: Config, now: Instant) -> Self {
        let mut timers = TimerTable::default();
        if let Some(interval) = config.keepalive_interval {
            timers.set_opt(Timer::KeepAlive, after(now, interval));
        }
        Self {
            config,
            next_request: 0,
            next_artifact: 0,
            active: None,
            drain: None,
            queued: None,
            ending: false,
            finished: false,
            end: None,
            pending_artifacts: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            timers,
            last_now: now,
            last_activity: now,
            last_command: None,
        }
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The request in flight (sent or waiting to be sent), if any.
    #[inline]
    pub fn request_in_flight(&self) -> Option<RequestId> {
        self.active
            .as_ref()
            .map(|a| a.id)
            .or(self.queued.as_ref().map(|q| q.id))
    }

    /// Whether [`end_session`](Self::end_session) was called.
    pub fn is_ending(&self) -> bool {
        self.ending
    }

    /// Whether the session has finished ([`Event::SessionEnded`] was emitted). Close the
    /// connection once the transmits are drained.
    #[inline]
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// How the session ended, once it has.
    pub fn end(&self) -> Option<SessionEnd> {
        self.end
    }

    /// The timer that is due next, if any: why the next [`Output::Timeout`] was chosen.
    pub fn next_timer(&self) -> Option<Timer> {
        self.timers.next().map(|(t, _)| t)
    }

    // ----- handle_* -----

    /// Feeds one input. Drain [`poll_output`](Self::poll_output) afterwards.
    pub fn handle_input(&mut self, input: Input<'_>) {
        if self.finished {
            // Nothing happens any more, but time still moves: the hour of `poll_timeout`
            // without timers counts from the last input, so a finished session's deadline
            // never falls behind the clock.
            let (Input::Receive(now, _)
            | Input::ReceiveText(now, _)
            | Input::Pong(now)
            | Input::Timeout(now)
            | Input::TransportClosed(now)) = input;
            self.last_now = self.last_now.max(now);
            return;
        }
        match input {
            Input::Receive(now, bytes) => self.receive(now, Frame::Bytes(bytes)),
            Input::ReceiveText(now, text) => self.receive(now, Frame::Text(text)),
            Input::Pong(now) => {
                self.note_activity(now);
                self.handle_timeout(now);
            }
            Input::Timeout(now) => self.handle_timeout(now),
            Input::TransportClosed(now) => {
                self.last_now = now;
                self.finish(SessionEnd::TransportClosed);
            }
        }
    }

    // ----- commands -----

    /// Starts a query.
    ///
    /// # Errors
    ///
    /// A [`UsageError`] if a request is in flight, the session is ending or finished, the
    /// artifact options do not fit, or the output schema was refused
    /// ([`Invocation::check`]); nothing is sent then.
    pub fn invoke(
        &mut self,
        invocation: Invocation,
        options: RequestOptions,
        now: Instant,
    ) -> Result<RequestId, UsageError> {
        self.check_can_start(&invocation.artifacts_dirs, &options)?;
        invocation.check()?;
        let frame = wire::encode_invocation(&invocation, self.config.legacy_artifacts_dir);
        Ok(self.start(RequestKind::Query, frame, options, now))
    }

    /// Starts a command batch.
    ///
    /// # Errors
    ///
    /// As [`invoke`](Self::invoke), and [`UsageError::NoCommands`] for an empty batch.
    pub fn execute_commands(
        &mut self,
        batch: CommandBatch,
        options: RequestOptions,
        now: Instant,
    ) -> Result<RequestId, UsageError> {
        self.check_can_start(&batch.artifacts_dirs, &options)?;
        if batch.commands.is_empty() {
            return Err(UsageError::NoCommands);
        }
        let frame = wire::encode_command_batch(&batch, self.config.legacy_artifacts_dir);
        Ok(self.start(RequestKind::Commands, frame, options, now))
    }

    /// Answers an artifact upload request: sends `artifact_upload_response_message`.
    ///
    /// # Errors
    ///
    /// [`UsageError::SessionFinished`], or [`UsageError::UnknownArtifactRequest`] if the
    /// request is not pending on this session.
    pub fn respond_artifact_upload(
        &mut self,
        mut request: ArtifactUploadRequest,
        upload: ArtifactUpload,
        now: Instant,
    ) -> Result<(), UsageError> {
        self.last_now = now;
        let (filename, filepath) = request.disarm();
        if self.finished {
            return Err(UsageError::SessionFinished);
        }
        if self.pending_artifacts.remove(&request.id).is_none() {
            return Err(UsageError::UnknownArtifactRequest);
        }
        self.transmits
            .push_back(Transmit::Text(wire::encode_artifact_upload_response(
                &filename, &filepath, &upload,
            )));
        Ok(())
    }

    /// Declines an artifact upload request: nothing is sent, and the runtime will not upload
    /// the file.
    pub fn decline_artifact_upload(&mut self, mut request: ArtifactUploadRequest) {
        request.disarm();
        self.pending_artifacts.remove(&request.id);
    }

    /// Cancels the request in flight: sends `cancel_message` at once and fails the request with
    /// [`FailReason::Cancelled`]. The session keeps reading until the runtime's terminal for it
    /// arrives, holding back any next request until then.
    ///
    /// # Errors
    ///
    /// [`UsageError::NoRequestInFlight`] if there is nothing to cancel (e.g. its terminal
    /// already arrived), [`UsageError::SessionFinished`].
    pub fn cancel(&mut self, now: Instant) -> Result<(), UsageError> {
        self.last_now = now;
        if self.finished {
            return Err(UsageError::SessionFinished);
        }
        if let Some(q) = self.queued.take() {
            tracing::debug!(request = q.id.0, "cancelled before it was sent");
            self.fail_request(q.id, FailReason::Cancelled);
            return Ok(());
        }
        let Some(active) = self.active.take() else {
            return Err(UsageError::NoRequestInFlight);
        };
        tracing::debug!(request = active.id.0, "cancelling");
        self.abandon(active, FailReason::Cancelled, now);
        Ok(())
    }

    /// The adapter lost the connection of a resumable session and is re-establishing it
    /// (the repository's `docs/resume.md`): keepalive pauses, since the adapter's
    /// reconnections already find out whether the runtime is there, and a ping that waited for
    /// its pong is forgotten. The request's own time limits run on. Call
    /// [`resume_keepalive`](Self::resume_keepalive) once a new connection carries the session.
    pub fn pause_keepalive(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        self.timers.stop(Timer::KeepAlive);
        self.timers.stop(Timer::PongDeadline);
    }

    /// A new connection carries the session again: keepalive goes on from `now` (the next
    /// ping an interval from now).
    pub fn resume_keepalive(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        self.last_activity = now;
        self.timers.stop(Timer::PongDeadline);
        if let Some(interval) = self.config.keepalive_interval {
            self.timers.set_opt(Timer::KeepAlive, after(now, interval));
        }
    }

    /// Ends the session gracefully: sends `end_session_message`, keeps surfacing artifact
    /// upload requests, and finishes on `end_session_confirm_message`, the connection closing,
    /// or [`Config::end_session_timeout`].
    ///
    /// # Errors
    ///
    /// [`UsageError::RequestInFlight`] (cancel it or wait for it first),
    /// [`UsageError::SessionEnding`], [`UsageError::SessionFinished`].
    pub fn end_session(&mut self, now: Instant) -> Result<(), UsageError> {
        self.last_now = now;
        if self.finished {
            return Err(UsageError::SessionFinished);
        }
        if self.ending {
            return Err(UsageError::SessionEnding);
        }
        if self.request_in_flight().is_some() {
            return Err(UsageError::RequestInFlight);
        }
        self.ending = true;
        self.transmits
            .push_back(Transmit::Text(wire::encode_end_session()));
        self.timers.set_opt(
            Timer::EndSession,
            after(now, self.config.end_session_timeout),
        );
        Ok(())
    }

    // ----- poll_* -----

    /// The next output. Call until it returns [`Output::Timeout`] after every input and command.
    #[must_use]
    #[inline]
    pub fn poll_output(&mut self) -> Output {
        if let Some(t) = self.transmits.pop_front() {
            return Output::Transmit(t);
        }
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        Output::Timeout(self.poll_timeout())
    }

    /// When the session next wants [`Input::Timeout`]; an hour after the last input when no
    /// timer is set.
    #[inline]
    pub fn poll_timeout(&self) -> Instant {
        match self.timers.next() {
            Some((_, at)) => at,
            None => after(self.last_now, Duration::from_secs(3600)).unwrap_or(self.last_now),
        }
    }

    // ----- internals -----

    fn check_can_start(
        &self,
        artifacts_dirs: &[String],
        options: &RequestOptions,
    ) -> Result<(), UsageError> {
        if self.finished {
            return Err(UsageError::SessionFinished);
        }
        if self.ending {
            return Err(UsageError::SessionEnding);
        }
        if self.request_in_flight().is_some() {
            return Err(UsageError::RequestInFlight);
        }
        match (artifacts_dirs.is_empty(), options.artifact_uploader) {
            (false, false) => Err(UsageError::ArtifactDirsWithoutUploader),
            (true, true) => Err(UsageError::UploaderWithoutArtifactDirs),
            _ => Ok(()),
        }
    }

    fn start(
        &mut self,
        kind: RequestKind,
        frame: String,
        options: RequestOptions,
        now: Instant,
    ) -> RequestId {
        self.last_now = now;
        let id = RequestId(self.next_request);
        self.next_request = self.next_request.saturating_add(1);
        tracing::debug!(request = id.0, ?kind, "request started");
        if let Some(timeout) = options.timeout {
            self.timers.set_opt(Timer::Overall, after(now, timeout));
        }
        let queued = Queued {
            id,
            kind,
            frame,
            started: now,
            timeout: options.timeout,
            idle_timeout: options
                .idle_timeout
                .or(self.config.request_idle_timeout)
                .filter(|d| *d != Duration::MAX),
        };
        if self.drain.is_some() {
            tracing::debug!(
                request = id.0,
                "held back until the previous request drains"
            );
            self.queued = Some(queued);
        } else {
            self.send_queued(queued, now);
        }
        id
    }

    fn send_queued(&mut self, q: Queued, now: Instant) {
        self.transmits.push_back(Transmit::Text(q.frame));
        self.timers.set_opt(
            Timer::Idle,
            q.idle_timeout.and_then(|idle| after(now, idle)),
        );
        self.active = Some(Active {
            id: q.id,
            kind: q.kind,
            started: q.started,
            timeout: q.timeout,
            idle_timeout: q.idle_timeout,
            last_message: None,
            last_message_at: now,
            message_count: 0,
            pending_error: None,
            earlier_errors: Vec::new(),
        });
    }

    fn receive(&mut self, now: Instant, frame: Frame<'_>) {
        self.note_activity(now);
        self.handle_timeout(now);
        if !self.finished {
            self.handle_frame(now, frame);
        }
    }

    fn note_activity(&mut self, now: Instant) {
        self.last_now = now;
        self.last_activity = now;
        // Answering a ping: the next one is due an interval from now. Otherwise the keepalive
        // timer stays where it is and re-arms itself from `last_activity` when it fires.
        if self.timers.get(Timer::PongDeadline).is_some() {
            self.timers.stop(Timer::PongDeadline);
            if let Some(interval) = self.config.keepalive_interval {
                self.timers.set_opt(Timer::KeepAlive, after(now, interval));
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        if self.finished || !self.timers.any_expired(now) {
            return;
        }
        // Every timer, in the order they take precedence, through one exhaustive match: a new
        // timer does not compile until it is handled here.
        for timer in Timer::BY_PRIORITY {
            if self.finished {
                return;
            }
            if !self.timers.is_expired(timer, now) {
                continue;
            }
            match timer {
                Timer::PongDeadline => {
                    tracing::warn!("no answer to keepalive ping; the connection is dead");
                    self.finish(SessionEnd::KeepAliveTimeout);
                }
                Timer::EndSession => {
                    tracing::warn!("end-of-session handshake timed out");
                    self.finish(SessionEnd::EndSessionTimeout);
                }
                Timer::ErrorSettle => self.error_settled(now),
                Timer::Drain => {
                    tracing::warn!("an abandoned request never finished; ending the session");
                    self.finish(SessionEnd::Desynchronized);
                }
                Timer::Overall | Timer::Idle => self.request_timed_out(timer, now),
                Timer::KeepAlive => self.keepalive_due(now),
            }
        }
    }

    /// An `error_message` waited long enough for a follow-up: it is the terminal (or the
    /// abandoned request's drain is over).
    fn error_settled(&mut self, now: Instant) {
        self.timers.stop(Timer::ErrorSettle);
        if self.drain.is_some() {
            self.drain_done(now);
        } else if let Some(mut active) = self.active.take() {
            match active.pending_error.take() {
                Some(pending) => self.fail_with_runtime_error(active, pending),
                None => self.active = Some(active),
            }
        }
    }

    /// The overall or idle limit of the request passed (unless messages moved the idle one).
    fn request_timed_out(&mut self, timer: Timer, now: Instant) {
        if timer == Timer::Idle
            && let Some(active) = &self.active
            && let Some(idle) = active.idle_timeout
            && let Some(due) = after(active.last_message_at, idle)
            && due > now
        {
            // Messages arrived since the timer was set: not idle yet.
            self.timers.set(Timer::Idle, due);
            return;
        }
        self.timers.stop(timer);
        if let Some(q) = self.queued.take() {
            // Still held back behind a draining request: it never reached the runtime.
            let kind = TimeoutKind::Overall(
                q.timeout
                    .unwrap_or_else(|| now.saturating_duration_since(q.started)),
            );
            let diagnostics = Diagnostics {
                last_message: None,
                message_count: 0,
                phase: Phase::WaitingForFirstMessage,
                elapsed: now.saturating_duration_since(q.started),
            };
            self.fail_request(q.id, FailReason::Timeout { kind, diagnostics });
        } else if let Some(mut active) = self.active.take() {
            if let Some(pending) = active.pending_error.take() {
                self.fail_with_runtime_error(active, pending);
                return;
            }
            let elapsed = now.saturating_duration_since(active.started);
            let kind = match timer {
                Timer::Overall => TimeoutKind::Overall(active.timeout.unwrap_or(elapsed)),
                _ => TimeoutKind::Idle(active.idle_timeout.unwrap_or_default()),
            };
            let diagnostics = Diagnostics {
                last_message: active.last_message,
                message_count: active.message_count,
                phase: if active.message_count == 0 {
                    Phase::WaitingForFirstMessage
                } else {
                    Phase::ReceivingMessages
                },
                elapsed,
            };
            // The caller gets the timeout as the request's outcome: no warning of our own.
            tracing::debug!(request = active.id.0, ?kind, "request timed out");
            self.abandon(active, FailReason::Timeout { kind, diagnostics }, now);
        }
    }

    /// A keepalive ping is due, unless something arrived since the timer was set.
    fn keepalive_due(&mut self, now: Instant) {
        let due = self
            .config
            .keepalive_interval
            .and_then(|i| after(self.last_activity, i));
        if let Some(due) = due
            && due > now
        {
            self.timers.set(Timer::KeepAlive, due);
            return;
        }
        self.timers.stop(Timer::KeepAlive);
        self.transmits.push_back(Transmit::Ping);
        self.timers.set_opt(
            Timer::PongDeadline,
            after(now, self.config.keepalive_timeout),
        );
    }

    /// Fails the active request at once, tells the runtime to cancel it, and reads on until its
    /// terminal arrives.
    fn abandon(&mut self, mut active: Active, reason: FailReason, now: Instant) {
        self.transmits
            .push_back(Transmit::Text(wire::encode_cancel()));
        let settling = active.pending_error.take().is_some();
        // The drain owns the settle timer from here on: set it before completing, which
        // otherwise stops that timer.
        self.drain = Some(Drain { settling });
        self.fail_request(active.id, reason);
        if !settling {
            self.timers.stop(Timer::ErrorSettle);
        }
        self.timers
            .set_opt(Timer::Drain, after(now, self.config.drain_timeout));
    }

    /// The abandoned request reached its terminal: release a request held back behind it.
    fn drain_done(&mut self, now: Instant) {
        tracing::debug!("abandoned request drained");
        self.drain = None;
        self.timers.stop(Timer::Drain);
        self.timers.stop(Timer::ErrorSettle);
        if let Some(q) = self.queued.take() {
            self.send_queued(q, now);
        }
    }

    /// Fails the request with the runtime's error, keeping its earlier ones.
    fn fail_with_runtime_error(&mut self, mut active: Active, error: RuntimeError) {
        let earlier = std::mem::take(&mut active.earlier_errors);
        self.fail_request(active.id, FailReason::Runtime(error.with_earlier(earlier)));
    }

    fn fail_request(&mut self, id: RequestId, reason: FailReason) {
        self.stop_request_timers();
        self.events.push_back(Event::Failed {
            request: id,
            reason,
        });
    }

    fn stop_request_timers(&mut self) {
        self.timers.stop(Timer::Overall);
        self.timers.stop(Timer::Idle);
        if self.drain.is_none() {
            self.timers.stop(Timer::ErrorSettle);
        }
    }

    fn finish(&mut self, end: SessionEnd) {
        if self.finished {
            return;
        }
        let reason = || match end {
            SessionEnd::KeepAliveTimeout => FailReason::KeepAliveTimeout,
            SessionEnd::Desynchronized => FailReason::Desynchronized,
            _ => FailReason::TransportClosed,
        };
        if let Some(mut active) = self.active.take() {
            let r = match active.pending_error.take() {
                Some(error) => FailReason::Runtime(
                    error.with_earlier(std::mem::take(&mut active.earlier_errors)),
                ),
                None => reason(),
            };
            self.fail_request(active.id, r);
        }
        if let Some(q) = self.queued.take() {
            self.fail_request(q.id, reason());
        }
        self.drain = None;
        self.timers.stop_all();
        self.pending_artifacts.clear();
        self.finished = true;
        self.end = Some(end);
        tracing::debug!(?end, "session ended");
        self.events.push_back(Event::SessionEnded(end));
    }

    fn handle_frame(&mut self, now: Instant, frame: Frame<'_>) {
        let message = match wire::decode_runtime(frame, self.config.max_frame_size) {
            Ok(Decoded::Message(m)) => m,
            Ok(Decoded::Unknown(t)) => {
                tracing::warn!(message_type = %t, "skipping message of unknown type");
                return;
            }
            Err(err) => return self.handle_decode_error(now, frame, err),
        };
        let kind = message.kind();
        if let Some(active) = self.active.as_mut()
            && self.drain.is_none()
        {
            active.message_count += 1;
            active.last_message = Some(kind);
            active.last_message_at = now;
        }
        // Messages that belong to the session rather than a request.
        match message {
            RuntimeMessage::ArtifactUploadRequest { filename, filepath } => {
                self.settle_pending_error();
                return self.artifact_request(filename, filepath);
            }
            RuntimeMessage::EndSessionConfirm => return self.end_confirmed(),
            _ => {}
        }
        if self.drain.is_some() {
            return self.drain_message(&message, now);
        }
        let Some(active) = self.active.as_ref() else {
            if !matches!(message, RuntimeMessage::Heartbeat { .. }) {
                tracing::warn!(message_type = %kind, "message with no request in flight; ignored");
            }
            return;
        };
        let (request, request_kind) = (active.id, active.kind);
        if !matches!(message, RuntimeMessage::Error { .. }) {
            self.settle_pending_error();
        }
        match message {
            RuntimeMessage::Error { error, metadata } => {
                self.settle_pending_error();
                if let Some(active) = self.active.as_mut() {
                    active.pending_error = Some(RuntimeError::new(error, metadata));
                }
                self.timers
                    .set_opt(Timer::ErrorSettle, after(now, self.config.error_settle));
            }
            RuntimeMessage::Result { data, metadata } => {
                self.query_result(request_kind, kind, data, metadata);
            }
            RuntimeMessage::CommandExecutionResult { results } => {
                self.commands_result(request_kind, kind, results);
            }
            RuntimeMessage::CommandOutput {
                stream,
                text,
                command,
            } => self.command_output(request, &stream, text, &command),
            RuntimeMessage::Assistant { text_blocks } => {
                self.events.push_back(Event::AssistantMessage {
                    request,
                    text_blocks,
                });
            }
            RuntimeMessage::Heartbeat { phase, elapsed_ms } => {
                self.events.push_back(Event::Heartbeat {
                    request,
                    phase,
                    elapsed_ms,
                });
            }
            RuntimeMessage::ArtifactUploadRequest { .. } | RuntimeMessage::EndSessionConfirm => {}
        }
    }

    /// The runtime confirmed the end of the session (ignored unless it was asked).
    fn end_confirmed(&mut self) {
        if self.ending {
            self.finish(SessionEnd::Confirmed);
        } else {
            tracing::warn!("end_session_confirm_message without end_session; ignored");
        }
    }

    /// A message of the abandoned request being drained: only its terminal matters (an
    /// `error_message` may be one, once nothing follows it).
    fn drain_message(&mut self, message: &RuntimeMessage<'_>, now: Instant) {
        let Some(drain) = self.drain.as_mut() else {
            return;
        };
        match message {
            RuntimeMessage::Result { .. } | RuntimeMessage::CommandExecutionResult { .. } => {
                self.drain_done(now);
            }
            RuntimeMessage::Error { .. } => {
                drain.settling = true;
                self.timers
                    .set_opt(Timer::ErrorSettle, after(now, self.config.error_settle));
            }
            _ => {
                if drain.settling {
                    drain.settling = false;
                    self.timers.stop(Timer::ErrorSettle);
                }
            }
        }
    }

    /// A `result_message`: the query's terminal (or the wrong kind for a command batch).
    fn query_result(
        &mut self,
        request_kind: RequestKind,
        kind: MessageKind,
        data: WireResultData,
        metadata: serde_json::Value,
    ) {
        let Some(active) = self.active.take() else {
            return;
        };
        if request_kind != RequestKind::Query {
            return self.fail_request(active.id, FailReason::UnexpectedTerminal(kind));
        }
        self.stop_request_timers();
        let data = match data {
            WireResultData::Text { text } => ResultData::Text(text),
            WireResultData::StructuredOutput { structured_output } => {
                ResultData::StructuredOutput(structured_output)
            }
        };
        self.events.push_back(Event::Result {
            request: active.id,
            result: QueryResult { data, metadata },
        });
    }

    /// A `command_execution_result_message`: the batch's terminal (or the wrong kind for a
    /// query).
    fn commands_result(
        &mut self,
        request_kind: RequestKind,
        kind: MessageKind,
        results: Vec<wire::WireCommandResultItem>,
    ) {
        let Some(active) = self.active.take() else {
            return;
        };
        if request_kind != RequestKind::Commands {
            return self.fail_request(active.id, FailReason::UnexpectedTerminal(kind));
        }
        self.stop_request_timers();
        let results = results
            .into_iter()
            .map(|r| CommandResultItem {
                command: r.command,
                exit_code: r.exit_code,
                stdout: r.stdout,
            })
            .collect();
        self.events.push_back(Event::CommandResult {
            request: active.id,
            result: CommandExecutionResult { results },
        });
    }

    /// A chunk of command output: the hot path. The command's name is shared with the last
    /// chunk's when it is the same (it usually is).
    #[inline]
    fn command_output(
        &mut self,
        request: RequestId,
        stream: &str,
        text: Cow<'_, str>,
        command: &str,
    ) {
        let stream = match stream {
            "stderr" => OutputStream::Stderr,
            _ => OutputStream::Stdout,
        };
        let command = match &self.last_command {
            Some(last) if **last == *command => Arc::clone(last),
            _ => {
                let shared: Arc<str> = Arc::from(command);
                self.last_command = Some(Arc::clone(&shared));
                shared
            }
        };
        self.events.push_back(Event::CommandOutput(CommandOutput {
            request,
            stream,
            text: text.into_owned(),
            command,
        }));
    }

    /// More of the request arrived after an `error_message`: that error was not the terminal.
    fn settle_pending_error(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        if let Some(error) = active.pending_error.take() {
            let request = active.id;
            self.timers.stop(Timer::ErrorSettle);
            if active.earlier_errors.len() < MAX_EARLIER_ERRORS {
                active.earlier_errors.push(error.clone());
            }
            self.events
                .push_back(Event::RuntimeError { request, error });
        }
    }

    fn artifact_request(&mut self, filename: String, filepath: String) {
        if self.pending_artifacts.len() >= self.config.max_pending_artifact_requests {
            tracing::warn!(
                limit = self.config.max_pending_artifact_requests,
                "too many unanswered artifact upload requests; dropping one"
            );
            return;
        }
        let id = self.next_artifact;
        self.next_artifact = self.next_artifact.saturating_add(1);
        self.pending_artifacts
            .insert(id, (filename.clone(), filepath.clone()));
        self.events
            .push_back(Event::ArtifactUploadRequest(ArtifactUploadRequest {
                id,
                request: self.active.as_ref().map(|a| a.id),
                filename,
                filepath,
                answered: false,
            }));
    }

    fn handle_decode_error(&mut self, now: Instant, frame: Frame<'_>, err: DecodeError) {
        let claimed = match &err {
            DecodeError::TooLarge { .. } => None,
            _ => wire::peek_runtime_kind(frame),
        };
        let terminal = matches!(
            claimed,
            Some(MessageKind::Result | MessageKind::Error | MessageKind::CommandExecutionResult)
        );
        let too_large = matches!(err, DecodeError::TooLarge { .. });
        tracing::warn!(error = %err, ?claimed, "undecodable frame from the runtime");
        if self.drain.is_some() {
            if terminal {
                self.drain_done(now);
            }
            return;
        }
        if !(terminal || too_large) {
            return;
        }
        if too_large {
            let Some(mut active) = self.active.take() else {
                return;
            };
            // It may have been the terminal or not: fail the request and keep reading until a
            // terminal shows up, so that nothing leaks into the next request.
            active.pending_error = None;
            self.abandon(active, FailReason::Protocol(err), now);
        } else {
            // A malformed terminal follows an error_message: that one was not the terminal.
            self.settle_pending_error();
            if let Some(active) = self.active.take() {
                self.fail_request(active.id, FailReason::Protocol(err));
            }
        }
    }
}
