//! Client throughput, latency and memory, each beside its floor measured in the same run.
//!
//! `cargo bench -p runtimeuse-scenarios --bench flood` (add `-- --frames N` to change the
//! flood size; default 1,000,000). `-- --instructions [N]` runs each reader under valgrind's
//! callgrind instead and reports instructions per frame, a figure this shared machine's load
//! does not move (default 200,000 frames).
//!
//! 1. Flood: a Rust server on loopback sends N `command_output_message` frames of ~185 bytes,
//!    then the terminal. Each reader runs in its own child process (so its peak RSS is its own)
//!    and the variants alternate over the rounds. Each reader also reports the CPU time it
//!    used per frame (Linux schedstat), which the other process on the machine disturbs less
//!    than the wall clock:
//!    - `raw-count`: tokio-tungstenite, counting frames (floor);
//!    - `raw-ignored-any`: tokio-tungstenite, parsing each frame into `IgnoredAny` (floor);
//!    - `raw-proto`: tokio-tungstenite feeding `runtimeuse-proto`'s session directly, counting
//!      its command output events (what the protocol core costs without the async client);
//!    - `tokio-client`: `runtimeuse-tokio`'s event stream, counting command output items;
//!    - `tokio-client-128k`: the same with the raw readers' 128 KiB read buffer instead of the
//!      client's 4 KiB default (the read-ahead aside, as many reads as the floors);
//!    - `tokio-callback`: the same with the `on_command_output` callback;
//!    - `async-std-client`: `runtimeuse-async-std`'s event stream under `async_io::block_on`;
//!    - `blocking-client`: `runtimeuse-tungstenite`'s event iterator.
//! 2. Round trip: a persistent-session `ECHO:` query against the project's runtime, beside a
//!    raw WebSocket echo round trip.

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]

use std::process::Command;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use runtimeuse_scenarios::flood;
use runtimeuse_tokio::tokio_tungstenite::tungstenite::Message;
use runtimeuse_tokio::{Client, ExecuteCommandsOptions, QueryOptions, RequestEvent, proto};
use tokio::net::TcpListener;

const ROUNDS: usize = 9;

/// The CPU time this process's live threads have used, in nanoseconds (Linux's schedstat;
/// the readers' helper threads, tokio's blocking pool and async-io's reactor, are still alive
/// when it is read).
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

