//! An agent runtime that speaks the runtimeuse protocol, built on the sans-IO core
//! ([`runtimeuse_proto::runtime::RuntimeSession`]) and the tokio server driver.
//!
//! It does what the upstream TypeScript runtime does: per connection one session; downloads
//! before a request (`.zip` archives extracted); pre/post commands and command batches through
//! `sh -c` with `cwd` and `env`, output streamed in chunks and stdout collected, the first
//! failing command ending a batch; cancel kills the command's whole process group; artifact
//! directories watched (gitignore-style rules), uploads by HTTP PUT to the URL the client
//! gives; the end-of-session drain; heartbeats; `secrets_to_redact` applied to everything
//! sent. Agent behaviour comes from an [`AgentHandler`]: [`ModelAgent`] answers with a
//! language model (OpenAI Responses, Chat Completions for OpenAI-compatible servers, Anthropic
//! Messages) that works in the sandbox with a shell and file tools; [`ClaudeAgent`] drives
//! Claude Code's CLI and [`AcpAgent`] any Agent Client Protocol agent (Gemini CLI, Claude
//! Code and Codex through their adapters); [`CommandAgent`] runs an external agent CLI;
//! [`ScriptedHandler`] is a deterministic one for tests and demos.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use runtimeuse_runtime::{Runtime, ScriptedHandler};
//!
//! let runtime = Runtime::new(ScriptedHandler).bind("127.0.0.1:0").await?;
//! println!("listening on {}", runtime.url());
//! let handle = runtime.spawn();
//! // ... connect clients to handle.url() ...
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod admission;
mod agents;
mod artifacts;
mod commands;
mod connection;
mod exposition;
mod handler;
mod http;
mod mailbox;
mod ops;
mod request;
mod scripted;
mod sessions;
mod stream;
mod uploads;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use runtimeuse_tokio::server::ServerConfig;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

pub use agents::{
    AcpAgent, AgentOptions, ClaudeAgent, CommandAgent, ModelAgent, ModelApi, Permissions,
    PromptInput, ProviderConfig,
};
pub use artifacts::DEFAULT_IGNORE;
pub use commands::kill_process_groups;
pub use handler::{AgentError, AgentHandler, BoxFuture, HandlerContext};
pub use scripted::ScriptedHandler;

pub use runtimeuse_proto as proto;
/// The core's types of the handler's signatures, named here so that a handler needs no
/// direct dependency on `runtimeuse-proto`.
pub use runtimeuse_proto::{Invocation, QueryResult, ResultData};

