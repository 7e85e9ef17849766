//! The events of one request as an [`Iterator`].

use std::fmt;

use runtimeuse_client_core::requests;
use runtimeuse_proto as proto;
use runtimeuse_proto::{RequestEvent, RequestId};

use crate::Error;
use crate::options::{ExecuteCommandsOptions, QueryOptions};
use crate::session::{Session, now};

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

    runtimeuse_client_core::request_events_controls!(now());
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
