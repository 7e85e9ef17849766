//! The events of one request as a [`Stream`].

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::Stream;
use runtimeuse_client_core::callbacks::AsyncUploader as UploaderFn;
use runtimeuse_client_core::requests;
use runtimeuse_proto as proto;
use runtimeuse_proto::{RequestEvent, RequestId};

use crate::Error;
use crate::backend::Backend;
use crate::options::{ExecuteCommandsOptions, QueryOptions};
use crate::session::Session;

impl<B: Backend> Session<B> {
    /// The events of the request in flight, if any, as a [`Stream`](futures_util::Stream): for a session taken
    /// over with [`Client::resume`](crate::Client::resume), the rest of the request that was
    /// in flight when its token was taken (artifact upload requests come out as items, to
    /// answer with [`RequestEvents::respond_artifact_upload`]).
    pub fn request_events(&mut self) -> Option<RequestEvents<'_, B>> {
        let id = self.conn.requests().current()?;
        Some(RequestEvents::new(self, id, None))
    }

    /// Starts a query and returns its events as a [`Stream`](futures_util::Stream); the last item is the result.
    /// Callbacks in the options are not called (except the artifact uploader, when given).
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] if the options are invalid; nothing is sent then.
    pub fn query_events(
        &mut self,
        prompt: impl Into<String>,
        options: QueryOptions,
    ) -> Result<RequestEvents<'_, B>, Error> {
        let uploader = options.callbacks().uploader().cloned();
        let id = self.start_query(prompt.into(), options)?;
        Ok(RequestEvents::new(self, id, uploader))
    }

    /// Starts a command batch and returns its events as a [`Stream`](futures_util::Stream).
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] if the options are invalid; nothing is sent then.
    pub fn execute_commands_events(
        &mut self,
        commands: impl IntoIterator<Item: Into<proto::Command>>,
        options: ExecuteCommandsOptions,
    ) -> Result<RequestEvents<'_, B>, Error> {
        let uploader = options.callbacks().uploader().cloned();
        let id = self.start_commands(commands, options)?;
        Ok(RequestEvents::new(self, id, uploader))
    }
}

/// The events of one request, as a [`Stream`]; the last item is the result (or an error).
///
/// Dropping it before the end leaves the session usable: the request is cancelled before the
/// next call starts.
pub struct RequestEvents<'a, B: Backend> {
    session: &'a mut Session<B>,
    id: RequestId,
    uploader: Option<UploaderFn>,
    done: bool,
}

impl<B: Backend> fmt::Debug for RequestEvents<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestEvents")
            .field("request", &self.id)
            .finish_non_exhaustive()
    }
}

impl<'a, B: Backend> RequestEvents<'a, B> {
    pub(crate) fn new(
        session: &'a mut Session<B>,
        id: RequestId,
        uploader: Option<UploaderFn>,
    ) -> Self {
        Self {
            session,
            id,
            uploader,
            done: false,
        }
    }

    /// The next event; `None` after the last.
    pub async fn next(&mut self) -> Option<Result<RequestEvent, Error>> {
        futures_util::StreamExt::next(self).await
    }

    runtimeuse_client_core::request_events_controls!(B::now());
}

impl<B: Backend> Stream for RequestEvents<'_, B> {
    type Item = Result<RequestEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let item = ready!(this.session.poll_item(cx, this.id, this.uploader.as_ref()));
        this.done = requests::ends_stream(&item);
        Poll::Ready(item)
    }
}
