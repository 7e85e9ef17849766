//! Operating the runtime: the plain HTTP endpoints beside the WebSocket (`/healthz`,
//! `/readyz`, `/metrics`), the metrics they expose, and the drain of a graceful shutdown.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use runtimeuse_tokio::server::{Backlog, SentTally};
use runtimeuse_tokio::tokio_tungstenite::tungstenite::http;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// The longest request head read before the WebSocket handshake or an endpoint's answer.
const MAX_HEAD: usize = 16 << 10;

/// Most distinct values a label taken from a request (a model name) gets; later ones are
/// counted as `other`, so that no client can grow the metrics without bound.
const MAX_LABEL_VALUES: usize = 32;

/// What the runtime's operators see of it: since when it runs, whether it drains, and its
/// metrics.
pub(crate) struct Ops {
    started: Instant,
    draining: AtomicBool,
    pub(crate) metrics: std::sync::Arc<Metrics>,
    /// Tells the connections how far the shutdown has gone.
    drain: watch::Sender<Drain>,
}

/// How far a graceful shutdown has gone, as the connections see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Drain {
    /// Serving.
    Serving,
    /// Draining: a connection with no request in flight closes (1001); one with a request
    /// closes once the request ended.
    Draining,
    /// The grace is over: requests in flight are cancelled (and their cancel confirmed), then
    /// the connection closes (1001).
    Cancelling,
}

impl Ops {
    pub(crate) fn new(sent: SentTally, queued: Backlog) -> Self {
        Self {
            started: Instant::now(),
            draining: AtomicBool::new(false),
            metrics: std::sync::Arc::new(Metrics::new(sent, queued)),
            drain: watch::channel(Drain::Serving).0,
        }
    }

    /// Whether the runtime accepts sessions (not while it drains).
    pub(crate) fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed)
    }

    /// Moves the shutdown on: readiness goes false first, then the connections are told.
    pub(crate) fn drain(&self, phase: Drain) {
        self.draining.store(true, Ordering::Relaxed);
        self.drain.send_replace(phase);
    }

    /// The drain as a connection watches it.
    pub(crate) fn watch_drain(&self) -> watch::Receiver<Drain> {
        self.drain.subscribe()
    }

    /// The JSON body of `/healthz` and `/readyz`.
    fn health(&self) -> String {
        let m = &self.metrics;
        json!({
            "status": if self.is_ready() { "ok" } else { "draining" },
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs_f64(),
            "connections": m.connections_open.get(),
            "requests_in_flight": m.requests_in_flight.get(),
        })
        .to_string()
    }

    /// The metrics in the text format.
    fn exposition(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.metrics.registry)
        {
            tracing::warn!(error = %e, "could not encode the metrics");
        }
        out
    }
}

/// How a connection ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum ConnectionOutcome {
    /// A session was served.
    served,
    /// The handshake failed or was refused (a wrong token, a refused resumption).
    refused,
    /// Over the connection limit.
    over_limit,
    /// A plain HTTP request (an endpoint here).
    http,
}

/// The kind of a request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum RequestKind {
    query,
    commands,
}

/// How a request ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum RequestOutcome {
    ok,
    error,
    cancelled,
    timeout,
}

/// How a command ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum CommandStatus {
    /// Exit code 0.
    ok,
    /// Another exit code (or a signal).
    failed,
    /// Cancelled: its process group was killed.
    cancelled,
    /// It could not be started.
    not_started,
}

/// How something ended, for counters of successes and failures.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum Outcome {
    ok,
    failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    outcome: ConnectionOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    kind: RequestKind,
    outcome: RequestOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: RequestKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    status: CommandStatus,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderStatusLabels {
    provider: &'static str,
    /// The HTTP status, or `transport` when none came back.
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    provider: &'static str,
    model: String,
    direction: &'static str,
}

type DurationFamily = Family<KindLabels, Histogram, fn() -> Histogram>;

