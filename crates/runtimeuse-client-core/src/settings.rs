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
///
/// `Debug` never shows a secret: the values of `Authorization`, `Proxy-Authorization`,
/// `Cookie`, `X-Api-Key` and of headers marked with
/// [`ClientBuilder::sensitive_header`] are replaced by `[REDACTED]`, and so is a `token`
/// query parameter of the URL.
#[non_exhaustive]
#[derive(Clone)]
pub struct ClientSettings {
    /// The runtime's URL (`ws://` or `wss://`).
    pub url: String,
    /// Extra HTTP headers of the WebSocket handshake.
    pub headers: Vec<(String, String)>,
    /// Names (any case) of further headers whose values are secret.
    pub sensitive_headers: Vec<String>,
    /// How long connecting (TCP, TLS and the handshake) may take.
    pub connect_timeout: Duration,
    /// The largest message accepted from the runtime.
    pub max_frame_size: usize,
    /// The WebSocket's read buffer, which an idle connection keeps (larger frames still arrive
    /// whole: the buffer grows to hold them).
    pub read_buffer_size: usize,
    /// Extra trusted root certificates (DER) for `wss://`.
    pub root_certificates: Vec<Vec<u8>>,
    /// Whether to trust the webpki root certificates (needs the `webpki-roots` feature).
    pub webpki_roots: bool,
    /// Whether to trust the operating system's root certificates (needs the `native-roots`
    /// feature).
    pub native_roots: bool,
    /// The protocol settings of each session.
    pub session: proto::Config,
    /// Whether to ask the runtime for resumable sessions (the repository's
    /// `docs/resume.md`): a session then survives a lost connection, the client reconnecting
    /// within the runtime's grace period.
    pub resume: bool,
    /// A rustls configuration to use as it is for `wss://` (client certificates, custom
    /// verification), instead of the one built from the roots above.
    #[cfg(feature = "rustls")]
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// The default [`ClientSettings::read_buffer_size`]: 4 KiB.
///
/// tungstenite's own default is 128 KiB, which an idle connection keeps, and which it fills
/// with zeros before every read: with it, a fleet of idle sessions costs about 130 KB each, and
/// a round trip took longer (see the `fleet` bench).
pub const DEFAULT_READ_BUFFER: usize = 4 << 10;

/// Headers whose values are secret whatever the user marked.
const SENSITIVE: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];

impl ClientSettings {
    /// The URL for logs and messages: a `token` query parameter's value is `[REDACTED]`.
    pub fn display_url(&self) -> String {
        redacted_url(&self.url)
    }

    /// Whether the value of header `name` is secret.
    pub fn is_sensitive(&self, name: &str) -> bool {
        SENSITIVE.iter().any(|s| s.eq_ignore_ascii_case(name))
            || self
                .sensitive_headers
                .iter()
                .any(|s| s.eq_ignore_ascii_case(name))
    }
}

/// The URL with the value of a `token` query parameter replaced by `[REDACTED]`.
fn redacted_url(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("token") => format!("{k}=[REDACTED]"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| {
                let shown = if self.is_sensitive(n) {
                    "[REDACTED]"
                } else {
                    v
                };
                (n.as_str(), shown)
            })
            .collect();
        let mut d = f.debug_struct("ClientSettings");
        d.field("url", &redacted_url(&self.url))
            .field("headers", &headers)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_frame_size", &self.max_frame_size)
            .field("read_buffer_size", &self.read_buffer_size)
            .field("root_certificates", &self.root_certificates.len())
            .field("webpki_roots", &self.webpki_roots)
            .field("native_roots", &self.native_roots)
            .field("session", &self.session);
        #[cfg(feature = "rustls")]
        d.field("tls", &self.tls.as_ref().map(|_| "custom"));
        d.finish_non_exhaustive()
    }
}

