//! A session handed to another process: [`Session::export`] and [`Session::import`].

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Active, Drain, Queued, RequestKind, Session, after};
use crate::config::Config;
use crate::error::{FailReason, RuntimeError, UsageError};
use crate::event::{ArtifactUploadRequest, Event, RequestId};
use crate::timer::Timer;

/// What a client [`Session`] must remember to go on in another process: the request in flight
/// (its kind, how long it has run, its limits, what the runtime said so far that still
/// matters), the artifact upload requests not answered yet, and the counters of its ids.
///
/// [`Session::export`] takes it and [`Session::import`] turns it back into a session; between
/// the two it is plain data for serde (JSON, say), stable across versions of this crate of the
/// same major version. It holds nothing secret, but the text of the runtime's pending
/// `error_message`, if any.
///
/// The state says nothing about the connection: a resumable session's counts and frames are
/// the adapter's (the repository's `docs/resume.md`), and the frames that arrive after the
/// import are those that arrived after the export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionState {
    /// The id the next request gets.
    next_request: u64,
    /// The id the next artifact upload request gets.
    next_artifact: u64,
    /// The request in flight, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request: Option<RequestState>,
    /// Whether a request given up on (cancelled, timed out) is still to reach its terminal.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    draining: bool,
    /// The artifact upload requests not answered yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    artifacts: Vec<PendingArtifact>,
}

/// The request in flight of a [`SessionState`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RequestState {
    id: u64,
    kind: Kind,
    /// How long it had run when exported, in milliseconds.
    elapsed_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idle_timeout_ms: Option<u64>,
    /// The runtime's messages of the request processed so far.
    #[serde(default)]
    message_count: u64,
    /// Its frame, when it was held back behind a draining request and never sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unsent: Option<String>,
    /// An `error_message` that ends the request unless more of it follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending_error: Option<ErrorState>,
    /// Its `error_message`s that turned out not to be its terminal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    earlier_errors: Vec<ErrorState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Query,
    Commands,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ErrorState {
    error: String,
    #[serde(default)]
    metadata: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PendingArtifact {
    id: u64,
    filename: String,
    filepath: String,
}

impl From<RequestKind> for Kind {
    fn from(kind: RequestKind) -> Self {
        match kind {
            RequestKind::Query => Self::Query,
            RequestKind::Commands => Self::Commands,
        }
    }
}

impl From<Kind> for RequestKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Query => Self::Query,
            Kind::Commands => Self::Commands,
        }
    }
}

impl From<&RuntimeError> for ErrorState {
    fn from(e: &RuntimeError) -> Self {
        Self {
            error: e.error.clone(),
            metadata: e.metadata.clone(),
        }
    }
}

impl From<ErrorState> for RuntimeError {
    fn from(e: ErrorState) -> Self {
        Self::new(e.error, e.metadata)
    }
}

