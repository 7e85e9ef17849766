//! Per-call options: what goes on the wire, timeouts, and the Python client's callbacks.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use runtimeuse_proto::{
    ArtifactRequest, ArtifactUpload, CommandBatch, CommandOutput, Invocation, RequestOptions,
};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A callback that runs once per message, as a reusable slot: one allocation per request for
/// the callback's future, which each call replaces in place ([`Pin::set`]), instead of one box
/// per message.
pub(crate) trait CallbackSlot<T>: Send {
    /// Starts the callback with `arg`, dropping the previous call's future.
    fn start(&mut self, arg: T);
    /// Polls the call started last.
    fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

struct FnSlot<F, Fut> {
    f: Arc<F>,
    fut: Option<Pin<Box<Fut>>>,
}

impl<T, F, Fut> CallbackSlot<T> for FnSlot<F, Fut>
where
    F: Fn(T) -> Fut + Send + Sync,
    Fut: Future<Output = ()> + Send,
{
    fn start(&mut self, arg: T) {
        let fut = (self.f)(arg);
        match &mut self.fut {
            Some(slot) => slot.set(fut),
            None => self.fut = Some(Box::pin(fut)),
        }
    }

    fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.fut {
            Some(fut) => fut.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
}

/// Makes a request's [`CallbackSlot`] for a callback.
pub(crate) type SlotFactory<T> = Arc<dyn Fn() -> Box<dyn CallbackSlot<T>> + Send + Sync>;

fn slot_factory<T, F, Fut>(f: F) -> SlotFactory<T>
where
    T: 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let f = Arc::new(f);
    Arc::new(move || {
        Box::new(FnSlot {
            f: Arc::clone(&f),
            fut: None,
        })
    })
}

type AssistantFn = SlotFactory<Vec<String>>;
type OutputFn = SlotFactory<CommandOutput>;
pub(crate) type UploaderFn =
    Arc<dyn Fn(ArtifactRequest) -> BoxFuture<ArtifactUpload> + Send + Sync>;

/// The Python client's callbacks, shared by both option types.
#[derive(Clone, Default)]
pub(crate) struct Callbacks {
    pub(crate) on_assistant_message: Option<AssistantFn>,
    pub(crate) on_command_output: Option<OutputFn>,
    pub(crate) uploader: Option<UploaderFn>,
    pub(crate) callback_timeout: Option<Duration>,
    pub(crate) assistant_callback_timeout: Option<Duration>,
    pub(crate) upload_callback_timeout: Option<Duration>,
}

impl Callbacks {
    /// The limit of the assistant-message callback.
    pub(crate) fn assistant_limit(&self) -> Option<Duration> {
        self.assistant_callback_timeout.or(self.callback_timeout)
    }

    /// The limit of the artifact uploader.
    pub(crate) fn upload_limit(&self) -> Option<Duration> {
        self.upload_callback_timeout.or(self.callback_timeout)
    }
}

impl fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callbacks")
            .field("on_assistant_message", &self.on_assistant_message.is_some())
            .field("on_command_output", &self.on_command_output.is_some())
            .field("on_artifact_upload_request", &self.uploader.is_some())
            .field("callback_timeout", &self.callback_timeout)
            .field(
                "assistant_callback_timeout",
                &self.assistant_callback_timeout,
            )
            .field("upload_callback_timeout", &self.upload_callback_timeout)
            .finish()
    }
}

macro_rules! common_options {
    () => {
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
        /// `Client::execute_commands`), as the Python client's `client.abort()` does: the
        /// call fails with [`Error::Cancelled`](crate::Error::Cancelled) after the runtime
        /// confirmed. A handle aborted before the call starts fails it at once. (A persistent
        /// session has its own [`Session::abort_handle`](crate::Session::abort_handle).)
        #[must_use]
        pub fn abort_handle(mut self, handle: &crate::AbortHandle) -> Self {
            self.abort = Some(handle.clone());
            self
        }

        /// Limits how long each callback may take (unless a limit of its own below is set);
        /// past it the request is cancelled and the call fails with
        /// [`Error::CallbackTimeout`](crate::Error::CallbackTimeout).
        #[must_use]
        pub fn callback_timeout(mut self, limit: Duration) -> Self {
            self.callbacks.callback_timeout = Some(limit);
            self
        }

        /// Limits how long the assistant-message callback may take (the Python client's
        /// `assistant_callback_timeout`).
        #[must_use]
        pub fn assistant_callback_timeout(mut self, limit: Duration) -> Self {
            self.callbacks.assistant_callback_timeout = Some(limit);
            self
        }

        /// Limits how long the artifact uploader may take (the Python client's
        /// `artifact_upload_callback_timeout`).
        #[must_use]
        pub fn artifact_upload_callback_timeout(mut self, limit: Duration) -> Self {
            self.callbacks.upload_callback_timeout = Some(limit);
            self
        }

        /// Called with the text blocks of each assistant message.
        #[must_use]
        pub fn on_assistant_message<F, Fut>(mut self, f: F) -> Self
        where
            F: Fn(Vec<String>) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = ()> + Send + 'static,
        {
            self.callbacks.on_assistant_message = Some(slot_factory(f));
            self
        }

        /// Called with each chunk of command output.
        #[must_use]
        pub fn on_command_output<F, Fut>(mut self, f: F) -> Self
        where
            F: Fn(CommandOutput) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = ()> + Send + 'static,
        {
            self.callbacks.on_command_output = Some(slot_factory(f));
            self
        }

        /// Answers artifact upload requests with a presigned URL and content type. Required
        /// exactly when artifacts directories are given. A persistent session keeps the last
        /// uploader given, to answer requests that arrive between calls and while it closes.
        #[must_use]
        pub fn on_artifact_upload_request<F, Fut>(mut self, f: F) -> Self
        where
            F: Fn(ArtifactRequest) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = ArtifactUpload> + Send + 'static,
        {
            self.callbacks.uploader = Some(Arc::new(move |r| Box::pin(f(r))));
            self.request.artifact_uploader = true;
            self
        }
    };
}

/// Options of a query: the invocation's fields (system prompt, model, …), timeouts and
/// callbacks.
///
/// ```
/// use std::time::Duration;
/// use runtimeuse_async::QueryOptions;
///
/// let options = QueryOptions::new("You are a helpful assistant.", "gpt-4o")
///     .timeout(Duration::from_secs(300))
///     .invocation(|i| i.secret("sk-123").pre_command("git clone https://example.com/repo"))
///     .on_assistant_message(|blocks| async move { println!("{}", blocks.join("")) });
/// ```
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

    /// Edits the invocation's other fields (output schema, source id, secrets, artifacts
    /// directories, pre/post commands, downloads, …) with [`Invocation`]'s setters.
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

    /// Edits the batch's other fields (source id, secrets, artifacts directories, downloads)
    /// with [`CommandBatch`]'s setters.
    #[must_use]
    pub fn batch(mut self, edit: impl FnOnce(CommandBatch) -> CommandBatch) -> Self {
        self.batch = edit(self.batch);
        self
    }

    runtimeuse_client_core::__wire_setters!(batch);

    common_options!();
}
