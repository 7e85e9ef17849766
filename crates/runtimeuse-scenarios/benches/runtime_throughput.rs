//! Command-output throughput of the project's runtime end to end, and its memory while it
//! streams, beside the floor measured in the same run: the same command's output read straight
//! from a pipe.
//!
//! `cargo bench -p runtimeuse-scenarios --bench runtime_throughput` (add `-- --mb N` to change
//! the volume, default 200; `-- --client-read-buffer BYTES` for the client's read buffer,
//! default 4 KiB; `-- --runtime-bin PATH` to measure a `runtimeuse` binary's `serve` instead
//! of the runtime library in a child of the bench).

#![allow(clippy::print_stdout, clippy::disallowed_methods)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Instant;

use runtimeuse_scenarios::bench::{self, ServerChild, arg, median, producer};
use runtimeuse_tokio::Client;

const ROUNDS: usize = 7;

fn floor_pipe(bytes: u64) -> f64 {
    let start = Instant::now();
    let mut child = Command::new("/bin/sh")
        .args(["-c", &producer(bytes)])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("pipe");
    let mut buf = vec![0; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = out.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    child.wait().expect("wait");
    assert_eq!(total, bytes);
    bytes as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// User and system CPU time of process `pid` so far, in seconds (`/proc/PID/stat`).
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // The fields after the command name (which may hold spaces) start after its `)`.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        // utime and stime, in clock ticks (100 a second on Linux).
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--runtime") {
        bench::serve_runtime(runtimeuse_runtime::RuntimeOptions::default());
        return;
    }
    let mb: u64 = arg("--mb", 200);
    // The client's read buffer (default: the client's default, 4 KiB).
    let read_buffer: usize = arg(
        "--client-read-buffer",
        runtimeuse_tokio::DEFAULT_READ_BUFFER,
    );
    let bytes = mb * 1_000_000;
    let runtime_bin: String = arg("--runtime-bin", String::new());
    let runtime = if runtime_bin.is_empty() {
        ServerChild::start(&["--runtime"])
    } else {
        ServerChild::start_cli(&runtime_bin)
    };
    let url = runtime.url.clone();
    let baseline_kib = bench::status_kib(&runtime.pid().to_string(), "VmHWM");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut through, mut floor, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    let (mut runtime_cpu, mut client_cpu) = (Vec::new(), Vec::new());
    let me = std::process::id();
    let client = Client::builder(&url).read_buffer_size(read_buffer).build();
    for _ in 0..ROUNDS {
        let f = floor_pipe(bytes);
        let (options, received) = bench::output_query(bytes);
        let (runtime_before, client_before) = (cpu_secs(runtime.pid()), cpu_secs(me));
        let start = Instant::now();
        let result = rt
            .block_on(client.query("ECHO:done", options))
            .expect("query");
        let secs = start.elapsed().as_secs_f64();
        runtime_cpu.push((cpu_secs(runtime.pid()) - runtime_before) / (bytes as f64 / 1e9));
        client_cpu.push((cpu_secs(me) - client_before) / (bytes as f64 / 1e9));
        assert_eq!(result.text(), Some("done"));
        assert_eq!(
            received.load(Ordering::Relaxed),
            bytes,
            "every byte arrived"
        );
        let t = bytes as f64 / secs / 1e6;
        through.push(t);
        floor.push(f);
        ratio.push(t / f);
    }
    let peak_kib = bench::status_kib(&runtime.pid().to_string(), "VmHWM");
    drop(runtime);
    report(
        mb,
        through,
        floor,
        ratio,
        (runtime_cpu, client_cpu),
        (peak_kib, baseline_kib),
    );
}

/// Prints the medians, each beside its floor.
fn report(
    mb: u64,
    through: Vec<f64>,
    floor: Vec<f64>,
    ratio: Vec<f64>,
    (runtime_cpu, client_cpu): (Vec<f64>, Vec<f64>),
    (peak_kib, baseline_kib): (f64, f64),
) {
    let mut sorted = ratio.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "runtime throughput: a command writing {mb} MB, medians of {ROUNDS} alternating rounds"
    );
    println!(
        "  runtime -> websocket -> tokio client  {:>8.1} MB/s",
        median(through)
    );
    println!(
        "  the same command read from a pipe     {:>8.1} MB/s (floor)",
        median(floor)
    );
    println!(
        "  ratio: {:.2} (rounds {:.2} to {:.2}; target >= 0.6)",
        median(ratio),
        sorted[0],
        sorted[sorted.len() - 1]
    );
    println!(
        "  CPU per GB: runtime {:.2} s, client {:.2} s",
        median(runtime_cpu),
        median(client_cpu)
    );
    println!(
        "  runtime peak RSS: {:.1} MB (idle after start: {:.1} MB)",
        peak_kib / 1024.0,
        baseline_kib / 1024.0
    );
}
