//! The runtime's memory against clients that read slowly or not at all, with small limits (1 MiB
//! per connection, 4 MiB in total) so that each case runs in seconds: output waits for the
//! client instead of filling memory, a slow or pausing reader gets every byte in order, a
//! fresh client is still answered, and a client that leaves takes its commands with it. The
//! runtime is the real binary; the clients are raw WebSockets (`common::raw`).

// The tests print what they measured, for the record.
#![allow(clippy::print_stderr)]

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

mod common;
use common::Serve;
use common::raw::{PING, RawWs, TEXT, commands, processes_with, read_frame};

const MIB: u64 = 1024;

const LIMITS: &[&str] = &[
    "--max-buffered",
    "1048576",
    "--max-buffered-total",
    "4194304",
];

/// A fresh client's query is answered while others hold the runtime: seconds it took.
fn fresh_query(port: u16) -> f64 {
    let started = Instant::now();
    let mut ws = RawWs::connect(port);
    ws.text(&query("ECHO:still here"));
    loop {
        let (op, payload) = ws.read().expect("the fresh client's result");
        let text = String::from_utf8_lossy(&payload);
        if op == TEXT && text.contains("result_message") {
            assert!(text.contains("still here"), "{text}");
            return started.elapsed().as_secs_f64();
        }
    }
}

fn query(prompt: &str) -> String {
    serde_json::json!({
        "message_type": "invocation_message", "source_id": null, "system_prompt": "",
        "user_prompt": prompt, "model": "m", "output_format_json_schema_str": null,
        "secrets_to_redact": [], "agent_env": null, "artifacts_dirs": null,
        "artifacts_ignore_content": null, "pre_agent_invocation_commands": null,
        "post_agent_invocation_commands": null, "pre_agent_downloadables": null
    })
    .to_string()
}

/// Waits (polling, bounded) until `done` holds; whether it did.
fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

/// Samples the runtime's RSS over `secs`; the peak, in KiB.
fn peak_rss(rt: &Serve, secs: u64) -> u64 {
    let start = Instant::now();
    let mut peak = rt.rss_kb();
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(100));
        peak = peak.max(rt.rss_kb());
    }
    peak
}

/// Waits until `marker`'s commands run (their output then waits on the clients).
fn running(marker: &str, n: usize) {
    assert!(
        eventually(Duration::from_secs(10), || processes_with(marker) >= n),
        "the commands did not start"
    );
}

#[test]
fn one_client_that_never_reads_stalls_only_its_own_command() {
    let rt = Serve::start(LIMITS, &[]);
    fresh_query(rt.port);
    let idle = rt.rss_kb();
    let marker = "never-reads-1";
    let mut ws = RawWs::connect(rt.port);
    ws.text(&commands(&format!("yes {marker} | head -c 500000000")));
    running(marker, 1);
    let peak = peak_rss(&rt, 2);
    eprintln!("one silent client: RSS {idle} kB idle, peak {peak} kB");
    // Unbounded, this grew about 250 MB a second.
    assert!(peak < idle + 16 * MIB, "RSS {idle} kB -> {peak} kB");
    fresh_query(rt.port);
    assert!(
        processes_with(marker) > 0,
        "the stalled command was not kept"
    );
    drop(ws);
    assert!(
        eventually(Duration::from_secs(10), || processes_with(marker) == 0),
        "the command outlived its client"
    );
}

#[test]
fn many_clients_that_never_read_stay_within_the_total() {
    let rt = Serve::start(LIMITS, &[]);
    fresh_query(rt.port);
    let idle = rt.rss_kb();
    let marker = "never-reads-20";
    let clients: Vec<RawWs> = (0..20)
        .map(|_| {
            let mut ws = RawWs::connect(rt.port);
            ws.text(&commands(&format!("yes {marker} | head -c 100000000")));
            ws
        })
        .collect();
    running(marker, 20);
    let peak = peak_rss(&rt, 3);
    let answered = fresh_query(rt.port);
    eprintln!("20 silent clients: RSS {idle} kB idle, peak {peak} kB; fresh query {answered:.3} s");
    // What each connection holds: the end of its command's stdout for the result (960 KiB),
    // a read from each pipe, the socket's write buffer; and the output waiting for all of
    // them, 4 MiB. Unbounded, this grew without end.
    assert!(peak < idle + 48 * MIB, "RSS {idle} kB -> {peak} kB");
    drop(clients);
    assert!(
        eventually(Duration::from_secs(10), || processes_with(marker) == 0),
        "commands outlived their clients"
    );
    // What they held goes back to the system (`serve` trims glibc's heaps after a burst).
    assert!(
        eventually(Duration::from_secs(10), || rt.rss_kb() < idle + 8 * MIB),
        "RSS {idle} kB idle, {} kB 10 s after the clients left",
        rt.rss_kb()
    );
}

