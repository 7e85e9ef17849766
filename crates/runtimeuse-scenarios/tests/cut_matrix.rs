//! The full cut matrix of resumable sessions: a request that streams 1,000 frames and asks
//! for two artifact uploads, cut (a TCP reset, and a close without a close frame) after each
//! N of the runtime's data frames, N = 0 to past the last, through each of the three
//! clients. Every run must hand its caller the same events and result as an uncut one, and
//! PUT each artifact exactly once.
//!
//! The frames are assistant messages of the scripted agent (`STREAM:1000`): a command's output
//! reaches the runtime in pipe reads that coalesce unpredictably, so no command gives 1,000
//! frames run after run; resumption counts data frames whatever their kind (the command-output
//! matrix of `tests/resume.rs` covers that kind).
//!
//! `cargo test -p runtimeuse-scenarios --test cut_matrix -- --nocapture` prints each client's
//! runs and times.

// The matrix's figures are printed for the record.
#![allow(clippy::print_stderr)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use runtimeuse_runtime::RuntimeOptions;
use runtimeuse_scenarios::cut::{Cut, CutProxy};
use runtimeuse_scenarios::{HttpServer, Served};

const FRAMES: usize = 1000;

/// What a caller saw of one run.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    messages: Vec<String>,
    result: Option<String>,
    reconnected: u32,
}

impl Seen {
    /// Notes an event of the stream (the three clients' events are the same type).
    fn note(&mut self, event: runtimeuse_tokio::RequestEvent) {
        use runtimeuse_tokio::RequestEvent;
        match event {
            RequestEvent::AssistantMessage(m) => self.messages.extend(m),
            RequestEvent::Result(r) => self.result = r.text().map(str::to_owned),
            RequestEvent::Reconnected { .. } => self.reconnected += 1,
            _ => {}
        }
    }
}

/// One run's query: the pre-command writes the two artifacts, the agent streams.
struct Query {
    dir: String,
    upload_base: String,
}

impl Query {
    fn new(http: &HttpServer, label: &str) -> Self {
        let dir = runtimeuse_scenarios::temp_dir("cut-matrix");
        Self {
            dir: dir.display().to_string(),
            upload_base: http.url(&format!("/{label}/")),
        }
    }

    /// Each artifact appears whole (written beside the directory, then renamed into it): the
    /// watcher reports a file again when it changes, so one caught half written (created
    /// empty, then filled) would be asked for twice, cut or not.
    fn pre_command(&self) -> String {
        format!(
            "echo one > {d}.a; mv {d}.a {d}/a.txt; echo two > {d}.b; mv {d}.b {d}/b.txt",
            d = self.dir
        )
    }

    fn prompt() -> String {
        format!("STREAM:{FRAMES}")
    }
}

fn options() -> RuntimeOptions {
    let mut o = RuntimeOptions::default();
    // The artifacts are found while the stream runs.
    o.artifact_scan_interval = Duration::from_millis(5);
    o
}

/// The run of an async client: `$krate` is its crate, `$block_on` how a thread waits for a
/// future on its executor.
macro_rules! async_run {
    ($name:ident, $krate:ident, $block_on:expr) => {
        fn $name(url: String, q: &Query) -> Seen {
            use $krate::{ArtifactUpload, Client, QueryOptions};
            let base = q.upload_base.clone();
            let options = QueryOptions::new("", "echo")
                .pre_command(q.pre_command())
                .artifacts_dir(q.dir.clone())
                .on_artifact_upload_request(move |req| {
                    let url = format!("{base}{}", req.filename);
                    async move { ArtifactUpload::new(url, "text/plain") }
                });
            $block_on(async {
                let client = Client::builder(url).resume(true).build();
                let mut session = client.session().await.expect("session");
                let mut seen = Seen::default();
                let mut events = session
                    .query_events(Query::prompt(), options)
                    .expect("start");
                while let Some(item) = events.next().await {
                    seen.note(item.expect("item"));
                }
                drop(events);
                let _ = session.close().await.expect("close");
                seen
            })
        }
    };
}

fn tokio_block_on<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(f)
}

