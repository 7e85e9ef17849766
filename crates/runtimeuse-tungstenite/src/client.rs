//! Connecting: [`Client`].

use runtimeuse_client_core::resume::{Attempt, Resumption};
use std::sync::Arc;

use runtimeuse_client_core::ClientSettings;
use runtimeuse_proto as proto;
use runtimeuse_proto::{CommandExecutionResult, QueryResult};

use crate::Error;
use crate::connect::connect_session;
use crate::options::{ExecuteCommandsOptions, QueryOptions};
use crate::session::Session;
use runtimeuse_client_core::requests::{OneShotClose, close_after_one_shot};

/// Builds a [`Client`] with non-default settings (headers, connect timeout, frame limit, root
/// certificates, session config).
pub type ClientBuilder = runtimeuse_client_core::ClientBuilder<Client>;

/// A blocking client for one runtime URL (`ws://` or `wss://`). Cheap to clone; each call or
/// [`session`](Self::session) opens its own connection.
///
/// ```no_run
/// use runtimeuse_tungstenite::{Client, QueryOptions};
///
/// let client = Client::new("ws://localhost:8080");
/// let result = client.query("ECHO:hello", QueryOptions::new("You are terse.", "echo"))?;
/// assert_eq!(result.text(), Some("hello"));
/// # Ok::<(), runtimeuse_tungstenite::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<ClientSettings>,
}

impl From<ClientSettings> for Client {
    fn from(settings: ClientSettings) -> Self {
        Self {
            inner: Arc::new(settings),
        }
    }
}

impl Client {
    /// A client for this URL with default settings.
    pub fn new(url: impl Into<String>) -> Self {
        Self::builder(url).build()
    }

    /// A builder for this URL.
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url)
    }

    /// The client's settings.
    pub fn settings(&self) -> &ClientSettings {
        &self.inner
    }

    /// The runtime's URL.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Opens a persistent session.
    ///
    /// # Errors
    ///
    /// [`Error::Config`], [`Error::Connect`], [`Error::ConnectTimeout`], [`Error::WebSocket`].
    pub fn session(&self) -> Result<Session, Error> {
        let (ws, granted) = connect_session(&self.inner)?;
        let mut session = Session::new(ws, self.inner.session.clone());
        if let Some(granted) = granted {
            session.make_resumable(granted, Arc::clone(&self.inner));
        }
        Ok(session)
    }

    /// Takes over a resumable session from a [`ResumeToken`](crate::ResumeToken) that another
    /// session (perhaps in another process, which may have died since) handed out with
    /// [`Session::resume_token`]: connects to the token's URL with this client's other
    /// settings, resumes the session, and returns it. The request in flight when the token
    /// was taken goes on: [`Session::request_events`] gives its events after the token's
    /// count, then its result. One attempt: a failure to connect is returned as it is.
    ///
    /// # Errors
    ///
    /// [`Error::ResumeRefused`] when the runtime refuses (the session is gone, or the
    /// token's counts are outside what it still holds); [`Error::Config`] for a token of
    /// another format; and the connection errors of [`session`](Self::session).
    pub fn resume(&self, token: crate::ResumeToken) -> Result<Session, Error> {
        let mut settings = (*self.inner).clone();
        settings.url = token.url().to_owned();
        let settings = Arc::new(settings);
        let (resumption, state) = Resumption::from_token(token, crate::session::now())?;
        match crate::connect::resume_socket(&settings, &resumption.resume_headers()) {
            Attempt::Resumed(ws, count) => {
                tracing::debug!(url = %settings.display_url(), "session taken over");
                Session::take_over(*ws, settings, resumption, state, count)
            }
            Attempt::Refused(refusal) => Err(Error::ResumeRefused(refusal)),
            Attempt::Failed(e) => Err(e),
        }
    }

    /// Connects, runs one query, and closes.
    ///
    /// # Errors
    ///
    /// As [`Session::query`], and the connection errors of [`session`](Self::session).
    pub fn query(
        &self,
        prompt: impl Into<String>,
        options: QueryOptions,
    ) -> Result<QueryResult, Error> {
        let (watched, abort) = (options.watches_artifacts(), options.abort().cloned());
        self.once(watched, abort, |s| s.query(prompt, options))
    }

    /// Connects, runs one command batch, and closes.
    ///
    /// # Errors
    ///
    /// As [`Session::execute_commands`], and the connection errors of
    /// [`session`](Self::session).
    pub fn execute_commands(
        &self,
        commands: impl IntoIterator<Item: Into<proto::Command>>,
        options: ExecuteCommandsOptions,
    ) -> Result<CommandExecutionResult, Error> {
        let (watched, abort) = (options.watches_artifacts(), options.abort().cloned());
        self.once(watched, abort, |s| s.execute_commands(commands, options))
    }
}

impl Client {
    /// A one-shot call: a session for `call`, closed as [`close_after_one_shot`] says (the
    /// end-of-session handshake when it `watched` artifacts); `abort` is the call's handle.
    fn once<T>(
        &self,
        watched: bool,
        abort: Option<crate::AbortHandle>,
        call: impl FnOnce(&mut Session) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut session = self.session()?;
        if let Some(handle) = abort {
            if handle.is_aborted() {
                finish(session, close_after_one_shot(false, false));
                return Err(Error::Cancelled);
            }
            session.use_abort_handle(handle);
        }
        let result = call(&mut session);
        finish(session, close_after_one_shot(watched, result.is_ok()));
        result
    }
}

/// Closes after a one-shot call, as [`close_after_one_shot`] says.
fn finish(mut session: Session, close: OneShotClose) {
    match close {
        OneShotClose::Graceful => {
            if let Err(e) = session.close() {
                tracing::debug!(error = %e, "graceful close failed");
            }
        }
        OneShotClose::Immediate(wait) => session.close_socket(wait),
    }
}
