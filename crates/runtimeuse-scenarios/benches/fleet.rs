//! A fleet: N persistent sessions from one client process to one runtime process over
//! loopback, beside the floor measured in the same run: the same number of raw tokio-tungstenite
//! connections to a raw WebSocket echo server, doing the same round trips.
//!
//! `cargo bench -p runtimeuse-scenarios --bench fleet` (default `-- --sessions 1000 --queries
//! 5`; `-- --sessions 10000` for the large fleet). Both processes raise their file-descriptor
//! limit to the hard limit, which must exceed N by 1024 (the runtime keeps that many for its
//! commands).
//!
//! For each side (the project's runtime and tokio client; the raw floor), the client runs in a
//! child process of its own, on one thread (tokio's current-thread runtime):
//! 1. connect: N sessions, at most 256 handshakes in flight; the time for all.
//! 2. idle: the growth of each process's resident memory while the second half of the
//!    sessions connects, per session (the first half paid for what the allocator keeps of the
//!    handshakes' transient buffers).
//! 3. load: every session runs Q `ECHO:` queries at once (all N concurrently); the round trip
//!    of each, p50 and p99; queries/s. Then the memory again, per session: all the growth of
//!    each process since before the first connection (buffers grown by use, freed memory the
//!    allocator kept).
//! 4. close: every session ends gracefully.
//!
//! Any error fails the bench (`errors` must be 0). `-- --url ws://… --pid PID` measures a runtime
//! started elsewhere (the upstream one, or this one under a profiler) instead of the project's.

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use runtimeuse_scenarios::bench::{self, ServerChild, arg};
use runtimeuse_tokio::tokio_tungstenite::tungstenite::Message;
use runtimeuse_tokio::tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use runtimeuse_tokio::{Client, QueryOptions};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Handshakes in flight at once while connecting.
const CONNECTING: usize = 256;

const QUERY: &str = r#"{"message_type":"invocation_message","source_id":null,"system_prompt":"","user_prompt":"ECHO:ping","output_format_json_schema_str":null,"secrets_to_redact":[],"artifacts_dir":null,"pre_agent_invocation_commands":[],"post_agent_invocation_commands":[],"model":"echo","pre_agent_downloadables":[],"agent_env":{}}"#;

/// Sets the soft file-descriptor limit to the hard one; returns the new soft limit.
fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    getrlimit(Resource::RLIMIT_NOFILE).map_or(0, |(soft, _)| soft)
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: &str) -> f64 {
    bench::status_kib(pid, "VmRSS")
}

/// The server child: the project's runtime (scripted handler) or the raw echo floor; prints
/// its URL, then serves until killed.
fn serve(kind: &str, sessions: usize) {
    raise_fd_limit();
    if kind == "runtime" {
        let mut options = runtimeuse_runtime::RuntimeOptions::default();
        options.max_connections = sessions + 16;
        bench::serve_runtime(options);
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        // The same listen backlog as the runtime's.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let listener = socket.listen(1024).expect("listen");
        println!("ws://{}", listener.local_addr().expect("addr"));
        echo_server(listener).await;
    });
}

async fn echo_server(listener: TcpListener) {
    while let Ok((tcp, _)) = listener.accept().await {
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            // The runtime's read buffer.
            let config = WebSocketConfig::default()
                .read_buffer_size(runtimeuse_tokio::server::DEFAULT_SERVER_READ_BUFFER);
            let Ok(mut ws) =
                runtimeuse_tokio::tokio_tungstenite::accept_async_with_config(tcp, Some(config))
                    .await
            else {
                return;
            };
            while let Some(Ok(m)) = ws.next().await {
                if m.is_text() && ws.send(m).await.is_err() {
                    return;
                }
            }
        });
    }
}

struct Server {
    /// The child serving, or `None` for a runtime started elsewhere (`--url`).
    _child: Option<ServerChild>,
    /// The server's process id, for its memory.
    pid: String,
    url: String,
}

impl Server {
    fn start(kind: &str, sessions: usize) -> Self {
        let child = ServerChild::start(&["--serve", kind, &sessions.to_string()]);
        Self {
            pid: child.pid().to_string(),
            url: child.url.clone(),
            _child: Some(child),
        }
    }

    fn rss_kib(&self) -> f64 {
        rss_kib(&self.pid)
    }
}

/// One side's connections: the project's sessions or raw WebSocket streams.
trait Fleet: Sized + Send + 'static {
    fn connect(url: String) -> impl Future<Output = Result<Self, String>> + Send;
    fn round_trip(&mut self) -> impl Future<Output = Result<(), String>> + Send;
    fn close(self) -> impl Future<Output = Result<(), String>> + Send;
}

impl Fleet for runtimeuse_tokio::Session {
    async fn connect(url: String) -> Result<Self, String> {
        Client::new(url).session().await.map_err(|e| e.to_string())
    }

    async fn round_trip(&mut self) -> Result<(), String> {
        let r = self
            .query("ECHO:ping", QueryOptions::new("", "echo"))
            .await
            .map_err(|e| e.to_string())?;
        (r.text() == Some("ping"))
            .then_some(())
            .ok_or_else(|| format!("unexpected result {r:?}"))
    }

