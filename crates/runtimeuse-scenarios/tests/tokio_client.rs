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