/// Settings of a [`Runtime`].
///
/// `#[non_exhaustive]`: start from [`RuntimeOptions::default`] and change fields.
#[non_exhaustive]
#[derive(Clone)]
pub struct RuntimeOptions {
    /// Interval of heartbeats while a request runs; `None` disables them. Default 15 s.
    pub heartbeat_interval: Option<Duration>,
    /// When set, clients must present this token (`Authorization: Bearer <token>`, the scheme
    /// in any case, or a percent-encoded `token` query parameter; compared in constant time).
    /// Without one, anyone who reaches the port can run commands: the runtime says so at
    /// start when it listens beyond loopback (as the upstream runtime, it does not refuse).
    pub token: Option<String>,
    /// Largest frame accepted from a client. Default 64 MiB.
    pub max_frame_size: usize,
    /// Bytes of unfinished frames all clients together may have sent: past it, connections
    /// holding more than 64 KiB of a frame stop reading but one, which reads its frame to the
    /// end, so that many large frames at once cost at most this and one frame (small
    /// requests go on). Default 128 MiB.
    pub max_inbound_total: usize,
    /// How often artifact directories are scanned. Default 250 ms.
    pub artifact_scan_interval: Duration,
    /// Most directory entries one scan of a connection's artifact directories reads; past
    /// it the rest is not watched (a warning says so). A scan stays on each directory's
    /// filesystem, skips pseudo filesystems, runs one at a time in the process, and waits
    /// three times as long as it took before the next. Default 100,000.
    pub artifact_scan_entries: usize,
    /// Budget of the stdout collected into a command batch's result, over all its commands,
    /// counted as JSON text: each command keeps the end of its stdout (where errors are) and
    /// says what was cut; the output is streamed in full regardless. Default 960 KiB, so that
    /// the result frame fits the 1 MiB frames of the upstream Python client.
    pub max_collected_stdout: usize,
    /// How long the end-of-session drain may wait for artifacts still being written.
    /// Default 3 s.
    pub end_session_drain: Duration,
    /// How long a request's terminal may wait for the artifact uploads it asked for (the
    /// terminal goes out once they are done, as upstream; what failed or is still running then
    /// is said in a query result's `artifact_upload_errors` metadata). Default 60 s.
    pub artifact_upload_timeout: Duration,
    /// How long a client may take to complete its WebSocket upgrade after connecting; slower
    /// ones are dropped. Default 10 s.
    pub handshake_timeout: Duration,
    /// Most sessions served at once (resumable ones waiting for their client included);
    /// beyond it, a new session's handshake is refused with `503`. Default 1024. Whatever is
    /// set, descriptors stay free for the commands and files of the requests: 1024 of them,
    /// or half the limit when the limit is small.
    pub max_connections: usize,
    /// Most connections whose handshake is in progress (strangers, until they present the
    /// token), apart from the sessions: when it is full, the oldest of them that sent nothing
    /// yet (else the oldest) is dropped for the new one, so a flood of idle sockets cannot
    /// lock token holders out (a client sends its request with its connection and is done in
    /// a round trip; the flood's sockets send nothing). Probes (`/healthz`, …)
    /// are answered in this stage. At most a quarter of the descriptors connections may
    /// take. Default 256.
    pub max_handshakes: usize,
    /// Bytes of output one connection may hold for its client before what produces it waits:
    /// a command's output is then no longer read from its pipes, so the command blocks in
    /// `write(2)` as it would behind `| less`, and an agent's next message waits. Nothing is
    /// dropped: a slow client gets everything, in order; a client that never reads stalls only
    /// its own request. Default 1 MiB.
    pub max_buffered: usize,
    /// Bytes of output all connections together may hold. Over it, connections holding more
    /// than a little (1/16 of [`max_buffered`](Self::max_buffered), at most 64 KiB) wait
    /// too, so that the ones holding the most stall first and a new, small request is still
    /// served. Default 256 MiB.
    pub max_buffered_total: usize,
    /// How long a client may take no bytes at all while the runtime has frames for it; then
    /// its connection is dropped and its request cancelled, as on a disconnect (one `info`
    /// line in the log). `None`: no limit. Default 60 s.
    pub write_stall_timeout: Option<Duration>,
    /// Hard limit of the bytes waiting in one connection's WebSocket write buffer, which
    /// [`max_buffered`](Self::max_buffered) keeps far lower in practice; it must hold the
    /// largest frame the runtime sends. Default 65 MiB (the frame limit and 1 MiB).
    pub max_write_buffer: usize,
    /// Connections the kernel may hold waiting to be accepted (the `listen` backlog, capped
    /// by `net.core.somaxconn`), for [`Runtime::bind`]. Default 1024: an orchestrator that
    /// opens hundreds of sessions at once otherwise overflows the usual 128, and each
    /// connection dropped that way waits a second for its SYN to be sent again.
    pub listen_backlog: u32,
    /// Bytes read from a client's socket at once, which is also the read buffer an idle
    /// connection keeps; larger frames still arrive whole. Default 4 KiB (tungstenite's
    /// 128 KiB made each idle connection cost about 140 KB).
    pub read_buffer_size: usize,
    /// How long a resumable session outlives a lost connection (its request goes on, what it
    /// sends waits for the client), for clients that ask for resumption at the handshake
    /// (the repository's `docs/resume.md`). Zero: resumption is not granted. Default 60 s.
    pub resume_grace: Duration,
    /// Bytes a resumable session may hold for a client that is not attached; past it the
    /// session can no longer be resumed and its request is cancelled. Producers wait at
    /// [`max_buffered`](Self::max_buffered) as for any client, so only what cannot wait (a
    /// terminal, heartbeats, artifact requests) goes past that. Default 2 MiB.
    pub max_replay: usize,
    /// How long [`BoundRuntime::serve`] lets requests in flight finish once its shutdown
    /// future resolved, before it cancels them. Default 30 s.
    pub shutdown_grace: Duration,
    /// Names of the runtime's environment variables that no child process gets: commands,
    /// pre- and post-commands, the model agent's shell tool, agent CLIs. A request's own
    /// `agent_env` may still set them (its client chose to). Default `RUNTIMEUSE_TOKEN`: the
    /// runtime's token is not the sandbox's to read.
    pub withheld_env: Vec<String>,
    /// Secrets of the runtime itself (a provider key, say), replaced by `[REDACTED]` in
    /// everything sent to clients as a request's `secrets_to_redact` are; the
    /// [`token`](Self::token) is always one. Default none.
    pub secrets: Vec<String>,
}