/// The runtime's metrics (Prometheus conventions: units in the names, `_total` counters,
/// labels from small fixed sets).
pub(crate) struct Metrics {
    registry: Registry,
    connections_open: Gauge,
    connections: Family<ConnectionLabels, Counter>,
    requests_in_flight: Gauge,
    requests: Family<RequestLabels, Counter>,
    request_duration: DurationFamily,
    commands: Family<CommandLabels, Counter>,
    artifact_uploads: Family<OutcomeLabels, Counter>,
    agent_turns: Family<ProviderLabels, Counter>,
    tool_calls: Family<ProviderLabels, Counter>,
    provider_retries: Family<ProviderLabels, Counter>,
    provider_errors: Family<ProviderStatusLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    /// The model names seen as labels so far (bounded).
    models: std::sync::Mutex<Vec<String>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The metrics, the server's own counts (`sent`, `queued`) read where they are kept at
    /// each scrape.
    fn new(sent: SentTally, queued: Backlog) -> Self {
        let mut registry = Registry::with_prefix("runtimeuse");
        let m = Self {
            registry: Registry::default(),
            connections_open: Gauge::default(),
            connections: Family::default(),
            requests_in_flight: Gauge::default(),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 4.0, 10))
            }),
            commands: Family::default(),
            artifact_uploads: Family::default(),
            agent_turns: Family::default(),
            tool_calls: Family::default(),
            provider_retries: Family::default(),
            provider_errors: Family::default(),
            tokens: Family::default(),
            models: std::sync::Mutex::new(Vec::new()),
        };
        let r = &mut registry;
        r.register(
            "connections_open",
            "WebSocket connections open now",
            m.connections_open.clone(),
        );
        r.register(
            "connections",
            "Connections accepted, by outcome (served, refused, over_limit, http)",
            m.connections.clone(),
        );
        r.register(
            "requests_in_flight",
            "Requests running now",
            m.requests_in_flight.clone(),
        );
        r.register(
            "requests",
            "Requests ended, by kind (query, commands) and outcome (ok, error, cancelled, timeout)",
            m.requests.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Time from a request's start to its terminal, by kind",
            Unit::Seconds,
            m.request_duration.clone(),
        );
        r.register(
            "sent_frames",
            "Data frames sent to clients",
            Read::SentFrames(sent.clone()),
        );
        r.register_with_unit(
            "sent",
            "Bytes of the data frames sent to clients",
            Unit::Bytes,
            Read::SentBytes(sent),
        );
        r.register_with_unit(
            "queued",
            "Bytes waiting to be sent to clients now",
            Unit::Bytes,
            Read::Queued(queued),
        );
        r.register(
            "commands",
            "Shell commands run, by status (ok, failed, cancelled, not_started)",
            m.commands.clone(),
        );
        r.register(
            "artifact_uploads",
            "Artifact uploads, by outcome (ok, failed)",
            m.artifact_uploads.clone(),
        );
        r.register(
            "agent_turns",
            "Model turns of the agents, by provider",
            m.agent_turns.clone(),
        );
        r.register(
            "tool_calls",
            "Tool calls the models made, by provider",
            m.tool_calls.clone(),
        );
        r.register(
            "provider_retries",
            "Provider requests tried again, by provider",
            m.provider_retries.clone(),
        );
        r.register(
            "provider_errors",
            "Provider requests that failed, by provider and HTTP status",
            m.provider_errors.clone(),
        );
        r.register(
            "tokens",
            "Tokens the providers counted, by provider, model and direction (in, out)",
            m.tokens.clone(),
        );
        Self { registry, ..m }
    }

    /// A connection opened (a session is served).
    pub(crate) fn connection_opened(&self) {
        self.connections_open.inc();
    }

    /// A connection that served a session closed.
    pub(crate) fn connection_closed(&self) {
        self.connections_open.dec();
        self.connection(ConnectionOutcome::served);
    }

    /// A connection ended so.
    pub(crate) fn connection(&self, outcome: ConnectionOutcome) {
        self.connections
            .get_or_create(&ConnectionLabels { outcome })
            .inc();
    }

    /// A request started.
    pub(crate) fn request_started(&self) {
        self.requests_in_flight.inc();
    }

    /// A request ended so, after `took`.
    pub(crate) fn request_ended(&self, kind: RequestKind, outcome: RequestOutcome, took: Duration) {
        self.requests_in_flight.dec();
        self.requests
            .get_or_create(&RequestLabels { kind, outcome })
            .inc();
        self.request_duration
            .get_or_create(&KindLabels { kind })
            .observe(took.as_secs_f64());
    }

    /// A command ended so.
    pub(crate) fn command(&self, status: CommandStatus) {
        self.commands.get_or_create(&CommandLabels { status }).inc();
    }

    /// An artifact upload ended so.
    pub(crate) fn artifact_upload(&self, outcome: Outcome) {
        self.artifact_uploads
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// A model turn of `provider` ended, with these token counts for `model`.
    pub(crate) fn turn(
        &self,
        provider: &'static str,
        model: &str,
        tokens_in: u64,
        tokens_out: u64,
    ) {
        self.agent_turns
            .get_or_create(&ProviderLabels { provider })
            .inc();
        let model = self.model_label(model);
        for (direction, n) in [("in", tokens_in), ("out", tokens_out)] {
            self.tokens
                .get_or_create(&TokenLabels {
                    provider,
                    model: model.clone(),
                    direction,
                })
                .inc_by(n);
        }
    }

    /// The model called a tool.
    pub(crate) fn tool_call(&self, provider: &'static str) {
        self.tool_calls
            .get_or_create(&ProviderLabels { provider })
            .inc();
    }

    /// A provider request is tried again.
    pub(crate) fn provider_retry(&self, provider: &'static str) {
        self.provider_retries
            .get_or_create(&ProviderLabels { provider })
            .inc();
    }

    /// A provider request failed with this HTTP status (`None`: no answer).
    pub(crate) fn provider_error(&self, provider: &'static str, status: Option<u16>) {
        let status = status.map_or_else(|| "transport".to_owned(), |s| s.to_string());
        self.provider_errors
            .get_or_create(&ProviderStatusLabels { provider, status })
            .inc();
    }

    /// `model` as a label value: itself among the first [`MAX_LABEL_VALUES`] names seen,
    /// `other` after them, and `other` for a name outside the alphabet of model names
    /// (ASCII letters, digits and `-._:/@+`): the name comes from the client, and
    /// `prometheus-client` writes label values as they are, so a `"` or a line break would
    /// forge samples.
    fn model_label(&self, model: &str) -> String {
        let safe = |c: char| c.is_ascii_alphanumeric() || "-._:/@+".contains(c);
        if !model.chars().all(safe) {
            return "other".to_owned();
        }
        let Ok(mut seen) = self.models.lock() else {
            return "other".to_owned();
        };
        if seen.iter().any(|m| m == model) {
            return model.to_owned();
        }
        if seen.len() < MAX_LABEL_VALUES && model.len() <= 128 {
            seen.push(model.to_owned());
            return model.to_owned();
        }
        "other".to_owned()
    }
}