#[test]
fn a_ping_flood_from_a_client_that_never_reads_costs_no_memory() {
    let rt = Serve::start(LIMITS, &[]);
    fresh_query(rt.port);
    let idle = rt.rss_kb();
    let mut ws = RawWs::connect(rt.port);
    let stop = ws.0.try_clone().unwrap();
    let flood = std::thread::spawn(move || {
        let mut sent = 0u64;
        // Blocks once the runtime stops reading; ends when the socket is shut down.
        while ws.send(PING, &[0x42; 125], None).is_ok() {
            sent += 1;
        }
        sent
    });
    let peak = peak_rss(&rt, 4);
    fresh_query(rt.port);
    let _ = stop.shutdown(std::net::Shutdown::Both);
    let sent = flood.join().unwrap();
    eprintln!("ping flood: {sent} pings; RSS {idle} kB idle, peak {peak} kB");
    assert!(peak < idle + 4 * MIB, "RSS {idle} kB -> {peak} kB");
}

/// Reads a command's stdout from the runtime through `read`, checking each byte against the
/// output of `yes <line>` in order; the bytes checked.
fn check_yes_output(ws: &mut impl Read, line: &str, total: u64) -> u64 {
    let expected = format!("{line}\n").into_bytes();
    let mut at = 0u64;
    loop {
        let (op, payload) = read_frame(ws).expect("a frame");
        assert_eq!(op, TEXT);
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        match v["message_type"].as_str() {
            Some("command_output_message") => {
                let text = v["text"].as_str().unwrap();
                for b in text.bytes() {
                    let want = expected[(at % expected.len() as u64) as usize];
                    assert_eq!(b, want, "byte {at} out of order");
                    at += 1;
                }
            }
            Some("command_execution_result_message") => {
                assert_eq!(at, total, "bytes lost");
                return at;
            }
            Some("heartbeat_message") => {}
            other => panic!("unexpected {other:?}: {v}"),
        }
    }
}

/// A socket read at most `chunk` bytes at a time, `pause` apart, and once `stop` long after
/// the first `stop_after` bytes.
struct Reader {
    tcp: TcpStream,
    chunk: usize,
    pause: Duration,
    stop_after: u64,
    stop: Duration,
    read: u64,
    buf: Vec<u8>,
    at: usize,
}

impl Reader {
    fn new(ws: &RawWs, chunk: usize, pause: Duration) -> Self {
        ws.0.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Self {
            tcp: ws.0.try_clone().unwrap(),
            chunk,
            pause,
            stop_after: u64::MAX,
            stop: Duration::ZERO,
            read: 0,
            buf: Vec::new(),
            at: 0,
        }
    }
}

