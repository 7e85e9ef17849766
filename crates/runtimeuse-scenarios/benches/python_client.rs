//! The project's tokio client beside the upstream Python client (runtimeuse-client 0.15.1),
//! against the same runtime in the same run: query round trip, command output frames/s, CPU per
//! frame and peak memory, and the ratios. When the Python also has this repository's package
//! (`runtimeuse_rs`, `crates/runtimeuse-python`), it runs the same script through it too, and
//! a second table sets it beside the upstream client, whose figures are its floor.
//!
//! `cargo bench -p runtimeuse-scenarios --bench python_client` (add `-- --mb N` for the output
//! volume, default 20; `-- --queries N`, default 500; `-- --frames N` for the flood, default
//! 100,000; `-- --python PATH`). The Python comes from
//! `--python`, `RUNTIMEUSE_PYTHON`, or the venv the CI makes:
//!
//! ```sh
//! python3 -m venv /tmp/runtimeuse-ci-venv
//! /tmp/runtimeuse-ci-venv/bin/pip install -r tests/python/requirements.txt
//! ```
//!
//! Each client runs in its own child process (`--client` here, `python_client.py` there), one
//! after the other over the rounds, each doing the same in one persistent session: the queries
//! (after 20 warm-up ones), then one command writing the output, counted in the output
//! callback; then a one-shot command batch against a flood server that answers with N small
//! frames (what a chatty build log looks like after the runtime's chunking), counted the same
//! way. The runtime is the project's (scripted handler), one process for the whole run; the
//! flood server runs in this process.

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use runtimeuse_scenarios::bench::{self, arg, median};
use runtimeuse_tokio::{Client, ExecuteCommandsOptions, QueryOptions};

const ROUNDS: usize = 5;

const PRODUCER: &str =
    "yes 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde | head -c ";

/// User and system CPU time of this process, and its peak RSS in KiB.
fn usage() -> (f64, f64) {
    use nix::sys::resource::{UsageWho, getrusage};
    let Ok(u) = getrusage(UsageWho::RUSAGE_SELF) else {
        return (f64::NAN, f64::NAN);
    };
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    (
        secs(u.user_time()) + secs(u.system_time()),
        u.max_rss() as f64,
    )
}

/// The Rust client's run: the same as `python_client.py`, printing the same line.
async fn rust_client(url: &str, bytes: u64, queries: usize, flood_url: &str, flood_frames: u64) {
    let mut session = Client::new(url).session().await.expect("connect");
    let mut times = Vec::with_capacity(queries);
    for i in 0..20 + queries {
        let start = Instant::now();
        let result = session
            .query("ECHO:ping", QueryOptions::new("", "echo"))
            .await
            .expect("query");
        let elapsed = start.elapsed().as_secs_f64();
        assert_eq!(result.text(), Some("ping"));
        if i >= 20 {
            times.push(elapsed);
        }
    }
    let (frames, received) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let options = ExecuteCommandsOptions::new().on_command_output({
        let (frames, received) = (Arc::clone(&frames), Arc::clone(&received));
        move |o| {
            frames.fetch_add(1, Ordering::Relaxed);
            received.fetch_add(o.text.len() as u64, Ordering::Relaxed);
            std::future::ready(())
        }
    });
    let (cpu, _) = usage();
    let start = Instant::now();
    let result = session
        .execute_commands([format!("{PRODUCER}{bytes}")], options)
        .await
        .expect("command");
    let output_s = start.elapsed().as_secs_f64();
    let output_cpu = usage().0 - cpu;
    assert_eq!(result.results[0].exit_code, 0);
    let end = session.close().await.expect("close");
    assert_eq!(end, runtimeuse_tokio::SessionEnd::Confirmed);
    assert_eq!(received.load(Ordering::Relaxed), bytes);

    let flooded = Arc::new(AtomicU64::new(0));
    let options = ExecuteCommandsOptions::new().on_command_output({
        let flooded = Arc::clone(&flooded);
        move |o| {
            std::hint::black_box(&o);
            flooded.fetch_add(1, Ordering::Relaxed);
            std::future::ready(())
        }
    });
    let (cpu, _) = usage();
    let start = Instant::now();
    Client::new(flood_url)
        .execute_commands(["make"], options)
        .await
        .expect("flood");
    let flood_s = start.elapsed().as_secs_f64();
    let flood_cpu = usage().0 - cpu;
    assert_eq!(flooded.load(Ordering::Relaxed), flood_frames);
    println!(
        "{} {output_s} {} {} {output_cpu} {flood_s} {flood_cpu} {}",
        median(times),
        frames.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
        usage().1
    );
}

