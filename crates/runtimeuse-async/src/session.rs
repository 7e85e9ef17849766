//! A persistent session: sequential requests over one connection.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::Stream;
use runtimeuse_client_core::requests::{
    self, Between, Ending, OneShotClose, Requests, Step, close_after_one_shot,
};
use runtimeuse_proto as proto;
use runtimeuse_proto::{
    ArtifactUpload, ArtifactUploadRequest, CommandExecutionResult, Event, Input, QueryResult,
    RequestEvent, RequestId, SessionEnd, Transmit,
};
use tracing::Instrument;

use crate::backend::{Backend, timeout};
use crate::{AbortHandle, Error};
use runtimeuse_client_core::close::{CLOSE_AFTER_FAILURE, close_wait};

use crate::ClientSettings;
use crate::conn::{Conn, Incoming};
use crate::options::{BoxFuture, ExecuteCommandsOptions, QueryOptions};
use crate::reconnect::Resuming;
use runtimeuse_client_core::callbacks::{AsyncCallbacks as Callbacks, AsyncUploader as UploaderFn};
use runtimeuse_client_core::resume::Resumption;
use std::sync::Arc;

/// A persistent session over one connection: sequential queries and command batches, then a
/// graceful [`close`](Self::close).
///
/// `B` is the async runtime ([`Backend`]); `runtimeuse-tokio` and `runtimeuse-async-std` name
/// this type `Session` with theirs filled in.
///
/// Every `async fn` here is cancel safe in this sense: dropping its future (for instance in
/// `select!` or a timeout) leaves the session usable. The abandoned request
/// is cancelled on the wire before the next call starts, and its remaining messages are read
/// and dropped, never delivered to the next request.
pub struct Session<B: Backend> {
    conn: Conn<B::Socket, B>,
    /// The request bookkeeping every client shares (the core inside it).
    requests: Requests<UploaderFn>,
    abort: AbortHandle,
    /// An artifact uploader's answer being computed (kept here, not in a future, so that
    /// dropping a call does not lose it).
    uploading: Option<(BoxFuture<Option<ArtifactUpload>>, ArtifactUploadRequest)>,
    /// The current call's time limit of the artifact uploader.
    upload_timeout: Option<Duration>,
    /// The span of the request in flight.
    span: tracing::Span,
    /// A clock reading shared by frames read back to back, and how many used it.
    clock: Option<(std::time::Instant, u32)>,
    /// The client side of a resumable session, when the runtime granted one.
    resume: Option<Box<Resuming<B>>>,
    /// While reconnecting: the timer of the session's deadline (the socket's is gone).
    reconnect_timer: Option<B::Timer>,
}

/// How many back-to-back frames may share one clock reading.
const CLOCK_REUSE: u32 = 32;

impl<B: Backend> fmt::Debug for Session<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("requests", &self.requests)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Session<B> {
    /// A session over a connected WebSocket (what an adapter's `Client::session` does after
    /// connecting).
    pub fn new(socket: B::Socket, config: proto::Config) -> Self {
        let now = B::now();
        Self {
            conn: Conn::new(socket),
            requests: Requests::new(config, now),
            abort: AbortHandle::default(),
            uploading: None,
            upload_timeout: None,
            span: tracing::Span::none(),
            clock: None,
            resume: None,
            reconnect_timer: None,
        }
    }

    /// Makes this session resumable, as the runtime granted at the handshake.
    pub(crate) fn make_resumable(&mut self, granted: Resumption, settings: Arc<ClientSettings>) {
        self.resume = Some(Box::new(Resuming::new(granted, settings)));
    }

