//! What the three runtimeuse client adapters (`runtimeuse-tokio`, `runtimeuse-async-std`,
//! `runtimeuse-tungstenite`) share and that needs no async runtime: the connection settings
//! and [`ClientBuilder`], and the [`Error`] type. Applications use it through an adapter, which
//! re-exports all of it.
//!
//! # Features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `rustls` | no | [`ClientSettings::tls_config`]: a rustls configuration (ring provider) |
//! | `webpki-roots` | no | with `rustls`, trust the webpki root certificates |
//! | `native-roots` | no | with `rustls`, trust the operating system's root certificates |
//! | `schemars` | no | [`schema_of`]: the JSON Schema of a type, for `output_type::<T>()` |

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod abort;
pub mod close;
mod error;
pub mod read_ahead;
pub mod requests;
mod settings;

pub use abort::AbortHandle;
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

/// The flat setters of the adapters' option types for the fields that go on the wire, written
/// once: `$field` is the option type's `Invocation` or `CommandBatch` field. Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __wire_setters {
    ($field:ident) => {
        /// Sets the caller-defined identifier sent as `source_id`.
        #[must_use]
        pub fn source_id(mut self, id: impl Into<String>) -> Self {
            self.$field = self.$field.source_id(id);
            self
        }

        /// Adds a string the runtime replaces with `[REDACTED]` in everything it sends.
        #[must_use]
        pub fn secret(mut self, secret: impl Into<String>) -> Self {
            self.$field = self.$field.secret(secret);
            self
        }

        /// Adds an artifacts directory to watch (needs an uploader).
        #[must_use]
        pub fn artifacts_dir(mut self, dir: impl Into<String>) -> Self {
            self.$field = self.$field.artifacts_dir(dir);
            self
        }

        /// Sets the artifact watcher's ignore rules (gitignore syntax).
        #[must_use]
        pub fn artifacts_ignore(mut self, rules: impl Into<String>) -> Self {
            self.$field = self.$field.artifacts_ignore(rules);
            self
        }

        /// Adds a file for the runtime to download before the request runs (a `.zip` is
        /// extracted).
        #[must_use]
        pub fn download(mut self, downloadable: $crate::__proto::Downloadable) -> Self {
            self.$field = self.$field.download(downloadable);
            self
        }
    };
}

/// The flat setters of the adapters' query options for the invocation's own fields. Not
/// public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __invocation_setters {
    () => {
        /// Adds an environment variable for the agent (`agent_env`).
        #[must_use]
        pub fn agent_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
            self.invocation = self.invocation.agent_env(key, value);
            self
        }

        /// Adds a command the runtime runs before the agent.
        #[must_use]
        pub fn pre_command(mut self, command: impl Into<$crate::__proto::Command>) -> Self {
            self.invocation = self.invocation.pre_command(command);
            self
        }

        /// Adds a command the runtime runs after the agent.
        #[must_use]
        pub fn post_command(mut self, command: impl Into<$crate::__proto::Command>) -> Self {
            self.invocation = self.invocation.post_command(command);
            self
        }
    };
}