impl std::fmt::Debug for RuntimeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeOptions")
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .field("max_frame_size", &self.max_frame_size)
            .field("max_inbound_total", &self.max_inbound_total)
            .field("artifact_scan_interval", &self.artifact_scan_interval)
            .field("artifact_scan_entries", &self.artifact_scan_entries)
            .field("max_collected_stdout", &self.max_collected_stdout)
            .field("end_session_drain", &self.end_session_drain)
            .field("artifact_upload_timeout", &self.artifact_upload_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_handshakes", &self.max_handshakes)
            .field("max_buffered", &self.max_buffered)
            .field("max_buffered_total", &self.max_buffered_total)
            .field("write_stall_timeout", &self.write_stall_timeout)
            .field("max_write_buffer", &self.max_write_buffer)
            .field("listen_backlog", &self.listen_backlog)
            .field("read_buffer_size", &self.read_buffer_size)
            .field("resume_grace", &self.resume_grace)
            .field("max_replay", &self.max_replay)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("withheld_env", &self.withheld_env)
            .field("secrets", &format_args!("[{} hidden]", self.secrets.len()))
            .finish()
    }
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            heartbeat_interval: Some(Duration::from_secs(15)),
            token: None,
            max_frame_size: 64 << 20,
            max_inbound_total: 128 << 20,
            artifact_scan_interval: Duration::from_millis(250),
            artifact_scan_entries: 100_000,
            max_collected_stdout: 960 << 10,
            end_session_drain: connection::DEFAULT_DRAIN,
            artifact_upload_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_handshakes: 256,
            max_buffered: 1 << 20,
            max_buffered_total: 256 << 20,
            write_stall_timeout: Some(runtimeuse_tokio::server::DEFAULT_WRITE_STALL_TIMEOUT),
            max_write_buffer: (64 << 20) + (1 << 20),
            listen_backlog: 1024,
            read_buffer_size: runtimeuse_tokio::server::DEFAULT_SERVER_READ_BUFFER,
            resume_grace: Duration::from_secs(60),
            max_replay: 2 << 20,
            shutdown_grace: Duration::from_secs(30),
            withheld_env: vec!["RUNTIMEUSE_TOKEN".to_owned()],
            secrets: Vec::new(),
        }
    }
}

/// `head`, then each cause of `e` after a colon: the whole story of an error on one line
/// (reqwest's and tungstenite's top-level messages alone say little).
pub(crate) fn with_causes(mut head: String, e: &dyn std::error::Error) -> String {
    let mut source = e.source();
    while let Some(cause) = source {
        head.push_str(": ");
        head.push_str(&cause.to_string());
        source = cause.source();
    }
    head
}

pub(crate) struct Shared {
    handler: Arc<dyn AgentHandler>,
    options: RuntimeOptions,
    server: ServerConfig,
    /// The resumable sessions.
    sessions: sessions::Sessions,
    /// Health, metrics and the drain.
    ops: ops::Ops,
    /// [`RuntimeOptions::withheld_env`], for every child.
    withheld_env: Arc<[String]>,
    /// The handshake and session budgets.
    admission: Arc<admission::Admission>,
    /// Most connections at once, whatever their stage: what the descriptors allow.
    max_tasks: usize,
}

