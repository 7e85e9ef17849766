//! The request layer every client shares, without I/O: which request the caller is in, the
//! cleanup after a call that was dropped mid-request, acting on an abort, routing the core's
//! events to the request they belong to, the artifact uploader and its answers, and the
//! end-of-session and one-shot close rules.
//!
//! A client adapter owns the socket and the callbacks. It feeds what it reads into
//! [`Requests::session`] (the sans-IO [`Session`]), moves what [`Requests::drain`] gives it to
//! the socket, and asks [`Requests::route`] what each event means for the call it runs. The
//! async and blocking clients differ only in how they wait and how they run a callback.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use runtimeuse_proto::{
    ArtifactUpload, ArtifactUploadRequest, CommandBatch, CommandExecutionResult, Config, Event,
    Invocation, MessageKind, Output, QueryResult, RequestEvent, RequestId, RequestOptions, Routed,
    Session, SessionEnd, SessionState, Transmit,
};

use crate::Error;
use crate::close::close_wait;

/// A client session's request bookkeeping over the sans-IO core. `U` is the adapter's
/// artifact uploader (a callback); the last one given answers requests that arrive between
/// calls and during the end of the session.
pub struct Requests<U> {
    session: Session,
    /// Events taken from the core but not handed out yet (kept here, not in a future, so that
    /// dropping a call loses none).
    events: VecDeque<Event>,
    deadline: Instant,
    /// The request of the call in progress; still set after its call was dropped, until the
    /// next call cancels it.
    current: Option<RequestId>,
    uploader: Option<U>,
}

impl<U> std::fmt::Debug for Requests<U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requests")
            .field("session", &self.session)
            .field("queued_events", &self.events.len())
            .field("current", &self.current)
            .field("uploader", &self.uploader.is_some())
            .finish()
    }
}

/// What an event means for the call running request `id` ([`Requests::route`]).
pub enum Step<U> {
    /// Hand this to the caller (its terminal ends the call).
    Item(RequestEvent),
    /// Run the uploader for this artifact request, then give its answer to
    /// [`Requests::answer`].
    Upload(ArtifactUploadRequest, U),
    /// The call failed.
    Failed(Error),
    /// Nothing for this call: read on.
    Skip,
}

/// What the end of the session needs next ([`Requests::end`], [`Requests::end_on`]).
pub enum Ending<U> {
    /// Read the next event and give it to [`Requests::end_on`].
    Read,
    /// Run the uploader for this late artifact request, answer it, then read on.
    Upload(ArtifactUploadRequest, U),
    /// The session ended so.
    Done(SessionEnd),
}

impl<U> std::fmt::Debug for Step<U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Item(item) => f.debug_tuple("Item").field(item).finish(),
            Self::Upload(req, _) => f.debug_tuple("Upload").field(req).finish_non_exhaustive(),
            Self::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
            Self::Skip => f.write_str("Skip"),
        }
    }
}

impl<U> std::fmt::Debug for Ending<U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Read => f.write_str("Read"),
            Self::Upload(req, _) => f.debug_tuple("Upload").field(req).finish_non_exhaustive(),
            Self::Done(end) => f.debug_tuple("Done").field(end).finish(),
        }
    }
}

/// What an event read between calls asks for ([`Requests::between_calls`]).
pub enum Between<U> {
    /// Nothing: read on.
    Nothing,
    /// Run the uploader for this late artifact request and answer it.
    Upload(ArtifactUploadRequest, U),
    /// The session ended.
    Ended,
}

impl<U> std::fmt::Debug for Between<U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Nothing => f.write_str("Nothing"),
            Self::Upload(req, _) => f.debug_tuple("Upload").field(req).finish_non_exhaustive(),
            Self::Ended => f.write_str("Ended"),
        }
    }
}

/// How a one-shot call closes its connection ([`close_after_one_shot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OneShotClose {
    /// With the end-of-session handshake: artifacts written at the very end still upload.
    Graceful,
    /// At once, waiting at most this long for the peer's close frame.
    Immediate(Duration),
}

