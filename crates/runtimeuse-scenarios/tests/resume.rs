//! Resumable sessions, end to end: the async clients against the project's runtime through a
//! proxy that cuts the connection (a TCP reset, or a close without a close frame) before the
//! runtime's data frame N + 1, for N from 0 to past the last. Each run must deliver the same
//! output and result as an uncut one: nothing lost, nothing twice.
//!
//! `cargo test -p runtimeuse-scenarios --test resume -- --nocapture` prints the cut matrix
//! with each run's time.

// The matrix's times are printed for the record.
#![allow(clippy::print_stderr)]

use runtimeuse_scenarios::cut::{Cut, CutProxy};
use runtimeuse_tokio::{ArtifactUpload, Client, Error, ExecuteCommandsOptions, RequestEvent};

const LINES: u32 = 40;

fn command() -> String {
    format!("for i in $(seq 1 {LINES}); do echo $i; sleep 0.003; done")
}

fn expected() -> String {
    (1..=LINES).map(|i| format!("{i}\n")).collect()
}

/// What a caller of the event stream saw.
#[derive(Debug, Default)]
struct Outcome {
    stdout: String,
    reconnected: u32,
    exit_code: Option<i64>,
}

async fn run(url: String, resume: bool) -> Result<Outcome, Error> {
    run_with(Client::builder(url).resume(resume).build()).await
}

/// Runs the batch with `client`, collecting what its event stream showed.
async fn run_with(client: Client) -> Result<Outcome, Error> {
    let resume = client.settings().resume;
    let mut session = client.session().await?;
    assert_eq!(
        session.is_resumable(),
        resume,
        "the runtime grants what is asked"
    );
    let mut outcome = Outcome::default();
    let mut events = session.execute_commands_events([command()], ExecuteCommandsOptions::new())?;
    while let Some(item) = events.next().await {
        match item? {
            RequestEvent::CommandOutput(o) => outcome.stdout.push_str(&o.text),
            RequestEvent::Reconnected { attempts, .. } => {
                assert!(attempts >= 1);
                outcome.reconnected += 1;
            }
            RequestEvent::CommandResult(r) => outcome.exit_code = Some(r.results[0].exit_code),
            _ => {}
        }
    }
    drop(events);
    let _ = session.close().await?;
    Ok(outcome)
}

#[tokio::test]
async fn a_cut_anywhere_loses_nothing_and_repeats_nothing() {
    let rt = runtimeuse_scenarios::served();
    let uncut = run(rt.url(), true).await.expect("uncut");
    assert_eq!(uncut.stdout, expected());
    assert_eq!(uncut.reconnected, 0);
    for after in [0, 1, 2, 7, 20, LINES as u64 - 1, 1000] {
        for cut in [Cut::Reset, Cut::Close] {
            let proxy = CutProxy::start(&rt.url(), after, 1, cut).await;
            let started = tokio::time::Instant::now();
            let got = run(proxy.url(), true)
                .await
                .unwrap_or_else(|e| panic!("cut after {after} ({cut:?}): {e}"));
            assert_eq!(got.stdout, uncut.stdout, "cut after {after} ({cut:?})");
            assert_eq!(got.exit_code, Some(0), "cut after {after} ({cut:?})");
            let cut_happened = after < 1000;
            assert_eq!(
                got.reconnected,
                u32::from(cut_happened),
                "cut after {after} ({cut:?})"
            );
            eprintln!(
                "cut after {after:>4} ({cut:?}): ok in {:?}",
                started.elapsed()
            );
        }
    }
}

#[tokio::test]
async fn repeated_cuts_are_each_resumed() {
    let rt = runtimeuse_scenarios::served();
    // Every one of the first five connections is cut after 5 frames.
    let proxy = CutProxy::start(&rt.url(), 5, 5, Cut::Reset).await;
    let got = run(proxy.url(), true).await.expect("resumed");
    assert_eq!(got.stdout, expected());
    assert_eq!(got.reconnected, 5);
}