/// One client run's figures.
#[derive(Clone, Copy)]
struct Run {
    rtt: f64,
    output_s: f64,
    frames: f64,
    bytes: f64,
    cpu_s: f64,
    flood_s: f64,
    flood_cpu_s: f64,
    rss_kib: f64,
    /// A query of small assistant messages (`flood_frames / 10`) through the runtime (the
    /// Python script's; NaN for the Rust client).
    stream_s: f64,
}

fn run(mut command: Command) -> Run {
    let out = command.stderr(Stdio::inherit()).output().expect("client");
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<f64> = text
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    assert!(
        out.status.success() && (f.len() == 8 || f.len() == 9),
        "client failed ({}): {text}",
        out.status
    );
    Run {
        rtt: f[0],
        output_s: f[1],
        frames: f[2],
        bytes: f[3],
        cpu_s: f[4],
        flood_s: f[5],
        flood_cpu_s: f[6],
        rss_kib: f[7],
        stream_s: f.get(8).copied().unwrap_or(f64::NAN),
    }
}

fn python() -> PathBuf {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--python") {
        return PathBuf::from(&args[i + 1]);
    }
    if let Some(p) = std::env::var_os("RUNTIMEUSE_PYTHON") {
        return PathBuf::from(p);
    }
    std::env::temp_dir().join("runtimeuse-ci-venv/bin/python")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--runtime") {
        bench::serve_runtime(runtimeuse_runtime::RuntimeOptions::default());
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--client") {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let number = |k: usize| args[i + k].parse().expect("number");
        rt.block_on(rust_client(
            &args[i + 1],
            number(2),
            number(3) as usize,
            &args[i + 4],
            number(5),
        ));
        return;
    }
    let bytes = arg("--mb", 20u64) * 1_000_000;
    let queries = arg("--queries", 500u64);
    let flood_frames = arg("--frames", 100_000u64);
    // The flood server gets a thread of its own; the clients are child processes.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let flood_url = server_rt
        .block_on(runtimeuse_scenarios::flood::start(flood_frames as usize))
        .expect("flood server");
    let python = python();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/python_client.py");
    let check = Command::new(&python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('runtimeuse-client'))",
        ])
        .output();
    let version = match &check {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => {
            eprintln!(
                "no Python with runtimeuse-client at {} (pass --python or set RUNTIMEUSE_PYTHON; \
                 see this bench's doc comment for the venv)",
                python.display()
            );
            std::process::exit(2);
        }
    };

    let exe = std::env::current_exe().expect("exe");
    let runtime = bench::ServerChild::start(&["--runtime"]);
    let url = runtime.url.clone();

    let has_rs = Command::new(&python)
        .args(["-c", "import runtimeuse_rs"])
        .output()
        .is_ok_and(|o| o.status.success());
    let (mut rust, mut py, mut rs_py, mut floor) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut rs_resume = Vec::new();
    for _ in 0..ROUNDS {
        let mut c = Command::new(&exe);
        let tail = [
            url.clone(),
            bytes.to_string(),
            queries.to_string(),
            flood_url.clone(),
            flood_frames.to_string(),
        ];
        c.arg("--client").args(&tail);
        rust.push(run(c));
        let mut c = Command::new(&python);
        c.arg(&script).args(&tail);
        py.push(run(c));
        if has_rs {
            let mut c = Command::new(&python);
            c.arg(&script).args(&tail).arg("runtimeuse_rs");
            rs_py.push(run(c));
            let mut c = Command::new(&python);
            c.arg(&script).args(&tail).arg("runtimeuse_rs+resume");
            rs_resume.push(run(c));
            let mut c = Command::new(&python);
            c.arg(&script).args(&tail).arg("floor");
            floor.push(run(c));
        }
    }
    drop(runtime);

    fn med(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
        median(runs.iter().map(f).collect())
    }
    let per_round = |f: &dyn Fn(&Run, &Run) -> f64| {
        median(rust.iter().zip(&py).map(|(r, p)| f(r, p)).collect())
    };
    println!(
        "Rust tokio client vs Python runtimeuse-client {version}, same runtime, medians of \
         {ROUNDS} alternating rounds ({queries} queries; a command writing {} MB)",
        bytes / 1_000_000
    );
    println!(
        "  {:<28} {:>15} {:>15} {:>9}",
        "", "Rust", "Python", "ratio"
    );
    let row = |label: &str, r: f64, p: f64, unit: &str, ratio: f64| {
        println!("  {label:<28} {r:>10.1} {unit:<4} {p:>10.1} {unit:<4} {ratio:>8.1}x");
    };
    row(
        "query round trip",
        med(&rust, |r| r.rtt) * 1e6,
        med(&py, |r| r.rtt) * 1e6,
        "us",
        per_round(&|r, p| p.rtt / r.rtt),
    );
    let fps = |r: &Run| flood_frames as f64 / r.flood_s;
    row(
        "small frames/s (flood)",
        med(&rust, fps) / 1e3,
        med(&py, fps) / 1e3,
        "k",
        per_round(&|r, p| fps(r) / fps(p)),
    );
    let cpu = |r: &Run| r.flood_cpu_s / flood_frames as f64 * 1e6;
    row(
        "client CPU per small frame",
        med(&rust, cpu),
        med(&py, cpu),
        "us",
        per_round(&|r, p| cpu(p) / cpu(r)),
    );
    let mbs = |r: &Run| r.bytes / r.output_s / 1e6;
    row(
        "command output via runtime",
        med(&rust, mbs),
        med(&py, mbs),
        "MB/s",
        per_round(&|r, p| mbs(r) / mbs(p)),
    );
    let cpu_mb = |r: &Run| r.cpu_s / (r.bytes / 1e6) * 1e3;
    row(
        "client CPU per MB of output",
        med(&rust, cpu_mb),
        med(&py, cpu_mb),
        "ms",
        per_round(&|r, p| cpu_mb(p) / cpu_mb(r)),
    );
    row(
        "client peak RSS",
        med(&rust, |r| r.rss_kib) / 1024.0,
        med(&py, |r| r.rss_kib) / 1024.0,
        "MB",
        per_round(&|r, p| p.rss_kib / r.rss_kib),
    );
    println!(
        "  output frames per run: Rust {:.0}, Python {:.0} (the runtime's chunking of the same \
         command)",
        med(&rust, |r| r.frames),
        med(&py, |r| r.frames)
    );
    println!("  (ratio: how many times better the Rust client is; the floor is the Python client)");
    if has_rs {
        python_package_table(&rs_py, &py, &floor, flood_frames, queries);
        resume_table(&rs_resume, &rs_py, flood_frames);
    } else {
        println!("(runtimeuse_rs is not installed in this Python: its table is skipped)");
    }
}

