//! The runtime's memory against clients that do not read, each figure beside its bound, with
//! the default limits: `cargo bench -p runtimeuse-cli --bench memory`.
//!
//! The runtime is the real `runtimeuse serve --agent scripted` (or `--bin PATH`), a child
//! process; the clients are raw WebSockets on loopback. Rows (RSS of the runtime, above its
//! idle RSS right after start):
//!
//! 1. one client runs `yes | head -c 500000000` and never reads;
//! 2. twenty such clients;
//! 3. twenty clients whose commands write 100 MB each, never reading; then they leave, and
//!    the RSS 10 s later;
//! 4. twenty clients sending pings without reading;
//!
//! and during each, the time a fresh client's query takes. Options: `--secs N` (how long each
//! row runs, default 8), `--clients N` (default 20), `--ping-secs N` (default 20).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/common/raw.rs"]
mod raw;
use raw::{PING, RawWs, TEXT, commands};

const MIB: f64 = 1024.0 * 1024.0;

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Runtime {
    child: Child,
    port: u16,
}

impl Runtime {
    fn start(bin: &str) -> Self {
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--agent",
                "scripted",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("runtimeuse serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("port line");
        let port = line.trim().rsplit(' ').next().unwrap().parse().unwrap();
        Self { child, port }
    }

    fn rss(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib * 1024.0)
    }

    /// Samples the RSS every 100 ms for `secs`, running `each` between samples; the peak.
    fn peak_during(&self, secs: f64, mut each: impl FnMut()) -> f64 {
        let start = Instant::now();
        let mut peak: f64 = self.rss();
        while start.elapsed().as_secs_f64() < secs {
            each();
            std::thread::sleep(Duration::from_millis(100));
            peak = peak.max(self.rss());
        }
        peak
    }

    /// A fresh client's query, from connecting to its result: seconds.
    fn query_secs(&self) -> f64 {
        let start = Instant::now();
        let mut ws = RawWs::connect(self.port);
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
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` clients that each start `command` and never read.
fn silent_clients(port: u16, n: usize, command: &str) -> Vec<RawWs> {
    (0..n)
        .map(|_| {
            let mut ws = RawWs::connect(port);
            ws.text(&commands(command));
            ws
        })
        .collect()
}

fn row(name: &str, figure: f64, bound: f64, unit: &str) {
    let verdict = if figure <= bound { "ok" } else { "OVER" };
    println!("  {name:<62} {figure:>9.1} {unit}  (bound {bound:>6.1} {unit})  {verdict}");
}

/// Waits up to `secs` for the RSS to come within `bound` bytes of `idle`; the RSS then.
fn settle(rt: &Runtime, idle: f64, bound: f64, secs: f64) -> f64 {
    let start = Instant::now();
    loop {
        let rss = rt.rss();
        if rss - idle <= bound || start.elapsed().as_secs_f64() >= secs {
            return rss;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
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

    // Row 1.
    let rt = Runtime::start(&bin);
    let _ = rt.query_secs();
    let idle = rt.rss();
    let clients = silent_clients(rt.port, 1, "yes | head -c 500000000");
    let peak = rt.peak_during(secs.min(3.0), || {});
    let q1 = rt.query_secs();
    row(
        "1 client, yes | head -c 500MB, never reads: peak",
        (peak - idle) / MIB,
        64.0,
        "MiB",
    );
    drop(clients);
    let after = settle(&rt, idle, 32.0 * MIB, 10.0);
    row(
        "  and 10 s after it left (or once within bound)",
        (after - idle) / MIB,
        32.0,
        "MiB",
    );
    drop(rt);

    // Row 2.
    let rt = Runtime::start(&bin);
    let _ = rt.query_secs();
    let idle = rt.rss();
    let clients = silent_clients(rt.port, n, "yes | head -c 500000000");
    let mut stop = false;
    let peak = rt.peak_during(secs, || {
        // Bounded probe: the unbounded runtime grows 350 MB/s.
        if rt.rss() > 8.0 * 1024.0 * MIB {
            stop = true;
        }
    });
    let q2 = rt.query_secs();
    row(
        &format!(
            "{n} clients, the same{}: peak",
            if stop { " (stopped at 8 GiB)" } else { "" }
        ),
        (peak - idle) / MIB,
        256.0,
        "MiB",
    );
    drop(clients);
    drop(rt);

    // Row 3.
    let rt = Runtime::start(&bin);
    let _ = rt.query_secs();
    let idle = rt.rss();
    let clients = silent_clients(rt.port, n, "yes | head -c 100000000");
    let peak = rt.peak_during(secs, || {});
    let q3 = rt.query_secs();
    row(
        &format!("{n} clients, 100 MB of output each, never read: peak"),
        (peak - idle) / MIB,
        256.0,
        "MiB",
    );
    drop(clients);
    std::thread::sleep(Duration::from_secs(10));
    row(
        "  10 s after they left",
        (rt.rss() - idle) / MIB,
        32.0,
        "MiB",
    );
    drop(rt);

    // Row 4.
    let rt = Runtime::start(&bin);
    let _ = rt.query_secs();
    let idle = rt.rss();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut sockets = Vec::new();
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let mut ws = RawWs::connect(rt.port);
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
    let peak = rt.peak_during(ping_secs, || {});
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    let q4 = rt.query_secs();
    row(
        &format!("{n} clients pinging without reading, {ping_secs} s ({sent} pings sent): peak"),
        (peak - idle) / MIB,
        32.0,
        "MiB",
    );
    for s in &sockets {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    for t in threads {
        let _ = t.join();
    }
    drop(rt);

    println!("  a fresh client's query during each row (bound 100 ms):");
    for (i, q) in [q1, q2, q3, q4].into_iter().enumerate() {
        row(&format!("    row {}", i + 1), q * 1000.0, 100.0, "ms");
    }
}
