//! Agent behaviour: the [`AgentHandler`] trait and what a handler gets to work with.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use runtimeuse_proto::{Invocation, QueryResult};
use serde_json::Value;
use tokio::sync::watch;

use crate::artifacts::Reported;
use crate::mailbox::{Cmd, Outbox};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The agent: turns an invocation into a result.
///
/// The runtime runs downloads and pre-commands before [`run`](Self::run) and post-commands
/// after it, and applies `secrets_to_redact` to everything the handler sends.
pub trait AgentHandler: Send + Sync + 'static {
    /// Runs one invocation. Stream assistant text and non-terminal errors through `ctx`, and
    /// stop early when [`HandlerContext::cancelled`] fires (the runtime then ends the request
    /// as cancelled, whatever this returns).
    fn run<'a>(
        &'a self,
        invocation: Invocation,
        ctx: HandlerContext,
    ) -> BoxFuture<'a, Result<QueryResult, AgentError>>;
}

/// Why a handler failed: the runtime sends it as the request's terminal `error_message`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    /// The error text.
    pub message: String,
    /// The error's metadata.
    pub metadata: Value,
}

impl AgentError {
    /// An error with this text and `{"error_name": "Error"}` metadata.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            metadata: serde_json::json!({ "error_name": "Error" }),
        }
    }
}

/// What a handler gets besides the invocation: a way to talk to the client, and the cancel
/// signal.
#[derive(Debug, Clone)]
pub struct HandlerContext {
    pub(crate) outbox: Outbox,
    pub(crate) cancel: CancelSignal,
    pub(crate) reported: Reported,
    pub(crate) artifacts_dirs: Vec<PathBuf>,
    /// The runtime's metrics (the model agent counts its turns, tool calls and tokens).
    pub(crate) metrics: std::sync::Arc<crate::ops::Metrics>,
    /// What no child process gets of the runtime's environment.
    pub(crate) withheld_env: std::sync::Arc<[String]>,
}

impl HandlerContext {
    /// Streams an assistant message to the client.
    pub async fn send_assistant(&self, text_blocks: Vec<String>) {
        let _ = self.outbox.send(Cmd::Assistant(text_blocks)).await;
    }

    /// Sends a non-terminal `error_message` (the request goes on).
    pub async fn send_error(&self, error: impl Into<String>, metadata: Value) {
        let _ = self.outbox.send(Cmd::Error(error.into(), metadata)).await;
    }

    /// Removes from `cmd`'s environment the variables the runtime withholds from its
    /// children ([`RuntimeOptions::withheld_env`](crate::RuntimeOptions::withheld_env), its
    /// token by default). Call it on every process the handler starts, before the request's
    /// `agent_env` is applied (which may set them again: its client chose to).
    pub fn withhold_env<'c>(
        &self,
        cmd: &'c mut tokio::process::Command,
    ) -> &'c mut tokio::process::Command {
        for name in self.withheld_env.iter() {
            cmd.env_remove(name);
        }
        cmd
    }

    /// Whether the client cancelled the request.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when the client cancels the request.
    pub async fn cancelled(&self) {
        self.cancel.clone().cancelled().await;
    }

    /// Waits (at most `limit`) until the artifact watcher has reported `path` and the client
    /// has answered where to upload it, when `path` lies in a watched artifacts directory;
    /// returns at once otherwise. A handler that writes an artifact just before it returns
    /// uses this so that a one-shot client, which closes at the result, still uploads it.
    pub async fn wait_artifact_reported(&self, path: &Path, limit: Duration) {
        if !self.artifacts_dirs.iter().any(|d| path.starts_with(d)) {
            return;
        }
        let _ = tokio::time::timeout(limit, self.reported.wait_for(path)).await;
    }
}

/// The cancel signal of one request.
#[derive(Debug, Clone)]
pub(crate) struct CancelSignal(watch::Receiver<bool>);

impl CancelSignal {
    pub(crate) fn new() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when cancelled (or when the request's owner is gone).
    pub(crate) async fn cancelled(mut self) {
        let _ = self.0.wait_for(|c| *c).await;
    }
}
