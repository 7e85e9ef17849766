//! A session that outlives its process: a client takes a resume token mid-request, reads on,
//! and dies (SIGKILL, or its session dropped without a close); another client, in another
//! process or of another adapter, takes the session over from the token and receives the
//! rest of the request's stream, from the token's count on, and its result.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use runtimeuse_tokio::{Client, Error, ExecuteCommandsOptions, RequestEvent, ResumeToken};

/// Notes its run in `runs` beside `go`, prints 1 to 100 (more than the client acknowledges
/// at once) and `half`, waits until `go` exists, then prints 101 to 120.
fn command(go: &Path) -> String {
    format!(
        "echo run >> {runs}; for i in $(seq 1 100); do echo $i; sleep 0.001; done; echo half; \
         while [ ! -e {go} ]; do sleep 0.01; done; seq 101 120",
        go = go.display(),
        runs = go.with_file_name("runs").display()
    )
}

fn expected() -> String {
    let mut all: String = (1..=100).map(|i| format!("{i}\n")).collect();
    all.push_str("half\n");
    all.extend((101..=120).map(|i| format!("{i}\n")));
    all
}

/// A place for the `go` file of one test.
fn go_file(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("runtimeuse-handoff-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("go")
}

/// The rest of the request in flight of a session taken over from `token` (tokio client).
async fn take_over(url: &str, token: ResumeToken) -> Result<(String, i64), Error> {
    let client = Client::builder(url).resume(true).build();
    let mut session = client.resume(token).await?;
    assert!(session.is_resumable());
    let mut events = session.request_events().expect("the request in flight");
    let mut rest = String::new();
    let mut exit_code = None;
    while let Some(item) = events.next().await {
        match item? {
            RequestEvent::CommandOutput(o) => rest.push_str(&o.text),
            RequestEvent::CommandResult(r) => exit_code = Some(r.results[0].exit_code),
            RequestEvent::Reconnected { .. } => panic!("a take-over is not a reconnection"),
            _ => {}
        }
    }
    drop(events);
    let _ = session.close().await?;
    Ok((rest, exit_code.expect("a result")))
}

/// The first owner, in this process: runs the batch, takes a token after the first output,
/// reads on to `half`, then drops its session without closing it. Returns the token and the
/// output read before it.
async fn first_owner(url: &str, go: &Path) -> (ResumeToken, String) {
    let client = Client::builder(url).resume(true).build();
    let mut session = client.session().await.expect("session");
    let mut events = session
        .execute_commands_events([command(go)], ExecuteCommandsOptions::new())
        .expect("start");
    let (mut seen, mut token) = (String::new(), None);
    let mut before = String::new();
    while let Some(item) = events.next().await {
        if let RequestEvent::CommandOutput(o) = item.expect("item") {
            seen.push_str(&o.text);
            if token.is_none() {
                token = Some(events.resume_token().expect("token"));
                before.clone_from(&seen);
            }
            if seen.lines().any(|l| l == "half") {
                break;
            }
        }
    }
    // Dies: no close frame, the socket just goes.
    drop(events);
    drop(session);
    (token.expect("a token"), before)
}

#[tokio::test]
async fn a_killed_process_hands_its_request_to_another() {
    let rt = runtimeuse_scenarios::served();
    let url = rt.url();
    let go = go_file("kill");
    let token_file = go.with_file_name("token.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_handoff_child"))
        .args([&url, &command(&go), &token_file.display().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the first owner");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = |prefix: &str| {
        let line = lines.next().expect("a line").expect("read");
        line.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"))
            .to_owned()
    };
    let before: String = serde_json::from_str(&next("seen ")).expect("seen");
    next("ready");
    // SIGKILL: the process cannot close anything.
    child.kill().expect("kill");
    child.wait().expect("reaped");
    std::fs::write(&go, "").expect("go");
    // A second process, in effect: all it has is the file.
    let token = std::fs::read(&token_file).expect("the token file");
    let token: ResumeToken = serde_json::from_slice(&token).expect("token");

    let (rest, exit_code) = take_over(&url, token).await.expect("taken over");
    assert_eq!(
        format!("{before}{rest}"),
        expected(),
        "nothing lost, nothing twice"
    );
    assert!(
        rest.contains("half\n"),
        "what it read after the token comes again"
    );
    assert_eq!(exit_code, 0);
    let runs = std::fs::read_to_string(go.with_file_name("runs")).expect("runs");
    assert_eq!(runs, "run\n", "the runtime ran the command once");
}

#[tokio::test]
async fn the_taker_may_be_the_async_std_or_the_blocking_client() {
    let rt = runtimeuse_scenarios::served();
    let url = rt.url();

    let go = go_file("async-std");
    let (token, before) = first_owner(&url, &go).await;
    std::fs::write(&go, "").expect("go");
    let json = serde_json::to_string(&token).expect("serialize");
    let u = url.clone();
    let rest = tokio::task::spawn_blocking(move || {
        use runtimeuse_async_std::{Client, RequestEvent, ResumeToken};
        let token: ResumeToken = serde_json::from_str(&json).expect("token");
        async_io::block_on(async {
            let mut session = Client::new(u).resume(token).await.expect("resume");
            let mut events = session.request_events().expect("in flight");
            let mut rest = String::new();
            while let Some(item) = events.next().await {
                if let RequestEvent::CommandOutput(o) = item.expect("item") {
                    rest.push_str(&o.text);
                }
            }
            rest
        })
    })
    .await
    .expect("async-std taker");
    assert_eq!(format!("{before}{rest}"), expected());

    let go = go_file("blocking");
    let (token, before) = first_owner(&url, &go).await;
    std::fs::write(&go, "").expect("go");
    let json = serde_json::to_string(&token).expect("serialize");
    let rest = tokio::task::spawn_blocking(move || {
        use runtimeuse_tungstenite::{Client, RequestEvent, ResumeToken};
        let token: ResumeToken = serde_json::from_str(&json).expect("token");
        let mut session = Client::new(url).resume(token).expect("resume");
        let mut rest = String::new();
        let mut exit_code = None;
        for item in session.request_events().expect("in flight") {
            match item.expect("item") {
                RequestEvent::CommandOutput(o) => rest.push_str(&o.text),
                RequestEvent::CommandResult(r) => exit_code = Some(r.results[0].exit_code),
                _ => {}
            }
        }
        assert_eq!(exit_code, Some(0));
        rest
    })
    .await
    .expect("blocking taker");
    assert_eq!(format!("{before}{rest}"), expected());
}

#[tokio::test]
async fn a_token_is_refused_once_its_session_ended() {
    let rt = runtimeuse_scenarios::served();
    let url = rt.url();
    let go = go_file("ended");
    std::fs::write(&go, "").expect("go");
    let client = Client::builder(&url).resume(true).build();
    let mut session = client.session().await.expect("session");
    let mut events = session
        .execute_commands_events([command(&go)], ExecuteCommandsOptions::new())
        .expect("start");
    let mut token = None;
    while let Some(item) = events.next().await {
        if matches!(item.expect("item"), RequestEvent::CommandOutput(_)) && token.is_none() {
            token = events.resume_token().ok();
        }
    }
    drop(events);
    let _ = session.close().await.expect("closed");
    let err = take_over(&url, token.expect("a token"))
        .await
        .expect_err("the session ended");
    assert!(
        matches!(err, Error::ResumeRefused(runtimeuse_tokio::Refusal::Ended)),
        "{err:?}"
    );
    // Without resumption there is no token.
    let mut plain = Client::new(&url).session().await.expect("session");
    assert!(matches!(plain.resume_token(), Err(Error::NotResumable(_))));
}