impl ClientSettings {
    /// Default settings for this URL: 30 s connect timeout, 64 MiB frames, webpki roots when
    /// the feature is on.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            headers: Vec::new(),
            sensitive_headers: Vec::new(),
            connect_timeout: Duration::from_secs(30),
            max_frame_size: 64 << 20,
            read_buffer_size: DEFAULT_READ_BUFFER,
            root_certificates: Vec::new(),
            webpki_roots: cfg!(feature = "webpki-roots"),
            native_roots: cfg!(feature = "native-roots"),
            session: proto::Config::default(),
            resume: false,
            #[cfg(feature = "rustls")]
            tls: None,
        }
    }

    /// Refuses a `wss://` URL when the client was built without TLS (`tls`: whether the
    /// adapter was built with a TLS feature), before anything connects: every adapter says it
    /// the same way.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the feature to turn on.
    pub fn require_tls(&self, request: &Request, tls: bool) -> Result<(), Error> {
        if !tls && request.uri().scheme_str() == Some("wss") {
            return Err(Error::Config(
                "wss:// needs the rustls-tls-webpki-roots (or rustls-tls-native-roots) feature"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The handshake request (URL and headers, with these extra ones) and the WebSocket limits.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a bad URL, header name or header value.
    pub fn handshake_with(
        &self,
        extra: &[(&'static str, String)],
    ) -> Result<(Request, WebSocketConfig), Error> {
        let (mut request, config) = self.handshake()?;
        for (name, value) in extra {
            let value = HeaderValue::from_str(value)
                .map_err(|e| Error::Config(format!("header value for {name}: {e}")))?;
            request
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
        Ok((request, config))
    }

    /// The handshake request (URL and headers) and the WebSocket limits. A URL with a query
    /// but no path (`ws://host:8080?token=T`) asks for `/` with that query, as browsers and
    /// the upstream Python client do.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a bad URL, header name or header value.
    pub fn handshake(&self) -> Result<(Request, WebSocketConfig), Error> {
        let mut request = with_root_path(&self.url)
            .as_ref()
            .into_client_request()
            .map_err(|e| Error::Config(format!("url {}: {e}", self.url)))?;
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| Error::Config(format!("header name {name}: {e}")))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|e| Error::Config(format!("header value for {name}: {e}")))?;
            // http's own Debug (and tracing of the request) then hides it too.
            value.set_sensitive(self.is_sensitive(name.as_str()));
            request.headers_mut().append(name, value);
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(self.max_frame_size))
            .max_frame_size(Some(self.max_frame_size))
            .read_buffer_size(self.read_buffer_size);
        Ok((request, config))
    }

    /// Where `request` (from [`handshake`](Self::handshake)) connects: its host (IPv6 without
    /// brackets) and port, by default 80 for `ws://` and 443 for `wss://`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a URL without a host or with another scheme.
    pub fn host_and_port(&self, request: &Request) -> Result<(String, u16), Error> {
        let uri = request.uri();
        let default_port = match uri.scheme_str() {
            Some("ws") => 80,
            Some("wss") => 443,
            other => {
                let shown = self.display_url();
                let hint = match other {
                    Some("http") => format!("; did you mean ws{}?", &shown[4..]),
                    Some("https") => format!("; did you mean wss{}?", &shown[5..]),
                    _ => String::new(),
                };
                return Err(Error::Config(format!(
                    "url {shown}: the scheme must be ws or wss (runtimes speak WebSocket){hint}"
                )));
            }
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Error::Config(format!("url {} has no host", self.display_url())))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        // `Uri::port_u16` is `None` for a port that is not a `u16` (`:99999`), which would
        // quietly connect to the default port instead.
        let port = match uri.authority().and_then(|a| port_text(a.as_str())) {
            None | Some("") => default_port,
            Some(text) => text.parse::<u16>().map_err(|_| {
                Error::Config(format!(
                    "url {}: the port {text} is not a number from 0 to 65535",
                    self.display_url()
                ))
            })?,
        };
        Ok((host.to_owned(), port))
    }

    /// The rustls configuration for `wss://` (ring provider; webpki roots when enabled, plus
    /// the extra root certificates).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a root certificate rustls refuses.
    #[cfg(feature = "rustls")]
    pub fn tls_config(&self) -> Result<rustls::ClientConfig, Error> {
        if let Some(config) = &self.tls {
            return Ok(rustls::ClientConfig::clone(config));
        }
        let mut roots = rustls::RootCertStore::empty();
        #[cfg(feature = "webpki-roots")]
        if self.webpki_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        #[cfg(feature = "native-roots")]
        if self.native_roots {
            // Certificates the system has but rustls refuses are skipped, as rustls' own
            // platform verifier does.
            let native = rustls_native_certs::load_native_certs();
            let (_added, _skipped) = roots.add_parsable_certificates(native.certs);
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

    /// Marks header `name` as secret: its value never shows in `Debug` output or traces.
    /// `Authorization`, `Proxy-Authorization`, `Cookie` and `X-Api-Key` always are.
    #[must_use]
    pub fn sensitive_header(mut self, name: impl Into<String>) -> Self {
        self.settings.sensitive_headers.push(name.into());
        self
    }

    /// Uses this rustls configuration as it is for `wss://` (client certificates, custom
    /// certificate verification, ALPN…), instead of building one from the root certificates.
    #[cfg(feature = "rustls")]
    #[must_use]
    pub fn tls_config(mut self, config: std::sync::Arc<rustls::ClientConfig>) -> Self {
        self.settings.tls = Some(config);
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

    /// The WebSocket's read buffer, which an idle session keeps. Default
    /// [`DEFAULT_READ_BUFFER`] (4 KiB); larger frames still arrive whole, and while output
    /// streams in the adapters read 64 KiB at once anyway (their `ReadAheadStream`), so a
    /// larger buffer buys little.
    #[must_use]
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.settings.read_buffer_size = bytes;
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

    /// Whether to trust the operating system's root certificates (default `true` when the
    /// adapter's native-roots feature is on).
    #[must_use]
    pub fn native_roots(mut self, enabled: bool) -> Self {
        self.settings.native_roots = enabled;
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

    /// Asks the runtime for resumable sessions (default: no). A runtime that grants it
    /// (`runtimeuse serve` does) keeps a session whose connection was lost for its grace
    /// period (60 s by default), with its request running; the client reconnects with backoff
    /// within it, gets every frame it missed, and sends again what the runtime did not get.
    /// The caller sees only [`RequestEvent::Reconnected`](proto::RequestEvent::Reconnected) in
    /// an event stream. A runtime that does not know the extension (the upstream one) sees no
    /// difference.
    ///
    /// Off by default: a client that resumes cannot tell a runtime that went away for good
    /// (crashed, stopped) from a cut connection until its reconnections fail for the whole
    /// grace period (60 s by default), so a program that wants failures at once, as every
    /// earlier version reported them, keeps them; one that runs long requests through proxies
    /// turns it on.
    #[must_use]
    pub fn resume(mut self, enabled: bool) -> Self {
        self.settings.resume = enabled;
        self
    }

    /// The client.
    pub fn build(self) -> C {
        C::from(self.settings)
    }
}

/// The text after the port's colon in an authority (`user@host:port`, `[::1]:port`), if any.
fn port_text(authority: &str) -> Option<&str> {
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let after_host = match host_port.rfind(']') {
        Some(end) => &host_port[end + 1..],
        None => host_port,
    };
    after_host.rsplit_once(':').map(|(_, port)| port)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Probe;

    impl From<ClientSettings> for Probe {
        fn from(_: ClientSettings) -> Self {
            Probe
        }
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let builder = ClientBuilder::<Probe>::new("wss://sandbox.example/rt?x=1&token=tok-url-123")
            .header("Authorization", "Bearer tok-header-456")
            .header("x-sandbox-key", "tok-marked-789")
            .header("X-Trace", "visible")
            .sensitive_header("X-Sandbox-Key");
        let shown = format!("{builder:?}");
        for secret in ["tok-url-123", "tok-header-456", "tok-marked-789"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("visible") && shown.contains("x=1"),
            "{shown}"
        );
        let (request, _) = builder.settings.handshake().unwrap();
        let traced = format!("{request:?}");
        assert!(!traced.contains("tok-header-456"), "{traced}");
    }

    fn target(url: &str) -> Result<(String, u16), Error> {
        let settings = ClientBuilder::<Probe>::new(url).settings;
        let (request, _) = settings.handshake()?;
        settings.host_and_port(&request)
    }

    #[test]
    fn a_port_out_of_range_or_an_empty_host_is_refused_not_replaced() {
        assert_eq!(target("ws://h:9/x").unwrap(), ("h".into(), 9));
        assert_eq!(target("wss://h/").unwrap(), ("h".into(), 443));
        assert_eq!(target("ws://[::1]:7").unwrap(), ("::1".into(), 7));
        assert_eq!(target("ws://[::1]").unwrap(), ("::1".into(), 80));
        for url in ["ws://h:99999", "ws://h:65536/"] {
            let err = target(url).unwrap_err().to_string();
            assert!(err.contains("not a number from 0 to 65535"), "{url}: {err}");
        }
        let err = target("https://h:1/x").unwrap_err().to_string();
        assert!(err.contains("did you mean wss://h:1/x?"), "{err}");
        let err = target("ftp://h").unwrap_err().to_string();
        assert!(err.ends_with("(runtimes speak WebSocket)"), "{err}");
        match target("ws://:8080") {
            Err(err) => assert!(err.to_string().contains("no host"), "{err}"),
            Ok(t) => panic!("connected to {t:?}"),
        }
    }
}

/// `url` with the path `/` inserted before a query or fragment that follows the authority at
/// once (`ws://h:1?q` is `ws://h:1/?q`); any other URL as it is.
fn with_root_path(url: &str) -> std::borrow::Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    match rest.find(['/', '?', '#']) {
        Some(i) if rest.as_bytes()[i] != b'/' => {
            format!("{scheme}://{}/{}", &rest[..i], &rest[i..]).into()
        }
        _ => url.into(),
    }
}

#[cfg(test)]
mod root_path_tests {
    use super::with_root_path;

    #[test]
    fn a_query_right_after_the_authority_gets_the_root_path() {
        assert_eq!(with_root_path("ws://h:1?token=x"), "ws://h:1/?token=x");
        assert_eq!(with_root_path("wss://h#f"), "wss://h/#f");
        assert_eq!(with_root_path("ws://h:1/p?token=x"), "ws://h:1/p?token=x");
        assert_eq!(with_root_path("ws://h:1"), "ws://h:1");
        assert_eq!(with_root_path("not a url"), "not a url");
    }
}
