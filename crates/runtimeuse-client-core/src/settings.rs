//! Connection settings and [`ClientBuilder`], shared by the async adapters' `Client`s.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use runtimeuse_proto as proto;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Request;
use tungstenite::http::{HeaderName, HeaderValue};
use tungstenite::protocol::WebSocketConfig;

use crate::Error;

/// Where and how a client connects. Built with [`ClientBuilder`]; adapters read it to connect.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// The runtime's URL (`ws://` or `wss://`).
    pub url: String,
    /// Extra HTTP headers of the WebSocket handshake.
    pub headers: Vec<(String, String)>,
    /// How long connecting (TCP, TLS and the handshake) may take.
    pub connect_timeout: Duration,
    /// The largest message accepted from the runtime.
    pub max_frame_size: usize,
    /// Extra trusted root certificates (DER) for `wss://`.
    pub root_certificates: Vec<Vec<u8>>,
    /// Whether to trust the webpki root certificates (needs the `webpki-roots` feature).
    pub webpki_roots: bool,
    /// The protocol settings of each session.
    pub session: proto::Config,
}

impl ClientSettings {
    /// Default settings for this URL: 30 s connect timeout, 64 MiB frames, webpki roots when
    /// the feature is on.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            headers: Vec::new(),
            connect_timeout: Duration::from_secs(30),
            max_frame_size: 64 << 20,
            root_certificates: Vec::new(),
            webpki_roots: cfg!(feature = "webpki-roots"),
            session: proto::Config::default(),
        }
    }

    /// The handshake request (URL and headers) and the WebSocket limits.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a bad URL, header name or header value.
    pub fn handshake(&self) -> Result<(Request, WebSocketConfig), Error> {
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| Error::Config(format!("url {}: {e}", self.url)))?;
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| Error::Config(format!("header name {name}: {e}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| Error::Config(format!("header value for {name}: {e}")))?;
            request.headers_mut().append(name, value);
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(self.max_frame_size))
            .max_frame_size(Some(self.max_frame_size));
        Ok((request, config))
    }

    /// The rustls configuration for `wss://` (ring provider; webpki roots when enabled, plus
    /// the extra root certificates).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a root certificate rustls refuses.
    #[cfg(feature = "rustls")]
    pub fn tls_config(&self) -> Result<rustls::ClientConfig, Error> {
        let mut roots = rustls::RootCertStore::empty();
        #[cfg(feature = "webpki-roots")]
        if self.webpki_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for der in &self.root_certificates {
            roots
                .add(rustls::pki_types::CertificateDer::from(der.clone()))
                .map_err(|e| Error::Config(format!("root certificate: {e}")))?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("tls: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }
}

/// Builds an adapter's `Client` (`C`) with non-default settings.
pub struct ClientBuilder<C> {
    settings: ClientSettings,
    client: PhantomData<fn() -> C>,
}

impl<C> Clone for ClientBuilder<C> {
    fn clone(&self) -> Self {
        Self {
            settings: self.settings.clone(),
            client: PhantomData,
        }
    }
}

impl<C> fmt::Debug for ClientBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("settings", &self.settings)
            .finish()
    }
}

impl<C: From<ClientSettings>> ClientBuilder<C> {
    /// A builder for this URL with default settings.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            settings: ClientSettings::new(url),
            client: PhantomData,
        }
    }

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
    #[must_use]
    pub fn root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.settings.root_certificates.push(der.into());
        self
    }

    /// Whether to trust the webpki root certificates (default `true` when the adapter's
    /// webpki feature is on).
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
    pub fn build(self) -> C {
        C::from(self.settings)
    }
}
