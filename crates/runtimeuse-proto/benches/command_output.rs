//! Hot path: a session fed a stream of ~185-byte `command_output_message` frames, beside the
//! floor measured in the same run: serde_json parsing the same bytes into `IgnoredAny`.
//!
//! `cargo bench -p runtimeuse-proto --bench command_output` prints frames/s, MB/s and the
//! ratio session/floor for a plain text and for a text with `\n` escapes. A second floor is
//! serde decoding the frame into a typed struct and owning its text: the least any decoder that
//! hands out an owned `String` per frame does (the session's events own their text). Two
//! ceilings are printed: IgnoredAny plus one copy of the text (events that own their text), and
//! IgnoredAny plus validating the text as UTF-8 (events that share the frame's buffer, in safe
//! Rust).
//! `-- --profile plain|escaped session|floor|floor-copy|floor-shared|floor-owned REPS` runs one of them
//! alone, for `valgrind --tool=callgrind` or `perf record`. `-- --instructions [REPS]` runs each
//! under callgrind and prints instructions per frame beside the floor's: a figure the machine's
//! load does not move, where the wall-time ratios above move from run to run.

// A bench reads the clock and prints its figures; the session under test does neither.
#![allow(clippy::disallowed_methods, clippy::print_stdout)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use runtimeuse_proto::{CommandBatch, Config, Input, Output, RequestOptions, Session};

const FRAMES: usize = 1000;

fn frames(text: &str) -> Vec<String> {
    (0..FRAMES)
        .map(|_| {
            format!(
                r#"{{"message_type":"command_output_message","stream":"stdout","text":"{text}","command":"make"}}"#
            )
        })
        .collect()
}

fn variants() -> [(&'static str, Vec<String>); 2] {
    // A ~100-byte line of text without escapes, and one holding `\n` escapes as real command
    // output does (five short lines of the same length).
    let plain = "x".repeat(100);
    let escaped = ["0123456789abcdef\\n"; 5].concat() + "0123456789";
    [("plain", frames(&plain)), ("escaped", frames(&escaped))]
}

fn session_run(frames: &[String]) -> usize {
    let t0 = Instant::now();
    let mut config = Config::default();
    config.keepalive_interval = None;
    let mut session = Session::new(config, t0);
    session
        .execute_commands(CommandBatch::new(["make"]), RequestOptions::default(), t0)
        .expect("start");
    let mut events = 0;
    for frame in frames {
        session.handle_input(Input::ReceiveText(t0, frame));
        loop {
            match session.poll_output() {
                Output::Event(e) => {
                    black_box(e);
                    events += 1;
                }
                Output::Transmit(t) => {
                    black_box(t);
                }
                Output::Timeout(_) => break,
            }
        }
    }
    events
}

fn floor_run(frames: &[String]) -> usize {
    let mut n = 0;
    for frame in frames {
        let v: serde::de::IgnoredAny = serde_json::from_slice(frame.as_bytes()).expect("json");
        black_box(v);
        n += 1;
    }
    n
}

/// What any decoder that hands out each frame's text as an owned `String` does at least:
/// serde decoding the frame into a typed struct (borrowing what it can), then owning the text.
#[derive(serde::Deserialize)]
struct Typed<'a> {
    #[serde(borrow)]
    message_type: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    stream: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    text: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    command: std::borrow::Cow<'a, str>,
}

/// The ceiling of any decoder whose events own their text: IgnoredAny's scan, plus one owned
/// copy of the text (the frame's 100 bytes at the text's place; the escaped variant's
/// unescaping is not counted, so this floor flatters it).
fn floor_copy_run(frames: &[String]) -> usize {
    let mut n = 0;
    for frame in frames {
        let v: serde::de::IgnoredAny = serde_json::from_slice(frame.as_bytes()).expect("json");
        black_box(v);
        black_box(String::from(frame.get(60..160).unwrap_or_default()));
        n += 1;
    }
    n
}

/// The ceiling of a design whose events share the received frame's buffer, in safe Rust:
/// IgnoredAny's scan, plus validating the text as UTF-8 (a shared byte buffer becomes a `str`
/// only through `std::str::from_utf8`, or through `unsafe`, which the library crates forbid).
/// The buffer's own bookkeeping (its reference count) is not counted, so this floor flatters it.
fn floor_shared_run(frames: &[String]) -> usize {
    let mut n = 0;
    for frame in frames {
        let v: serde::de::IgnoredAny = serde_json::from_slice(frame.as_bytes()).expect("json");
        black_box(v);
        let text = frame.as_bytes().get(60..160).unwrap_or_default();
        black_box(std::str::from_utf8(black_box(text)).is_ok());
        n += 1;
    }
    n
}

fn floor_owned_run(frames: &[String]) -> usize {
    let mut n = 0;
    for frame in frames {
        let v: Typed<'_> = serde_json::from_str(frame).expect("json");
        black_box((&v.message_type, &v.stream, &v.command));
        let text: String = v.text.into_owned();
        black_box(text);
        n += 1;
    }
    n
}

fn bench(c: &mut Criterion) {
    for (name, frames) in variants() {
        assert_eq!(session_run(&frames), FRAMES, "every frame becomes an event");
        let mut group = c.benchmark_group(format!("command_output_{name}"));
        group.throughput(Throughput::Elements(FRAMES as u64));
        group.bench_function("floor_ignored_any", |b| {
            b.iter(|| floor_run(black_box(&frames)))
        });
        group.bench_function("session", |b| b.iter(|| session_run(black_box(&frames))));
        group.finish();
    }
}