/// A metric read at each scrape from where the server keeps the count, rather than copied.
#[derive(Debug)]
enum Read {
    /// Data frames sent (a counter).
    SentFrames(SentTally),
    /// Their bytes (a counter).
    SentBytes(SentTally),
    /// Bytes queued for the clients now (a gauge).
    Queued(Backlog),
}

impl EncodeMetric for Read {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        match self {
            Self::SentFrames(t) => encoder.encode_counter::<NoLabelSet, _, u64>(&t.frames(), None),
            Self::SentBytes(t) => encoder.encode_counter::<NoLabelSet, _, u64>(&t.bytes(), None),
            Self::Queued(q) => encoder.encode_gauge(&i64::try_from(q.bytes()).unwrap_or(i64::MAX)),
        }
    }

    fn metric_type(&self) -> MetricType {
        match self {
            Self::SentFrames(_) | Self::SentBytes(_) => MetricType::Counter,
            Self::Queued(_) => MetricType::Gauge,
        }
    }
}

/// The start of what a client sent: its request head, parsed.
pub(crate) struct Head {
    /// Every byte read so far (the head and anything after it).
    bytes: Vec<u8>,
    /// The request, for the token check (no body).
    request: http::Request<()>,
    /// Whether it asks for a WebSocket upgrade.
    upgrade: bool,
    /// Whether it is HTTP/1.1 (not 1.0).
    http11: bool,
}

/// Why no request head was read, and what to answer (when the peer speaks HTTP at all).
#[derive(Debug)]
pub(crate) struct NoHead {
    /// What happened, for the log.
    pub(crate) why: String,
    /// The HTTP status to answer with, if any: `400` for a head that is not HTTP, `431` for
    /// one too long.
    pub(crate) status: Option<u16>,
}

