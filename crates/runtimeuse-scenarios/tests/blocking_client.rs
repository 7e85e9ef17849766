//! The blocking client against the project's runtime, served (on a tokio runtime of the test
//! support's own) on an ephemeral loopback port: the shared scenarios (`shared/scenarios.rs`),
//! with plain calls and closures.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runtimeuse_tungstenite::{
    AbortHandle, ArtifactUpload, Client, Config, Downloadable, Error, ExecuteCommandsOptions,
    OutputStream, QueryOptions, QueryResult, RequestEvent, RuntimeError, SessionEnd, TimeoutKind,
    UsageError,
};

macro_rules! scenario {
    (fn $name:ident() $body:block) => {
        #[test]
        fn $name() $body
    };
}

macro_rules! wait {
    ($call:expr) => {
        $call
    };
}

macro_rules! cb {
    (move |$arg:pat_param| $body:expr) => {
        move |$arg| $body
    };
}

macro_rules! next {
    ($events:expr) => {
        Iterator::next(&mut $events)
    };
}

macro_rules! thread {
    ($body:block) => {
        std::thread::spawn(move || $body)
    };
}

include!("shared/scenarios.rs");
