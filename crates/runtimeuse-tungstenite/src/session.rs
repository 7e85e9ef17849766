//! A persistent session over one blocking connection.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runtimeuse_client_core::connection::Connection;
use runtimeuse_client_core::requests::{self, Between, Ending, Requests};
use runtimeuse_proto as proto;
use runtimeuse_proto::{CommandExecutionResult, QueryResult, RequestEvent, RequestId, SessionEnd};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

use runtimeuse_client_core::close::{CLOSE_AFTER_FAILURE, close_wait};

pub use crate::connect::Socket;
use crate::connect::tcp;
use crate::options::{ExecuteCommandsOptions, QueryOptions};
use crate::{AbortHandle, ClientSettings, Error};
use runtimeuse_client_core::callbacks::{
    BlockingCallbacks as Callbacks, BlockingUploader as UploaderFn, upload_with,
};
use runtimeuse_client_core::resume::Resumption;

/// The current instant. The blocking client reads the clock; the core never does.
pub(crate) fn now() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

/// A persistent session over one connection: sequential queries and command batches, then a
/// graceful [`close`](Self::close).
pub struct Session {
    pub(crate) ws: Socket,
    /// The client's sans-IO connection: the request layer, resumption, every timer.
    pub(crate) conn: Connection<UploaderFn>,
    pub(crate) abort: AbortHandle,
    /// The read timeout last set on the socket.
    pub(crate) read_timeout: Option<Duration>,
    /// The socket ended or failed (tungstenite must not be read again after an error).
    pub(crate) ended: bool,
    /// What the close still owes the peer once `ended`: the reply to its close frame, or a
    /// close code saying why a frame was refused.
    pub(crate) owed: Owed,
    /// The settings to reconnect with, on a resumable session.
    pub(crate) settings: Option<Arc<ClientSettings>>,
}

/// What the close still owes the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owed {
    Nothing,
    /// The peer closed; tungstenite queued the reply.
    Reply,
    /// A frame was refused: close with this code (1007, 1009, 1002).
    Code(CloseCode),
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("connection", &self.conn)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(ws: Socket, config: proto::Config) -> Self {
        Self::over(ws, Connection::new(config, now()))
    }

    fn over(ws: Socket, conn: Connection<UploaderFn>) -> Self {
        Self {
            ws,
            conn,
            abort: AbortHandle::default(),
            read_timeout: None,
            ended: false,
            owed: Owed::Nothing,
            settings: None,
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
        ws: Socket,
        settings: Arc<ClientSettings>,
        resumption: Resumption,
        state: proto::SessionState,
        runtime_received: u64,
    ) -> Result<Self, Error> {
        let config = settings.session.clone();
        let conn = Connection::take_over(config, resumption, state, runtime_received, now())?;
        let mut session = Self::over(ws, conn);
        session.settings = Some(settings);
        Ok(session)
    }

    runtimeuse_client_core::session_controls!(now());

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
            match self.conn.requests().between_calls(event) {
                Between::Nothing => {}
                Between::Upload(req, uploader) => {
                    let upload = upload_with(&uploader, req.to_request());
                    self.conn.requests().answer(req, Some(upload), now());
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
        let (id, callbacks) = self.start_query(prompt.into(), options)?;
        requests::query_result(self.run(id, &callbacks)?)
    }

    /// Runs a batch of shell commands and returns their results.
    ///
    /// # Errors
    ///
    /// As [`query`](Self::query); also [`Error::Usage`] for an empty batch.
    pub fn execute_commands(
        &mut self,
        commands: impl IntoIterator<Item: Into<proto::Command>>,
        options: ExecuteCommandsOptions,
    ) -> Result<CommandExecutionResult, Error> {
        let (id, callbacks) = self.start_commands(commands, options)?;
        requests::commands_result(self.run(id, &callbacks)?)
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
        let mut step = self.conn.requests().end(now())?;
        loop {
            match step {
                Ending::Done(end) => return Ok(end),
                Ending::Upload(req, uploader) => {
                    let upload = upload_with(&uploader, req.to_request());
                    self.conn.requests().answer(req, Some(upload), now());
                }
                Ending::Read => {}
            }
            let event = self.next_event()?;
            step = self.conn.requests().end_on(event, now())?;
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

    /// Starts a query for a call: its request, and the callbacks to run.
    pub(crate) fn start_query(
        &mut self,
        prompt: String,
        options: QueryOptions,
    ) -> Result<(RequestId, Callbacks), Error> {
        let parts = options.into_query(prompt);
        let uploader = parts.callbacks.uploader().cloned();
        let id = self.start(|r, now| r.start_query(parts.wire, parts.request, uploader, now))?;
        Ok((id, parts.callbacks))
    }

    /// Starts a command batch for a call, as [`start_query`](Self::start_query).
    pub(crate) fn start_commands(
        &mut self,
        commands: impl IntoIterator<Item: Into<proto::Command>>,
        options: ExecuteCommandsOptions,
    ) -> Result<(RequestId, Callbacks), Error> {
        let parts = options.into_batch(commands);
        let uploader = parts.callbacks.uploader().cloned();
        let id = self.start(|r, now| r.start_commands(parts.wire, parts.request, uploader, now))?;
        Ok((id, parts.callbacks))
    }

    fn start(
        &mut self,
        start: impl FnOnce(&mut Requests<UploaderFn>, Instant) -> Result<RequestId, Error>,
    ) -> Result<RequestId, Error> {
        let id = start(self.conn.requests(), now())?;
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
                RequestEvent::ArtifactUploadRequest(req) => self.conn.requests().decline(req),
                item if item.is_terminal() => return Ok(item),
                _ => {}
            }
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
}

#[cfg(test)]
mod tests;
