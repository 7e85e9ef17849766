//! Start-up of `runtimeuse serve`: the time from exec to accepting a connection (the
//! `listening on port` line read, then a TCP connection made), beside its floor measured in
//! the same run: exec of a program that only prints such a line. Medians of alternating runs.
//!
//! `cargo bench -p runtimeuse-cli --bench startup -- [--runs N] [--bin PATH] [--compare CMD]`
//!
//! `--bin` measures another build (the static one of the README, say); `--compare` adds a
//! command line run through `sh -c` that prints a line with its port last and then accepts
//! connections on it (the upstream Node runtime, where it is installed).

// A bench binary prints its figures.
#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `cmd`, reads its first line of output, and when `connect` connects to the port
/// that line ends with: the time that took.
fn time_once(cmd: &mut Command, connect: bool) -> Duration {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("a line");
    if connect {
        let port: u16 = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        TcpStream::connect(("127.0.0.1", port)).expect("accepting");
    }
    let took = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut runs = 30usize;
    let mut bin = env!("CARGO_BIN_EXE_runtimeuse").to_owned();
    let mut compare = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().and_then(|n| n.parse().ok()).expect("--runs N"),
            "--bin" => bin = args.next().expect("--bin PATH"),
            "--compare" => compare = args.next(),
            // cargo bench passes --bench.
            _ => {}
        }
    }
    let serve = || runtimeuse_scenarios::bench::scripted_serve(&bin);
    let floor = || {
        let mut c = Command::new("/bin/echo");
        c.arg("listening on port 0");
        c
    };
    let (mut ours, mut floors, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        floors.push(time_once(&mut floor(), false));
        ours.push(time_once(&mut serve(), true));
        if let Some(cmd) = &compare {
            theirs.push(time_once(Command::new("sh").args(["-c", cmd]), true));
        }
    }
    let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
    println!("start-up, exec to accepting ({runs} runs each, medians):");
    println!(
        "  floor: exec of /bin/echo printing a line          {:>9.2?}",
        median(floors)
    );
    println!(
        "  runtimeuse serve ({:.1} MB binary)                  {:>9.2?}",
        size as f64 / 1e6,
        median(ours)
    );
    if !theirs.is_empty() {
        println!(
            "  --compare                                          {:>9.2?}",
            median(theirs)
        );
    }
}
