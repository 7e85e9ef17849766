//! The controls of a session and of a request's events that every client (async and
//! blocking) offers with the same code, written once: [`session_controls!`](crate::session_controls)
//! and [`request_events_controls!`](crate::request_events_controls).

/// A client session's resumption and abort methods, for a type with the fields `conn` (a
/// [`Connection`](crate::connection::Connection)), `settings`
/// (`Option<Arc<ClientSettings>>`) and `abort` ([`AbortHandle`](crate::AbortHandle));
/// `$now` is the client's clock (an expression of type `Instant`).
#[doc(hidden)]
#[macro_export]
macro_rules! session_controls {
    ($now:expr) => {
        /// A `ResumeToken` of this session as it stands: what another process needs to take
        /// it over with `Client::resume`, the request in flight included. Store it (serde)
        /// where that process finds it; taking a token pins the runtime's replay at its
        /// count, so take a new one each time you store one (see `ResumeToken`). Frames the
        /// session sends meanwhile are in the token too, and sent again by its taker if the
        /// runtime never processed them.
        ///
        /// # Errors
        ///
        /// `Error::NotResumable` when the runtime did not grant resumption, while the session
        /// ends, and while events of frames already read wait to be handed out (rare: a frame
        /// that made two events; read the next one first).
        pub fn resume_token(
            &mut self,
        ) -> ::std::result::Result<$crate::types::ResumeToken, $crate::Error> {
            let url = self.settings.as_ref().map_or("", |s| s.url.as_str());
            self.conn.resume_token(url, $now)
        }

        /// Whether the runtime granted resumption to this session (see
        /// `ClientBuilder::resume`).
        pub fn is_resumable(&self) -> bool {
            self.conn.is_resumable()
        }

        /// A handle that cancels the request in flight, from any task or thread.
        pub fn abort_handle(&self) -> $crate::AbortHandle {
            self.abort.clone()
        }

        /// Cancels the request in flight (the same as `AbortHandle::abort`): its call or
        /// event stream goes on to the runtime's terminal and ends with `Error::Cancelled`.
        pub fn abort(&self) {
            self.abort.abort();
        }
    };
}

/// A request's event stream's methods, for a type with the field `session` (a session with
/// [`session_controls!`](crate::session_controls) and the field `conn`); `$now` as there.
#[doc(hidden)]
#[macro_export]
macro_rules! request_events_controls {
    ($now:expr) => {
        /// Answers an artifact upload request handed out by these events.
        ///
        /// # Errors
        ///
        /// `Error::Usage` if the request is not pending on this session.
        pub fn respond_artifact_upload(
            &mut self,
            request: $crate::types::ArtifactUploadRequest,
            upload: $crate::types::ArtifactUpload,
        ) -> ::std::result::Result<(), $crate::Error> {
            self.session.conn.requests().respond(request, upload, $now)
        }

        /// Declines an artifact upload request handed out by these events: the runtime is
        /// told no upload will happen.
        pub fn decline_artifact_upload(&mut self, request: $crate::types::ArtifactUploadRequest) {
            self.session.conn.requests().decline(request);
        }

        /// A handle that cancels this request, from any task or thread.
        pub fn abort_handle(&self) -> $crate::AbortHandle {
            self.session.abort_handle()
        }

        /// Cancels this request: the events go on to the runtime's terminal and end with
        /// `Error::Cancelled`.
        pub fn abort(&self) {
            self.session.abort();
        }

        /// A resume token of the session, between two events of this request: as the
        /// session's `resume_token`.
        ///
        /// # Errors
        ///
        /// As the session's `resume_token`.
        pub fn resume_token(
            &mut self,
        ) -> ::std::result::Result<$crate::types::ResumeToken, $crate::Error> {
            self.session.resume_token()
        }
    };
}