#[tokio::test]
async fn without_resumption_a_cut_ends_the_request_as_before() {
    let rt = runtimeuse_scenarios::served();
    let proxy = CutProxy::start(&rt.url(), 5, 1, Cut::Reset).await;
    let err = run(proxy.url(), false).await.expect_err("cut");
    assert!(matches!(err, Error::ConnectionClosed), "{err:?}");
}

#[test]
fn the_async_std_client_resumes_too() {
    let rt = runtimeuse_scenarios::served();
    let tokio = tokio::runtime::Runtime::new().expect("tokio");
    let proxy = tokio.block_on(CutProxy::start(&rt.url(), 7, 1, Cut::Close));
    let url = proxy.url();
    let (stdout, reconnected) = async_io::block_on(async {
        use runtimeuse_async_std::{Client, ExecuteCommandsOptions, RequestEvent};
        let client = Client::builder(url).resume(true).build();
        let mut session = client.session().await.expect("session");
        let mut events = session
            .execute_commands_events([command()], ExecuteCommandsOptions::new())
            .expect("start");
        let (mut stdout, mut reconnected) = (String::new(), 0);
        while let Some(item) = events.next().await {
            match item.expect("item") {
                RequestEvent::CommandOutput(o) => stdout.push_str(&o.text),
                RequestEvent::Reconnected { .. } => reconnected += 1,
                _ => {}
            }
        }
        (stdout, reconnected)
    });
    assert_eq!(stdout, expected());
    assert_eq!(reconnected, 1);
    drop(tokio);
}

/// The defaults, for the record: resumption is off unless asked.
#[test]
fn resumption_is_off_by_default() {
    let client = Client::new("ws://127.0.0.1:1");
    assert!(!client.settings().resume);
}

#[tokio::test]
async fn artifact_uploads_are_answered_once_across_cuts() {
    let rt = runtimeuse_scenarios::served();
    let http = rt.http(std::collections::HashMap::new());
    for after in [0, 2, 6, 12, 30, 1000] {
        let dir = runtimeuse_scenarios::temp_dir("resume-artifacts");
        let d = dir.display();
        // Two artifacts between two runs of output; the scanner looks every 250 ms.
        let command = format!(
            "for i in $(seq 1 10); do echo $i; sleep 0.003; done; echo one > {d}/a.txt; sleep 0.4; \
             for i in $(seq 11 20); do echo $i; sleep 0.003; done; echo two > {d}/b.txt; sleep 0.4; \
             for i in $(seq 21 30); do echo $i; sleep 0.003; done"
        );
        let proxy = CutProxy::start(&rt.url(), after, 1, Cut::Reset).await;
        let base = http.url(&format!("/up{after}/"));
        let options = ExecuteCommandsOptions::new()
            .artifacts_dir(d.to_string())
            .on_artifact_upload_request(move |req| {
                let url = format!("{base}{}", req.filename);
                async move { ArtifactUpload::new(url, "text/plain") }
            });
        let client = Client::builder(proxy.url()).resume(true).build();
        let mut session = client.session().await.expect("session");
        let mut stdout = String::new();
        let mut events = session
            .execute_commands_events([command], options)
            .expect("start");
        while let Some(item) = events.next().await {
            if let RequestEvent::CommandOutput(o) =
                item.unwrap_or_else(|e| panic!("cut after {after}: {e}"))
            {
                stdout.push_str(&o.text);
            }
        }
        drop(events);
        let _ = session.close().await.expect("close");
        let want: String = (1..=30).map(|i| format!("{i}\n")).collect();
        assert_eq!(stdout, want, "cut after {after}");
        for file in ["a.txt", "b.txt"] {
            let path = format!("/up{after}/{file}");
            assert_eq!(http.uploads_to(&path), 1, "cut after {after}: {path}");
        }
    }
}