/// `runtimeuse_rs` beside the upstream client (its floor), with the issue's targets.
fn python_package_table(rs: &[Run], up: &[Run], floor: &[Run], flood_frames: u64, queries: u64) {
    fn med(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
        median(runs.iter().map(f).collect())
    }
    let per_round =
        |f: &dyn Fn(&Run, &Run) -> f64| median(rs.iter().zip(up).map(|(r, p)| f(r, p)).collect());
    println!();
    println!(
        "Python: runtimeuse_rs (this repository, on the Rust core) vs runtimeuse-client 0.15.1 \
         (the floor), same runtime, same script, medians of {ROUNDS} alternating rounds \
         ({queries} queries)"
    );
    println!(
        "  {:<28} {:>15} {:>15} {:>9}",
        "", "runtimeuse_rs", "upstream", "ratio"
    );
    let row = |label: &str, r: f64, p: f64, unit: &str, ratio: f64, target: &str| {
        println!("  {label:<28} {r:>10.1} {unit:<4} {p:>10.1} {unit:<4} {ratio:>8.2}x  {target}");
    };
    let rtt = per_round(&|r, p| r.rtt / p.rtt);
    row(
        "query round trip",
        med(rs, |r| r.rtt) * 1e6,
        med(up, |r| r.rtt) * 1e6,
        "us",
        rtt,
        &format!(
            "of upstream's (target <= 0.30x: {})",
            if rtt <= 0.3 { "met" } else { "NOT met" }
        ),
    );
    let raw = med(floor, |r| r.rtt);
    println!(
        "  {:<28} {:>10.1} us   = {:.2}x of upstream's: raw frames over an asyncio Protocol, no \
         client (the asyncio part of any client's round trip)",
        "  floor of asyncio",
        raw * 1e6,
        raw / med(up, |r| r.rtt)
    );
    let fps = |r: &Run| flood_frames as f64 / r.flood_s;
    let flood = per_round(&|r, p| fps(r) / fps(p));
    row(
        "small frames/s (flood)",
        med(rs, fps) / 1e3,
        med(up, fps) / 1e3,
        "k",
        flood,
        &format!(
            "upstream's (target >= 5x: {})",
            if flood >= 5.0 { "met" } else { "NOT met" }
        ),
    );
    let cpu = |r: &Run| r.flood_cpu_s / flood_frames as f64 * 1e6;
    row(
        "client CPU per small frame",
        med(rs, cpu),
        med(up, cpu),
        "us",
        per_round(&|r, p| cpu(p) / cpu(r)),
        "less",
    );
    let mbs = |r: &Run| r.bytes / r.output_s / 1e6;
    row(
        "command output via runtime",
        med(rs, mbs),
        med(up, mbs),
        "MB/s",
        per_round(&|r, p| mbs(r) / mbs(p)),
        "upstream's",
    );
    row(
        "client peak RSS",
        med(rs, |r| r.rss_kib) / 1024.0,
        med(up, |r| r.rss_kib) / 1024.0,
        "MB",
        per_round(&|r, p| p.rss_kib / r.rss_kib),
        "less",
    );
}

