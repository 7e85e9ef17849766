//! A persistent session: sequential requests over one connection.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::Stream;
use futures_util::task::AtomicWaker;
use runtimeuse_proto as proto;
use runtimeuse_proto::{
    ArtifactUpload, ArtifactUploadRequest, CommandExecutionResult, Event, Input, Output,
    QueryResult, RequestEvent, RequestId, Routed, SessionEnd,
};
use tracing::Instrument;

use crate::Error;
use crate::backend::{Backend, timeout};
use runtimeuse_client_core::close::{CLOSE_AFTER_FAILURE, close_wait};

use crate::conn::{Conn, Incoming};
use crate::options::{BoxFuture, Callbacks, ExecuteCommandsOptions, QueryOptions, UploaderFn};

/// Cancels the request in flight of a [`Session`] from anywhere (another task or thread).
///
/// `cancel_message` goes out at once, the call fails with [`Error::Cancelled`], and the session
/// reads on until the runtime's terminal for it, so that nothing of it leaks into the next
/// request. Aborting with nothing in flight does nothing.
#[derive(Clone, Debug, Default)]
pub struct AbortHandle {
    inner: Arc<AbortInner>,
}

#[derive(Debug, Default)]
struct AbortInner {
    requested: AtomicBool,
    waker: AtomicWaker,
}

impl AbortHandle {
    /// A handle not tied to a session yet: give it to a one-shot call with
    /// `QueryOptions::abort_handle` (or `ExecuteCommandsOptions::abort_handle`) to be able to
    /// cancel that call.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether an abort is pending (requested and not yet acted on).
    pub fn is_aborted(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }

    /// Cancels the request in flight, if any.
    pub fn abort(&self) {
        self.inner.requested.store(true, Ordering::SeqCst);
        self.inner.waker.wake();
    }

    fn take(&self) -> bool {
        // A plain load first: this runs once per frame, and an abort is rare.
        self.inner.requested.load(Ordering::Relaxed)
            && self.inner.requested.swap(false, Ordering::SeqCst)
    }
}

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
    proto: proto::Session,
    abort: AbortHandle,
    /// Events taken from the core but not yet handed out (cancel safety).
    events: VecDeque<Event>,
    deadline: std::time::Instant,
    /// The last artifact uploader given, for requests between calls and during close.
    uploader: Option<UploaderFn>,
    /// A request whose call was dropped; cancelled before the next call.
    current: Option<RequestId>,
    /// An artifact uploader's answer being computed (kept here, not in a future, so that
    /// dropping a call does not lose it).
    uploading: Option<(BoxFuture<Option<ArtifactUpload>>, ArtifactUploadRequest)>,
    /// The current call's time limit of the artifact uploader.
    upload_timeout: Option<Duration>,
    /// The span of the request in flight.
    span: tracing::Span,
    /// A clock reading shared by frames read back to back, and how many used it.
    clock: Option<(std::time::Instant, u32)>,
}

/// How many back-to-back frames may share one clock reading.
const CLOCK_REUSE: u32 = 32;