    /// A session taken over from a resume token ([`Client::resume`](crate::Client::resume)),
    /// on a socket the runtime resumed it on after processing `runtime_received` of the
    /// client's frames.
    pub(crate) fn take_over(
        socket: B::Socket,
        settings: Arc<ClientSettings>,
        mut resumption: Resumption,
        state: proto::SessionState,
        runtime_received: u64,
    ) -> Result<Self, Error> {
        let now = B::now();
        let frames = (resumption.resumed(runtime_received, now)).map_err(Error::ResumeRefused)?;
        let mut conn = Conn::new(socket);
        for frame in frames {
            conn.queue_message(tungstenite::Message::Text(frame.into()));
        }
        Ok(Self {
            conn,
            requests: Requests::import(settings.session.clone(), state, now),
            abort: AbortHandle::default(),
            uploading: None,
            upload_timeout: None,
            span: tracing::Span::none(),
            clock: None,
            resume: Some(Box::new(Resuming::new(resumption, settings))),
            reconnect_timer: None,
        })
    }

    /// A [`ResumeToken`](crate::ResumeToken) of this session as it stands: what another
    /// process needs to take it over with [`Client::resume`](crate::Client::resume), the
    /// request in flight included. Store it (serde) where that process finds it; taking a
    /// token pins the runtime's replay at its count, so take a new one each time you store
    /// one (see [`ResumeToken`](crate::ResumeToken)). Frames the session sends meanwhile are
    /// in the token too, and sent again by its taker if the runtime never processed them.
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
        let (conn, resume) = (&mut self.conn, &mut self.resume);
        let state = self.requests.export(|t| send(conn, resume, t), B::now())?;
        let r = (self.resume.as_mut()).ok_or(Error::NotResumable("the session was given up"))?;
        Ok(r.token(state))
    }

    /// The events of the request in flight, if any, as a [`Stream`]: for a session taken
    /// over with [`Client::resume`](crate::Client::resume), the rest of the request that was
    /// in flight when its token was taken (artifact upload requests come out as items, to
    /// answer with [`RequestEvents::respond_artifact_upload`]).
    pub fn request_events(&mut self) -> Option<RequestEvents<'_, B>> {
        let id = self.requests.current()?;
        Some(RequestEvents::new(self, id, None))
    }

    /// Whether the runtime granted resumption to this session (see
    /// [`ClientBuilder::resume`](crate::ClientBuilder::resume)).
    pub fn is_resumable(&self) -> bool {
        self.resume.is_some()
    }

    /// A handle that cancels the request in flight from anywhere.
    pub fn abort_handle(&self) -> AbortHandle {
        self.abort.clone()
    }

    /// Cancels the request in flight (the same as [`AbortHandle::abort`]).
    pub fn abort(&self) {
        self.abort.abort();
    }

    /// The underlying WebSocket stream (for its peer address and the like).
    pub fn websocket(&self) -> &B::Socket {
        self.conn.get_ref()
    }

    /// Waits while no request runs, keeping the connection alive (keepalive pings; late
    /// artifact requests answered with the last uploader given), until the connection ends;
    /// returns why. For a program that waits for its next request (user input, say) and wants
    /// to know at once when the runtime goes away. Cancel safe: drop it to start the next
    /// request.
    pub async fn closed(&mut self) -> Error {
        loop {
            let event = match self.next_event().await {
                Ok(event) => event,
                Err(e) => return e,
            };
            match self.requests.between_calls(event) {
                Between::Nothing => {}
                Between::Upload(req, uploader) => {
                    self.start_upload(&uploader, req);
                    std::future::poll_fn(|cx| self.poll_upload(cx)).await;
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
    pub async fn query(
        &mut self,
        prompt: impl Into<String>,
        options: QueryOptions,
    ) -> Result<QueryResult, Error> {
        let callbacks = options.callbacks().clone();
        let id = self.start_query(prompt.into(), options)?;
        requests::query_result(self.run_with_callbacks(id, &callbacks).await?)
    }

    /// Runs a batch of shell commands and returns their results.
    ///
    /// # Errors
    ///
    /// As [`query`](Self::query); also [`Error::Usage`] for an empty batch.
    pub async fn execute_commands<I, C>(
        &mut self,
        commands: I,
        options: ExecuteCommandsOptions,
    ) -> Result<CommandExecutionResult, Error>
    where
        I: IntoIterator<Item = C>,
        C: Into<proto::Command>,
    {
        let callbacks = options.callbacks().clone();
        let id = self.start_commands(commands, options)?;
        requests::commands_result(self.run_with_callbacks(id, &callbacks).await?)
    }

    /// Starts a query and returns its events as a [`Stream`]; the last item is the result.
    /// Callbacks in the options are not called (except the artifact uploader, when given).
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] if the options are invalid; nothing is sent then.
    pub fn query_events(
        &mut self,
        prompt: impl Into<String>,
        options: QueryOptions,
    ) -> Result<RequestEvents<'_, B>, Error> {
        let uploader = options.callbacks().uploader().cloned();
        let id = self.start_query(prompt.into(), options)?;
        Ok(RequestEvents::new(self, id, uploader))
    }

    /// Starts a command batch and returns its events as a [`Stream`].
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] if the options are invalid; nothing is sent then.
    pub fn execute_commands_events<I, C>(
        &mut self,
        commands: I,
        options: ExecuteCommandsOptions,
    ) -> Result<RequestEvents<'_, B>, Error>
    where
        I: IntoIterator<Item = C>,
        C: Into<proto::Command>,
    {
        let uploader = options.callbacks().uploader().cloned();
        let id = self.start_commands(commands, options)?;
        Ok(RequestEvents::new(self, id, uploader))
    }

    /// Ends the session gracefully: sends `end_session_message`, answers late artifact
    /// requests with the last uploader given, waits for the runtime's confirmation (at most
    /// [`Config::end_session_timeout`](runtimeuse_proto::Config)), and closes the connection
    /// with code 1000. Returns how the session ended: [`SessionEnd::Confirmed`] when the
    /// runtime confirmed the end, else the deadline passing or the connection closing first.
    ///
    /// # Errors
    ///
    /// [`Error::WebSocket`] if the connection fails on the way; the connection is closed
    /// anyway.
    pub async fn close(mut self) -> Result<SessionEnd, Error> {
        let result = self.end_gracefully().await;
        self.conn.close(close_wait(result.is_ok())).await;
        result
    }

    /// Closes the connection at once, without the end-of-session handshake (code 1000, at
    /// most 100 ms): for a session whose runtime misbehaved, or when nothing is owed. The
    /// runtime stops what still runs for it.
    pub async fn disconnect(mut self) {
        self.conn.close(CLOSE_AFTER_FAILURE).await;
    }

    /// Runs one query, then closes: with the end-of-session handshake when the options name
    /// artifacts directories (so that artifacts written at the very end are still uploaded),
    /// at once otherwise. The adapters' one-shot `Client::query` is this after connecting.
    ///
    /// # Errors
    ///
    /// As [`query`](Self::query).
    pub async fn query_once(
        mut self,
        prompt: impl Into<String>,
        options: QueryOptions,
    ) -> Result<QueryResult, Error> {
        let watched = options.watches_artifacts();
        self.adopt_abort(options.abort()).await?;
        // Each step boxed: a one-shot call's future otherwise holds all their states inline
        // (14 KB) for as long as it runs.
        let result = Box::pin(self.query(prompt, options)).await;
        Box::pin(self.finish(close_after_one_shot(watched, result.is_ok()))).await;
        result
    }

    /// Runs one command batch, then closes, as [`query_once`](Self::query_once).
    ///
    /// # Errors
    ///
    /// As [`execute_commands`](Self::execute_commands).
    pub async fn execute_commands_once<I, C>(
        mut self,
        commands: I,
        options: ExecuteCommandsOptions,
    ) -> Result<CommandExecutionResult, Error>
    where
        I: IntoIterator<Item = C>,
        C: Into<proto::Command>,
    {
        let watched = options.watches_artifacts();
        self.adopt_abort(options.abort()).await?;
        let result = Box::pin(self.execute_commands(commands, options)).await;
        Box::pin(self.finish(close_after_one_shot(watched, result.is_ok()))).await;
        result
    }

    /// Takes a one-shot call's abort handle as the session's; a handle aborted already closes
    /// the connection and fails the call at once.
    async fn adopt_abort(&mut self, handle: Option<&AbortHandle>) -> Result<(), Error> {
        let Some(handle) = handle else {
            return Ok(());
        };
        if handle.is_aborted() {
            self.conn.close(CLOSE_AFTER_FAILURE).await;
            return Err(Error::Cancelled);
        }
        self.abort = handle.clone();
        Ok(())
    }

    /// Closes after a one-shot call, as [`close_after_one_shot`] says.
    async fn finish(mut self, close: OneShotClose) {
        match close {
            OneShotClose::Graceful => {
                if let Err(e) = self.close().await {
                    tracing::debug!(error = %e, "graceful close failed");
                }
            }
            OneShotClose::Immediate(wait) => self.conn.close(wait).await,
        }
    }

    async fn end_gracefully(&mut self) -> Result<SessionEnd, Error> {
        let mut step = self.requests.end(B::now())?;
        loop {
            match step {
                Ending::Done(end) => return Ok(end),
                Ending::Upload(req, uploader) => {
                    self.start_upload(&uploader, req);
                    std::future::poll_fn(|cx| self.poll_upload(cx)).await;
                }
                Ending::Read => {}
            }
            let event = self.next_event().await?;
            step = self.requests.end_on(event, B::now())?;
        }
    }

    // ----- internals -----

    fn start_query(&mut self, prompt: String, options: QueryOptions) -> Result<RequestId, Error> {
        let parts = options.into_parts();
        let mut invocation = parts.wire;
        invocation.user_prompt = prompt;
        let span_id = invocation.source_id.clone();
        let uploader = parts.callbacks.uploader().cloned();
        let id = self
            .requests
            .start_query(invocation, parts.request, uploader, B::now())?;
        self.begin(id, &parts.callbacks, "query", span_id);
        Ok(id)
    }

    fn start_commands<I, C>(
        &mut self,
        commands: I,
        options: ExecuteCommandsOptions,
    ) -> Result<RequestId, Error>
    where
        I: IntoIterator<Item = C>,
        C: Into<proto::Command>,
    {
        let parts = options.into_parts();
        let mut batch = parts.wire;
        batch.commands = commands.into_iter().map(Into::into).collect();
        let span_id = batch.source_id.clone();
        let uploader = parts.callbacks.uploader().cloned();
        let id = self
            .requests
            .start_commands(batch, parts.request, uploader, B::now())?;
        self.begin(id, &parts.callbacks, "execute_commands", span_id);
        Ok(id)
    }

    fn begin(
        &mut self,
        id: RequestId,
        callbacks: &Callbacks,
        kind: &str,
        source_id: Option<String>,
    ) {
        // No secrets in fields: the id, the kind and the caller's source id only.
        self.span = tracing::debug_span!(
            "request",
            id = id.as_u64(),
            kind,
            source_id = source_id.as_deref()
        );
        tracing::debug!(parent: &self.span, "request started");
        self.upload_timeout = callbacks.upload_limit();
        // An abort requested while nothing was in flight does not apply to this request.
        self.abort.take();
    }

    /// Runs the request to its end, calling the callbacks; returns the terminal item.
    async fn run_with_callbacks(
        &mut self,
        id: RequestId,
        callbacks: &Callbacks,
    ) -> Result<RequestEvent, Error> {
        let span = self.span.clone();
        // This request's callback slots: one future allocation each, reused per message.
        let mut on_assistant_message = callbacks.assistant_slot();
        let mut on_command_output = callbacks.output_slot();
        async {
            loop {
                let item = match self.next_item(id, callbacks.uploader()).await {
                    Some(item) => item?,
                    None => return Err(Error::ConnectionClosed),
                };
                let limit = callbacks.callback_limit();
                match item {
                    RequestEvent::AssistantMessage(blocks) => {
                        if let Some(slot) = &mut on_assistant_message {
                            slot.start(blocks);
                            let done = std::future::poll_fn(|cx| slot.poll_done(cx));
                            let limit = callbacks.assistant_limit();
                            self.call(id, "on_assistant_message", limit, done).await?;
                        }
                    }
                    RequestEvent::CommandOutput(output) => {
                        if let Some(slot) = &mut on_command_output {
                            slot.start(output);
                            let done = std::future::poll_fn(|cx| slot.poll_done(cx));
                            self.call(id, "on_command_output", limit, done).await?;
                        }
                    }
                    RequestEvent::ArtifactUploadRequest(req) => {
                        // No uploader for this call: decline (the runtime will not upload it).
                        self.requests.decline(req);
                    }
                    item if item.is_terminal() => return Ok(item),
                    // Heartbeats, non-terminal errors: nothing to call.
                    _ => {}
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Awaits a callback's future, within its time limit. Cancel safe: the session state is
    /// untouched while it runs.
    async fn call(
        &mut self,
        id: RequestId,
        callback: &'static str,
        limit: Option<Duration>,
        fut: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let Some(limit) = limit else {
            fut.await;
            return Ok(());
        };
        if timeout::<B, _>(limit, fut).await.is_some() {
            return Ok(());
        }
        Err(self
            .requests
            .callback_timed_out(id, callback, limit, B::now()))
    }

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
            if let Some((attempts, received)) = self
                .resume
                .as_mut()
                .and_then(|r| r.state.take_reconnected())
            {
                return Poll::Ready(Some(Ok(RequestEvent::Reconnected { attempts, received })));
            }
            ready!(self.poll_upload(cx));
            let event = match ready!(self.poll_event(cx)) {
                Ok(e) => e,
                Err(e) => return Poll::Ready(Some(Err(e))),
            };
            match self.requests.route(event, id, uploader) {
                Step::Item(item) => return Poll::Ready(Some(Ok(item))),
                Step::Upload(req, uploader) => self.start_upload(&uploader, req),
                Step::Failed(e) => return Poll::Ready(Some(Err(e))),
                Step::Skip => {}
            }
        }
    }

    fn start_upload(&mut self, uploader: &UploaderFn, req: ArtifactUploadRequest) {
        let answer = uploader(req.to_request());
        let answer: BoxFuture<Option<ArtifactUpload>> = match self.upload_timeout {
            Some(limit) => Box::pin(async move { timeout::<B, _>(limit, answer).await.flatten() }),
            None => answer,
        };
        self.uploading = Some((answer, req));
    }

    /// Drives the uploader's answer in progress, if any, and sends it.
    #[inline]
    fn poll_upload(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some((fut, _)) = &mut self.uploading {
            let upload = ready!(fut.as_mut().poll(cx));
            if let Some((_, req)) = self.uploading.take() {
                self.requests.answer(req, upload, B::now());
            }
        }
        Poll::Ready(())
    }

    /// The next event of the core, driving the socket and the timers. Cancel safe.
    async fn next_event(&mut self) -> Result<Event, Error> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// Polls [`next_event`](Self::next_event).
    #[inline]
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<Event, Error>> {
        loop {
            let mut next = self.drain();
            if let Poll::Ready(Err(e)) = self.conn.poll_flush(cx) {
                tracing::debug!(error = %e, "send failed");
                if let Some(event) = next.take() {
                    self.requests.unread(event);
                }
                if !self.lose_connection(B::now()) {
                    let now = B::now();
                    self.requests
                        .session()
                        .handle_input(Input::TransportClosed(now));
                }
                next = self.drain();
            }
            if let Some(e) = next {
                return Poll::Ready(Ok(e));
            }
            if self.requests.is_finished() {
                return Poll::Ready(Err(Error::ConnectionClosed));
            }
            if self.abort.take() {
                self.requests.abort(B::now());
                continue;
            }
            if self.resume.as_ref().is_some_and(|r| r.state.is_lost()) {
                ready!(self.poll_reconnect(cx));
                continue;
            }
            match self.conn.poll_recv(cx, self.requests.deadline()) {
                Poll::Ready(incoming) => {
                    if matches!(incoming, Incoming::Closed(_)) && self.lose_connection(B::now()) {
                        continue;
                    }
                    self.feed(incoming);
                    // The common case, one frame and one event with nothing to send: hand it
                    // out at once. The deadline is brought up to date by the next call's
                    // drain, before the socket is read again.
                    let (conn, resume) = (&mut self.conn, &mut self.resume);
                    let quick = self.requests.quick_event(|t| send(conn, resume, t));
                    if let Some(e) = quick {
                        return Poll::Ready(Ok(e));
                    }
                }
                Poll::Pending => {
                    // Whatever arrives next arrives later: read the clock again.
                    self.clock = None;
                    // No handle given out: nothing can abort from elsewhere while this call
                    // waits, since the call borrows the session (and a handle needs it).
                    // Otherwise register, then look again, so that an abort in between is
                    // not lost.
                    if !self.abort.is_shared() || !self.abort.register(cx.waker()) {
                        return Poll::Pending;
                    }
                }
            }
        }
    }

    /// Hands the core's output to the socket (noting what a resumable session sends): the
    /// next event, if any.
    fn drain(&mut self) -> Option<Event> {
        let (conn, resume) = (&mut self.conn, &mut self.resume);
        self.requests.drain(|t| send(conn, resume, t))
    }

    /// The connection ended or failed: whether the session goes on reconnecting (resumable,
    /// not ending, and the runtime did not close it on purpose) rather than closing.
    fn lose_connection(&mut self, now: std::time::Instant) -> bool {
        let ending = self.requests.session().is_ending() || self.requests.is_finished();
        let code = self.conn.peer_close_code();
        let lost =
            (self.resume.as_mut()).is_some_and(|r| r.state.connection_lost(ending, code, now));
        if lost {
            self.requests.session().pause_keepalive(now);
        }
        lost
    }

    /// Drives a reconnection and the session's timers meanwhile: `Ready` once the session
    /// resumed on a new connection, gave up (the core then reports the connection closed), or
    /// a timer of the session fired.
    fn poll_reconnect(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(r) = &mut self.resume else {
            return Poll::Ready(());
        };
        match r.poll(cx) {
            Poll::Ready(Ok((socket, count))) => {
                let now = B::now();
                match r.state.resumed(count, now) {
                    Ok(frames) => {
                        self.conn = Conn::new(socket);
                        for frame in frames {
                            self.conn
                                .queue_message(tungstenite::Message::Text(frame.into()));
                        }
                        self.reconnect_timer = None;
                        tracing::info!(received = r.state.received(), "session resumed");
                        self.requests.session().resume_keepalive(now);
                    }
                    Err(refusal) => {
                        tracing::info!(why = refusal.token(), "could not resume the session");
                        self.give_up(now);
                    }
                }
                return Poll::Ready(());
            }
            Poll::Ready(Err(_)) => {
                self.give_up(B::now());
                return Poll::Ready(());
            }
            Poll::Pending => {}
        }
        let deadline = self.requests.deadline();
        let timer = self
            .reconnect_timer
            .get_or_insert_with(|| B::timer(deadline));
        B::reset(timer, deadline);
        ready!(B::poll_timer(timer, cx));
        self.requests
            .session()
            .handle_input(Input::Timeout(B::now()));
        Poll::Ready(())
    }

    /// Resuming failed: the session ends as its connection did.
    fn give_up(&mut self, now: std::time::Instant) {
        self.resume = None;
        self.reconnect_timer = None;
        self.requests
            .session()
            .handle_input(Input::TransportClosed(now));
    }

    fn feed(&mut self, incoming: Incoming) {
        let now = match incoming {
            Incoming::Data(_) => self.data_clock(),
            _ => {
                self.clock = None;
                B::now()
            }
        };
        if let Some(r) = &mut self.resume {
            for ping in self.conn.take_pings() {
                r.state.on_ping(&ping);
            }
            if matches!(incoming, Incoming::Data(_))
                && let Some(ack) = r.state.on_received(now)
            {
                self.conn
                    .queue_message(tungstenite::Message::Ping(ack.into()));
            }
        }
        let session = self.requests.session();
        match incoming {
            Incoming::Data(m) => session.handle_input(Incoming::input(&m, now)),
            Incoming::Pong => session.handle_input(Input::Pong(now)),
            Incoming::Deadline => session.handle_input(Input::Timeout(now)),
            Incoming::Closed(err) => {
                if let Some(e) = err {
                    tracing::debug!(error = %e, "connection failed");
                }
                session.handle_input(Input::TransportClosed(now));
            }
        }
    }

    /// The instant of a data frame. Frames that were already buffered when the previous one
    /// was read share one clock reading, up to [`CLOCK_REUSE`] of them: reading the clock was
    /// a few percent of a flood's time, and such a reading is at most microseconds old.
    fn data_clock(&mut self) -> std::time::Instant {
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

    pub(crate) fn respond(
        &mut self,
        req: ArtifactUploadRequest,
        upload: ArtifactUpload,
    ) -> Result<(), Error> {
        self.requests.respond(req, upload, B::now())
    }
}

/// Sends a transmit of the core, noting it for a resumable session.
fn send<B: Backend>(
    conn: &mut Conn<B::Socket, B>,
    resume: &mut Option<Box<Resuming<B>>>,
    t: Transmit,
) {
    if let Some(r) = resume {
        r.state.on_transmit(&t);
    }
    conn.queue(t);
}

/// The events of one request, as a [`Stream`]; the last item is the result (or an error).
///
/// Dropping it before the end leaves the session usable: the request is cancelled before the
/// next call starts.
pub struct RequestEvents<'a, B: Backend> {
    session: &'a mut Session<B>,
    id: RequestId,
    uploader: Option<UploaderFn>,
    done: bool,
}

impl<B: Backend> fmt::Debug for RequestEvents<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestEvents")
            .field("request", &self.id)
            .finish_non_exhaustive()
    }
}