impl NoHead {
    fn quiet(why: impl Into<String>) -> Self {
        Self {
            why: why.into(),
            status: None,
        }
    }

    fn answered(status: u16, why: impl Into<String>) -> Self {
        Self {
            why: why.into(),
            status: Some(status),
        }
    }

    /// Answers the peer with the status, if there is one, and closes.
    pub(crate) async fn answer(&self, mut stream: TcpStream) {
        let Some(status) = self.status else { return };
        let body = match status {
            431 => "the request head is too long\n",
            _ => "not an HTTP request\n",
        };
        let response = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {PLAIN}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            reason(status),
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }
}

/// Reads a request head (at most [`MAX_HEAD`] bytes); `talking` is called once the first
/// bytes arrived.
///
/// # Errors
///
/// When the connection ends first, the head is too long, or it is not HTTP.
pub(crate) async fn read_head(
    stream: &mut TcpStream,
    talking: impl FnOnce(),
) -> Result<Head, NoHead> {
    let mut talking = Some(talking);
    let mut bytes = Vec::with_capacity(1024);
    let end = loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if bytes.len() >= MAX_HEAD {
            return Err(NoHead::answered(
                431,
                format!("a request head longer than {MAX_HEAD} bytes"),
            ));
        }
        let mut chunk = [0u8; 2048];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| NoHead::quiet(format!("reading the request: {e}")))?;
        if n == 0 {
            return Err(NoHead::quiet("the connection ended before its request"));
        }
        bytes.extend_from_slice(&chunk[..n]);
        if let Some(said) = talking.take() {
            said();
        }
        // What cannot become an HTTP head is refused at once, not after the handshake
        // timeout: a TLS ClientHello (`wss://` to this plain port) would otherwise keep its
        // client waiting 10 s for nothing.
        if bytes.first() == Some(&0x16) {
            return Err(NoHead::quiet(
                "a TLS handshake on this plain port (the client used wss://)",
            ));
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        if let Err(e) = httparse::Request::new(&mut headers).parse(&bytes) {
            // Too many headers is for the full parse below to say; anything else is garbage.
            if e != httparse::Error::TooManyHeaders {
                return Err(NoHead::answered(400, format!("not an HTTP request: {e}")));
            }
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    parsed.parse(&bytes[..end]).map_err(|e| match e {
        httparse::Error::TooManyHeaders => NoHead::answered(431, "more than 64 headers"),
        e => NoHead::answered(400, format!("not an HTTP request: {e}")),
    })?;
    let http11 = parsed.version == Some(1);
    let mut request = http::Request::builder()
        .method(parsed.method.unwrap_or("GET"))
        .uri(parsed.path.unwrap_or("/"));
    let mut upgrade = false;
    for h in parsed.headers.iter() {
        upgrade |= h.name.eq_ignore_ascii_case("upgrade")
            && String::from_utf8_lossy(h.value).eq_ignore_ascii_case("websocket");
        request = request.header(h.name, h.value);
    }
    let request = request
        .body(())
        .map_err(|e| NoHead::answered(400, format!("not an HTTP request: {e}")))?;
    Ok(Head {
        bytes,
        request,
        upgrade,
        http11,
    })
}

/// What is wrong with a WebSocket upgrade request (RFC 6455, 4.2.1), if anything.
fn upgrade_fault(head: &Head) -> Option<Endpoint> {
    let headers = head.request.headers();
    let has = |name: &str, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let versions: Vec<_> = headers.get_all("sec-websocket-version").iter().collect();
    let keys: Vec<_> = headers.get_all("sec-websocket-key").iter().collect();
    let key_ok = |k: &http::HeaderValue| {
        let k = k.as_bytes();
        k.len() == 24
            && k.ends_with(b"==")
            && k[..22]
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
    };
    if head.request.method() != http::Method::GET || !head.http11 {
        Some(Endpoint::BadUpgrade(
            "a WebSocket upgrade is a GET of HTTP/1.1",
        ))
    } else if !has("connection", "upgrade") {
        Some(Endpoint::BadUpgrade(
            "a WebSocket upgrade needs Connection: Upgrade",
        ))
    } else if !matches!(&keys[..], [k] if key_ok(k)) {
        Some(Endpoint::BadUpgrade(
            "a WebSocket upgrade needs one Sec-WebSocket-Key of 16 bytes in base64",
        ))
    } else if !matches!(&versions[..], [v] if v.as_bytes() == b"13") {
        Some(Endpoint::WrongVersion)
    } else {
        None
    }
}

impl Head {
    /// The endpoint this head asks for, when it is one (a `GET` without an upgrade).
    /// Any other request without a WebSocket upgrade is [`Endpoint::NotWebSocket`].
    pub(crate) fn endpoint(&self) -> Option<Endpoint> {
        if self.upgrade {
            return upgrade_fault(self);
        }
        let method = self.request.method();
        let probe = match self.request.uri().path() {
            "/healthz" => Some(Endpoint::Health),
            "/readyz" => Some(Endpoint::Ready),
            "/metrics" => Some(Endpoint::Metrics),
            _ => None,
        };
        // `HEAD` is answered as `GET` without the body (load balancers probe with it).
        if method != http::Method::GET && method != http::Method::HEAD {
            return Some(Endpoint::MethodNotAllowed);
        }
        Some(match (probe, self.request.uri().path()) {
            (Some(p), _) => p,
            (None, "/") => Endpoint::NotWebSocket,
            (None, _) => Endpoint::NotFound,
        })
    }

    /// Whether the head presents the runtime's `token` ([`runtimeuse_proto::auth`]).
    fn presents(&self, token: &str) -> bool {
        let headers: Vec<&[u8]> = (self.request.headers())
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .map(http::HeaderValue::as_bytes)
            .collect();
        runtimeuse_proto::auth::authorized(&headers, self.request.uri().query(), token)
    }

    /// The stream again, with the bytes read so far in front: for the WebSocket handshake.
    pub(crate) fn replay(self, stream: TcpStream) -> Prefixed {
        Prefixed {
            head: self.bytes,
            at: 0,
            inner: stream,
        }
    }
}

/// A plain HTTP endpoint of the runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `/healthz`: alive.
    Health,
    /// `/readyz`: accepting sessions.
    Ready,
    /// `/metrics`: the Prometheus exposition.
    Metrics,
    /// `GET /` without a WebSocket upgrade: `426 Upgrade Required`, with a line that says
    /// what this port serves (a browser or `curl` gets an answer, not an empty reply).
    NotWebSocket,
    /// Another path without an upgrade: `404`.
    NotFound,
    /// A method other than `GET` and `HEAD`: `405`, with `Allow: GET, HEAD`.
    MethodNotAllowed,
    /// A WebSocket upgrade that is not one (RFC 6455): `400`, saying what is wrong.
    BadUpgrade(&'static str),
    /// A WebSocket upgrade of another version than 13: `426`, with
    /// `Sec-WebSocket-Version: 13` (RFC 6455, 4.4).
    WrongVersion,
}

const PLAIN: &str = "text/plain; charset=utf-8";

/// What this port serves, for a person who reached it with plain HTTP.
const WHAT_THIS_IS: &str = "this is a runtimeuse agent runtime: connect with a WebSocket client \
     (ws://); plain HTTP serves /healthz, /readyz and /metrics\n";

/// Answers an endpoint's request and closes. `/healthz` and `/readyz` need no token (they
/// tell nothing secret: a version, an uptime and two counts); `/metrics` needs the runtime's
/// token when one is set, as a WebSocket connection does.
pub(crate) async fn answer(
    mut stream: TcpStream,
    endpoint: Endpoint,
    head: &Head,
    ops: &Ops,
    token: Option<&str>,
) {
    let (status, kind, body) = match endpoint {
        Endpoint::Health => (200, "application/json", ops.health()),
        Endpoint::Ready if ops.is_ready() => (200, "application/json", ops.health()),
        Endpoint::Ready => (503, "application/json", ops.health()),
        Endpoint::NotWebSocket => (426, PLAIN, WHAT_THIS_IS.to_owned()),
        Endpoint::NotFound => (404, PLAIN, WHAT_THIS_IS.to_owned()),
        Endpoint::MethodNotAllowed => (405, PLAIN, WHAT_THIS_IS.to_owned()),
        Endpoint::BadUpgrade(why) => (400, PLAIN, format!("{why}\n")),
        Endpoint::WrongVersion => (
            426,
            PLAIN,
            "this runtime speaks WebSocket version 13\n".to_owned(),
        ),
        Endpoint::Metrics if token.is_some_and(|t| !head.presents(t)) => {
            (401, PLAIN, "a token is required\n".to_owned())
        }
        Endpoint::Metrics => {
            let accept = head.request.headers().get(http::header::ACCEPT);
            if crate::exposition::wants_text(accept.and_then(|a| a.to_str().ok())) {
                let text = crate::exposition::to_text(&ops.exposition());
                (200, crate::exposition::TEXT, text)
            } else {
                (200, crate::exposition::OPENMETRICS, ops.exposition())
            }
        }
    };
    let reason = reason(status);
    let extra = match endpoint {
        Endpoint::WrongVersion => "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n",
        Endpoint::NotWebSocket => "Upgrade: websocket\r\n",
        Endpoint::MethodNotAllowed => "Allow: GET, HEAD\r\n",
        _ => "",
    };
    // `HEAD`: the same head, no body.
    let shown = if head.request.method() == http::Method::HEAD {
        ""
    } else {
        body.as_str()
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         {extra}Cache-Control: no-store\r\nConnection: close\r\n\r\n{shown}",
        body.len(),
    );
    if let Err(e) = stream.write_all(response.as_bytes()).await {
        tracing::debug!(error = %e, "could not answer an HTTP request");
    }
    let _ = stream.shutdown().await;
}

/// The reason phrase of the statuses the runtime answers with.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    }
}