impl Read for Reader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.buf.len() {
            if self.read >= self.stop_after {
                std::thread::sleep(std::mem::take(&mut self.stop));
            }
            std::thread::sleep(self.pause);
            self.buf.resize(self.chunk, 0);
            let n = self.tcp.read(&mut self.buf)?;
            self.buf.truncate(n);
            self.read += n as u64;
            self.at = 0;
            if n == 0 {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn a_slow_reader_gets_every_byte_in_order() {
    let rt = Serve::start(LIMITS, &[]);
    let mut ws = RawWs::connect(rt.port);
    let line = "slow-reader-0123456789abcdefghijklmnopqrstuvwxyz";
    let total = 50_000_000;
    ws.text(&commands(&format!("yes {line} | head -c {total}")));
    // 64 KiB every 10 ms: about 6 MB/s, far slower than `yes`.
    let mut slow = Reader::new(&ws, 64 << 10, Duration::from_millis(10));
    let started = Instant::now();
    let peak = std::thread::scope(|s| {
        let sampler = s.spawn(|| peak_rss(&rt, 3));
        assert_eq!(check_yes_output(&mut slow, line, total), total);
        sampler.join().unwrap()
    });
    eprintln!(
        "slow reader: 50 MB in {:.1} s; runtime peak RSS {peak} kB",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_reader_that_pauses_then_reads_on_loses_nothing() {
    let rt = Serve::start(LIMITS, &[]);
    let mut ws = RawWs::connect(rt.port);
    let line = "pausing-reader";
    let total = 20_000_000;
    ws.text(&commands(&format!("yes {line} | head -c {total}")));
    let mut reader = Reader::new(&ws, 1 << 20, Duration::ZERO);
    // After the first 64 KiB, 5 s without reading while the command has far more to say.
    reader.stop_after = 64 << 10;
    reader.stop = Duration::from_secs(5);
    assert_eq!(check_yes_output(&mut reader, line, total), total);
    assert!(reader.stop.is_zero(), "the reader never paused");
}

/// Starts a command that writes without end for a client that never reads, and returns when
/// the runtime let the client go (its command gone): how long that took after the command
/// started.
fn stalled_client_dropped_after(rt: &Serve, marker: &str, limit: Duration) -> Option<Duration> {
    let mut ws = RawWs::connect(rt.port);
    ws.text(&commands(&format!("yes {marker}")));
    running(marker, 1);
    let started = Instant::now();
    let gone = eventually(limit, || processes_with(marker) == 0);
    drop(ws);
    gone.then(|| started.elapsed())
}

#[test]
fn a_client_that_takes_no_bytes_is_dropped_after_the_stall_limit() {
    let rt = Serve::start(&["--write-stall-timeout-ms", "1000"], &[]);
    let after = stalled_client_dropped_after(&rt, "stall-short", Duration::from_secs(15))
        .expect("the stalled client's command still runs");
    // The stall starts once the socket's buffers are full, a moment after the command.
    assert!(after >= Duration::from_millis(900), "{after:?}");
    fresh_query(rt.port);
    let log = rt.stop();
    assert_eq!(
        log.matches("the client took no bytes within the write stall limit")
            .count(),
        1,
        "{log}"
    );
}

#[test]
fn waits_60_s_for_the_default_stall_limit() {
    let rt = Serve::start(&[], &[]);
    let after = stalled_client_dropped_after(&rt, "stall-default", Duration::from_secs(90))
        .expect("the stalled client was never dropped");
    assert!(
        after >= Duration::from_secs(59) && after < Duration::from_secs(75),
        "{after:?}"
    );
}

/// Eight clients send a 50 MiB frame each at once; the runtime's peak RSS above idle, in KiB.
fn large_frames_at_once(rt: &Serve) -> u64 {
    let idle = rt.rss_kb();
    let frame = std::sync::Arc::new(vec![b'x'; 50 << 20]);
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let (port, frame) = (rt.port, frame.clone());
            std::thread::spawn(move || {
                let mut ws = RawWs::connect(port);
                ws.send(TEXT, &frame, None).unwrap();
                // Not JSON: the runtime answers with an error once it read the frame whole.
                let (op, payload) = ws.read().unwrap();
                assert_eq!(op, TEXT);
                assert!(String::from_utf8_lossy(&payload).contains("error_message"));
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    rt.peak_rss_kb().saturating_sub(idle)
}

#[test]
fn large_frames_from_many_clients_at_once_stay_within_the_inbound_budget() {
    let budget = 32u64 << 20;
    let rt = Serve::start(&["--max-inbound-total", &budget.to_string()], &[]);
    let bounded = large_frames_at_once(&rt);
    drop(rt);
    // The same without a budget that matters, for the record.
    let rt = Serve::start(&["--max-inbound-total", &(4u64 << 30).to_string()], &[]);
    let unbounded = large_frames_at_once(&rt);
    drop(rt);
    eprintln!(
        "8 frames of 50 MiB at once: peak {} MiB above idle with a 32 MiB inbound budget, \
         {} MiB without",
        bounded / MIB,
        unbounded / MIB
    );
    // The budget, one frame read to its end, and the buffers of reading it (they grow by
    // doubling) and of the message made of it.
    let bound = (budget + 3 * (50 << 20)) / 1024;
    assert!(bounded < bound, "{} MiB above idle", bounded / MIB);
}
