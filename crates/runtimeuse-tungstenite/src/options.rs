//! Per-call options: what goes on the wire, timeouts, and the Python client's callbacks (here
//! plain closures, called on the calling thread).
//!
//! Unlike the async clients, these options have no callback time limits: a closure runs on
//! the thread that reads the connection and cannot be interrupted; bound its work inside it,
//! or cancel the request from another thread with an [`AbortHandle`](crate::AbortHandle).

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use runtimeuse_proto::{
    ArtifactRequest, ArtifactUpload, CommandBatch, CommandOutput, Invocation, RequestOptions,
};

/// A closure shared by the clones of an options value (calls take turns on its lock).
pub(crate) type Shared<F> = Arc<Mutex<F>>;
pub(crate) type AssistantFn = Shared<dyn FnMut(Vec<String>) + Send>;
pub(crate) type OutputFn = Shared<dyn FnMut(CommandOutput) + Send>;
pub(crate) type UploaderFn = Shared<dyn FnMut(ArtifactRequest) -> ArtifactUpload + Send>;

/// Calls a shared closure (a closure that panicked once is still called).
pub(crate) fn call<A, R>(f: &Mutex<dyn FnMut(A) -> R + Send>, arg: A) -> R {
    let mut f = f.lock().unwrap_or_else(PoisonError::into_inner);
    (*f)(arg)
}

#[derive(Clone, Default)]
pub(crate) struct Callbacks {
    pub(crate) on_assistant_message: Option<AssistantFn>,
    pub(crate) on_command_output: Option<OutputFn>,
    pub(crate) uploader: Option<UploaderFn>,
}

impl fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callbacks")
            .field("on_assistant_message", &self.on_assistant_message.is_some())
            .field("on_command_output", &self.on_command_output.is_some())
            .field("on_artifact_upload_request", &self.uploader.is_some())
            .finish()
    }
}

macro_rules! common_options {
    () => {
        /// Fails the request if its result has not arrived this long after it started.
        #[must_use]
        pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
            self.request.timeout = Some(timeout);
            self
        }

        /// Fails the request if no message at all arrives for this long (heartbeats count).
        #[must_use]
        pub fn idle_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.request.idle_timeout = Some(timeout);
            self
        }

        /// Lets `handle` cancel this call (from another thread) when it is a one-shot call
        /// (`Client::query`, `Client::execute_commands`), as the Python client's
        /// `client.abort()` does: the call fails with [`Error::Cancelled`](crate::Error::Cancelled).
        /// A handle aborted before the call starts fails it at once. (A persistent session has
        /// its own [`Session::abort_handle`](crate::Session::abort_handle).)
        #[must_use]
        pub fn abort_handle(mut self, handle: &crate::AbortHandle) -> Self {
            self.abort = Some(handle.clone());
            self
        }

        /// Called with the text blocks of each assistant message.
        #[must_use]
        pub fn on_assistant_message(mut self, f: impl FnMut(Vec<String>) + Send + 'static) -> Self {
            self.callbacks.on_assistant_message = Some(Arc::new(Mutex::new(f)));
            self
        }

        /// Called with each chunk of command output.
        #[must_use]
        pub fn on_command_output(mut self, f: impl FnMut(CommandOutput) + Send + 'static) -> Self {
            self.callbacks.on_command_output = Some(Arc::new(Mutex::new(f)));
            self
        }

        /// Answers artifact upload requests with a presigned URL and content type. Required
        /// exactly when artifacts directories are given.
        #[must_use]
        pub fn on_artifact_upload_request(
            mut self,
            f: impl FnMut(ArtifactRequest) -> ArtifactUpload + Send + 'static,
        ) -> Self {
            self.callbacks.uploader = Some(Arc::new(Mutex::new(f)));
            self.request.artifact_uploader = true;
            self
        }
    };
}

/// Options of a query: the invocation's fields (system prompt, model, …), timeouts and
/// callbacks. Clones share the callbacks.
#[derive(Clone, Debug, Default)]
pub struct QueryOptions {
    pub(crate) invocation: Invocation,
    pub(crate) request: RequestOptions,
    pub(crate) callbacks: Callbacks,
    pub(crate) abort: Option<crate::AbortHandle>,
}

impl QueryOptions {
    /// Options with this system prompt and model.
    pub fn new(system_prompt: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            invocation: Invocation::new("", model).system_prompt(system_prompt),
            ..Self::default()
        }
    }

    /// Edits the invocation's other fields with [`Invocation`]'s setters.
    #[must_use]
    pub fn invocation(mut self, edit: impl FnOnce(Invocation) -> Invocation) -> Self {
        self.invocation = edit(self.invocation);
        self
    }

    /// Asks for structured output whose answer follows `schema`, a JSON Schema (sent as
    /// `{"type": "json_schema", "schema": <schema>}`, which runtimes read).
    #[must_use]
    pub fn output_schema(mut self, schema: serde_json::Value) -> Self {
        self.invocation = self.invocation.output_schema(schema);
        self
    }

    /// Asks for structured output with the answer's schema derived from `T` (feature
    /// `schemars`), so that [`QueryResult::deserialize`](runtimeuse_proto::QueryResult::deserialize)
    /// into `T` and the schema cannot disagree.
    #[cfg(feature = "schemars")]
    #[must_use]
    pub fn output_type<T: schemars::JsonSchema>(self) -> Self {
        self.output_schema(runtimeuse_client_core::schema_of::<T>())
    }

    /// Sets `output_format_json_schema_str` to exactly this text (the whole format, wrapper
    /// included), for runtimes that expect another format than
    /// [`output_schema`](Self::output_schema) sends.
    #[must_use]
    pub fn output_format(mut self, raw: impl Into<String>) -> Self {
        self.invocation = self.invocation.output_format(raw);
        self
    }

    runtimeuse_client_core::__wire_setters!(invocation);
    runtimeuse_client_core::__invocation_setters!();

    common_options!();
}

/// Options of a command batch: its fields besides the commands, timeouts and callbacks.
/// Clones share the callbacks.
#[derive(Clone, Debug, Default)]
pub struct ExecuteCommandsOptions {
    pub(crate) batch: CommandBatch,
    pub(crate) request: RequestOptions,
    pub(crate) callbacks: Callbacks,
    pub(crate) abort: Option<crate::AbortHandle>,
}

impl ExecuteCommandsOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Edits the batch's other fields with [`CommandBatch`]'s setters.
    #[must_use]
    pub fn batch(mut self, edit: impl FnOnce(CommandBatch) -> CommandBatch) -> Self {
        self.batch = edit(self.batch);
        self
    }

    runtimeuse_client_core::__wire_setters!(batch);

    common_options!();
}
