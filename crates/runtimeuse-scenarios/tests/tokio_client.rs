//! The tokio client against the project's runtime, served on an ephemeral loopback port: the
//! shared scenarios (`shared/scenarios.rs`, `shared/async_scenarios.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runtimeuse_tokio::proto::{Config, TimeoutKind};
use runtimeuse_tokio::{
    AbortHandle, ArtifactUpload, Client, Error, ExecuteCommandsOptions, OutputStream, QueryOptions,
    RequestEvent,
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
