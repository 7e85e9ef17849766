//! Session configuration.

use std::time::Duration;

/// Settings of a client [`Session`](crate::Session).
///
/// `#[non_exhaustive]`: start from [`Config::default`] and change fields.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Largest frame accepted from the peer, in bytes. Default 64 MiB: results carry the
    /// collected stdout of commands.
    pub max_frame_size: usize,
    /// How long an `error_message` waits for a follow-up before it is taken as the request's
    /// terminal. A handler may send an error of its own before the runtime's terminal one; the
    /// two cannot be told apart by content, so the session waits this long. Default 200 ms.
    pub error_settle: Duration,
    /// How long a cancelled or timed-out request may take to reach its terminal message before
    /// the session gives up on it and ends (only matters when another request is waiting).
    /// Default 60 s.
    pub drain_timeout: Duration,
    /// How long the end-of-session handshake may take. Default 60 s.
    pub end_session_timeout: Duration,
    /// The idle limit of requests that set none of their own: a request fails with
    /// [`TimeoutKind::Idle`](crate::TimeoutKind::Idle) when nothing at all (heartbeats count)
    /// arrives from the runtime for this long. Runtimes send a heartbeat every 15 s while a
    /// request runs, so the default, 60 s, is four missed heartbeats: a runtime that keeps the
    /// connection (and its pings) alive but has stopped working cannot hang a call forever.
    /// `None` turns the default off (a request then waits as long as its own limits allow);
    /// `RequestOptions::idle_timeout(Duration::MAX)` turns it off for one request.
    pub request_idle_timeout: Option<Duration>,
    /// Interval between keepalive pings when nothing arrives; `None` disables them. Default 20 s.
    pub keepalive_interval: Option<Duration>,
    /// How long to wait for any frame after a ping before the peer counts as dead. Default 20 s.
    pub keepalive_timeout: Duration,
    /// Most artifact upload requests awaiting an answer; more are logged and dropped.
    /// Default 1024.
    pub max_pending_artifact_requests: usize,
    /// Also send the deprecated single `artifacts_dir` field (the first directory), for runtimes
    /// older than 0.15. Default `false`.
    pub legacy_artifacts_dir: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_frame_size: 64 << 20,
            error_settle: Duration::from_millis(200),
            drain_timeout: Duration::from_secs(60),
            end_session_timeout: Duration::from_secs(60),
            request_idle_timeout: Some(Duration::from_secs(60)),
            keepalive_interval: Some(Duration::from_secs(20)),
            keepalive_timeout: Duration::from_secs(20),
            max_pending_artifact_requests: 1024,
            legacy_artifacts_dir: false,
        }
    }
}