#[test]
fn the_blocking_client_resumes_too() {
    use runtimeuse_tungstenite::{Client, ExecuteCommandsOptions, RequestEvent};
    let rt = runtimeuse_scenarios::served();
    let tokio = tokio::runtime::Runtime::new().expect("tokio");
    for (after, cut) in [
        (0, Cut::Reset),
        (3, Cut::Close),
        (LINES as u64 - 1, Cut::Reset),
    ] {
        let proxy = tokio.block_on(CutProxy::start(&rt.url(), after, 1, cut));
        let client = Client::builder(proxy.url()).resume(true).build();
        let mut session = client.session().expect("session");
        assert!(session.is_resumable());
        let (mut stdout, mut reconnected, mut exit_code) = (String::new(), 0, None);
        let events = session
            .execute_commands_events([command()], ExecuteCommandsOptions::new())
            .expect("start");
        for item in events {
            match item.unwrap_or_else(|e| panic!("cut after {after} ({cut:?}): {e}")) {
                RequestEvent::CommandOutput(o) => stdout.push_str(&o.text),
                RequestEvent::Reconnected { .. } => reconnected += 1,
                RequestEvent::CommandResult(r) => exit_code = Some(r.results[0].exit_code),
                _ => {}
            }
        }
        assert_eq!(stdout, expected(), "cut after {after} ({cut:?})");
        assert_eq!(
            (reconnected, exit_code),
            (1, Some(0)),
            "cut after {after} ({cut:?})"
        );
        let _ = session.close().expect("close");
    }
}

#[tokio::test]
async fn keepalive_waits_for_a_reconnection_that_takes_longer_than_its_deadline() {
    let rt = runtimeuse_scenarios::served();
    // The runtime is unreachable for 800 ms after the cut; pings are due every 100 ms and
    // unanswered ones fail the connection after 100 ms more.
    let delay = std::time::Duration::from_millis(800);
    let proxy = CutProxy::start_delayed(&rt.url(), 5, 1, Cut::Reset, delay).await;
    let mut config = runtimeuse_tokio::Config::default();
    config.keepalive_interval = Some(std::time::Duration::from_millis(100));
    config.keepalive_timeout = std::time::Duration::from_millis(100);
    let client = Client::builder(proxy.url())
        .resume(true)
        .session_config(config)
        .build();
    let got = run_with(client)
        .await
        .expect("resumed despite the keepalive");
    assert_eq!(got.stdout, expected());
    assert_eq!(got.reconnected, 1);
}

/// With resumption on and no heartbeats, a command writing several times the runtime's replay
/// window completes: the client acknowledges by bytes and on its own timer, so the runtime
/// never waits for a frame that would let the client acknowledge. (Before, the stream stopped
/// after about 1 MB and the request failed at its idle limit.) Each client, with a short idle
/// limit so that a stall fails fast.
#[test]
fn a_quiet_runtime_streams_past_its_replay_window() {
    use std::time::Duration;
    let mut options = runtimeuse_runtime::RuntimeOptions::default();
    options.heartbeat_interval = None;
    let rt = runtimeuse_scenarios::Served::start(options);
    let bytes: usize = 8 << 20;
    let command = format!("head -c {bytes} /dev/zero | tr '\\0' x");
    let idle = Duration::from_secs(5);

    let tokio_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let streamed = tokio_rt.block_on(async {
        let client = Client::builder(rt.url()).resume(true).build();
        let mut session = client.session().await.expect("session");
        assert!(session.is_resumable());
        let options = ExecuteCommandsOptions::new().idle_timeout(idle);
        let mut events =
            (session.execute_commands_events([command.clone()], options)).expect("start");
        let mut streamed = 0;
        while let Some(item) = events.next().await {
            if let RequestEvent::CommandOutput(o) = item.expect("no stall") {
                streamed += o.text.len();
            }
        }
        drop(events);
        session.disconnect().await;
        streamed
    });
    assert_eq!(streamed, bytes, "tokio: every byte");

    let client = runtimeuse_tungstenite::Client::builder(rt.url())
        .resume(true)
        .build();
    let mut session = client.session().expect("session");
    assert!(session.is_resumable());
    let options = runtimeuse_tungstenite::ExecuteCommandsOptions::new().idle_timeout(idle);
    let mut streamed = 0;
    for item in (session.execute_commands_events([command], options)).expect("start") {
        if let RequestEvent::CommandOutput(o) = item.expect("no stall") {
            streamed += o.text.len();
        }
    }
    session.disconnect();
    assert_eq!(streamed, bytes, "blocking: every byte");
}