/// The one-shot close rule: gracefully after a success whose request watched artifact
/// directories, at once otherwise (waiting for the peer's close only after a success).
pub fn close_after_one_shot(watched_artifacts: bool, ok: bool) -> OneShotClose {
    if watched_artifacts && ok {
        OneShotClose::Graceful
    } else {
        OneShotClose::Immediate(close_wait(ok))
    }
}

impl<U: Clone> Requests<U> {
    /// A fresh session with `config`, at `now`.
    pub fn new(config: Config, now: Instant) -> Self {
        Self {
            session: Session::new(config, now),
            events: VecDeque::new(),
            deadline: now,
            current: None,
            uploader: None,
        }
    }

    // ----- getters -----

    /// The sans-IO session, to feed it what the socket read.
    pub fn session(&mut self) -> &mut Session {
        &mut self.session
    }

    /// When the session wants [`Input::Timeout`](runtimeuse_proto::Input::Timeout), as of the
    /// last [`drain`](Self::drain).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the session finished.
    pub fn is_finished(&self) -> bool {
        self.session.is_finished()
    }

    /// Whether a request is in flight (or held back behind a cancelled one).
    pub fn is_busy(&self) -> bool {
        self.session.request_in_flight().is_some()
    }

    // ----- starting calls -----

    /// Starts a query for a call: the request of a dropped call is cancelled first, and
    /// `uploader`, when given, becomes the session's.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] when the core refuses it; nothing is sent then.
    pub fn start_query(
        &mut self,
        invocation: Invocation,
        options: RequestOptions,
        uploader: Option<U>,
        now: Instant,
    ) -> Result<RequestId, Error> {
        self.clean_up_dropped_call(now);
        let id = self.session.invoke(invocation, options, now)?;
        Ok(self.begin(id, uploader))
    }

