//! Connecting: [`Client`] and its settings.

use std::sync::Arc;
use std::time::Duration;

use runtimeuse_proto as proto;
use runtimeuse_proto::{CommandExecutionResult, QueryResult};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::Error;
use crate::conn::Conn;
use crate::options::{ExecuteCommandsOptions, QueryOptions};
use crate::session::Session;

/// A connected WebSocket and the server's handshake response.
type Connected = (
    tokio_tungstenite::WebSocketStream<crate::session::Socket>,
    tokio_tungstenite::tungstenite::handshake::client::Response,
);

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
    inner: Arc<Settings>,
}

#[derive(Clone, Debug)]
struct Settings {
    url: String,
    headers: Vec<(String, String)>,
    connect_timeout: Duration,
    max_frame_size: usize,
    #[cfg(feature = "__rustls")]
    root_certificates: Vec<Vec<u8>>,
    #[cfg(feature = "__rustls")]
    webpki_roots: bool,
    session: proto::Config,
}

/// Builds a [`Client`] with non-default settings.
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    settings: Settings,
}

impl ClientBuilder {
    /// Adds an HTTP header to the WebSocket handshake (sandbox providers and the runtime's
    /// `--token` use them, e.g. `Authorization: Bearer …`).
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.headers.push((name.into(), value.into()));
        self
    }

    /// How long connecting (TCP, TLS and the WebSocket handshake) may take. Default 30 s.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// The largest message accepted from the runtime. Default 64 MiB (results carry the
    /// collected stdout of commands).
    #[must_use]
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.settings.max_frame_size = bytes;
        self.settings.session.max_frame_size = bytes;
        self
    }

    /// Trusts this root certificate (DER) for `wss://`, in addition to the built-in roots.
    #[cfg(feature = "__rustls")]
    #[must_use]
    pub fn root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.settings.root_certificates.push(der.into());
        self
    }

    /// Whether to trust the webpki root certificates (default `true` with the
    /// `rustls-tls-webpki-roots` feature).
    #[cfg(feature = "__rustls")]
    #[must_use]
    pub fn webpki_roots(mut self, enabled: bool) -> Self {
        self.settings.webpki_roots = enabled;
        self
    }

    /// The protocol settings of each session (keepalive, error settle time, end-of-session
    /// timeout, …).
    #[must_use]
    pub fn session_config(mut self, config: proto::Config) -> Self {
        let max = self.settings.max_frame_size;
        self.settings.session = config;
        self.settings.session.max_frame_size = max;
        self
    }

    /// The client.
    pub fn build(self) -> Client {
        Client {
            inner: Arc::new(self.settings),
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
        ClientBuilder {
            settings: Settings {
                url: url.into(),
                headers: Vec::new(),
                connect_timeout: Duration::from_secs(30),
                max_frame_size: 64 << 20,
                #[cfg(feature = "__rustls")]
                root_certificates: Vec::new(),
                #[cfg(feature = "__rustls")]
                webpki_roots: cfg!(feature = "rustls-tls-webpki-roots"),
                session: proto::Config::default(),
            },
        }
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
    /// [`Error::WebSocket`] when connecting fails.
    pub async fn session(&self) -> Result<Session, Error> {
        let s = &self.inner;
        let mut request = s
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| Error::Config(format!("url {}: {e}", s.url)))?;
        for (name, value) in &s.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| Error::Config(format!("header name {name}: {e}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| Error::Config(format!("header value for {name}: {e}")))?;
            request.headers_mut().append(name, value);
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(s.max_frame_size))
            .max_frame_size(Some(s.max_frame_size));
        let connecting = self.connect(request, config);
        let (ws, _response) = tokio::time::timeout(s.connect_timeout, connecting)
            .await
            .map_err(|_| Error::ConnectTimeout(s.connect_timeout))??;
        tracing::debug!(url = %s.url, "connected");
        Ok(Session::new(Conn::new(ws), s.session.clone()))
    }

    #[cfg(feature = "__rustls")]
    async fn connect(
        &self,
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
        config: WebSocketConfig,
    ) -> Result<Connected, Error> {
        let connector = tokio_tungstenite::Connector::Rustls(Arc::new(self.tls_config()?));
        Ok(tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(config),
            true,
            Some(connector),
        )
        .await?)
    }

    #[cfg(not(feature = "__rustls"))]
    async fn connect(
        &self,
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
        config: WebSocketConfig,
    ) -> Result<Connected, Error> {
        Ok(tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?)
    }

    #[cfg(feature = "__rustls")]
    fn tls_config(&self) -> Result<rustls::ClientConfig, Error> {
        let mut roots = rustls::RootCertStore::empty();
        #[cfg(feature = "rustls-tls-webpki-roots")]
        if self.inner.webpki_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for der in &self.inner.root_certificates {
            roots
                .add(rustls::pki_types::CertificateDer::from(der.clone()))
                .map_err(|e| Error::Config(format!("root certificate: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("tls: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth())
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
        let graceful = !options.invocation.artifacts_dirs.is_empty();
        let mut session = self.session().await?;
        let result = session.query(prompt, options).await;
        finish(session, graceful && result.is_ok()).await;
        result
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
        let graceful = !options.batch.artifacts_dirs.is_empty();
        let mut session = self.session().await?;
        let result = session.execute_commands(commands, options).await;
        finish(session, graceful && result.is_ok()).await;
        result
    }
}

async fn finish(mut session: Session, graceful: bool) {
    if graceful {
        if let Err(e) = session.close().await {
            tracing::debug!(error = %e, "graceful close failed");
        }
    } else {
        session.close_socket().await;
    }
}