impl<'a, B: Backend> RequestEvents<'a, B> {
    fn new(session: &'a mut Session<B>, id: RequestId, uploader: Option<UploaderFn>) -> Self {
        Self {
            session,
            id,
            uploader,
            done: false,
        }
    }

    /// The next event; `None` after the last.
    pub async fn next(&mut self) -> Option<Result<RequestEvent, Error>> {
        futures_util::StreamExt::next(self).await
    }

    /// Answers an artifact upload request handed out by this stream.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] if the request is not pending on this session.
    pub fn respond_artifact_upload(
        &mut self,
        request: ArtifactUploadRequest,
        upload: ArtifactUpload,
    ) -> Result<(), Error> {
        self.session.respond(request, upload)
    }

    /// Declines an artifact upload request handed out by this stream: the runtime is told no
    /// upload will happen.
    pub fn decline_artifact_upload(&mut self, request: ArtifactUploadRequest) {
        self.session.requests.decline(request);
    }

    /// A handle that cancels this request from anywhere.
    pub fn abort_handle(&self) -> AbortHandle {
        self.session.abort_handle()
    }

    /// Cancels the request (as [`AbortHandle::abort`]); keep polling for the outcome.
    pub fn abort(&self) {
        self.session.abort();
    }

    /// A resume token of the session, between two items of this stream: as
    /// [`Session::resume_token`].
    ///
    /// # Errors
    ///
    /// As [`Session::resume_token`].
    pub fn resume_token(&mut self) -> Result<crate::ResumeToken, Error> {
        self.session.resume_token()
    }
}

impl<B: Backend> Stream for RequestEvents<'_, B> {
    type Item = Result<RequestEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let item = ready!(this.session.poll_item(cx, this.id, this.uploader.as_ref()));
        this.done = requests::ends_stream(&item);
        Poll::Ready(item)
    }
}