/// One reader run, in this (child) process: prints `frames seconds peak_rss_kib cpu_ns`, the
/// CPU time counting from the start of the run (connecting included).
async fn reader(mode: &str, url: &str) {
    let request = r#"{"message_type":"command_execution_message","commands":[{"command":"make"}],"secrets_to_redact":[]}"#;
    let start = Instant::now();
    let cpu_start = cpu_ns();
    let frames = match mode {
        "raw-count" | "raw-ignored-any" => {
            let (mut ws, _) = runtimeuse_tokio::tokio_tungstenite::connect_async(url)
                .await
                .expect("connect");
            ws.send(Message::text(request)).await.expect("send");
            let parse = mode == "raw-ignored-any";
            let mut n = 0u64;
            while let Some(Ok(m)) = ws.next().await {
                let Message::Text(t) = m else { continue };
                if parse {
                    let v: serde::de::IgnoredAny = serde_json::from_str(&t).expect("json");
                    std::hint::black_box(v);
                }
                if t.as_str()
                    .starts_with(r#"{"message_type":"command_execution_result"#)
                {
                    break;
                }
                n += 1;
            }
            let _ = ws.close(None).await;
            n
        }
        "raw-proto" => {
            // The proto session fed straight from tokio-tungstenite: what the client costs
            // without its async session, stream and routing.
            let (mut ws, _) = runtimeuse_tokio::tokio_tungstenite::connect_async(url)
                .await
                .expect("connect");
            let t0 = Instant::now();
            let mut config = proto::Config::default();
            config.keepalive_interval = None;
            let mut session = proto::Session::new(config, t0);
            session
                .execute_commands(
                    proto::CommandBatch::new(["make"]),
                    proto::RequestOptions::default(),
                    t0,
                )
                .expect("start");
            let mut n = 0u64;
            'read: loop {
                loop {
                    match session.poll_output() {
                        proto::Output::Transmit(proto::Transmit::Text(t)) => {
                            ws.send(Message::text(t)).await.expect("send")
                        }
                        proto::Output::Transmit(_) => {}
                        proto::Output::Event(e) => match e {
                            proto::Event::CommandOutput(o) => {
                                std::hint::black_box(&o);
                                n += 1;
                            }
                            proto::Event::CommandResult { .. } => break 'read,
                            _ => {}
                        },
                        proto::Output::Timeout(_) => break,
                    }
                }
                let Some(Ok(Message::Text(t))) = ws.next().await else {
                    break;
                };
                session.handle_input(proto::Input::ReceiveText(t0, t.as_str()));
            }
            let _ = ws.close(None).await;
            n
        }
        "tokio-callback" => {
            let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let c = std::sync::Arc::clone(&counter);
            let options = ExecuteCommandsOptions::new().on_command_output(move |o| {
                std::hint::black_box(&o);
                c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                std::future::ready(())
            });
            let mut session = Client::new(url).session().await.expect("connect");
            session
                .execute_commands(["make"], options)
                .await
                .expect("run");
            counter.load(std::sync::atomic::Ordering::Relaxed)
        }
        "blocking-client" => {
            let url = url.to_owned();
            tokio::task::spawn_blocking(move || {
                let mut session = runtimeuse_tungstenite::Client::new(url)
                    .session()
                    .expect("connect");
                let mut n = 0u64;
                for item in session
                    .execute_commands_events(
                        ["make"],
                        runtimeuse_tungstenite::ExecuteCommandsOptions::new(),
                    )
                    .expect("start")
                {
                    match item.expect("event") {
                        runtimeuse_tungstenite::RequestEvent::CommandOutput(o) => {
                            std::hint::black_box(&o);
                            n += 1;
                        }
                        runtimeuse_tungstenite::RequestEvent::CommandResult(_) => break,
                        _ => {}
                    }
                }
                n
            })
            .await
            .expect("join")
        }
        "async-std-client" => {
            let url = url.to_owned();
            tokio::task::spawn_blocking(move || {
                async_io::block_on(count_events(runtimeuse_async_std::Client::new(url)))
            })
            .await
            .expect("join")
        }
        "tokio-client" => count_events(Client::new(url)).await,
        "tokio-client-128k" => {
            // The raw readers' read buffer (tungstenite's default) instead of the client's
            // 4 KiB.
            count_events(Client::builder(url).read_buffer_size(128 << 10).build()).await
        }
        other => panic!("unknown mode {other}"),
    };
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{frames} {secs} {} {}",
        runtimeuse_scenarios::bench::status_kib("self", "VmHWM"),
        cpu_ns().saturating_sub(cpu_start)
    );
}

