//! A persistent session: sequential requests over one connection.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use runtimeuse_client_core::connection::Connection;
use runtimeuse_client_core::requests::{self, Between, Ending, OneShotClose, close_after_one_shot};
use runtimeuse_proto as proto;
use runtimeuse_proto::{
    ArtifactUpload, ArtifactUploadRequest, CommandExecutionResult, QueryResult, SessionEnd,
};

use crate::backend::Backend;
use crate::{AbortHandle, Error};
use runtimeuse_client_core::close::{CLOSE_AFTER_FAILURE, close_wait};

use crate::ClientSettings;
use crate::conn::Conn;
use crate::options::{BoxFuture, ExecuteCommandsOptions, QueryOptions};
use runtimeuse_client_core::callbacks::AsyncUploader as UploaderFn;
use runtimeuse_client_core::resume::{Attempt, Resumption};

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
    /// The WebSocket (replaced by each reconnection).
    pub(crate) ws: Conn<B::Socket, B>,
    /// The client's sans-IO connection: the request layer, resumption, every timer.
    pub(crate) conn: Connection<UploaderFn>,
    pub(crate) abort: AbortHandle,
    /// An artifact uploader's answer being computed (kept here, not in a future, so that
    /// dropping a call does not lose it).
    pub(crate) uploading: Option<(BoxFuture<Option<ArtifactUpload>>, ArtifactUploadRequest)>,
    /// The current call's time limit of the artifact uploader.
    pub(crate) upload_timeout: Option<Duration>,
    /// The span of the request in flight.
    pub(crate) span: tracing::Span,
    /// A clock reading shared by frames read back to back, and how many used it.
    pub(crate) clock: Option<(std::time::Instant, u32)>,
    /// The settings to reconnect with, on a resumable session.
    pub(crate) settings: Option<Arc<ClientSettings>>,
    /// A reconnection in progress.
    pub(crate) attempt: Option<BoxFuture<Attempt<B::Socket>>>,
    /// While no socket is attached: the timer of the connection's deadline.
    pub(crate) timer: Option<B::Timer>,
}

impl<B: Backend> fmt::Debug for Session<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("connection", &self.conn)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Session<B> {
    /// A session over a connected WebSocket (what an adapter's `Client::session` does after
    /// connecting).
    pub fn new(socket: B::Socket, config: proto::Config) -> Self {
        Self::over(socket, Connection::new(config, B::now()))
    }

    fn over(socket: B::Socket, conn: Connection<UploaderFn>) -> Self {
        Self {
            ws: Conn::new(socket),
            conn,
            abort: AbortHandle::default(),
            uploading: None,
            upload_timeout: None,
            span: tracing::Span::none(),
            clock: None,
            settings: None,
            attempt: None,
            timer: None,
        }
    }

    /// Makes this session resumable, as the runtime granted at the handshake.
    pub(crate) fn make_resumable(&mut self, granted: Resumption, settings: Arc<ClientSettings>) {
        self.conn.make_resumable(granted);
        self.settings = Some(settings);
    }

    /// A session taken over from a resume token ([`Client::resume`](crate::Client::resume)),
    /// on a socket the runtime resumed it on after processing `runtime_received` of the
    /// client's frames.
    pub(crate) fn take_over(
        socket: B::Socket,
        settings: Arc<ClientSettings>,
        resumption: Resumption,
        state: proto::SessionState,
        runtime_received: u64,
    ) -> Result<Self, Error> {
        let config = settings.session.clone();
        let conn = Connection::take_over(config, resumption, state, runtime_received, B::now())?;
        let mut session = Self::over(socket, conn);
        session.settings = Some(settings);
        Ok(session)
    }

    runtimeuse_client_core::session_controls!(B::now());

    /// The underlying WebSocket stream (for its peer address and the like).
    pub fn websocket(&self) -> &B::Socket {
        self.ws.get_ref()
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
            match self.conn.requests().between_calls(event) {
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
    pub async fn execute_commands(
        &mut self,
        commands: impl IntoIterator<Item: Into<proto::Command>>,
        options: ExecuteCommandsOptions,
    ) -> Result<CommandExecutionResult, Error> {
        let callbacks = options.callbacks().clone();
        let id = self.start_commands(commands, options)?;
        requests::commands_result(self.run_with_callbacks(id, &callbacks).await?)
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
        self.ws.close(close_wait(result.is_ok())).await;
        result
    }

    /// Closes the connection at once, without the end-of-session handshake (code 1000, at
    /// most 100 ms): for a session whose runtime misbehaved, or when nothing is owed. The
    /// runtime stops what still runs for it.
    pub async fn disconnect(mut self) {
        self.ws.close(CLOSE_AFTER_FAILURE).await;
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
    pub async fn execute_commands_once(
        mut self,
        commands: impl IntoIterator<Item: Into<proto::Command>>,
        options: ExecuteCommandsOptions,
    ) -> Result<CommandExecutionResult, Error> {
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
            self.ws.close(CLOSE_AFTER_FAILURE).await;
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
            OneShotClose::Immediate(wait) => self.ws.close(wait).await,
        }
    }

    async fn end_gracefully(&mut self) -> Result<SessionEnd, Error> {
        let mut step = self.conn.requests().end(B::now())?;
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
            step = self.conn.requests().end_on(event, B::now())?;
        }
    }
}