    async fn close(self) -> Result<(), String> {
        runtimeuse_tokio::Session::close(self)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

type Raw = runtimeuse_tokio::tokio_tungstenite::WebSocketStream<
    runtimeuse_tokio::tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
>;

impl Fleet for Raw {
    async fn connect(url: String) -> Result<Self, String> {
        let config = runtimeuse_tokio::ClientSettings::new(&url)
            .handshake()
            .map_err(|e| e.to_string())?
            .1;
        runtimeuse_tokio::tokio_tungstenite::connect_async_with_config(url, Some(config), true)
            .await
            .map(|(ws, _)| ws)
            .map_err(|e| e.to_string())
    }

    async fn round_trip(&mut self) -> Result<(), String> {
        self.send(Message::text(QUERY))
            .await
            .map_err(|e| e.to_string())?;
        match self.next().await {
            Some(Ok(Message::Text(_))) => Ok(()),
            other => Err(format!("echo: {other:?}")),
        }
    }

    async fn close(mut self) -> Result<(), String> {
        SinkExt::close(&mut self).await.map_err(|e| e.to_string())
    }
}

/// Opens `n` connections, at most [`CONNECTING`] handshakes at a time.
async fn connect<F: Fleet>(url: &str, n: usize, errors: &mut usize) -> Vec<F> {
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let connecting: Vec<_> = (0..n)
        .map(|_| {
            let (gate, url) = (Arc::clone(&gate), url.to_owned());
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.expect("gate");
                F::connect(url).await
            })
        })
        .collect();
    let mut fleet = Vec::with_capacity(n);
    for c in connecting {
        match c.await.expect("join") {
            Ok(s) => fleet.push(s),
            Err(e) => {
                *errors += 1;
                eprintln!("connect: {e}");
            }
        }
    }
    fleet
}

/// What one side measured.
#[derive(Default, Debug)]
struct Figures {
    connect: Duration,
    client_idle_kib: f64,
    server_idle_kib: f64,
    client_used_kib: f64,
    server_used_kib: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    queries_per_sec: f64,
    errors: usize,
}

impl Figures {
    /// One line, for the parent: the client runs in a child process of its own, so that its
    /// memory is its own (the other side's freed memory would otherwise be reused).
    fn to_line(&self) -> String {
        format!(
            "{} {} {} {} {} {} {} {} {} {}",
            self.connect.as_secs_f64(),
            self.client_idle_kib,
            self.server_idle_kib,
            self.client_used_kib,
            self.server_used_kib,
            self.p50.as_secs_f64(),
            self.p99.as_secs_f64(),
            self.max.as_secs_f64(),
            self.queries_per_sec,
            self.errors
        )
    }

    fn from_line(line: &str) -> Option<Self> {
        let v: Vec<f64> = line
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        let secs = |x: f64| Duration::from_secs_f64(x);
        (v.len() == 10).then(|| Self {
            connect: secs(v[0]),
            client_idle_kib: v[1],
            server_idle_kib: v[2],
            client_used_kib: v[3],
            server_used_kib: v[4],
            p50: secs(v[5]),
            p99: secs(v[6]),
            max: secs(v[7]),
            queries_per_sec: v[8],
            errors: v[9] as usize,
        })
    }
}