/// The async clients' reader (tokio's and async-std's are the same generic client): counts the
/// command output items of the request's event stream.
async fn count_events<B: runtimeuse_tokio::runtimeuse_async::Backend>(
    client: runtimeuse_tokio::runtimeuse_async::Client<B>,
) -> u64 {
    let mut session = client.session().await.expect("connect");
    let mut n = 0u64;
    let mut events = session
        .execute_commands_events(["make"], ExecuteCommandsOptions::new())
        .expect("start");
    while let Some(item) = events.next().await {
        match item.expect("event") {
            RequestEvent::CommandOutput(o) => {
                std::hint::black_box(&o);
                n += 1;
            }
            RequestEvent::CommandResult(_) => break,
            _ => {}
        }
    }
    n
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The readers, floors first; each runs in its own child process (`--reader MODE URL`).
const MODES: [&str; 8] = [
    "raw-count",
    "raw-ignored-any",
    "raw-proto",
    "tokio-client",
    "tokio-client-128k",
    "tokio-callback",
    "async-std-client",
    "blocking-client",
];

/// Starts a flood server of `frames` frames per connection on loopback; returns its URL.
async fn start_flood_server(frames: usize) -> String {
    flood::start(frames).await.expect("flood server")
}

async fn flood_report(frames: usize) {
    let url = start_flood_server(frames).await;
    let modes = MODES;
    // (client, floor) pairs whose ratio is reported.
    let pairs = [
        ("raw-proto", "raw-ignored-any"),
        ("tokio-client", "raw-count"),
        ("tokio-client", "raw-ignored-any"),
        ("tokio-client-128k", "raw-ignored-any"),
        ("tokio-callback", "raw-count"),
        ("tokio-callback", "raw-ignored-any"),
        ("async-std-client", "raw-ignored-any"),
        ("blocking-client", "raw-ignored-any"),
    ];
    let index = |name: &str| modes.iter().position(|m| *m == name).expect("mode");
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut rss: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); pairs.len()];
    let mut cpu_ratios: Vec<Vec<f64>> = vec![Vec::new(); pairs.len()];
    let exe = std::env::current_exe().expect("exe");
    for _ in 0..ROUNDS {
        let (mut round, mut round_cpu) = (Vec::new(), Vec::new());
        for (i, mode) in modes.iter().enumerate() {
            let out = tokio::task::spawn_blocking({
                let (exe, url, mode) = (exe.clone(), url.clone(), mode.to_string());
                move || {
                    Command::new(exe)
                        .args(["--reader", &mode, &url])
                        .output()
                        .expect("child")
                }
            })
            .await
            .expect("join");
            let text = String::from_utf8_lossy(&out.stdout);
            let mut fields = text.split_whitespace();
            let n: f64 = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0.0);
            let secs: f64 = fields
                .next()
                .and_then(|f| f.parse().ok())
                .unwrap_or(f64::NAN);
            let kib: f64 = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0.0);
            let cpu_ns: f64 = fields
                .next()
                .and_then(|f| f.parse().ok())
                .unwrap_or(f64::NAN);
            assert_eq!(
                n as usize,
                frames,
                "{mode} counted {n} frames: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            rates[i].push(n / secs);
            rss[i].push(kib);
            cpu[i].push(cpu_ns / n);
            round.push(n / secs);
            round_cpu.push(cpu_ns / n);
        }
        for (k, (client, floor)) in pairs.iter().enumerate() {
            ratios[k].push(round[index(client)] / round[index(floor)]);
            cpu_ratios[k].push(round_cpu[index(floor)] / round_cpu[index(client)]);
        }
    }
    let bytes = flood::frame().len() as f64;
    println!("flood: {frames} frames of {bytes} bytes, medians of {ROUNDS} alternating rounds");
    for (i, mode) in modes.iter().enumerate() {
        let r = median(rates[i].clone());
        println!(
            "  {mode:<16} {:>10.0} frames/s {:>8.1} MB/s   peak RSS {:>6.1} MB   CPU {:>5.0} ns/frame",
            r,
            r * bytes / 1e6,
            median(rss[i].clone()) / 1024.0,
            median(cpu[i].clone())
        );
    }
    for (i, (client, floor)) in pairs.iter().enumerate() {
        let mut sorted = ratios[i].clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "  ratio {client} / {floor}: {:.2} (rounds {:.2} to {:.2}; by CPU per frame {:.2})",
            median(ratios[i].clone()),
            sorted[0],
            sorted[sorted.len() - 1],
            median(cpu_ratios[i].clone())
        );
    }
    println!("  (target: >= 0.9 of raw-ignored-any in frames/s, peak RSS < 10 MB)");
}