/// Whether `frame` is a request the client sends (what an exported unsent request holds).
fn is_request_frame(frame: &str) -> bool {
    let Ok(Value::Object(message)) = serde_json::from_str::<Value>(frame) else {
        return false;
    };
    matches!(
        message.get("message_type").and_then(Value::as_str),
        Some("invocation_message" | "command_execution_message")
    )
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl SessionState {
    /// The request in flight when the state was taken, if any: the id it keeps in the
    /// imported session.
    pub fn request(&self) -> Option<RequestId> {
        self.request.as_ref().map(|r| RequestId(r.id))
    }

    /// Whether the request in flight is a query (`false`: a command batch, or none).
    pub fn is_query(&self) -> bool {
        self.request.as_ref().is_some_and(|r| r.kind == Kind::Query)
    }
}

impl Session {
    /// The session's state, for [`import`](Self::import) in another process (the hand-off of a
    /// resumable session; see [`SessionState`]). The session itself goes on unchanged.
    ///
    /// # Errors
    ///
    /// [`UsageError::SessionEnding`] once [`end_session`](Self::end_session) was called (the
    /// end of a session is not handed over), [`UsageError::SessionFinished`].
    pub fn export(&self, now: Instant) -> Result<SessionState, UsageError> {
        if self.finished {
            return Err(UsageError::SessionFinished);
        }
        if self.ending {
            return Err(UsageError::SessionEnding);
        }
        let request = if let Some(a) = &self.active {
            Some(RequestState {
                id: a.id.0,
                kind: a.kind.into(),
                elapsed_ms: millis(now.saturating_duration_since(a.started)),
                timeout_ms: a.timeout.map(millis),
                idle_timeout_ms: a.idle_timeout.map(millis),
                message_count: a.message_count,
                unsent: None,
                pending_error: a.pending_error.as_ref().map(ErrorState::from),
                earlier_errors: a.earlier_errors.iter().map(ErrorState::from).collect(),
            })
        } else {
            self.queued.as_ref().map(|q| RequestState {
                id: q.id.0,
                kind: q.kind.into(),
                elapsed_ms: millis(now.saturating_duration_since(q.started)),
                timeout_ms: q.timeout.map(millis),
                idle_timeout_ms: q.idle_timeout.map(millis),
                message_count: 0,
                unsent: Some(q.frame.clone()),
                pending_error: None,
                earlier_errors: Vec::new(),
            })
        };
        let mut artifacts: Vec<_> = (self.pending_artifacts.iter())
            .map(|(id, (filename, filepath))| PendingArtifact {
                id: *id,
                filename: filename.clone(),
                filepath: filepath.clone(),
            })
            .collect();
        artifacts.sort_by_key(|a| a.id);
        Ok(SessionState {
            next_request: self.next_request,
            next_artifact: self.next_artifact,
            request,
            draining: self.drain.is_some(),
            artifacts,
        })
    }

    /// A session that goes on from `state` (taken by [`export`](Self::export), perhaps in
    /// another process) with this configuration, at `now`, on a connection that carries the
    /// same runtime session (a resumed one).
    ///
    /// The request in flight keeps its id and its overall limit (counted from its start: the
    /// time it had run when exported counts); its idle limit counts from `now`. Artifact upload
    /// requests that were not answered come out again as [`Event::ArtifactUploadRequest`], and
    /// a request that was never sent (held back behind a cancelled one) is sent once that one
    /// reached its terminal. Any state deserializes into a working session: ids are kept
    /// apart, and its lists are bounded as a live session bounds them.
    pub fn import(config: Config, state: SessionState, now: Instant) -> Self {
        let mut session = Self::new(config, now);
        let last_request = state.request.as_ref().map_or(0, |r| r.id.saturating_add(1));
        session.next_request = state.next_request.max(last_request);
        session.next_artifact = state.next_artifact;
        if state.draining {
            session.drain = Some(Drain { settling: false });
            session
                .timers
                .set_opt(Timer::Drain, after(now, session.config.drain_timeout));
        }
        if let Some(r) = state.request {
            let elapsed = Duration::from_millis(r.elapsed_ms);
            let started = now.checked_sub(elapsed).unwrap_or(now);
            let timeout = r.timeout_ms.map(Duration::from_millis);
            let idle_timeout = r.idle_timeout_ms.map(Duration::from_millis);
            if let Some(timeout) = timeout {
                let left = timeout.saturating_sub(elapsed);
                session.timers.set_opt(Timer::Overall, after(now, left));
            }
            let id = RequestId(r.id);
            match r.unsent {
                Some(frame) if !is_request_frame(&frame) => {
                    tracing::warn!(request = id.0, "the state's unsent request is not one");
                    session.events.push_back(Event::Failed {
                        request: id,
                        reason: FailReason::Desynchronized,
                    });
                    session.timers.stop(Timer::Overall);
                }
                Some(frame) => {
                    let queued = Queued {
                        id,
                        kind: r.kind.into(),
                        frame,
                        started,
                        timeout,
                        idle_timeout,
                    };
                    if session.drain.is_some() {
                        session.queued = Some(queued);
                    } else {
                        // Held back behind nothing: it goes out now.
                        session.send_queued(queued, now);
                    }
                }
                None => {
                    session
                        .timers
                        .set_opt(Timer::Idle, idle_timeout.and_then(|idle| after(now, idle)));
                    let pending_error = r.pending_error.map(RuntimeError::from);
                    if pending_error.is_some() {
                        session
                            .timers
                            .set_opt(Timer::ErrorSettle, after(now, session.config.error_settle));
                    }
                    session.active = Some(Active {
                        id,
                        kind: r.kind.into(),
                        started,
                        timeout,
                        idle_timeout,
                        last_message: None,
                        last_message_at: now,
                        message_count: r.message_count,
                        pending_error,
                        earlier_errors: r
                            .earlier_errors
                            .into_iter()
                            .take(super::MAX_EARLIER_ERRORS)
                            .map(RuntimeError::from)
                            .collect(),
                    });
                }
            }
        }
        let request = session.active.as_ref().map(|a| a.id);
        for a in state.artifacts {
            if session.pending_artifacts.len() >= session.config.max_pending_artifact_requests {
                tracing::warn!("too many unanswered artifact upload requests in the state");
                break;
            }
            session
                .pending_artifacts
                .insert(a.id, (a.filename.clone(), a.filepath.clone()));
            session
                .events
                .push_back(Event::ArtifactUploadRequest(ArtifactUploadRequest {
                    id: a.id,
                    request,
                    filename: a.filename,
                    filepath: a.filepath,
                    answered: false,
                }));
        }
        session.next_artifact = (session.pending_artifacts.keys())
            .map(|id| id.saturating_add(1))
            .fold(session.next_artifact, u64::max);
        session
    }
}
