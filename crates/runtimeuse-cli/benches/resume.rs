//! What resumption costs a stream, beside its floor measured in the same run: the same stream
//! with resumption off. Alternating rounds, medians and ratios.
//!
//! 1. A command writing `--mb` MB (default 200) through the tokio client, `resume(true)`
//!    against `resume(false)` (target: at least 0.9 of the throughput).
//! 2. `runtimeuse exec 'seq 1 N'` (`--seq`, default 3,000,000: about 21 MB) at the CLI's
//!    defaults (resumption on) against `--no-resume` (target: at most 1.3x the time).
//! 3. With heartbeats off (`serve --heartbeat-interval-ms 0`), a `--quiet-mb` MB output
//!    (default 50) through `exec` at the defaults completes (it stopped after 1 MB when
//!    acknowledgements waited for the next frame).
//!
//! `cargo bench -p runtimeuse-cli --bench resume -- [--mb N] [--seq N] [--quiet-mb N]
//! [--rounds N]`

#![allow(clippy::print_stdout, clippy::disallowed_methods)]

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Instant;

use runtimeuse_scenarios::bench::{
    ServerChild, arg, median, output_query, producer, scripted_serve,
};
use runtimeuse_tokio::Client;

const BIN: &str = env!("CARGO_BIN_EXE_runtimeuse");

/// One query streaming `bytes` through `client`: its throughput in MB/s.
fn tokio_round(rt: &tokio::runtime::Runtime, client: &Client, bytes: u64) -> f64 {
    let (options, received) = output_query(bytes);
    let start = Instant::now();
    let result = rt
        .block_on(client.query("ECHO:done", options))
        .expect("query");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(result.text(), Some("done"));
    assert_eq!(
        received.load(Ordering::Relaxed),
        bytes,
        "every byte arrived"
    );
    bytes as f64 / secs / 1e6
}

/// `runtimeuse exec` of `command` against `url` (with `extra` flags): its time in seconds and
/// the bytes it printed.
fn exec(url: &str, command: &str, extra: &[&str]) -> (f64, u64) {
    let start = Instant::now();
    let out = Command::new(BIN)
        .args(["exec", "--url", url, "--quiet"])
        .args(extra)
        .arg(command)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("runtimeuse exec");
    let secs = start.elapsed().as_secs_f64();
    assert!(out.status.success(), "exec failed: {:?}", out.status);
    (secs, out.stdout.len() as u64)
}

fn main() {
    let mb: u64 = arg("--mb", 200);
    let seq: u64 = arg("--seq", 3_000_000);
    let quiet_mb: u64 = arg("--quiet-mb", 50);
    let rounds: usize = arg("--rounds", 5);
    let runtime = ServerChild::start_serve(scripted_serve(BIN));
    let url = runtime.url.clone();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let resuming = Client::builder(&url).resume(true).build();
    let plain = Client::builder(&url).resume(false).build();
    let granted = rt.block_on(async {
        let session = resuming.session().await.expect("session");
        let granted = session.is_resumable();
        session.disconnect().await;
        granted
    });
    assert!(granted, "the runtime grants resumption");
    let bytes = mb * 1_000_000;
    let (mut on, mut off, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let floor = tokio_round(&rt, &plain, bytes);
        let with = tokio_round(&rt, &resuming, bytes);
        off.push(floor);
        on.push(with);
        ratio.push(with / floor);
    }
    println!("resumption's cost, medians of {rounds} alternating rounds");
    println!("  1. a command writing {mb} MB through the tokio client");
    println!("     resume(true)           {:>8.1} MB/s", median(on));
    println!(
        "     resume(false)          {:>8.1} MB/s (floor)",
        median(off)
    );
    println!("     ratio {:.2} (target >= 0.90)", median(ratio));

    let command = format!("seq 1 {seq}");
    let (mut on, mut off, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (floor, floor_bytes) = exec(&url, &command, &["--no-resume"]);
        let (with, with_bytes) = exec(&url, &command, &[]);
        assert_eq!(with_bytes, floor_bytes, "the same output");
        off.push(floor);
        on.push(with);
        ratio.push(with / floor);
    }
    println!("  2. runtimeuse exec '{command}'");
    println!("     the defaults (resume)  {:>8.3} s", median(on));
    println!("     --no-resume            {:>8.3} s (floor)", median(off));
    println!("     ratio {:.2} (target <= 1.30)", median(ratio));
    drop(runtime);

    let mut quiet = scripted_serve(BIN);
    quiet.args(["--heartbeat-interval-ms", "0"]);
    let runtime = ServerChild::start_serve(quiet);
    let quiet_bytes = quiet_mb * 1_000_000;
    let (secs, printed) = exec(&runtime.url, &producer(quiet_bytes), &[]);
    assert_eq!(printed, quiet_bytes, "the whole output");
    let (floor, _) = exec(&runtime.url, &producer(quiet_bytes), &["--no-resume"]);
    println!("  3. heartbeats off, {quiet_mb} MB through exec at the defaults");
    println!("     completed in           {secs:>8.3} s");
    println!("     --no-resume            {floor:>8.3} s (floor)");
}