/// The Python package with resumable sessions against the same without: the cost of
/// resumption (acknowledgements, replay bookkeeping, one frame's items per native call).
fn resume_table(on: &[Run], off: &[Run], flood_frames: u64) {
    fn med(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
        median(runs.iter().map(f).collect())
    }
    let per_round =
        |f: &dyn Fn(&Run, &Run) -> f64| median(on.iter().zip(off).map(|(r, p)| f(r, p)).collect());
    println!();
    println!(
        "Python: runtimeuse_rs with resume=True vs resume=False (the floor), same runtime, \
         medians of {ROUNDS} alternating rounds"
    );
    println!(
        "  {:<28} {:>15} {:>15} {:>9}",
        "", "resume=True", "resume=False", "ratio"
    );
    let row = |label: &str, r: f64, p: f64, unit: &str, ratio: f64| {
        println!("  {label:<28} {r:>10.1} {unit:<4} {p:>10.1} {unit:<4} {ratio:>8.2}x");
    };
    row(
        "query round trip",
        med(on, |r| r.rtt) * 1e6,
        med(off, |r| r.rtt) * 1e6,
        "us",
        per_round(&|r, p| r.rtt / p.rtt),
    );
    let n = (flood_frames / 10).max(100) as f64;
    let mps = |r: &Run| n / r.stream_s;
    row(
        "assistant messages/s",
        med(on, mps) / 1e3,
        med(off, mps) / 1e3,
        "k",
        per_round(&|r, p| mps(r) / mps(p)),
    );
    let mbs = |r: &Run| r.bytes / r.output_s / 1e6;
    row(
        "command output via runtime",
        med(on, mbs),
        med(off, mbs),
        "MB/s",
        per_round(&|r, p| mbs(r) / mbs(p)),
    );
    println!("  (ratio: resume=True's figure over resume=False's)");
}
