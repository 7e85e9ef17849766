//! [`Client`]: one runtime URL, connections on demand.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use runtimeuse_client_core::resume::{Attempt, ResumeToken, Resumption};
use runtimeuse_proto as proto;
use runtimeuse_proto::resume::{RESUME_HEADER, RESUME_VERSION};
use runtimeuse_proto::{CommandExecutionResult, QueryResult};

use crate::Error;
use crate::backend::Backend;
use crate::connect::connect;
use crate::options::{ExecuteCommandsOptions, QueryOptions};
use crate::pump::attempt;
use crate::session::Session;
use crate::{ClientBuilder, ClientSettings};

/// A client for one runtime URL (`ws://` or `wss://`) on backend `B`. Cheap to clone; each call
/// or [`session`](Self::session) opens its own connection. The adapters name it `Client`.
///
/// ```no_run
/// # async fn run<B: runtimeuse_async::Backend>() -> Result<(), runtimeuse_async::Error> {
/// use runtimeuse_async::{Client, QueryOptions};
///
/// let client = Client::<B>::new("ws://localhost:8080");
/// let result = client.query("ECHO:hello", QueryOptions::new("You are terse.", "echo")).await?;
/// assert_eq!(result.text(), Some("hello"));
/// # Ok(()) }
/// ```
pub struct Client<B> {
    inner: Arc<ClientSettings>,
    backend: PhantomData<fn() -> B>,
}

impl<B> Clone for Client<B> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            backend: PhantomData,
        }
    }
}

impl<B> fmt::Debug for Client<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("settings", &self.inner)
            .finish()
    }
}

impl<B> From<ClientSettings> for Client<B> {
    fn from(settings: ClientSettings) -> Self {
        Self {
            inner: Arc::new(settings),
            backend: PhantomData,
        }
    }
}

impl<B: Backend> Client<B> {
    /// A client for this URL with default settings.
    pub fn new(url: impl Into<String>) -> Self {
        Self::builder(url).build()
    }

    /// A builder for this URL.
    pub fn builder(url: impl Into<String>) -> ClientBuilder<Self> {
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
    /// [`Error::Config`] for a bad URL or header, [`Error::ConnectTimeout`],
    /// [`Error::Connect`] when the TCP connection fails, [`Error::WebSocket`] when TLS or the
    /// WebSocket handshake fails.
    pub async fn session(&self) -> Result<Session<B>, Error> {
        let s = &self.inner;
        let ask = [(RESUME_HEADER, RESUME_VERSION.to_owned())];
        let extra: &[_] = if s.resume { &ask } else { &[] };
        let (ws, headers) = connect::<B>(s, extra).await?;
        tracing::debug!(url = %s.display_url(), "connected");
        let mut session = Session::new(ws, s.session.clone());
        if s.resume {
            match Resumption::granted(&headers) {
                Some(granted) => session.make_resumable(granted, Arc::clone(&self.inner)),
                None => tracing::debug!("the runtime did not grant resumption"),
            }
        }
        Ok(session)
    }

    /// Takes over a resumable session from a [`ResumeToken`] that another session (perhaps in
    /// another process, which may have died since) handed out with
    /// [`Session::resume_token`]: connects to the token's URL with this client's other
    /// settings (its headers and token, TLS, timeouts, keepalive), resumes the session, and
    /// returns it. The request in flight when the token was taken goes on:
    /// [`Session::request_events`] gives its events after the token's count, then its result.
    ///
    /// One attempt: a failure to connect is returned as it is (try again within the
    /// session's grace period).
    ///
    /// # Errors
    ///
    /// [`Error::ResumeRefused`] when the runtime refuses (the session is gone, or the
    /// token's counts are outside what it still holds); [`Error::Config`] for a token of
    /// another format; and the connection errors of [`session`](Self::session).
    pub async fn resume(&self, token: ResumeToken) -> Result<Session<B>, Error> {
        let mut settings = (*self.inner).clone();
        settings.url = token.url().to_owned();
        let settings = Arc::new(settings);
        let (resumption, state) = Resumption::from_token(token, B::now())?;
        let headers = resumption.resume_headers();
        match attempt::<B>(Arc::clone(&settings), headers).await {
            Attempt::Resumed(socket, count) => {
                tracing::debug!(url = %settings.display_url(), "session taken over");
                Session::take_over(socket, settings, resumption, state, count)
            }
            Attempt::Refused(refusal) => Err(Error::ResumeRefused(refusal)),
            Attempt::Failed(e) => Err(e),
        }
    }

    /// Connects, runs one query, and closes: the Python client's `query`.
    ///
    /// When artifacts directories are given, the connection ends with the end-of-session
    /// handshake, so that artifacts written at the very end are still uploaded.
    ///
    /// # Errors
    ///
    /// As [`Session::query`], and the connection errors of [`session`](Self::session).
    pub async fn query(
        &self,
        prompt: impl Into<String>,
        options: QueryOptions,
    ) -> Result<QueryResult, Error> {
        self.session().await?.query_once(prompt, options).await
    }

    /// Connects, runs one command batch, and closes: the Python client's `execute_commands`.
    ///
    /// # Errors
    ///
    /// As [`Session::execute_commands`], and the connection errors of
    /// [`session`](Self::session).
    pub async fn execute_commands(
        &self,
        commands: impl IntoIterator<Item: Into<proto::Command>>,
        options: ExecuteCommandsOptions,
    ) -> Result<CommandExecutionResult, Error> {
        self.session()
            .await?
            .execute_commands_once(commands, options)
            .await
    }
}