impl<B: Backend> fmt::Debug for Session<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("proto", &self.proto)
            .field("current", &self.current)
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
            proto: proto::Session::new(config, now),
            abort: AbortHandle::default(),
            events: VecDeque::new(),
            deadline: now,
            uploader: None,
            current: None,
            uploading: None,
            upload_timeout: None,
            span: tracing::Span::none(),
            clock: None,
        }
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
        let callbacks = options.callbacks.clone();
        let id = self.start_query(prompt.into(), options)?;
        match self.run_with_callbacks(id, &callbacks).await? {
            RequestEvent::Result(r) => Ok(r),
            RequestEvent::CommandResult(_) => Err(Error::UnexpectedTerminal(
                proto::MessageKind::CommandExecutionResult,
            )),
            _ => Err(Error::ConnectionClosed),
        }
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
        let callbacks = options.callbacks.clone();
        let id = self.start_commands(commands, options)?;
        match self.run_with_callbacks(id, &callbacks).await? {
            RequestEvent::CommandResult(r) => Ok(r),
            _ => Err(Error::UnexpectedTerminal(proto::MessageKind::Result)),
        }
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
        let uploader = options.callbacks.uploader.clone();
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
        let uploader = options.callbacks.uploader.clone();
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
        self.clean_up_dropped_call();
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
        let graceful = !options.invocation.artifacts_dirs.is_empty();
        self.adopt_abort(options.abort.as_ref()).await?;
        // Each step boxed: a one-shot call's future otherwise holds all their states inline
        // (14 KB) for as long as it runs.
        let result = Box::pin(self.query(prompt, options)).await;
        Box::pin(self.finish(graceful, result.is_ok())).await;
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
        let graceful = !options.batch.artifacts_dirs.is_empty();
        self.adopt_abort(options.abort.as_ref()).await?;
        let result = Box::pin(self.execute_commands(commands, options)).await;
        Box::pin(self.finish(graceful, result.is_ok())).await;
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

    /// Closes after a one-shot call: gracefully after a success that may still have
    /// artifacts to upload; otherwise at once, waiting for the peer's close only after a
    /// success (a failed connection is left within [`CLOSE_AFTER_FAILURE`]).
    async fn finish(mut self, graceful: bool, ok: bool) {
        if graceful && ok {
            if let Err(e) = self.close().await {
                tracing::debug!(error = %e, "graceful close failed");
            }
        } else {
            self.conn.close(close_wait(ok)).await;
        }
    }

    async fn end_gracefully(&mut self) -> Result<SessionEnd, Error> {
        if let Some(end) = self.proto.end() {
            return Ok(end);
        }
        // A request still held back behind a draining one: wait for it to settle first.
        while self.proto.request_in_flight().is_some() {
            let _ = self.proto.cancel(B::now());
            self.next_event().await?;
        }
        if let Some(end) = self.proto.end() {
            return Ok(end);
        }
        self.proto.end_session(B::now())?;
        loop {
            match self.next_event().await? {
                Event::SessionEnded(end) => {
                    tracing::debug!(?end, "session ended");
                    return Ok(end);
                }
                Event::ArtifactUploadRequest(req) => self.answer_with(None, req).await,
                _ => {}
            }
        }
    }

    // ----- internals -----

    fn start_query(&mut self, prompt: String, options: QueryOptions) -> Result<RequestId, Error> {
        self.clean_up_dropped_call();
        let mut invocation = options.invocation;
        invocation.user_prompt = prompt;
        let span_id = invocation.source_id.clone();
        let id = self.proto.invoke(invocation, options.request, B::now())?;
        self.begin(id, &options.callbacks, "query", span_id);
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
        self.clean_up_dropped_call();
        let mut batch = options.batch;
        batch.commands = commands.into_iter().map(Into::into).collect();
        let span_id = batch.source_id.clone();
        let id = self
            .proto
            .execute_commands(batch, options.request, B::now())?;
        self.begin(id, &options.callbacks, "execute_commands", span_id);
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
        let uploader = callbacks.uploader.clone();
        if uploader.is_some() {
            self.uploader = uploader;
        }
        // An abort requested while nothing was in flight does not apply to this request.
        self.abort.take();
        self.current = Some(id);
    }

    /// A previous call's future was dropped mid-request: cancel that request. The core holds
    /// the next request back until the cancelled one's terminal has been read.
    fn clean_up_dropped_call(&mut self) {
        if let Some(id) = self.current.take()
            && self.proto.request_in_flight() == Some(id)
        {
            tracing::debug!(
                request = id.as_u64(),
                "cancelling the request of a dropped call"
            );
            let _ = self.proto.cancel(B::now());
        }
    }

    /// Runs the request to its end, calling the callbacks; returns the terminal item.
    async fn run_with_callbacks(
        &mut self,
        id: RequestId,
        callbacks: &Callbacks,
    ) -> Result<RequestEvent, Error> {
        let span = self.span.clone();
        // This request's callback slots: one future allocation each, reused per message.
        let mut on_assistant_message = callbacks.on_assistant_message.as_ref().map(|f| f());
        let mut on_command_output = callbacks.on_command_output.as_ref().map(|f| f());
        async {
            loop {
                let item = match self.next_item(id, callbacks.uploader.as_ref()).await {
                    Some(item) => item?,
                    None => return Err(Error::ConnectionClosed),
                };
                let limit = callbacks.callback_timeout;
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
                        self.proto.decline_artifact_upload(req);
                    }
                    item if item.is_terminal() => {
                        self.current = None;
                        return Ok(item);
                    }
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
        tracing::warn!(
            callback,
            ?limit,
            "callback timed out; cancelling the request"
        );
        if self.proto.request_in_flight() == Some(id) {
            let _ = self.proto.cancel(B::now());
        }
        self.current = None;
        Err(Error::CallbackTimeout { callback, limit })
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
            ready!(self.poll_upload(cx));
            let event = match ready!(self.poll_event(cx)) {
                Ok(e) => e,
                Err(e) => return Poll::Ready(Some(Err(e))),
            };
            let item = match event.route(id) {
                Routed::Item(RequestEvent::ArtifactUploadRequest(req)) => {
                    match uploader.cloned().or_else(|| self.uploader.clone()) {
                        Some(uploader) => {
                            self.start_upload(&uploader, req);
                            continue;
                        }
                        None => RequestEvent::ArtifactUploadRequest(req),
                    }
                }
                Routed::Item(item) => {
                    if item.is_terminal() {
                        self.current = None;
                    }
                    item
                }
                Routed::Failed(reason) => {
                    self.current = None;
                    return Poll::Ready(Some(Err(reason.into())));
                }
                Routed::SessionEnded(_) => return Poll::Ready(Some(Err(Error::ConnectionClosed))),
                _ => continue,
            };
            return Poll::Ready(Some(Ok(item)));
        }
    }

    fn start_upload(&mut self, uploader: &UploaderFn, req: ArtifactUploadRequest) {
        let answer = uploader(req.to_request());
        let answer: BoxFuture<Option<ArtifactUpload>> = match self.upload_timeout {
            Some(limit) => Box::pin(timeout::<B, _>(limit, answer)),
            None => Box::pin(async move { Some(answer.await) }),
        };
        self.uploading = Some((answer, req));
    }

    /// Answers an artifact request with `uploader` or the session's last one (or declines it).
    async fn answer_with(&mut self, uploader: Option<UploaderFn>, req: ArtifactUploadRequest) {
        let Some(uploader) = uploader.or_else(|| self.uploader.clone()) else {
            self.proto.decline_artifact_upload(req);
            return;
        };
        self.start_upload(&uploader, req);
        std::future::poll_fn(|cx| self.poll_upload(cx)).await;
    }

    /// Drives the uploader's answer in progress, if any, and sends it.
    #[inline]
    fn poll_upload(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some((fut, _)) = &mut self.uploading {
            let upload = ready!(fut.as_mut().poll(cx));
            let Some((_, req)) = self.uploading.take() else {
                return Poll::Ready(());
            };
            match upload {
                Some(upload) => {
                    if let Err(e) = self.proto.respond_artifact_upload(req, upload, B::now()) {
                        tracing::warn!(error = %e, "could not answer an artifact upload request");
                    }
                }
                None => {
                    tracing::warn!(
                        file = req.filename(),
                        "artifact uploader timed out; the runtime will not upload this file"
                    );
                    self.proto.decline_artifact_upload(req);
                }
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
                self.proto.handle_input(Input::TransportClosed(B::now()));
                if let Some(event) = next.take() {
                    self.events.push_front(event);
                }
                next = self.drain();
            }
            if let Some(e) = next.or_else(|| self.events.pop_front()) {
                return Poll::Ready(Ok(e));
            }
            if self.proto.is_finished() {
                return Poll::Ready(Err(Error::ConnectionClosed));
            }
            if self.abort.take() {
                if self.proto.request_in_flight().is_some() {
                    let _ = self.proto.cancel(B::now());
                }
                continue;
            }
            match self.conn.poll_recv(cx, self.deadline) {
                Poll::Ready(incoming) => {
                    self.feed(incoming);
                    // The common case, one frame and one event with nothing to send: hand it
                    // out at once. The deadline is brought up to date by the next call's
                    // drain, before the socket is read again.
                    if self.events.is_empty() {
                        match self.proto.poll_output() {
                            Output::Event(e) => return Poll::Ready(Ok(e)),
                            Output::Transmit(t) => self.conn.queue(t),
                            Output::Timeout(at) => self.deadline = at,
                        }
                    }
                }
                Poll::Pending => {
                    // Whatever arrives next arrives later: read the clock again.
                    self.clock = None;
                    // No handle given out: nothing can abort from elsewhere while this call
                    // waits, since the call borrows the session (and a handle needs it).
                    if Arc::strong_count(&self.abort.inner) == 1 {
                        return Poll::Pending;
                    }
                    // Register, then look again, so that an abort in between is not lost.
                    self.abort.inner.waker.register(cx.waker());
                    if !self.abort.inner.requested.load(Ordering::SeqCst) {
                        return Poll::Pending;
                    }
                }
            }
        }
    }

    fn feed(&mut self, incoming: Incoming) {
        let now = match incoming {
            Incoming::Data(_) => self.data_clock(),
            _ => {
                self.clock = None;
                B::now()
            }
        };
        match incoming {
            Incoming::Data(m) => self.proto.handle_input(Incoming::input(&m, now)),
            Incoming::Pong => self.proto.handle_input(Input::Pong(now)),
            Incoming::Deadline => self.proto.handle_input(Input::Timeout(now)),
            Incoming::Closed(err) => {
                if let Some(e) = err {
                    tracing::debug!(error = %e, "connection failed");
                }
                self.proto.handle_input(Input::TransportClosed(now));
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

    /// Moves the core's outputs into the socket queue and the event queue. The next event to
    /// hand out is returned instead of queued when the queue is empty (the common case: one
    /// frame, one event).
    fn drain(&mut self) -> Option<Event> {
        let mut next = None;
        loop {
            match self.proto.poll_output() {
                Output::Transmit(t) => self.conn.queue(t),
                Output::Event(e) if next.is_none() && self.events.is_empty() => next = Some(e),
                Output::Event(e) => self.events.push_back(e),
                Output::Timeout(at) => {
                    self.deadline = at;
                    return next;
                }
            }
        }
    }

    pub(crate) fn respond(
        &mut self,
        req: ArtifactUploadRequest,
        upload: ArtifactUpload,
    ) -> Result<(), Error> {
        self.proto.respond_artifact_upload(req, upload, B::now())?;
        Ok(())
    }
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
        self.session.proto.decline_artifact_upload(request);
    }

    /// Cancels the request (as [`AbortHandle::abort`]); keep polling for the outcome.
    pub fn abort(&self) {
        self.session.abort();
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
        this.done = matches!(
            item,
            None | Some(Err(_))
                | Some(Ok(RequestEvent::Result(_) | RequestEvent::CommandResult(_)))
        );
        Poll::Ready(item)
    }
}
