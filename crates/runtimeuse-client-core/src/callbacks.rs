//! The Python client's callbacks, in the two forms the clients call them: async functions
//! (the tokio and async-std clients, with time limits) and plain closures (the blocking
//! client, called on the thread that reads the connection).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use runtimeuse_proto::{ArtifactRequest, ArtifactUpload, CommandOutput};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A callback that runs once per message, as a reusable slot: one allocation per request for
/// the callback's future, which each call replaces in place ([`Pin::set`]), instead of one box
/// per message.
pub trait CallbackSlot<T>: Send {
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
type SlotFactory<T> = Arc<dyn Fn() -> Box<dyn CallbackSlot<T>> + Send + Sync>;

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

/// An async artifact uploader: `None` declines the request (the runtime is told no upload will
/// happen).
pub type AsyncUploader =
    Arc<dyn Fn(ArtifactRequest) -> BoxFuture<Option<ArtifactUpload>> + Send + Sync>;

/// The callbacks of the async clients: async functions, each within an optional time limit.
#[derive(Clone, Default)]
pub struct AsyncCallbacks {
    on_assistant_message: Option<SlotFactory<Vec<String>>>,
    on_command_output: Option<SlotFactory<CommandOutput>>,
    uploader: Option<AsyncUploader>,
    callback_timeout: Option<Duration>,
    assistant_callback_timeout: Option<Duration>,
    upload_callback_timeout: Option<Duration>,
}

impl AsyncCallbacks {
    /// A slot for this request's assistant-message callback, if there is one.
    pub fn assistant_slot(&self) -> Option<Box<dyn CallbackSlot<Vec<String>>>> {
        self.on_assistant_message.as_ref().map(|f| f())
    }

    /// A slot for this request's command-output callback, if there is one.
    pub fn output_slot(&self) -> Option<Box<dyn CallbackSlot<CommandOutput>>> {
        self.on_command_output.as_ref().map(|f| f())
    }

    /// The artifact uploader, if any.
    pub fn uploader(&self) -> Option<&AsyncUploader> {
        self.uploader.as_ref()
    }

    /// The time limit of each callback without one of its own.
    pub fn callback_limit(&self) -> Option<Duration> {
        self.callback_timeout
    }

    /// The limit of the assistant-message callback.
    pub fn assistant_limit(&self) -> Option<Duration> {
        self.assistant_callback_timeout.or(self.callback_timeout)
    }

    /// The limit of the artifact uploader.
    pub fn upload_limit(&self) -> Option<Duration> {
        self.upload_callback_timeout.or(self.callback_timeout)
    }
}

impl fmt::Debug for AsyncCallbacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncCallbacks")
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

/// A closure shared by the clones of an options value (calls take turns on its lock).
type Shared<F> = Arc<Mutex<F>>;

/// A blocking artifact uploader.
pub type BlockingUploader = Shared<dyn FnMut(ArtifactRequest) -> ArtifactUpload + Send>;

/// Calls a blocking uploader (one that panicked once is still called).
pub fn upload_with(uploader: &BlockingUploader, request: ArtifactRequest) -> ArtifactUpload {
    call(uploader, request)
}

fn call<A, R>(f: &Mutex<dyn FnMut(A) -> R + Send>, arg: A) -> R {
    let mut f = f.lock().unwrap_or_else(PoisonError::into_inner);
    (*f)(arg)
}

/// The callbacks of the blocking client: closures called on the thread that reads the
/// connection. They have no time limits: such a closure cannot be interrupted; bound its work
/// inside it, or cancel the request from another thread with an
/// [`AbortHandle`](crate::AbortHandle).
#[derive(Clone, Default)]
pub struct BlockingCallbacks {
    on_assistant_message: Option<Shared<dyn FnMut(Vec<String>) + Send>>,
    on_command_output: Option<Shared<dyn FnMut(CommandOutput) + Send>>,
    uploader: Option<BlockingUploader>,
}

impl BlockingCallbacks {
    /// Calls the assistant-message callback, if there is one.
    pub fn assistant_message(&self, blocks: Vec<String>) {
        if let Some(f) = &self.on_assistant_message {
            call(f, blocks);
        }
    }

    /// Calls the command-output callback, if there is one.
    pub fn command_output(&self, output: CommandOutput) {
        if let Some(f) = &self.on_command_output {
            call(f, output);
        }
    }

    /// The artifact uploader, if any.
    pub fn uploader(&self) -> Option<&BlockingUploader> {
        self.uploader.as_ref()
    }
}

impl fmt::Debug for BlockingCallbacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingCallbacks")
            .field("on_assistant_message", &self.on_assistant_message.is_some())
            .field("on_command_output", &self.on_command_output.is_some())
            .field("on_artifact_upload_request", &self.uploader.is_some())
            .finish()
    }
}

impl<W> crate::options::CallOptions<W, AsyncCallbacks> {
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
    pub fn on_artifact_upload_request<F, Fut>(self, f: F) -> Self
    where
        F: Fn(ArtifactRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ArtifactUpload> + Send + 'static,
    {
        let f = Arc::new(f);
        self.on_artifact_upload_request_or_decline(move |r| {
            let answer = f(r);
            async move { Some(answer.await) }
        })
    }

    /// As [`on_artifact_upload_request`](Self::on_artifact_upload_request), with an uploader
    /// that may decline: `None` tells the runtime that no upload will happen for this file
    /// (the request goes on). For uploaders that can fail, or that hand the question to
    /// another task and may get no answer (the Python package's callbacks).
    #[must_use]
    pub fn on_artifact_upload_request_or_decline<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(ArtifactRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<ArtifactUpload>> + Send + 'static,
    {
        self.callbacks.uploader = Some(Arc::new(move |r| Box::pin(f(r))));
        self.request.artifact_uploader = true;
        self
    }
}

impl<W> crate::options::CallOptions<W, BlockingCallbacks> {
    /// Called with the text blocks of each assistant message, on the thread that reads the
    /// connection. Clones of the options share the closure.
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
    /// exactly when artifacts directories are given. A persistent session keeps the last
    /// uploader given, to answer requests that arrive between calls and while it closes.
    #[must_use]
    pub fn on_artifact_upload_request(
        mut self,
        f: impl FnMut(ArtifactRequest) -> ArtifactUpload + Send + 'static,
    ) -> Self {
        self.callbacks.uploader = Some(Arc::new(Mutex::new(f)));
        self.request.artifact_uploader = true;
        self
    }
}