impl Shared {
    /// What every connection of a runtime shares: its handler, its settings, and the server
    /// settings (and output budget) made from them.
    pub(crate) fn new(handler: Arc<dyn AgentHandler>, options: RuntimeOptions) -> Self {
        let mut server = ServerConfig::default();
        server.runtime.heartbeat_interval = options.heartbeat_interval;
        server.runtime.max_frame_size = options.max_frame_size;
        server.runtime.secrets = options.secrets.clone();
        server.runtime.secrets.extend(options.token.clone());
        server.inbound = Some(runtimeuse_tokio::server::InboundBudget::new(
            options.max_inbound_total,
        ));
        server.max_write_buffer = Some(options.max_write_buffer);
        server.read_buffer_size = options.read_buffer_size;
        server.token = options.token.clone();
        server.write_stall_timeout = options.write_stall_timeout;
        // Producers stop at `max_buffered`; the client's frames are read while the queue is
        // under that and 1 MiB of answers to them.
        server.max_queued_for_reading = options.max_buffered.saturating_add(1 << 20);
        let queued = runtimeuse_tokio::server::Backlog::new();
        server.total_backlog = Some(queued.clone());
        let sent = runtimeuse_tokio::server::SentTally::new();
        server.sent = Some(sent.clone());
        let max_tasks = connection_cap(
            options
                .max_connections
                .saturating_add(options.max_handshakes),
        );
        let handshakes = options.max_handshakes.min(max_tasks / 4).max(1);
        let sessions = options
            .max_connections
            .min(max_tasks.saturating_sub(handshakes))
            .max(1);
        Self {
            handler,
            admission: admission::Admission::new(handshakes, sessions),
            max_tasks,
            withheld_env: options.withheld_env.clone().into(),
            options,
            server,
            sessions: sessions::Sessions::default(),
            ops: ops::Ops::new(sent, queued),
        }
    }
}

/// An agent runtime: a handler and its settings. [`bind`](Self::bind) it to serve.
pub struct Runtime {
    handler: Arc<dyn AgentHandler>,
    options: RuntimeOptions,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// A runtime running `handler` with default settings.
    pub fn new(handler: impl AgentHandler) -> Self {
        Self {
            handler: Arc::new(handler),
            options: RuntimeOptions::default(),
        }
    }

    /// A runtime running a handler that is already shared.
    pub fn from_arc(handler: Arc<dyn AgentHandler>) -> Self {
        Self {
            handler,
            options: RuntimeOptions::default(),
        }
    }

    /// Replaces the settings.
    #[must_use]
    pub fn options(mut self, options: RuntimeOptions) -> Self {
        self.options = options;
        self
    }

    /// Binds a TCP listener (use port 0 for a free port).
    ///
    /// # Errors
    ///
    /// If the address cannot be bound.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> std::io::Result<BoundRuntime> {
        let mut last = None;
        for addr in tokio::net::lookup_host(addr).await? {
            match listen(addr, self.options.listen_backlog) {
                Ok(listener) => return Ok(self.listen(listener)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the address resolved to nothing",
            )
        }))
    }

    /// Serves on an already bound listener.
    pub fn listen(self, listener: TcpListener) -> BoundRuntime {
        BoundRuntime {
            listener,
            shared: Arc::new(Shared::new(self.handler, self.options)),
        }
    }
}

/// A runtime bound to a port, ready to [`serve`](Self::serve).
pub struct BoundRuntime {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl fmt::Debug for BoundRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundRuntime")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl BoundRuntime {
    /// The bound address.
    ///
    /// # Errors
    ///
    /// If the socket's address cannot be read.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// `ws://<addr>` of the bound address (`127.0.0.1` when bound to all interfaces).
    pub fn url(&self) -> String {
        url(self.listener.local_addr().ok())
    }

