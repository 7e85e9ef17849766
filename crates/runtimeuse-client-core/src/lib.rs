//! What the three runtimeuse client adapters (`runtimeuse-tokio`, `runtimeuse-async-std`,
//! `runtimeuse-tungstenite`) share and that needs no async runtime:
//!
//! - [`connection`]: the client's sans-IO connection (the request layer, resumption,
//!   acknowledgements, keepalive, every timer): each adapter is a pump over it;
//! - [`requests`]: the sans-IO request layer over the core's session: the current request,
//!   the cleanup after a dropped call, aborts, event routing, the uploader's answers, and the
//!   end-of-session and one-shot close rules. The adapters add only their socket pump and the
//!   way they run callbacks;
//! - [`options`]: the one per-call options type, [`options::CallOptions`], with the async or
//!   blocking callbacks of [`callbacks`];
//! - [`AbortHandle`], the connection settings and [`ClientBuilder`], and the [`Error`] type.
//!
//! Applications use it through an adapter, which re-exports what they need.
//!
//! # Features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `rustls` | no | [`ClientSettings::tls_config`]: a rustls configuration (ring provider) |
//! | `webpki-roots` | no | with `rustls`, trust the webpki root certificates |
//! | `native-roots` | no | with `rustls`, trust the operating system's root certificates |
//! | `schemars` | no | [`schema_of`]: the JSON Schema of a type, for `output_type::<T>()` |

#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod abort;
pub mod callbacks;
pub mod close;
pub mod connection;
mod controls;
mod error;
pub mod options;
pub mod read_ahead;
pub mod requests;
pub mod resume;
mod settings;

pub use abort::AbortHandle;

/// The core's types that appear in the clients' public signatures, re-exported at each
/// adapter's root (`runtimeuse_tokio::SessionEnd`, …) so that no user has to name
/// `runtimeuse_proto`.
pub mod types {
    pub use runtimeuse_proto::resume::Refusal;
    pub use runtimeuse_proto::{
        ArtifactRequest, ArtifactUpload, ArtifactUploadRequest, Command, CommandBatch,
        CommandExecutionResult, CommandOutput, CommandResultItem, Config, DecodeError, Diagnostics,
        Downloadable, IntoSchema, Invocation, MessageKind, OutputStream, Phase, QueryResult,
        RequestEvent, RequestOptions, ResultData, RuntimeError, SessionEnd, TimeoutKind,
        UsageError,
    };

    pub use crate::resume::ResumeToken;
}
pub use error::Error;

#[doc(hidden)]
pub use runtimeuse_proto as __proto;

/// The JSON Schema of `T` (feature `schemars`), for structured output: what the adapters'
/// `QueryOptions::output_type` sends.
#[cfg(feature = "schemars")]
pub fn schema_of<T: schemars::JsonSchema>() -> serde_json::Value {
    serde_json::Value::from(schemars::schema_for!(T))
}
pub use settings::{ClientBuilder, ClientSettings, DEFAULT_READ_BUFFER};
