//! The async-std/smol client against the project's runtime, served on an ephemeral loopback
//! port: the shared scenarios (`shared/scenarios.rs`, `shared/async_scenarios.rs`), each run
//! with `async_io::block_on`, with no tokio anywhere on the client's side.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runtimeuse_async_std::{
    AbortHandle, ArtifactUpload, Client, Config, Downloadable, Error, ExecuteCommandsOptions,
    OutputStream, QueryOptions, QueryResult, RequestEvent, RuntimeError, SessionEnd, TimeoutKind,
    UsageError,
};

/// The backend, for the async-only scenarios.
type B = runtimeuse_async_std::AsyncIo;
use runtimeuse_async_std::runtimeuse_async::timeout;

macro_rules! scenario {
    (fn $name:ident() $body:block) => {
        #[test]
        fn $name() {
            async_io::block_on(async move $body)
        }
    };
}

include!("shared/async_words.rs");

macro_rules! thread {
    ($body:block) => {
        std::thread::spawn(move || async_io::block_on(async move $body))
    };
}

include!("shared/scenarios.rs");
include!("shared/async_scenarios.rs");