    /// Accepts connections until `shutdown` resolves, then shuts down gracefully: readiness
    /// (`/readyz`) goes false, no connection is accepted any more, connections with no
    /// request in flight close (code 1001, going away), requests in flight get
    /// [`RuntimeOptions::shutdown_grace`] to finish; then the rest are cancelled (each client
    /// gets its cancel confirmed) and their connections close with 1001.
    ///
    /// Besides WebSocket sessions, the port answers plain `GET /healthz` (alive),
    /// `GET /readyz` (accepting sessions) and `GET /metrics` (the Prometheus text format;
    /// behind the token when one is set).
    ///
    /// # Errors
    ///
    /// Never for a single failed accept (logged); only if the listener itself fails.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let grace = self.shared.options.shutdown_grace;
        self.serve_until(async {
            shutdown.await;
            grace
        })
        .await
    }

    /// [`serve`](Self::serve), with the grace that `shutdown` resolves to.
    async fn serve_until(self, shutdown: impl Future<Output = Duration>) -> std::io::Result<()> {
        let Self { listener, shared } = self;
        if shared.options.token.is_none()
            && let Ok(addr) = listener.local_addr()
            && !addr.ip().is_loopback()
        {
            tracing::warn!(
                %addr,
                "no token is set: anyone who can reach this address can run commands here; \
                 set a token (`--token` or RUNTIMEUSE_TOKEN) unless the network around the \
                 sandbox already keeps strangers out"
            );
        }
        tokio::pin!(shutdown);
        let mut connections = JoinSet::new();
        let mut backoff = AcceptBackoff::default();
        let max = shared.max_tasks;
        let mut next_id = 0u64;
        let grace = loop {
            while connections.try_join_next().is_some() {}
            tokio::select! {
                grace = &mut shutdown => break grace,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        backoff.reset();
                        let Some(handshake) = admit(&shared, &stream, connections.len() >= max)
                        else {
                            // Closing at once frees the descriptor and tells the client.
                            tracing::debug!(%peer, max, "connection limit reached; refused");
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        next_id += 1;
                        let span = tracing::info_span!("connection", id = next_id);
                        let served = connection::serve(stream, Arc::clone(&shared), handshake);
                        connections.spawn(tracing::Instrument::instrument(served, span));
                        // The new connection reads its head before the next is accepted (a
                        // client sends it with its connection): under a flood of newer
                        // sockets, a client's handshake is done before its place is needed.
                        tokio::task::yield_now().await;
                    }
                    Err(e) => backoff.wait(&e).await,
                },
            }
        };
        // Readiness goes false first: from now on new sessions are refused (503), while the
        // port still answers the probes.
        shared.ops.drain(ops::Drain::Draining);
        tracing::info!(
            open = connections.len(),
            ?grace,
            "shutting down: requests in flight may finish within the grace"
        );
        let mut probes = JoinSet::new();
        let graced = tokio::time::Instant::now() + grace;
        let mut cancel_by = None;
        while !connections.is_empty() {
            let deadline = cancel_by.unwrap_or(graced);
            tokio::select! {
                _ = connections.join_next() => {}
                accepted = listener.accept() => if let Ok((stream, _)) = accepted {
                    while probes.try_join_next().is_some() {}
                    let no_room = connections.len() + probes.len() >= max;
                    if let Some(handshake) = admit(&shared, &stream, no_room) {
                        probes.spawn(connection::serve(stream, Arc::clone(&shared), handshake));
                    }
                },
                () = tokio::time::sleep_until(deadline) => {
                    if cancel_by.is_some() {
                        tracing::warn!(
                            open = connections.len(),
                            "connections still open after their requests were cancelled; dropped"
                        );
                        break;
                    }
                    tracing::info!(
                        open = connections.len(),
                        "the grace is over; cancelling the requests still running"
                    );
                    shared.ops.drain(ops::Drain::Cancelling);
                    cancel_by = Some(tokio::time::Instant::now() + CANCEL_WAIT);
                }
            }
        }
        drop(listener);
        connections.shutdown().await;
        probes.shutdown().await;
        tracing::info!("shut down");
        Ok(())
    }

    /// Serves in a background task; the handle stops it.
    pub fn spawn(self) -> RuntimeHandle {
        let addr = self.listener.local_addr().ok();
        let grace = self.shared.options.shutdown_grace;
        let (tx, rx) = oneshot::channel::<Duration>();
        let task = tokio::spawn(self.serve_until(async move { rx.await.unwrap_or(grace) }));
        RuntimeHandle {
            addr,
            grace,
            shutdown: Some(tx),
            task,
        }
    }
}

/// Registers a just accepted connection's handshake: in the accept loop, not in its task, so
/// that a burst of connections makes room by dropping older handshakes before the tasks
/// run. `None` (counted) when there is no room and no handshake to drop.
fn admit(
    shared: &Shared,
    stream: &tokio::net::TcpStream,
    no_room: bool,
) -> Option<(admission::Handshake, admission::Evicted)> {
    let admitted = shared.admission.handshake(no_room, has_bytes(stream));
    if admitted.is_none() {
        shared
            .ops
            .metrics
            .connection(ops::ConnectionOutcome::over_limit);
    }
    admitted
}

/// Whether the peer of a just accepted connection sent bytes already (a client sends its
/// request with its connection; a socket a flood leaves idle does not), without waiting.
fn has_bytes(stream: &tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut buf);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    matches!(
        stream.poll_peek(&mut cx, &mut buf),
        std::task::Poll::Ready(Ok(1..))
    )
}

/// How long connections get to close once their requests were cancelled at the end of a
/// shutdown's grace (their tasks end as soon as the cancels are confirmed).
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// A listening socket on `addr` (address reuse on, as `TcpListener::bind` does) with room
/// for `backlog` connections waiting to be accepted.
fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// The connection limit: the configured one, leaving file descriptors for what the requests
/// open (each connection needs one, and the commands it runs need more): 1024 of them, or half
/// the limit when that is smaller, so that a flood of connections is refused at the limit
/// instead of failing accepts.
fn connection_cap(configured: usize) -> usize {
    let by_files = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .and_then(|(soft, _)| usize::try_from(soft).ok())
        .map_or(usize::MAX, files_for_connections);
    configured.min(by_files).max(1)
}