async_run!(tokio_run, runtimeuse_tokio, tokio_block_on);
async_run!(async_std_run, runtimeuse_async_std, async_io::block_on);

fn blocking_run(url: String, q: &Query) -> Seen {
    use runtimeuse_tungstenite::{ArtifactUpload, Client, QueryOptions};
    let base = q.upload_base.clone();
    let options = QueryOptions::new("", "echo")
        .pre_command(q.pre_command())
        .artifacts_dir(q.dir.clone())
        .on_artifact_upload_request(move |req| {
            ArtifactUpload::new(format!("{base}{}", req.filename), "text/plain")
        });
    let client = Client::builder(url).resume(true).build();
    let mut session = client.session().expect("session");
    let mut seen = Seen::default();
    for item in session
        .query_events(Query::prompt(), options)
        .expect("start")
    {
        seen.note(item.expect("item"));
    }
    let _ = session.close().expect("close");
    seen
}

type Run = fn(String, &Query) -> Seen;

/// Every cut of one client, with its figures printed.
fn matrix(name: &str, run: Run, rt: &Served, http: &HttpServer, proxies: &tokio::runtime::Runtime) {
    let uncut_query = Query::new(http, &format!("{name}-uncut"));
    let t = Instant::now();
    let uncut = run(rt.url(), &uncut_query);
    let uncut_time = t.elapsed();
    assert_eq!(uncut.messages.len(), FRAMES);
    assert_eq!(uncut.result.as_deref(), Some("streamed 1000 messages"));
    // The stream, two artifact requests, the result: every N up to the last frame, and one
    // past it (no cut at all).
    let last = FRAMES as u64 + 3;
    let started = Instant::now();
    let mut times = Vec::new();
    for after in 0..=last + 1 {
        for cut in [Cut::Reset, Cut::Close] {
            let label = format!("{name}-{after}-{cut:?}");
            let q = Query::new(http, &label);
            let proxy = proxies.block_on(CutProxy::start(&rt.url(), after, 1, cut));
            let t = Instant::now();
            let got = run(proxy.url(), &q);
            times.push(t.elapsed());
            // Where the messages part, not all 1,000 of them.
            let differ = (got.messages.iter().zip(&uncut.messages)).position(|(a, b)| a != b);
            assert!(
                got.messages.len() == uncut.messages.len() && differ.is_none(),
                "{label}: {} messages, first difference at {differ:?}: {:?}",
                got.messages.len(),
                differ.map(|i| (&got.messages[i], &uncut.messages[i]))
            );
            assert_eq!(got.result, uncut.result, "{label}: result");
            assert!(
                got.reconnected <= 1,
                "{label}: {} reconnections",
                got.reconnected
            );
            for file in ["a.txt", "b.txt"] {
                let path = format!("/{label}/{file}");
                assert_eq!(http.uploads_to(&path), 1, "{label}: PUTs of {file}");
            }
            drop(proxy);
        }
    }
    times.sort();
    eprintln!(
        "{name:>10}: {} runs (cut after 0..={}, reset and close), each equal to the uncut run; \
         per run median {:.1?}, slowest {:.1?} (uncut, without the proxy: {uncut_time:.1?}); \
         {:.1?} in all",
        times.len(),
        last + 1,
        times[times.len() / 2],
        times[times.len() - 1],
        started.elapsed()
    );
}

#[test]
fn every_cut_of_every_client_loses_nothing_and_repeats_nothing() {
    let rt = Served::start(options());
    let http = rt.http(HashMap::new());
    let proxies = tokio::runtime::Runtime::new().expect("tokio");
    // The three side by side (each run waits on the network as much as it computes).
    std::thread::scope(|s| {
        let clients: [(&str, Run); 3] = [
            ("tokio", tokio_run),
            ("async-std", async_std_run),
            ("blocking", blocking_run),
        ];
        let (rt, http, proxies) = (&rt, &http, &proxies);
        let runs: Vec<_> = (clients.into_iter())
            .map(|(name, run)| s.spawn(move || matrix(name, run, rt, http, proxies)))
            .collect();
        for run in runs {
            if let Err(panic) = run.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
}
