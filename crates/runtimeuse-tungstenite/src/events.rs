//! The events of one request as an [`Iterator`].

use std::fmt;

use runtimeuse_client_core::requests;
use runtimeuse_proto as proto;
use runtimeuse_proto::{ArtifactUpload, ArtifactUploadRequest, RequestEvent, RequestId};

use crate::options::{ExecuteCommandsOptions, QueryOptions};
use crate::session::{Session, now};
use crate::{AbortHandle, Error};

impl Session {
    /// The events of the request in flight, if any, as an [`Iterator`]: for a session taken
    /// over with [`Client::resume`](crate::Client::resume), the rest of the request that was
    /// in flight when its token was taken (artifact upload requests come out as items, to
    /// answer with [`RequestEvents::respond_artifact_upload`]).
    pub fn request_events(&mut self) -> Option<RequestEvents<'_>> {
        let id = self.conn.requests().current()?;
        Some(RequestEvents::new(self, id))
    }

    /// Starts a query and returns its events as an [`Iterator`]; the last item is the result.
    /// Callbacks in the options are not called, except the artifact uploader.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] if the options are invalid; nothing is sent then.
    pub fn query_events(
        &mut self,
        prompt: impl Into<String>,
        options: QueryOptions,
    ) -> Result<RequestEvents<'_>, Error> {
        let (id, _) = self.start_query(prompt.into(), options)?;
        Ok(RequestEvents::new(self, id))
    }

    /// Starts a command batch and returns its events as an [`Iterator`].
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] if the options are invalid; nothing is sent then.
    pub fn execute_commands_events(
        &mut self,
        commands: impl IntoIterator<Item: Into<proto::Command>>,
        options: ExecuteCommandsOptions,
    ) -> Result<RequestEvents<'_>, Error> {
        let (id, _) = self.start_commands(commands, options)?;
        Ok(RequestEvents::new(self, id))
    }
}

/// The events of one request, as an [`Iterator`]; the last item is the result (or an error).
/// Dropping it before the end leaves the session usable: the request is cancelled before the
/// next call.
pub struct RequestEvents<'a> {
    session: &'a mut Session,
    id: RequestId,
    done: bool,
}

impl fmt::Debug for RequestEvents<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestEvents")
            .field("request", &self.id)
            .finish_non_exhaustive()
    }
}

impl<'a> RequestEvents<'a> {
    pub(crate) fn new(session: &'a mut Session, id: RequestId) -> Self {
        Self {
            session,
            id,
            done: false,
        }
    }

    /// Answers an artifact upload request handed out by this iterator.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] if the request is not pending on this session.
    pub fn respond_artifact_upload(
        &mut self,
        request: ArtifactUploadRequest,
        upload: ArtifactUpload,
    ) -> Result<(), Error> {
        self.session.conn.requests().respond(request, upload, now())
    }

    /// Declines an artifact upload request handed out by this iterator: the runtime is told
    /// no upload will happen.
    pub fn decline_artifact_upload(&mut self, request: ArtifactUploadRequest) {
        self.session.conn.requests().decline(request);
    }

    /// A handle that cancels this request from another thread.
    pub fn abort_handle(&self) -> AbortHandle {
        self.session.abort_handle()
    }

    /// Cancels this request: the iterator goes on to the runtime's terminal and ends with
    /// [`Error::Cancelled`].
    pub fn abort(&self) {
        self.session.abort();
    }

    /// A resume token of the session, between two items of this iterator: as
    /// [`Session::resume_token`].
    ///
    /// # Errors
    ///
    /// As [`Session::resume_token`].
    pub fn resume_token(&mut self) -> Result<crate::ResumeToken, Error> {
        self.session.resume_token()
    }
}

impl Iterator for RequestEvents<'_> {
    type Item = Result<RequestEvent, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.session.next_item(self.id);
        self.done = requests::ends_stream(&item);
        item
    }
}
