//! The runtime's memory against clients that do not read, each figure beside its bound, with
//! the default limits: `cargo bench -p runtimeuse-cli --bench memory`.
//!
//! The runtime is the real `runtimeuse serve --agent scripted` (or `--bin PATH`), a child
//! process; the clients are raw WebSockets on loopback. Rows (RSS of the runtime, above its
//! idle RSS right after start):
//!
//! 1. one client runs `yes | head -c 500000000` and never reads; then it leaves;
//! 2. twenty such clients;
//! 3. twenty clients whose commands write 100 MB each, never reading; then they leave, and
//!    the RSS 10 s later;
//! 4. twenty clients sending pings without reading;
//! 5. twenty clients of resumable sessions (docs/resume.md) whose commands write 100 MB each,
//!    never reading; their connections drop, and the sessions wait to be resumed (the memory
//!    a session waiting to be resumed holds); then the grace (`--grace-secs`, default 5)
//!    passes and they are given up;
//!
//! and during each, the time a fresh client's query takes. Options: `--secs N` (how long each
//! row runs, default 8), `--clients N` (default 20), `--ping-secs N` (default 20).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;
use common::Serve;
use common::raw::{PING, RawWs, TEXT, commands};
use runtimeuse_scenarios::bench::arg;
use std::net::Shutdown;

const MIB: f64 = 1024.0 * 1024.0;

/// The runtime, started afresh for a row, and its idle RSS (after one query).
struct Row {
    rt: Serve,
    idle: f64,
}

impl Row {
    fn start(bin: &str) -> Self {
        let rt = Serve::start_bin(bin, None, &[], &[]);
        let mut row = Self { rt, idle: 0.0 };
        row.query_secs();
        row.idle = row.rss();
        row
    }

    fn rss(&self) -> f64 {
        self.rt.rss_kb() as f64 * 1024.0
    }

    /// The RSS above idle now, in MiB.
    fn above_idle(&self) -> f64 {
        (self.rss() - self.idle) / MIB
    }

    /// Samples the RSS every 100 ms for `secs`; the peak above idle, in MiB.
    fn peak_during(&self, secs: f64) -> f64 {
        let start = Instant::now();
        let mut peak: f64 = self.rss();
        while start.elapsed().as_secs_f64() < secs {
            std::thread::sleep(Duration::from_millis(100));
            peak = peak.max(self.rss());
        }
        (peak - self.idle) / MIB
    }

    /// Waits until the RSS is within `bound` MiB of idle, `secs` at most; then above idle.
    fn settle(&self, bound: f64, secs: f64) -> f64 {
        let start = Instant::now();
        while self.above_idle() > bound && start.elapsed().as_secs_f64() < secs {
            std::thread::sleep(Duration::from_millis(250));
        }
        self.above_idle()
    }

    /// A fresh client's query, from connecting to its result: seconds.
    fn query_secs(&self) -> f64 {
        let start = Instant::now();
        let mut ws = RawWs::connect(self.rt.port);
        ws.text(
            &serde_json::json!({
                "message_type": "invocation_message", "source_id": null, "system_prompt": "",
                "user_prompt": "ECHO:hi", "model": "m", "output_format_json_schema_str": null,
                "secrets_to_redact": [], "agent_env": null, "artifacts_dirs": null,
                "artifacts_ignore_content": null, "pre_agent_invocation_commands": null,
                "post_agent_invocation_commands": null, "pre_agent_downloadables": null
            })
            .to_string(),
        );
        loop {
            let (op, payload) = ws.read().expect("a result");
            if op == TEXT && String::from_utf8_lossy(&payload).contains("result_message") {
                return start.elapsed().as_secs_f64();
            }
        }
    }

    /// `n` clients that each start `command` and never read.
    fn silent_clients(&self, n: usize, command: &str) -> Vec<RawWs> {
        (0..n)
            .map(|_| {
                let mut ws = RawWs::connect(self.rt.port);
                ws.text(&commands(command));
                ws
            })
            .collect()
    }
}

