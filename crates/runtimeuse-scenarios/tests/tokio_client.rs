//! The tokio client against the project's runtime, served on an ephemeral loopback port: the
//! shared scenarios (`shared/scenarios.rs`, `shared/async_scenarios.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runtimeuse_tokio::{
    AbortHandle, ArtifactUpload, Client, Config, Downloadable, Error, ExecuteCommandsOptions,
    OutputStream, QueryOptions, QueryResult, RequestEvent, RuntimeError, SessionEnd, TimeoutKind,
    UsageError,
};

/// The backend, for the async-only scenarios.
type B = runtimeuse_tokio::Tokio;
use runtimeuse_tokio::runtimeuse_async::timeout;

macro_rules! scenario {
    (fn $name:ident() $body:block) => {
        #[test]
        fn $name() {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move $body)
        }
    };
}

include!("shared/async_words.rs");

macro_rules! thread {
    ($body:block) => {{
        let handle = tokio::runtime::Handle::current();
        std::thread::spawn(move || handle.block_on(async move $body))
    }};
}

include!("shared/scenarios.rs");
include!("shared/async_scenarios.rs");

/// What a fleet of concurrent calls keeps per call is the call's future: connecting (a future
/// of about 20 KB in tokio-tungstenite) and the steps of a one-shot call are boxed, so that
/// they are not inline for as long as the call runs. (The futures are never polled: no I/O.)
#[test]
fn call_futures_stay_small() {
    let client = Client::new("ws://127.0.0.1:9");
    let connect = client.session();
    assert!(size_of_val(&connect) < 1 << 10, "{}", size_of_val(&connect));
    let one_shot = client.query("x", QueryOptions::new("", "m"));
    assert!(
        size_of_val(&one_shot) < 12 << 10,
        "{}",
        size_of_val(&one_shot)
    );
    let batch = client.execute_commands(["true"], ExecuteCommandsOptions::new());
    assert!(size_of_val(&batch) < 12 << 10, "{}", size_of_val(&batch));
}

/// Read buffers of one byte on both sides (tungstenite keeps room for a frame header itself):
/// frames of any size still arrive whole.
#[test]
fn the_smallest_read_buffers_still_carry_every_frame() {
    let mut options = runtimeuse_runtime::RuntimeOptions::default();
    options.read_buffer_size = 1;
    let rt = runtimeuse_scenarios::Served::start(options);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let client = Client::builder(rt.url()).read_buffer_size(1).build();
            let mut session = client.session().await.unwrap();
            let long = "y".repeat(100_000);
            let result = session
                .query(format!("ECHO:{long}"), QueryOptions::new("", "m"))
                .await
                .unwrap();
            assert_eq!(result.text(), Some(long.as_str()));
            let out = session
                .execute_commands(["seq 1 20000"], ExecuteCommandsOptions::new())
                .await
                .unwrap();
            let stdout = out.results[0].stdout.as_deref().unwrap_or_default();
            assert!(stdout.ends_with("19999\n20000\n"), "{}", stdout.len());
            assert_eq!(session.close().await.unwrap(), SessionEnd::Confirmed);
        });
}
