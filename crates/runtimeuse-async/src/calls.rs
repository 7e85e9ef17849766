//! Running a call: starting its request, and its callbacks on the way to the terminal.

use std::future::Future;
use std::time::Duration;

use runtimeuse_client_core::callbacks::AsyncCallbacks as Callbacks;
use runtimeuse_proto as proto;
use runtimeuse_proto::{RequestEvent, RequestId};
use tracing::Instrument;

use crate::Error;
use crate::backend::{Backend, timeout};
use crate::options::{ExecuteCommandsOptions, QueryOptions};
use crate::session::Session;

impl<B: Backend> Session<B> {
    pub(crate) fn start_query(
        &mut self,
        prompt: String,
        options: QueryOptions,
    ) -> Result<RequestId, Error> {
        let parts = options.into_query(prompt);
        let span_id = parts.wire.source_id.clone();
        let uploader = parts.callbacks.uploader().cloned();
        let id =
            (self.conn.requests()).start_query(parts.wire, parts.request, uploader, B::now())?;
        self.begin(id, &parts.callbacks, "query", span_id);
        Ok(id)
    }

    pub(crate) fn start_commands(
        &mut self,
        commands: impl IntoIterator<Item: Into<proto::Command>>,
        options: ExecuteCommandsOptions,
    ) -> Result<RequestId, Error> {
        let parts = options.into_batch(commands);
        let span_id = parts.wire.source_id.clone();
        let uploader = parts.callbacks.uploader().cloned();
        let id =
            (self.conn.requests()).start_commands(parts.wire, parts.request, uploader, B::now())?;
        self.begin(id, &parts.callbacks, "execute_commands", span_id);
        Ok(id)
    }

    fn begin(
        &mut self,
        id: RequestId,
        callbacks: &Callbacks,
        kind: &str,
        source_id: Option<String>,
    ) {
        // No secrets in fields: the id, the kind and the caller's source id only.
        self.span = tracing::debug_span!(
            "request",
            id = id.as_u64(),
            kind,
            source_id = source_id.as_deref()
        );
        tracing::debug!(parent: &self.span, "request started");
        self.upload_timeout = callbacks.upload_limit();
        // An abort requested while nothing was in flight does not apply to this request.
        self.abort.take();
    }

    /// Runs the request to its end, calling the callbacks; returns the terminal item.
    pub(crate) async fn run_with_callbacks(
        &mut self,
        id: RequestId,
        callbacks: &Callbacks,
    ) -> Result<RequestEvent, Error> {
        let span = self.span.clone();
        // This request's callback slots: one future allocation each, reused per message.
        let mut on_assistant_message = callbacks.assistant_slot();
        let mut on_command_output = callbacks.output_slot();
        async {
            loop {
                let item = match self.next_item(id, callbacks.uploader()).await {
                    Some(item) => item?,
                    None => return Err(Error::ConnectionClosed),
                };
                let limit = callbacks.callback_limit();
                match item {
                    RequestEvent::AssistantMessage(blocks) => {
                        if let Some(slot) = &mut on_assistant_message {
                            slot.start(blocks);
                            let done = std::future::poll_fn(|cx| slot.poll_done(cx));
                            let limit = callbacks.assistant_limit();
                            self.call(id, "on_assistant_message", limit, done).await?;
                        }
                    }
                    RequestEvent::CommandOutput(output) => {
                        if let Some(slot) = &mut on_command_output {
                            slot.start(output);
                            let done = std::future::poll_fn(|cx| slot.poll_done(cx));
                            self.call(id, "on_command_output", limit, done).await?;
                        }
                    }
                    RequestEvent::ArtifactUploadRequest(req) => {
                        // No uploader for this call: decline (the runtime will not upload it).
                        self.conn.requests().decline(req);
                    }
                    item if item.is_terminal() => return Ok(item),
                    // Heartbeats, non-terminal errors: nothing to call.
                    _ => {}
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Awaits a callback's future, within its time limit. Cancel safe: the session state is
    /// untouched while it runs.
    async fn call(
        &mut self,
        id: RequestId,
        callback: &'static str,
        limit: Option<Duration>,
        fut: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let Some(limit) = limit else {
            fut.await;
            return Ok(());
        };
        if timeout::<B, _>(limit, fut).await.is_some() {
            return Ok(());
        }
        Err((self.conn.requests()).callback_timed_out(id, callback, limit, B::now()))
    }
}