/// Of `limit` file descriptors, those connections may take.
fn files_for_connections(limit: usize) -> usize {
    (limit / 2).max(limit.saturating_sub(1024))
}

/// Backs off after failed accepts (out of file descriptors, say), from 5 ms doubling to 1 s,
/// and logs one warning per second at most, with the number of failures.
#[derive(Debug, Default)]
struct AcceptBackoff {
    delay: Option<Duration>,
    failures: u64,
    last_warning: Option<tokio::time::Instant>,
}

impl AcceptBackoff {
    fn reset(&mut self) {
        self.delay = None;
    }

    async fn wait(&mut self, error: &std::io::Error) {
        self.failures += 1;
        let now = tokio::time::Instant::now();
        if self
            .last_warning
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            tracing::warn!(%error, failures = self.failures, "accept failed; backing off");
            self.last_warning = Some(now);
            self.failures = 0;
        }
        let delay = self.delay.map_or(Duration::from_millis(5), |d| {
            (d * 2).min(Duration::from_secs(1))
        });
        self.delay = Some(delay);
        tokio::time::sleep(delay).await;
    }
}

fn url(addr: Option<SocketAddr>) -> String {
    match addr {
        Some(a) if a.ip().is_unspecified() => format!("ws://127.0.0.1:{}", a.port()),
        Some(a) => format!("ws://{a}"),
        None => "ws://127.0.0.1:0".to_owned(),
    }
}

/// A runtime serving in the background. Dropping it stops the runtime too.
#[derive(Debug)]
pub struct RuntimeHandle {
    addr: Option<SocketAddr>,
    grace: Duration,
    shutdown: Option<oneshot::Sender<Duration>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RuntimeHandle {
    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// `ws://<addr>` to connect to.
    pub fn url(&self) -> String {
        url(self.addr)
    }

    /// Stops the runtime gracefully (as [`BoundRuntime::serve`] does, with
    /// [`RuntimeOptions::shutdown_grace`]) and waits until it has.
    pub async fn shutdown(self) {
        let grace = self.grace;
        self.shutdown_within(grace).await;
    }

    /// Stops the runtime, letting requests in flight finish within `grace` (zero: they are
    /// cancelled at once, each cancel confirmed to its client), and waits until it has.
    pub async fn shutdown_within(mut self, grace: Duration) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(grace);
        }
        let _ = (&mut self.task).await;
    }
}

impl RuntimeHandle {
    /// Stops the runtime at once, as a crash would: its connections are dropped without a
    /// close frame (their commands' process groups are killed), nothing is confirmed to the
    /// clients. Waits until it has stopped.
    pub async fn abort(mut self) {
        self.shutdown.take();
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for RuntimeHandle {
    /// Stops the runtime at once (requests in flight are cancelled) without waiting.
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(Duration::ZERO);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::files_for_connections;

    #[test]
    fn connections_leave_descriptors_for_the_requests() {
        // Small limits: half; large ones: all but 1024.
        assert_eq!(files_for_connections(128), 64);
        assert_eq!(files_for_connections(1024), 512);
        assert_eq!(files_for_connections(2048), 1024);
        assert_eq!(files_for_connections(20_000), 18_976);
        assert_eq!(files_for_connections(1 << 20), (1 << 20) - 1024);
        assert_eq!(files_for_connections(0), 0);
    }

    #[tokio::test]
    async fn bind_queues_hundreds_of_connections_before_they_are_accepted() {
        // Nothing accepts: the kernel holds the connections in the listen backlog. With the
        // usual 128, the 130th connection's SYN would be dropped (and retried after 1 s).
        let bound = super::Runtime::new(crate::ScriptedHandler)
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let addr = bound.local_addr().unwrap();
        let held = tokio::task::spawn_blocking(move || {
            (0..300)
                .map(|_| {
                    std::net::TcpStream::connect_timeout(
                        &addr,
                        std::time::Duration::from_millis(900),
                    )
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .unwrap()
        .expect("every connection queued");
        assert_eq!(held.len(), 300);
    }
}

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
