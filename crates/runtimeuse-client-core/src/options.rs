//! Per-call options, one type for every client: what goes on the wire, the time limits, the
//! abort handle and the callbacks. Each adapter names its two kinds `QueryOptions` and
//! `ExecuteCommandsOptions`, with its kind of callbacks ([`AsyncCallbacks`] or
//! [`BlockingCallbacks`]).
//!
//! [`AsyncCallbacks`]: crate::callbacks::AsyncCallbacks
//! [`BlockingCallbacks`]: crate::callbacks::BlockingCallbacks

use std::time::Duration;

use runtimeuse_proto::{Command, CommandBatch, Downloadable, Invocation, RequestOptions};

use crate::AbortHandle;

/// Options of one call: `W` is what goes on the wire ([`Invocation`] for a query,
/// [`CommandBatch`] for a command batch), `C` the adapter's kind of callbacks. Options are
/// data: `Clone` (clones share the callbacks), built once, taken apart by the client with
/// [`into_parts`](Self::into_parts).
///
/// ```
/// use std::time::Duration;
/// use runtimeuse_client_core::callbacks::AsyncCallbacks;
/// use runtimeuse_client_core::options::CallOptions;
/// use runtimeuse_client_core::__proto::Invocation;
///
/// // What `runtimeuse_tokio::QueryOptions` is.
/// type QueryOptions = CallOptions<Invocation, AsyncCallbacks>;
///
/// let options = QueryOptions::new("You are a helpful assistant.", "gpt-4o")
///     .timeout(Duration::from_secs(300))
///     .secret("sk-123")
///     .pre_command("git clone https://example.com/repo")
///     .on_assistant_message(|blocks| async move { println!("{}", blocks.join("")) });
/// ```
#[derive(Clone, Debug, Default)]
pub struct CallOptions<W, C> {
    pub(crate) wire: W,
    pub(crate) request: RequestOptions,
    pub(crate) callbacks: C,
    pub(crate) abort: Option<AbortHandle>,
}

/// A call's options taken apart ([`CallOptions::into_parts`]).
#[non_exhaustive]
#[derive(Debug)]
pub struct Parts<W, C> {
    /// What goes on the wire.
    pub wire: W,
    /// The core's per-request options (time limits, whether there is an uploader).
    pub request: RequestOptions,
    /// The callbacks.
    pub callbacks: C,
    /// The abort handle of a one-shot call.
    pub abort: Option<AbortHandle>,
}

/// What a request sends that both kinds share: [`Invocation`] and [`CommandBatch`].
pub trait Wire: sealed::Sealed + Sized {
    /// Sets the caller-defined identifier sent as `source_id`.
    fn set_source_id(self, id: String) -> Self;
    /// Adds a secret to redact.
    fn add_secret(self, secret: String) -> Self;
    /// Adds an artifacts directory.
    fn add_artifacts_dir(self, dir: String) -> Self;
    /// Sets the artifact ignore rules.
    fn set_artifacts_ignore(self, rules: String) -> Self;
    /// Adds a download.
    fn add_download(self, downloadable: Downloadable) -> Self;
    /// The artifacts directories.
    fn artifacts_dirs(&self) -> &[String];
}

mod sealed {
    /// Only the two request kinds are [`Wire`](super::Wire): a seal, not for naming.
    #[allow(unnameable_types)]
    pub trait Sealed {}
    impl Sealed for runtimeuse_proto::Invocation {}
    impl Sealed for runtimeuse_proto::CommandBatch {}
}

macro_rules! wire {
    ($t:ty) => {
        impl Wire for $t {
            fn set_source_id(self, id: String) -> Self {
                self.source_id(id)
            }
            fn add_secret(self, secret: String) -> Self {
                self.secret(secret)
            }
            fn add_artifacts_dir(self, dir: String) -> Self {
                self.artifacts_dir(dir)
            }
            fn set_artifacts_ignore(self, rules: String) -> Self {
                self.artifacts_ignore(rules)
            }
            fn add_download(self, downloadable: Downloadable) -> Self {
                self.download(downloadable)
            }
            fn artifacts_dirs(&self) -> &[String] {
                &self.artifacts_dirs
            }
        }
    };
}

wire!(Invocation);
wire!(CommandBatch);