/// Runs one side's client in a child process (`--client raw|project URL PID`).
fn run_child(kind: &str, server: &Server, sessions: usize, queries: usize) -> Figures {
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--client", kind, &server.url, &server.pid])
        .args(["--sessions", &sessions.to_string()])
        .args(["--queries", &queries.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("client child");
    let text = String::from_utf8_lossy(&out.stdout);
    Figures::from_line(text.trim())
        .unwrap_or_else(|| panic!("client {kind} failed ({}): {text}", out.status))
}

async fn run<F: Fleet>(server: &Server, sessions: usize, queries: usize) -> Figures {
    let me = std::process::id().to_string();
    let mut figures = Figures::default();
    // One session first, so that both processes' one-time allocations are behind us.
    let mut warm = F::connect(server.url.clone())
        .await
        .expect("warm-up connect");
    warm.round_trip().await.expect("warm-up round trip");
    warm.close().await.expect("warm-up close");
    let (client_before, server_before) = (rss_kib(&me), server.rss_kib());

    // Connected in two halves: the second half's growth is the cost of an idle session, the
    // transient memory of the handshakes (which the allocator keeps) already paid by the
    // first.
    let start = Instant::now();
    let mut fleet = connect::<F>(&server.url, sessions / 2, &mut figures.errors).await;
    let (client_half, server_half) = (rss_kib(&me), server.rss_kib());
    let second = sessions - sessions / 2;
    fleet.extend(connect::<F>(&server.url, second, &mut figures.errors).await);
    figures.connect = start.elapsed();
    figures.client_idle_kib = (rss_kib(&me) - client_half) / second.max(1) as f64;
    figures.server_idle_kib = (server.rss_kib() - server_half) / second.max(1) as f64;
    let connected = fleet.len().max(1) as f64;
    let per = |after: f64, before: f64| (after - before) / connected;

    let start = Instant::now();
    let running: Vec<_> = fleet
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut times = Vec::with_capacity(queries);
                let mut errors = 0;
                for _ in 0..queries {
                    let t = Instant::now();
                    match s.round_trip().await {
                        Ok(()) => times.push(t.elapsed()),
                        Err(e) => {
                            errors += 1;
                            eprintln!("round trip: {e}");
                        }
                    }
                }
                (s, times, errors)
            })
        })
        .collect();
    let mut fleet = Vec::with_capacity(sessions);
    let mut times = Vec::with_capacity(sessions * queries);
    for r in running {
        let (s, t, e) = r.await.expect("join");
        fleet.push(s);
        times.extend(t);
        figures.errors += e;
    }
    let elapsed = start.elapsed();
    times.sort();
    if !times.is_empty() {
        figures.p50 = times[times.len() / 2];
        figures.p99 = times[times.len() * 99 / 100];
        figures.max = times[times.len() - 1];
    }
    figures.queries_per_sec = times.len() as f64 / elapsed.as_secs_f64();
    figures.client_used_kib = per(rss_kib(&me), client_before);
    figures.server_used_kib = per(server.rss_kib(), server_before);

    let closing: Vec<_> = fleet.into_iter().map(|s| tokio::spawn(s.close())).collect();
    for c in closing {
        if let Err(e) = c.await.expect("join") {
            figures.errors += 1;
            eprintln!("close: {e}");
        }
    }
    figures
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        serve(&args[i + 1], args[i + 2].parse().expect("sessions"));
        return;
    }
    let (sessions, queries) = (arg("--sessions", 1000usize), arg("--queries", 5usize));
    let limit = raise_fd_limit();
    assert!(
        sessions as u64 + 1024 <= limit,
        "{sessions} sessions need a file-descriptor limit of {} (it is {limit}); the runtime \
         keeps 1024 for its commands",
        sessions + 1024
    );
    if let Some(i) = args.iter().position(|a| a == "--client") {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let server = Server {
            _child: None,
            url: args[i + 2].clone(),
            pid: args[i + 3].clone(),
        };
        let figures = if args[i + 1] == "raw" {
            rt.block_on(run::<Raw>(&server, sessions, queries))
        } else {
            rt.block_on(run::<runtimeuse_tokio::Session>(&server, sessions, queries))
        };
        println!("{}", figures.to_line());
        return;
    }
    let floor = {
        let server = Server::start("echo", sessions);
        run_child("raw", &server, sessions, queries)
    };
    let ours = {
        let server = match args.iter().position(|a| a == "--url") {
            // Another runtime (the upstream one, say, or this one under a profiler), with
            // `--pid` for its memory.
            Some(i) => Server {
                _child: None,
                url: args[i + 1].clone(),
                pid: args
                    .iter()
                    .position(|a| a == "--pid")
                    .map_or_else(String::new, |i| args[i + 1].clone()),
            },
            None => Server::start("runtime", sessions),
        };
        run_child("project", &server, sessions, queries)
    };
    println!(
        "fleet: {sessions} sessions from one client process, {queries} queries each, all at once"
    );
    println!("  {:<36} {:>14} {:>14}", "", "project", "raw floor");
    let row = |label: &str, a: String, b: String| println!("  {label:<36} {a:>14} {b:>14}");
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    let kb = |k: f64| format!("{:.1} KB", k * 1.024);
    row("connect all", ms(ours.connect), ms(floor.connect));
    row(
        "client RSS per idle session",
        kb(ours.client_idle_kib),
        kb(floor.client_idle_kib),
    );
    row(
        "server RSS per idle connection",
        kb(ours.server_idle_kib),
        kb(floor.server_idle_kib),
    );
    row(
        "client RSS per session after load",
        kb(ours.client_used_kib),
        kb(floor.client_used_kib),
    );
    row(
        "server RSS per connection after load",
        kb(ours.server_used_kib),
        kb(floor.server_used_kib),
    );
    row("round trip p50", ms(ours.p50), ms(floor.p50));
    row("round trip p99", ms(ours.p99), ms(floor.p99));
    row("round trip max", ms(ours.max), ms(floor.max));
    row(
        "queries/s",
        format!("{:.0}", ours.queries_per_sec),
        format!("{:.0}", floor.queries_per_sec),
    );
    row("errors", ours.errors.to_string(), floor.errors.to_string());
    println!(
        "  ratio p50 {:.2}, p99 {:.2}, queries/s {:.2} (project / floor)",
        ours.p50.as_secs_f64() / floor.p50.as_secs_f64(),
        ours.p99.as_secs_f64() / floor.p99.as_secs_f64(),
        ours.queries_per_sec / floor.queries_per_sec
    );
    println!("  (targets: errors 0; at most 16 KB per idle session on either side)");
    assert_eq!(ours.errors + floor.errors, 0, "errors in the fleet");
}
