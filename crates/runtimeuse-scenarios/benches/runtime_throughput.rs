//! Command-output throughput of the project's runtime end to end, and its memory while it
//! streams, beside the floor measured in the same run: the same command's output read straight
//! from a pipe.
//!
//! `cargo bench -p runtimeuse-scenarios --bench runtime_throughput` (add `-- --mb N` to change
//! the volume; default 200).

#![allow(clippy::print_stdout, clippy::disallowed_methods)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use runtimeuse_tokio::{Client, QueryOptions};

const ROUNDS: usize = 3;

fn producer(bytes: u64) -> String {
    format!("yes 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde | head -c {bytes}")
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--runtime") {
        // Child: serve the runtime and print its URL.
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let bound = runtimeuse_runtime::Runtime::new(runtimeuse_runtime::ScriptedHandler)
                .bind("127.0.0.1:0")
                .await
                .expect("bind");
            println!("{}", bound.url());
            bound.serve(std::future::pending()).await.expect("serve");
        });
        return;
    }
    let mb: u64 = args
        .iter()
        .position(|a| a == "--mb")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let bytes = mb * 1_000_000;
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .arg("--runtime")
        .stdout(Stdio::piped())
        .spawn()
        .expect("runtime child");
    let mut line = String::new();
    {
        use std::io::BufRead;
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        out.read_line(&mut line).expect("url");
    }
    let url = line.trim().to_owned();
    let baseline_kib = vm_hwm_kib(child.id());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut through, mut floor, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let f = floor_pipe(bytes);
        let received = Arc::new(AtomicU64::new(0));
        let r = Arc::clone(&received);
        let options = QueryOptions::new("", "echo")
            .invocation(|i| i.pre_command(producer(bytes)))
            .on_command_output(move |o| {
                r.fetch_add(o.text.len() as u64, Ordering::Relaxed);
                std::future::ready(())
            });
        let start = Instant::now();
        let result = rt
            .block_on(Client::new(&url).query("ECHO:done", options))
            .expect("query");
        let secs = start.elapsed().as_secs_f64();
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
    let peak_kib = vm_hwm_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
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
    println!("  ratio: {:.2}", median(ratio));
    println!(
        "  runtime peak RSS: {:.1} MB (idle after start: {:.1} MB)",
        peak_kib as f64 / 1024.0,
        baseline_kib as f64 / 1024.0
    );
}
