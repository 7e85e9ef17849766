//! Connecting: [`Client`], and the tokio [`Backend`].

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use runtimeuse_async::{Backend, ClientSettings};
use runtimeuse_proto as proto;
use runtimeuse_proto::{CommandExecutionResult, QueryResult};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{Error, ExecuteCommandsOptions, QueryOptions, Session};

/// tokio as the generic client's [`Backend`]: tokio's clock (so that `tokio::time::pause`
/// drives it), its timers, and tokio-tungstenite's stream.
#[derive(Debug)]
pub struct Tokio(());

impl Backend for Tokio {
    type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
    type Timer = std::pin::Pin<Box<tokio::time::Sleep>>;

    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn timer(deadline: Instant) -> Self::Timer {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }

    fn reset(timer: &mut Self::Timer, deadline: Instant) {
        timer.as_mut().reset(deadline.into());
    }

    fn poll_timer(timer: &mut Self::Timer, cx: &mut Context<'_>) -> Poll<()> {
        timer.as_mut().poll(cx)
    }
}

/// Builds a [`Client`] with non-default settings (headers, connect timeout, frame limit, root
/// certificates, session config).
pub type ClientBuilder = runtimeuse_async::ClientBuilder<Client>;

/// A client for one runtime URL (`ws://` or `wss://`). Cheap to clone; each call or
/// [`session`](Self::session) opens its own connection.
///
/// ```no_run
/// # async fn run() -> Result<(), runtimeuse_tokio::Error> {
/// use runtimeuse_tokio::{Client, QueryOptions};
///
/// let client = Client::new("ws://localhost:8080");
/// let result = client.query("ECHO:hello", QueryOptions::new("You are terse.", "echo")).await?;
/// assert_eq!(result.text(), Some("hello"));
/// # Ok(()) }
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

    /// Opens a persistent session.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a bad URL or header, [`Error::ConnectTimeout`],
    /// [`Error::WebSocket`] when connecting fails.
    pub async fn session(&self) -> Result<Session, Error> {
        let s = &self.inner;
        let (request, config) = s.handshake()?;
        let connecting = self.connect(request, config);
        let ws = tokio::time::timeout(s.connect_timeout, connecting)
            .await
            .map_err(|_| Error::ConnectTimeout(s.connect_timeout))??;
        tracing::debug!(url = %s.url, "connected");
        Ok(Session::new(ws, s.session.clone()))
    }

    #[cfg(feature = "__rustls")]
    async fn connect(
        &self,
        request: Request,
        config: WebSocketConfig,
    ) -> Result<<Tokio as Backend>::Socket, Error> {
        let tls = Arc::new(self.inner.tls_config()?);
        let connector = tokio_tungstenite::Connector::Rustls(tls);
        let (ws, _response) = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(config),
            true,
            Some(connector),
        )
        .await?;
        Ok(ws)
    }

    #[cfg(not(feature = "__rustls"))]
    async fn connect(
        &self,
        request: Request,
        config: WebSocketConfig,
    ) -> Result<<Tokio as Backend>::Socket, Error> {
        let (ws, _response) =
            tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
        Ok(ws)
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
    pub async fn execute_commands<I, C>(
        &self,
        commands: I,
        options: ExecuteCommandsOptions,
    ) -> Result<CommandExecutionResult, Error>
    where
        I: IntoIterator<Item = C>,
        C: Into<proto::Command>,
    {
        self.session()
            .await?
            .execute_commands_once(commands, options)
            .await
    }
}