/// Refuses a session while the runtime drains: `503`, and the connection closes.
pub(crate) async fn refuse_draining(mut stream: TcpStream) {
    let body = "the runtime is shutting down\n";
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A TCP stream whose first bytes were read already: they are read again first.
pub(crate) struct Prefixed {
    head: Vec<u8>,
    at: usize,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.head.len() {
            let n = buf.remaining().min(this.head.len() - this.at);
            buf.put_slice(&this.head[this.at..this.at + n]);
            this.at += n;
            if this.at == this.head.len() {
                this.head = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_labels_are_bounded() {
        let m = Metrics::new(SentTally::new(), Backlog::new());
        for i in 0..MAX_LABEL_VALUES {
            assert_eq!(m.model_label(&format!("m{i}")), format!("m{i}"));
        }
        assert_eq!(m.model_label("m0"), "m0", "a name seen stays");
        assert_eq!(m.model_label("one more"), "other");
        assert_eq!(m.model_label(&"x".repeat(200)), "other");
    }

    #[test]
    fn a_model_name_cannot_forge_samples() {
        let ops = Ops::new(SentTally::new(), Backlog::new());
        let forged = "m\"} 1\nruntimeuse_forged_total 9\n#";
        ops.metrics.turn("openai", forged, 1, 1);
        ops.metrics
            .turn("openai", "openai/gpt-4o-mini:2024@eu+x", 1, 1);
        let text = ops.exposition();
        assert!(!text.contains("forged"), "{text}");
        for line in [
            "runtimeuse_tokens_total{provider=\"openai\",model=\"other\",direction=\"in\"} 1",
            "runtimeuse_tokens_total{provider=\"openai\",model=\"openai/gpt-4o-mini:2024@eu+x\",direction=\"in\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn the_exposition_names_follow_the_conventions() {
        let ops = Ops::new(SentTally::new(), Backlog::new());
        ops.metrics.request_started();
        ops.metrics.request_ended(
            RequestKind::commands,
            RequestOutcome::ok,
            Duration::from_millis(20),
        );
        ops.metrics.turn("openai", "gpt-test", 10, 5);
        let text = ops.exposition();
        for line in [
            "runtimeuse_requests_total{kind=\"commands\",outcome=\"ok\"} 1",
            "runtimeuse_request_duration_seconds_count{kind=\"commands\"} 1",
            "runtimeuse_requests_in_flight 0",
            "runtimeuse_tokens_total{provider=\"openai\",model=\"gpt-test\",direction=\"in\"} 10",
            "runtimeuse_sent_bytes_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