    /// Starts a command batch for a call, as [`start_query`](Self::start_query).
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] when the core refuses it (an empty batch, say).
    pub fn start_commands(
        &mut self,
        batch: CommandBatch,
        options: RequestOptions,
        uploader: Option<U>,
        now: Instant,
    ) -> Result<RequestId, Error> {
        self.clean_up_dropped_call(now);
        let id = self.session.execute_commands(batch, options, now)?;
        Ok(self.begin(id, uploader))
    }

    fn begin(&mut self, id: RequestId, uploader: Option<U>) -> RequestId {
        if uploader.is_some() {
            self.uploader = uploader;
        }
        self.current = Some(id);
        id
    }

    /// A previous call was dropped mid-request: cancel its request. The core holds the next
    /// request back until the cancelled one's terminal has been read.
    fn clean_up_dropped_call(&mut self, now: Instant) {
        if let Some(id) = self.current.take()
            && self.session.request_in_flight() == Some(id)
        {
            tracing::debug!(
                request = id.as_u64(),
                "cancelling the request of a dropped call"
            );
            let _ = self.session.cancel(now);
        }
    }

    // ----- driving -----

    /// Moves the core's output: frames to `send`, events to the queue. Returns the next event
    /// to hand out (the queue's first, or the only new one, which skips the queue).
    pub fn drain(&mut self, mut send: impl FnMut(Transmit)) -> Option<Event> {
        let mut next = None;
        loop {
            match self.session.poll_output() {
                Output::Transmit(t) => send(t),
                Output::Event(e) if next.is_none() && self.events.is_empty() => next = Some(e),
                Output::Event(e) => self.events.push_back(e),
                Output::Timeout(at) => {
                    self.deadline = at;
                    return next.or_else(|| self.events.pop_front());
                }
            }
        }
    }

    /// After one frame was fed in with nothing queued: its event at once if it made exactly
    /// that (the common case), else `None` (then [`drain`](Self::drain)).
    #[inline]
    pub fn quick_event(&mut self, send: impl FnOnce(Transmit)) -> Option<Event> {
        if !self.events.is_empty() {
            return None;
        }
        match self.session.poll_output() {
            Output::Event(e) => Some(e),
            Output::Transmit(t) => {
                send(t);
                None
            }
            Output::Timeout(at) => {
                self.deadline = at;
                None
            }
        }
    }

    /// The session's state for a resume token: the frames due go to `send` first. Refused
    /// while events of frames already read wait to be handed out (the token would count
    /// those frames as processed; read the next event first), and while the session ends.
    ///
    /// # Errors
    ///
    /// [`Error::NotResumable`].
    pub fn export(
        &mut self,
        send: impl FnMut(Transmit),
        now: Instant,
    ) -> Result<SessionState, Error> {
        if let Some(event) = self.drain(send) {
            self.unread(event);
            return Err(Error::NotResumable(
                "events of frames already read wait to be handed out; read the next one first",
            ));
        }
        self.session
            .export(now)
            .map_err(|_| Error::NotResumable("the session is ending"))
    }

    /// The request layer of a session taken over from a resume token's `state`: the request
    /// in flight is the current call's.
    pub fn import(config: Config, state: SessionState, now: Instant) -> Self {
        let current = state.request();
        Self {
            session: Session::import(config, state, now),
            events: VecDeque::new(),
            deadline: now,
            current,
            uploader: None,
        }
    }

    /// The request in flight of the current call (or of a session taken over), if any.
    pub fn current(&self) -> Option<RequestId> {
        self.current
            .filter(|id| self.session.request_in_flight() == Some(*id))
    }

    /// Puts an event back at the front of the queue.
    pub fn unread(&mut self, event: Event) {
        self.events.push_front(event);
    }

    /// Acts on an abort: cancels the request in flight, if any.
    pub fn abort(&mut self, now: Instant) {
        if self.is_busy() {
            let _ = self.session.cancel(now);
        }
    }

    /// What `event` means for the call running request `id`. Artifact requests go to
    /// `uploader`, else the session's last one; without either, the caller gets them.
    pub fn route(&mut self, event: Event, id: RequestId, uploader: Option<&U>) -> Step<U> {
        match event.route(id) {
            Routed::Item(RequestEvent::ArtifactUploadRequest(req)) => {
                match uploader.or(self.uploader.as_ref()) {
                    Some(u) => Step::Upload(req, u.clone()),
                    None => Step::Item(RequestEvent::ArtifactUploadRequest(req)),
                }
            }
            Routed::Item(item) => {
                if item.is_terminal() {
                    self.current = None;
                }
                Step::Item(item)
            }
            Routed::Failed(reason) => {
                self.current = None;
                Step::Failed(reason.into())
            }
            Routed::SessionEnded(_) => Step::Failed(Error::ConnectionClosed),
            _ => Step::Skip,
        }
    }

    /// Gives the uploader's answer to an artifact request: the upload, or `None` (it timed out
    /// or there was none), which declines it.
    pub fn answer(
        &mut self,
        req: ArtifactUploadRequest,
        upload: Option<ArtifactUpload>,
        now: Instant,
    ) {
        match upload {
            Some(upload) => {
                if let Err(e) = self.session.respond_artifact_upload(req, upload, now) {
                    tracing::warn!(error = %e, "could not answer an artifact upload request");
                }
            }
            None => {
                tracing::warn!(
                    file = req.filename(),
                    "no artifact upload for this file; the runtime will not upload it"
                );
                self.session.decline_artifact_upload(req);
            }
        }
    }

    /// Answers an artifact request handed to the caller.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] if the request is not pending on this session.
    pub fn respond(
        &mut self,
        req: ArtifactUploadRequest,
        upload: ArtifactUpload,
        now: Instant,
    ) -> Result<(), Error> {
        self.session.respond_artifact_upload(req, upload, now)?;
        Ok(())
    }

    /// Declines an artifact request: the runtime is told no upload will happen.
    pub fn decline(&mut self, req: ArtifactUploadRequest) {
        self.session.decline_artifact_upload(req);
    }

    /// A callback of request `id`'s call overran its time `limit`: the request is cancelled.
    /// The call's error.
    pub fn callback_timed_out(
        &mut self,
        id: RequestId,
        callback: &'static str,
        limit: Duration,
        now: Instant,
    ) -> Error {
        tracing::warn!(
            callback,
            ?limit,
            "callback timed out; cancelling the request"
        );
        if self.session.request_in_flight() == Some(id) {
            let _ = self.session.cancel(now);
        }
        self.current = None;
        Error::CallbackTimeout { callback, limit }
    }

    // ----- between requests -----

    /// What `event`, read while no call runs, asks for: a late artifact request goes to the
    /// session's last uploader (or is declined); the end of the session ends the wait.
    pub fn between_calls(&mut self, event: Event) -> Between<U> {
        match event {
            Event::SessionEnded(_) => Between::Ended,
            Event::ArtifactUploadRequest(req) => match self.uploader.clone() {
                Some(u) => Between::Upload(req, u),
                None => {
                    self.session.decline_artifact_upload(req);
                    Between::Nothing
                }
            },
            _ => Between::Nothing,
        }
    }

    // ----- ending -----

    /// Starts ending the session gracefully: a request still running (a dropped call's) is
    /// cancelled and read to its end first, then `end_session_message` goes out.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] when the core refuses to end (it cannot, once it may).
    pub fn end(&mut self, now: Instant) -> Result<Ending<U>, Error> {
        self.clean_up_dropped_call(now);
        self.end_step(now)
    }

    /// The next step of the end after `event`.
    ///
    /// # Errors
    ///
    /// As [`end`](Self::end).
    pub fn end_on(&mut self, event: Event, now: Instant) -> Result<Ending<U>, Error> {
        match event {
            Event::SessionEnded(end) => {
                tracing::debug!(?end, "session ended");
                Ok(Ending::Done(end))
            }
            Event::ArtifactUploadRequest(req) => match self.uploader.clone() {
                Some(u) => Ok(Ending::Upload(req, u)),
                None => {
                    self.session.decline_artifact_upload(req);
                    self.end_step(now)
                }
            },
            _ => self.end_step(now),
        }
    }

    fn end_step(&mut self, now: Instant) -> Result<Ending<U>, Error> {
        if let Some(end) = self.session.end() {
            return Ok(Ending::Done(end));
        }
        if self.is_busy() {
            // A dropped call's request: cancelled, it drains while the end goes out.
            let _ = self.session.cancel(now);
        }
        if !self.session.is_ending() && !self.is_busy() {
            self.session.end_session(now)?;
        }
        Ok(Ending::Read)
    }
}

/// A query's terminal item as its call returns it.
///
/// # Errors
///
/// [`Error::UnexpectedTerminal`] for a command result (the runtime answered the wrong kind).
pub fn query_result(item: RequestEvent) -> Result<QueryResult, Error> {
    match item {
        RequestEvent::Result(r) => Ok(r),
        _ => Err(Error::UnexpectedTerminal(
            MessageKind::CommandExecutionResult,
        )),
    }
}

/// A command batch's terminal item as its call returns it.
///
/// # Errors
///
/// [`Error::UnexpectedTerminal`] for a query result.
pub fn commands_result(item: RequestEvent) -> Result<CommandExecutionResult, Error> {
    match item {
        RequestEvent::CommandResult(r) => Ok(r),
        _ => Err(Error::UnexpectedTerminal(MessageKind::Result)),
    }
}

/// Whether `item` ends a request's event stream.
pub fn ends_stream(item: &Option<Result<RequestEvent, Error>>) -> bool {
    matches!(
        item,
        None | Some(Err(_)) | Some(Ok(RequestEvent::Result(_) | RequestEvent::CommandResult(_)))
    )
}