impl<W: Wire, C> CallOptions<W, C> {
    /// Fails the request if its result has not arrived this long after it started.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.request.timeout = Some(timeout);
        self
    }

    /// Fails the request if no message at all arrives for this long (heartbeats count).
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.request.idle_timeout = Some(timeout);
        self
    }

    /// Lets `handle` cancel this call when it is a one-shot call (`Client::query`,
    /// `Client::execute_commands`), as the Python client's `client.abort()` does: the call
    /// fails with [`Error::Cancelled`](crate::Error::Cancelled) after the runtime confirmed. A
    /// handle aborted before the call starts fails it at once. (A persistent session has its
    /// own `Session::abort_handle`.)
    #[must_use]
    pub fn abort_handle(mut self, handle: &AbortHandle) -> Self {
        self.abort = Some(handle.clone());
        self
    }

    /// Sets the caller-defined identifier sent as `source_id`.
    #[must_use]
    pub fn source_id(mut self, id: impl Into<String>) -> Self {
        self.wire = self.wire.set_source_id(id.into());
        self
    }

    /// Adds a string the runtime replaces with `[REDACTED]` in everything it sends.
    #[must_use]
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.wire = self.wire.add_secret(secret.into());
        self
    }

    /// Adds an artifacts directory to watch (needs an uploader).
    #[must_use]
    pub fn artifacts_dir(mut self, dir: impl Into<String>) -> Self {
        self.wire = self.wire.add_artifacts_dir(dir.into());
        self
    }

    /// Sets the artifact watcher's ignore rules (gitignore syntax).
    #[must_use]
    pub fn artifacts_ignore(mut self, rules: impl Into<String>) -> Self {
        self.wire = self.wire.set_artifacts_ignore(rules.into());
        self
    }

    /// Adds a file for the runtime to download before the request runs (a `.zip` is
    /// extracted).
    #[must_use]
    pub fn download(mut self, downloadable: Downloadable) -> Self {
        self.wire = self.wire.add_download(downloadable);
        self
    }

    // ----- for the clients -----

    /// Whether the request watches artifacts directories (a one-shot call then ends its
    /// session gracefully, so that late artifacts still upload).
    pub fn watches_artifacts(&self) -> bool {
        !self.wire.artifacts_dirs().is_empty()
    }

    /// The abort handle given, if any.
    pub fn abort(&self) -> Option<&AbortHandle> {
        self.abort.as_ref()
    }

    /// The callbacks.
    pub fn callbacks(&self) -> &C {
        &self.callbacks
    }

    /// Takes the options apart, to start the call.
    pub fn into_parts(self) -> Parts<W, C> {
        Parts {
            wire: self.wire,
            request: self.request,
            callbacks: self.callbacks,
            abort: self.abort,
        }
    }
}

impl<C> CallOptions<Invocation, C> {
    /// Takes the options apart for a query of `prompt` (set in the invocation).
    pub fn into_query(self, prompt: String) -> Parts<Invocation, C> {
        let mut parts = self.into_parts();
        parts.wire.user_prompt = prompt;
        parts
    }
}

impl<C> CallOptions<CommandBatch, C> {
    /// Takes the options apart for a batch of `commands` (set in the batch).
    pub fn into_batch<I, K>(self, commands: I) -> Parts<CommandBatch, C>
    where
        I: IntoIterator<Item = K>,
        K: Into<Command>,
    {
        let mut parts = self.into_parts();
        parts.wire.commands = commands.into_iter().map(Into::into).collect();
        parts
    }
}

impl<W, C: Default> CallOptions<W, C> {
    /// Options that send exactly `wire` (its `user_prompt` or `commands` are replaced by the
    /// call's), with the core's per-request options `request` and no callbacks: for bindings
    /// that build the wire fields themselves, such as the Python package. `request`'s
    /// `artifact_uploader` must say whether an uploader will be set.
    pub fn from_wire(wire: W, request: RequestOptions) -> Self {
        Self {
            wire,
            request,
            callbacks: C::default(),
            abort: None,
        }
    }
}

impl<C: Default> CallOptions<Invocation, C> {
    /// Query options with this system prompt and model.
    pub fn new(system_prompt: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            wire: Invocation::new("", model).system_prompt(system_prompt),
            request: RequestOptions::default(),
            callbacks: C::default(),
            abort: None,
        }
    }
}

impl<C> CallOptions<Invocation, C> {
    /// Asks for structured output whose answer follows `schema`, a JSON Schema given as a
    /// [`serde_json::Value`] or as JSON text: see [`Invocation::output_schema`], which says
    /// what is sent. A schema in the `{"type": "json_schema", "schema": …}` wrapper already is
    /// not wrapped twice; a schema that is not a JSON object fails the call with
    /// [`Error::Usage`](crate::Error::Usage) before anything is sent. To send a format text
    /// verbatim, use [`output_format`](Self::output_format).
    #[must_use]
    pub fn output_schema(mut self, schema: impl runtimeuse_proto::IntoSchema) -> Self {
        self.wire = self.wire.output_schema(schema);
        self
    }

    /// Asks for structured output with the answer's schema derived from `T` (feature
    /// `schemars`), so that
    /// [`QueryResult::deserialize`](runtimeuse_proto::QueryResult::deserialize) into `T` and
    /// the schema cannot disagree.
    #[cfg(feature = "schemars")]
    #[must_use]
    pub fn output_type<T: schemars::JsonSchema>(self) -> Self {
        self.output_schema(crate::schema_of::<T>())
    }

    /// Sets `output_format_json_schema_str` to exactly this text (the whole format, wrapper
    /// included), for runtimes that expect another format than
    /// [`output_schema`](Self::output_schema) sends.
    #[must_use]
    pub fn output_format(mut self, raw: impl Into<String>) -> Self {
        self.wire = self.wire.output_format(raw);
        self
    }

    /// Adds an environment variable for the agent (`agent_env`).
    #[must_use]
    pub fn agent_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.wire = self.wire.agent_env(key, value);
        self
    }

    /// Adds a command the runtime runs before the agent.
    #[must_use]
    pub fn pre_command(mut self, command: impl Into<Command>) -> Self {
        self.wire = self.wire.pre_command(command);
        self
    }

    /// Adds a command the runtime runs after the agent.
    #[must_use]
    pub fn post_command(mut self, command: impl Into<Command>) -> Self {
        self.wire = self.wire.post_command(command);
        self
    }
}

impl<C: Default> CallOptions<CommandBatch, C> {
    /// Command-batch options with the defaults (the commands are given to the call).
    pub fn new() -> Self {
        Self::default()
    }
}