fn print(name: &str, figure: f64, bound: f64, unit: &str) {
    let verdict = if figure <= bound { "ok" } else { "OVER" };
    println!("  {name:<64} {figure:>9.1} {unit}  (bound {bound:>6.1} {unit})  {verdict}");
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let bin: String = arg("--bin", env!("CARGO_BIN_EXE_runtimeuse").to_owned());
    let secs: f64 = arg("--secs", 8.0);
    let n: usize = arg("--clients", 20);
    let ping_secs: f64 = arg("--ping-secs", 20.0);
    println!("runtime memory against clients that do not read ({bin}); RSS above idle");
    let mut queries = Vec::new();

    let grace: f64 = arg("--grace-secs", 5.0);
    let row = Row::start(&bin);
    let clients = row.silent_clients(1, "yes | head -c 500000000");
    let peak = row.peak_during(secs.min(3.0));
    queries.push(row.query_secs());
    print(
        "1 client, yes | head -c 500MB, never reads: peak",
        peak,
        64.0,
        "MiB",
    );
    drop(clients);
    let after = row.settle(32.0, 10.0);
    print(
        "  10 s after it left (or once within bound)",
        after,
        32.0,
        "MiB",
    );

    let row = Row::start(&bin);
    let clients = row.silent_clients(n, "yes | head -c 500000000");
    let peak = row.peak_during(secs);
    queries.push(row.query_secs());
    print(&format!("{n} clients, the same: peak"), peak, 256.0, "MiB");
    drop(clients);

    let row = Row::start(&bin);
    let clients = row.silent_clients(n, "yes | head -c 100000000");
    let peak = row.peak_during(secs);
    queries.push(row.query_secs());
    let name = format!("{n} clients, 100 MB of output each, never read: peak");
    print(&name, peak, 256.0, "MiB");
    drop(clients);
    std::thread::sleep(Duration::from_secs(10));
    print("  10 s after they left", row.above_idle(), 32.0, "MiB");

    let row = Row::start(&bin);
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut sockets = Vec::new();
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let mut ws = RawWs::connect(row.rt.port);
            sockets.push(ws.0.try_clone().expect("clone"));
            let sent = std::sync::Arc::clone(&sent);
            std::thread::spawn(move || {
                // Blocks once the runtime stops reading; ends when the socket is shut down.
                while ws.send(PING, &[0x42u8; 125], None).is_ok() {
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    let peak = row.peak_during(ping_secs);
    queries.push(row.query_secs());
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    let name = format!("{n} clients pinging without reading, {ping_secs} s ({sent} pings): peak");
    print(&name, peak, 32.0, "MiB");
    for s in &sockets {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    for t in threads {
        let _ = t.join();
    }

    let grace_arg = format!("{grace}");
    let rt = Serve::start_bin(&bin, None, &["--resume-grace", &grace_arg], &[]);
    let mut row = Row { rt, idle: 0.0 };
    row.query_secs();
    row.idle = row.rss();
    let clients: Vec<RawWs> = (0..n)
        .map(|_| {
            let mut ws = RawWs::connect_resumable(row.rt.port);
            ws.text(&commands("yes | head -c 100000000"));
            ws
        })
        .collect();
    let attached = row.peak_during(secs);
    // The connections drop without a close frame (a proxy cut them).
    for ws in &clients {
        let _ = ws.0.shutdown(Shutdown::Both);
    }
    drop(clients);
    let parked = row.peak_during(grace.min(secs));
    queries.push(row.query_secs());
    let name = format!("{n} resumable clients, 100 MB each, never read: peak");
    print(&name, attached, 256.0, "MiB");
    let name = format!("  the {n} sessions waiting to be resumed: peak");
    print(&name, parked, 4.0 * n as f64, "MiB");
    // The grace passes; the sessions are given up, their commands killed, memory handed back.
    std::thread::sleep(Duration::from_secs_f64(grace + 2.0));
    print(
        "  2 s after the grace passed (given up)",
        row.above_idle(),
        8.0,
        "MiB",
    );

    println!("  a fresh client's query during each row:");
    for (i, q) in queries.into_iter().enumerate() {
        print(&format!("    row {}", i + 1), q * 1000.0, 100.0, "ms");
    }
}
