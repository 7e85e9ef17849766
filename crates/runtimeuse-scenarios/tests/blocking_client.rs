//! The blocking client against the project's runtime, served in-process (on a tokio runtime of
//! the test's own) on an ephemeral loopback port.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runtimeuse_runtime::{Runtime, RuntimeHandle, RuntimeOptions, ScriptedHandler};
use runtimeuse_scenarios::{HttpServer, temp_dir};
use runtimeuse_tungstenite::proto::TimeoutKind;
use runtimeuse_tungstenite::{
    ArtifactUpload, Client, Error, ExecuteCommandsOptions, OutputStream, QueryOptions, RequestEvent,
};

/// A runtime served on a background tokio runtime for the duration of a test.
struct Served {
    rt: tokio::runtime::Runtime,
    handle: Option<RuntimeHandle>,
}

impl Served {
    fn start(options: RuntimeOptions) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.block_on(async {
            Runtime::new(ScriptedHandler)
                .options(options)
                .bind("127.0.0.1:0")
                .await
                .unwrap()
                .spawn()
        });
        Self {
            rt,
            handle: Some(handle),
        }
    }

    fn url(&self) -> String {
        self.handle.as_ref().unwrap().url()
    }

    fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.rt.block_on(h.shutdown());
        }
    }
}

fn served() -> Served {
    Served::start(RuntimeOptions::default())
}

fn opts() -> QueryOptions {
    QueryOptions::new("You are a test assistant.", "echo")
}

#[test]
fn text_and_structured_queries() {
    let s = served();
    let client = Client::new(s.url());
    assert_eq!(client.query("ECHO:hi", opts()).unwrap().text(), Some("hi"));
    let r = client
        .query(r#"STRUCTURED:{"answer": 42}"#, opts().output_schema("{}"))
        .unwrap();
    assert_eq!(r.structured_output().unwrap()["answer"], 42);
}

#[test]
fn assistant_messages_and_command_output_callbacks() {
    let s = served();
    let client = Client::new(s.url());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let c = Arc::clone(&seen);
    let r = client
        .query(
            "STREAM:2",
            opts().on_assistant_message(move |b| c.lock().unwrap().push(b.join(""))),
        )
        .unwrap();
    assert_eq!(r.text(), Some("streamed 2 messages"));
    assert_eq!(*seen.lock().unwrap(), ["message 1 of 2", "message 2 of 2"]);
    let out = Arc::new(Mutex::new(Vec::new()));
    let o = Arc::clone(&out);
    let result = client
        .execute_commands(
            ["echo out; echo err >&2", "exit 2", "echo never"],
            ExecuteCommandsOptions::new()
                .on_command_output(move |c| o.lock().unwrap().push((c.stream, c.text))),
        )
        .unwrap();
    let codes: Vec<i64> = result.results.iter().map(|r| r.exit_code).collect();
    assert_eq!(codes, [0, 2]);
    assert!(
        out.lock()
            .unwrap()
            .contains(&(OutputStream::Stderr, "err\n".to_owned()))
    );
}

#[test]
fn events_as_an_iterator() {
    let s = served();
    let mut session = Client::new(s.url()).session().unwrap();
    let items: Vec<String> = session
        .query_events("STREAM:2", opts())
        .unwrap()
        .map(|item| match item.unwrap() {
            RequestEvent::AssistantMessage(b) => b.join(""),
            RequestEvent::Result(r) => format!("result {}", r.text().unwrap()),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        items,
        [
            "message 1 of 2",
            "message 2 of 2",
            "result streamed 2 messages"
        ]
    );
    session.close().unwrap();
}

#[test]
fn artifact_handshake_uploads_to_a_real_put_target() {
    let s = served();
    let http = s.rt.block_on(HttpServer::start(HashMap::new()));
    let dir = temp_dir("blocking-artifacts");
    let base = http.url("/uploads/");
    let file = dir.join("b.txt");
    let result = Client::new(s.url())
        .query(
            format!("WRITE_FILE:{} blocking artifact", file.display()),
            opts()
                .artifacts_dir(dir.to_string_lossy())
                .on_artifact_upload_request(move |req| {
                    ArtifactUpload::new(format!("{base}{}", req.filename), "text/plain")
                }),
        )
        .unwrap();
    assert_eq!(result.text().unwrap(), format!("wrote {}", file.display()));
    let upload = s.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), http.upload("/uploads/b.txt"))
            .await
            .expect("uploaded")
    });
    assert_eq!(upload.body, b"blocking artifact");
}

#[test]
fn cancel_from_another_thread_while_blocked_reading_then_reuse() {
    let s = served();
    let mut session = Client::new(s.url()).session().unwrap();
    let abort = session.abort_handle();
    let aborter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        abort.abort();
    });
    let started = Instant::now();
    let err = session.query("SLOW:30000", opts()).unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    aborter.join().unwrap();
    assert_eq!(
        session.query("ECHO:next", opts()).unwrap().text(),
        Some("next")
    );
    session.close().unwrap();
}

#[test]
fn handler_error_then_a_successful_query() {
    let s = served();
    let mut session = Client::new(s.url()).session().unwrap();
    let err = session.query("ERROR:boom", opts()).unwrap_err();
    assert_eq!(err.runtime_error(), Some("boom"));
    assert_eq!(
        session.query("ECHO:after", opts()).unwrap().text(),
        Some("after")
    );
    session.close().unwrap();
}

#[test]
fn overall_and_idle_timeouts() {
    let mut options = RuntimeOptions::default();
    options.heartbeat_interval = None;
    let s = Served::start(options);
    let mut session = Client::new(s.url()).session().unwrap();
    let err = session
        .query("SLOW:30000", opts().timeout(Duration::from_millis(300)))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                kind: TimeoutKind::Overall(_),
                ..
            }
        ),
        "{err}"
    );
    let err = session
        .query(
            "SLOW:30000",
            opts().idle_timeout(Duration::from_millis(300)),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                kind: TimeoutKind::Idle(_),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(session.query("ECHO:ok", opts()).unwrap().text(), Some("ok"));
}

#[test]
fn a_dropped_iterator_leaves_the_session_usable() {
    let s = served();
    let mut session = Client::new(s.url()).session().unwrap();
    {
        let mut events = session.query_events("STREAM:100000", opts()).unwrap();
        assert!(events.next().is_some());
    }
    assert_eq!(
        session.query("ECHO:next", opts()).unwrap().text(),
        Some("next")
    );
    session.close().unwrap();
}

#[test]
fn connection_dropped_mid_request_is_a_clear_error() {
    let mut s = served();
    let client = Client::new(s.url());
    let call = std::thread::spawn(move || client.query("SLOW:30000", opts()));
    std::thread::sleep(Duration::from_millis(200));
    s.stop();
    let err = call.join().unwrap().unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed), "{err}");
}

#[test]
fn token_header_and_a_10_mb_result() {
    let mut options = RuntimeOptions::default();
    options.token = Some("tok".into());
    let s = Served::start(options);
    assert!(Client::new(s.url()).query("ECHO:x", opts()).is_err());
    let client = Client::builder(s.url())
        .header("Authorization", "Bearer tok")
        .build();
    let big = "y".repeat(10 << 20);
    let r = client.query(format!("ECHO:{big}"), opts()).unwrap();
    assert_eq!(r.text().map(str::len), Some(10 << 20));
}