/// Each reader under callgrind, which counts the instructions it executes: unlike time, the
/// count does not move with the other load on the machine (same binary, same input).
async fn instructions_report(frames: usize) {
    let url = start_flood_server(frames).await;
    let exe = std::env::current_exe().expect("exe");
    let modes = MODES;
    let mut counts = Vec::new();
    println!("instructions (valgrind callgrind), {frames} frames:");
    for mode in modes {
        let out = tokio::task::spawn_blocking({
            let (exe, url) = (exe.clone(), url.clone());
            move || {
                Command::new("valgrind")
                    .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
                    .arg(exe)
                    .args(["--reader", mode, &url])
                    .output()
            }
        })
        .await
        .expect("join");
        let Ok(out) = out else {
            println!("  valgrind is not installed (apt-get install valgrind)");
            return;
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        let total: f64 = stderr
            .lines()
            .find_map(|l| {
                l.split_once("Collected : ")
                    .map(|(_, n)| n.trim().to_owned())
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or(f64::NAN);
        let per_frame = total / frames as f64;
        println!("  {mode:<16} {per_frame:>7.0} instructions/frame");
        counts.push((mode, per_frame));
    }
    let floor = counts[1].1;
    for (mode, n) in &counts[2..] {
        println!("  ratio raw-ignored-any / {mode}: {:.2}", floor / n);
    }
}

async fn echo_server(listener: TcpListener) {
    while let Ok((tcp, _)) = listener.accept().await {
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut ws) = runtimeuse_tokio::tokio_tungstenite::accept_async(tcp).await else {
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

async fn round_trip_report() {
    const N: usize = 2000;
    let runtime = runtimeuse_runtime::Runtime::new(runtimeuse_runtime::ScriptedHandler)
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
        .spawn();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let echo_url = format!("ws://{}", listener.local_addr().expect("addr"));
    tokio::spawn(echo_server(listener));

    let mut session = Client::new(runtime.url()).session().await.expect("session");
    let (mut ws, _) = runtimeuse_tokio::tokio_tungstenite::connect_async(&echo_url)
        .await
        .expect("echo");
    let payload = r#"{"message_type":"invocation_message","user_prompt":"ECHO:ping"}"#;
    let (mut query, mut raw, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..N {
        let t = Instant::now();
        let r = session
            .query("ECHO:ping", QueryOptions::new("", "echo"))
            .await
            .expect("query");
        std::hint::black_box(r);
        let q = t.elapsed().as_secs_f64();
        let t = Instant::now();
        ws.send(Message::text(payload)).await.expect("send");
        let _ = ws.next().await;
        let e = t.elapsed().as_secs_f64();
        query.push(q);
        raw.push(e);
        ratio.push(q / e);
    }
    let end = session.close().await.expect("close");
    assert_eq!(end, runtimeuse_tokio::SessionEnd::Confirmed);
    println!("round trip: medians of {N} alternating rounds");
    println!(
        "  session query (ECHO, project runtime) {:>8.1} us",
        median(query) * 1e6
    );
    println!(
        "  raw websocket echo (floor)            {:>8.1} us",
        median(raw) * 1e6
    );
    println!("  ratio query / raw echo: {:.2}", median(ratio));
    runtime.shutdown().await;
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        // For profiling a reader by hand: serve floods of N frames until killed.
        let n = args[i + 1].parse().expect("frames");
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            println!("ws://{}", listener.local_addr().expect("addr"));
            flood::serve(listener, n).await;
        });
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--reader") {
        rt.block_on(reader(&args[i + 1], &args[i + 2]));
        return;
    }
    // The server gets a thread of its own: the readers are child processes.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(i) = args.iter().position(|a| a == "--instructions") {
        let frames = args
            .get(i + 1)
            .and_then(|f| f.parse().ok())
            .unwrap_or(200_000);
        server_rt.block_on(instructions_report(frames));
        return;
    }
    let frames = args
        .iter()
        .position(|a| a == "--frames")
        .and_then(|i| args.get(i + 1))
        .and_then(|f| f.parse().ok())
        .unwrap_or(1_000_000);
    server_rt.block_on(flood_report(frames));
    server_rt.block_on(round_trip_report());
}