/// Times `f` over `reps` runs of the batch, in seconds per frame.
fn time_per_frame(frames: &[String], reps: usize, f: fn(&[String]) -> usize) -> f64 {
    let start = Instant::now();
    for _ in 0..reps {
        black_box(f(black_box(frames)));
    }
    start.elapsed().as_secs_f64() / (reps * frames.len()) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The floor and the session measured in alternation, so that both see the same machine: this
/// machine is shared, and two criterion runs a few seconds apart can differ by 2x. Reports the
/// medians over the rounds and the median of the per-round ratios.
fn report() {
    const ROUNDS: usize = 41;
    const REPS: usize = 50;
    for (name, frames) in variants() {
        let bytes = frames.iter().map(String::len).sum::<usize>() as f64 / FRAMES as f64;
        let (mut floor, mut copy, mut shared, mut owned, mut session) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut ratio, mut ratio_copy, mut ratio_shared, mut ratio_owned) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let f = time_per_frame(&frames, REPS, floor_run);
            let c = time_per_frame(&frames, REPS, floor_copy_run);
            let sh = time_per_frame(&frames, REPS, floor_shared_run);
            let o = time_per_frame(&frames, REPS, floor_owned_run);
            let s = time_per_frame(&frames, REPS, session_run);
            floor.push(f);
            copy.push(c);
            shared.push(sh);
            owned.push(o);
            session.push(s);
            ratio.push(f / s);
            ratio_copy.push(f / c);
            ratio_shared.push(f / sh);
            ratio_owned.push(o / s);
        }
        let line = |label: &str, secs: f64| {
            println!(
                "  {label:<26} {:>7.1} ns/frame {:>10.0} frames/s {:>8.1} MB/s",
                secs * 1e9,
                1.0 / secs,
                bytes / secs / 1e6
            )
        };
        println!("{name} (~{bytes:.0} bytes/frame; medians of {ROUNDS} alternating rounds):");
        line("floor (IgnoredAny)", median(floor));
        line("floor + one owned copy", median(copy));
        line("floor + validated slice", median(shared));
        line("floor (typed, owned text)", median(owned));
        line("session", median(session));
        let target = if name == "plain" { 0.95 } else { 0.85 };
        println!(
            "  ratio session/IgnoredAny: {:.2} (throughput; target >= {target})",
            median(ratio)
        );
        println!(
            "  ceiling with owned text: {:.2} of IgnoredAny (its scan plus one copy of the text)",
            median(ratio_copy)
        );
        println!(
            "  ceiling with shared text in safe Rust: {:.2} of IgnoredAny (its scan plus validating the text)",
            median(ratio_shared)
        );
        println!(
            "  ratio session/typed-owned: {:.2} (serde doing the same work: a typed frame, its text owned)",
            median(ratio_owned)
        );
    }
}

/// What `valgrind --tool=callgrind` counts for `--profile VARIANT WHO REPS`: instructions in
/// all, or `None` without valgrind.
fn callgrind(variant: &str, who: &str, reps: usize) -> Option<u64> {
    let exe = std::env::current_exe().ok()?;
    let out = std::process::Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(exe)
        .args(["--profile", variant, who, &reps.to_string()])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stderr).lines().find_map(|l| {
        let (_, n) = l.split_once("Collected : ")?;
        n.trim().parse().ok()
    })
}

/// Instructions per frame of the session and of each floor: REPS batches of each, less a run
/// of none (the process and the frames' setup).
fn instructions_report(reps: usize) {
    const WHO: [&str; 4] = ["floor", "floor-copy", "floor-owned", "session"];
    println!("instructions per frame (valgrind callgrind, {reps} batches of {FRAMES} frames):");
    for (variant, _) in variants() {
        let Some(setup) = callgrind(variant, "floor", 0) else {
            println!("  valgrind did not run (apt-get install valgrind)");
            return;
        };
        let per_frame = |who| {
            callgrind(variant, who, reps).map_or(f64::NAN, |n| {
                n.saturating_sub(setup) as f64 / (reps * FRAMES) as f64
            })
        };
        let counts: Vec<f64> = WHO.iter().map(|who| per_frame(who)).collect();
        println!("{variant}:");
        for (who, n) in WHO.iter().zip(&counts) {
            println!("  {who:<12} {n:>7.0}");
        }
        let target = if variant == "plain" { 0.95 } else { 0.85 };
        println!(
            "  ratio session/IgnoredAny by instructions: {:.2} (target >= {target})",
            counts[0] / counts[3]
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--instructions") {
        let reps = args.get(i + 1).and_then(|r| r.parse().ok()).unwrap_or(50);
        instructions_report(reps);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--profile") {
        // For a profiler (valgrind --tool=callgrind): `--profile VARIANT WHO REPS` runs only
        // the session or only the floor over REPS batches of the variant's frames.
        let name = args.get(i + 1).map_or("plain", String::as_str);
        let run = match args.get(i + 2).map(String::as_str) {
            Some("floor") => floor_run,
            Some("floor-owned") => floor_owned_run,
            Some("floor-copy") => floor_copy_run,
            Some("floor-shared") => floor_shared_run,
            _ => session_run,
        };
        let reps: usize = args.get(i + 3).and_then(|r| r.parse().ok()).unwrap_or(100);
        let (_, frames) = variants()
            .into_iter()
            .find(|(n, _)| *n == name)
            .expect("plain or escaped");
        for _ in 0..reps {
            black_box(run(black_box(&frames)));
        }
        return;
    }
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    bench(&mut c);
    c.final_summary();
    report();
}
