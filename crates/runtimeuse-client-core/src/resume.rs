//! The client's side of resumable sessions (the repository's `docs/resume.md`), sans-IO: what
//! the runtime granted, the count of its frames processed and when to acknowledge them, the
//! client's own frames kept until the runtime acknowledges them, and the reconnection schedule
//! within the grace period. [`Connection`](crate::connection::Connection) drives it; the
//! adapters connect and move frames.

use std::time::{Duration, Instant};

use crate::Error;
use runtimeuse_proto::resume::{
    self, DEFAULT_WINDOW, GRACE_HEADER, RECEIVED_HEADER, REFUSED_HEADER, Refusal, ReplayBuffer,
    SESSION_HEADER, SessionId, WINDOW_HEADER,
};
use runtimeuse_proto::{RequestId, SessionState, Transmit};
use tungstenite::http::HeaderMap;
use tungstenite::protocol::frame::coding::CloseCode;

/// The client acknowledges at least every this many frames of the runtime.
pub const ACK_EVERY: u64 = 64;
/// And once the bytes of the runtime's frames it has not acknowledged reach this fraction
/// (1/`ACK_WINDOW_FRACTION`) of the runtime's replay window: the runtime never has to wait
/// for an acknowledgement to free its window while the client keeps up.
pub const ACK_WINDOW_FRACTION: u64 = 4;
/// And at the latest this long after the first frame it has not acknowledged (a deadline of
/// [`Resumption::ack_deadline`], not a check made when the next frame arrives: a quiet
/// runtime is acknowledged too). QUIC's default `max_ack_delay`.
pub const ACK_DELAY: Duration = Duration::from_millis(25);
/// The first reconnection waits this long, each next one twice as long, up to
/// [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between two reconnections.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Reconnections stop after this many in a row were refused at the TCP level: nothing
/// listens at the runtime's address any more, so its sessions are gone with it.
pub const MAX_REFUSED: u32 = 3;

/// A resumable session's state on the client.
#[derive(Debug)]
pub struct Resumption {
    id: SessionId,
    grace: Duration,
    /// The runtime's data frames processed.
    received: u64,
    /// The count last acknowledged.
    acked: u64,
    /// Bytes of the runtime's frames processed since the last acknowledgement.
    unacked_bytes: u64,
    /// Acknowledge once this many bytes are unacknowledged (a fraction of the window).
    ack_bytes: u64,
    /// When an acknowledgement is due at the latest (a frame is unacknowledged).
    ack_due: Option<Instant>,
    /// The client's data frames, until the runtime acknowledges them.
    sent: ReplayBuffer<String>,
    /// Since when the connection is lost, and the reconnections tried.
    lost: Option<(Instant, u32)>,
    /// Reconnections refused at the TCP level in a row.
    refused: u32,
    /// A resumption not yet shown to the caller.
    reconnected: Option<(u32, u64)>,
    /// The count of the newest resume token handed out: acknowledgements go no further, so
    /// that the runtime keeps every frame its holder may need.
    pin: Option<u64>,
    /// Taken over from a resume token: the runtime may have processed frames of the client
    /// that its first owner sent after taking the token.
    adopted: bool,
}

impl Resumption {
    /// What a `101` granted: `Some` when its headers carry a session identifier.
    pub fn granted(headers: &HeaderMap) -> Option<Self> {
        let value = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let id = value(SESSION_HEADER)?.parse().ok()?;
        let grace = value(GRACE_HEADER)
            .and_then(|ms| ms.trim().parse().ok())
            .map_or(Duration::ZERO, Duration::from_millis);
        let window = value(WINDOW_HEADER)
            .and_then(|bytes| bytes.trim().parse().ok())
            .unwrap_or(DEFAULT_WINDOW);
        Some(Self {
            id,
            grace,
            received: 0,
            acked: 0,
            unacked_bytes: 0,
            ack_bytes: ack_threshold(window),
            ack_due: None,
            sent: ReplayBuffer::new(),
            lost: None,
            refused: 0,
            reconnected: None,
            pin: None,
            adopted: false,
        })
    }

    /// How long the runtime keeps the session without a connection.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// The runtime's data frames processed.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// A frame goes out: a data frame is kept until the runtime acknowledges it.
    pub fn on_transmit(&mut self, t: &Transmit) {
        if let Transmit::Text(text) = t {
            self.sent.push(text.clone(), text.len());
        }
    }

    /// A data frame of the runtime, `len` bytes, was processed at `now`. Returns the payload
    /// of an acknowledgement ping to send at once, when one is due by count or by bytes;
    /// otherwise one is due by [`ack_deadline`](Self::ack_deadline) at the latest.
    pub fn on_received(&mut self, now: Instant, len: usize) -> Option<Vec<u8>> {
        self.received += 1;
        if self.pin.is_some() {
            // Held at the token's count: nothing new to acknowledge.
            return None;
        }
        self.unacked_bytes = self
            .unacked_bytes
            .saturating_add(u64::try_from(len).unwrap_or(u64::MAX));
        let due = self.received - self.acked >= ACK_EVERY || self.unacked_bytes >= self.ack_bytes;
        if due {
            return Some(self.ack_now());
        }
        self.ack_due.get_or_insert(now + ACK_DELAY);
        None
    }

    /// When an acknowledgement is due at the latest: [`ACK_DELAY`] after the first frame not
    /// acknowledged; `None` when nothing is owed.
    pub fn ack_deadline(&self) -> Option<Instant> {
        self.ack_due
    }

    /// The timer fired at `now`: the payload of the acknowledgement due by then, if any.
    pub fn on_timeout(&mut self, now: Instant) -> Option<Vec<u8>> {
        let due = self.ack_due.is_some_and(|at| at <= now);
        due.then(|| self.ack_now())
    }

    /// The payload of an acknowledgement of every frame processed so far (or of the pinned
    /// count, under a resume token).
    pub fn ack_now(&mut self) -> Vec<u8> {
        self.acked = self.pin.unwrap_or(self.received);
        self.unacked_bytes = 0;
        self.ack_due = None;
        resume::ack_payload(self.acked)
    }

    /// A ping of the runtime arrived: an acknowledgement forgets the frames it covers.
    pub fn on_ping(&mut self, payload: &[u8]) {
        if let Some(count) = resume::parse_ack(payload) {
            self.sent.ack(count);
        }
    }

    /// The connection ended (with this close code from the runtime, if any) or failed, while
    /// the session was `ending` or not: whether to reconnect. Not when the session was ending,
    /// nor after a close the runtime meant (1000, 4000, 4009). Reconnections start at the
    /// first loss.
    pub fn connection_lost(&mut self, ending: bool, code: Option<CloseCode>, now: Instant) -> bool {
        if ending || !resumable_after(code) {
            return false;
        }
        if self.lost.is_none() {
            tracing::info!("connection lost; resuming the session");
            self.lost = Some((now, 0));
        }
        true
    }

    /// A reconnection failed with `e` (several refused TCP connections in a row end them).
    pub fn failed(&mut self, e: &Error) {
        tracing::debug!(error = %e, attempt = self.attempts(), "reconnection failed");
        self.refused = if connect_refused(e) {
            self.refused + 1
        } else {
            0
        };
    }

    /// A resumption that succeeded, once, for the caller's event stream: the attempts it took
    /// and the runtime's frames processed then.
    pub fn take_reconnected(&mut self) -> Option<(u32, u64)> {
        self.reconnected.take()
    }

    /// Whether the connection is lost and not resumed yet.
    pub fn is_lost(&self) -> bool {
        self.lost.is_some()
    }

    /// How long to wait before the next reconnection, counting it; `None` once the grace
    /// period (from the loss) is over: the session is gone.
    pub fn next_attempt(&mut self, now: Instant) -> Option<Duration> {
        if self.refused >= MAX_REFUSED {
            return None;
        }
        let (since, attempts) = self.lost.as_mut()?;
        let deadline = *since + self.grace;
        if now >= deadline {
            return None;
        }
        let wait = match *attempts {
            0 => Duration::ZERO,
            n => FIRST_BACKOFF
                .saturating_mul(1 << (n - 1).min(16))
                .min(MAX_BACKOFF),
        };
        *attempts += 1;
        Some(wait.min(deadline - now))
    }

    /// The reconnections tried since the loss.
    pub fn attempts(&self) -> u32 {
        self.lost.map_or(0, |(_, n)| n)
    }

    /// The headers of a resuming handshake.
    pub fn resume_headers(&self) -> [(&'static str, String); 2] {
        [
            (SESSION_HEADER, self.id.to_string()),
            (RECEIVED_HEADER, self.received.to_string()),
        ]
    }

    /// The runtime took the session back and processed `runtime_received` of the client's
    /// frames: returns the frames to send again, in order.
    ///
    /// # Errors
    ///
    /// [`Refusal::OutOfWindow`] when the count is not one the client can serve.
    pub fn resumed(&mut self, runtime_received: u64) -> Result<Vec<String>, Refusal> {
        let adopted = std::mem::take(&mut self.adopted);
        if adopted && runtime_received > self.sent.sent() {
            // The token's first owner sent more after taking it, and the runtime processed
            // it: nothing of this process is missing.
            self.sent = ReplayBuffer::restore(runtime_received, []);
        }
        let frames = self.sent.replay_after(runtime_received)?;
        // Taking a session over is a new session to the caller, not a reconnection.
        if !adopted {
            self.reconnected = Some((self.attempts(), self.received));
        }
        self.lost = None;
        self.refused = 0;
        // The runtime replays from the count the handshake named: acknowledged.
        self.acked = self.pin.unwrap_or(self.received);
        self.unacked_bytes = 0;
        self.ack_due = None;
        Ok(frames)
    }

    /// Why a resuming handshake was refused, from its response's headers (`None` when it does
    /// not say: another failure, worth another try).
    pub fn refusal(headers: &HeaderMap) -> Option<Refusal> {
        let token = headers.get(REFUSED_HEADER)?.to_str().ok()?;
        Refusal::from_token(token)
    }
}

/// A resumable session written down, for another process to take it over
/// (the adapters' `Client::resume`): the runtime's URL, the session's identifier and grace
/// period, the counts of frames on both sides, the client's frames the runtime may not have
/// processed, and the request layer's state ([`SessionState`]: the request in flight).
///
/// Serialize it with serde (JSON, say) and store it where the next process finds it. **The
/// session identifier in it is a secret**: whoever holds the token (and the runtime's token,
/// when one is set) can take the session over. `Debug` does not show it.
///
/// Taking a token pins the session: the client acknowledges the runtime's frames no further
/// than the newest token's count, so that the runtime keeps every frame its holder will ask
/// for. Those frames count against the runtime's output budget and replay limit: a session
/// whose newest token lags far behind stalls its stream (or stops being resumable), so take a
/// new token each time you store one.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct ResumeToken {
    /// The format's version.
    v: u32,
    url: String,
    session: String,
    grace_ms: u64,
    /// The runtime's data frames processed.
    received: u64,
    /// The client's data frames the runtime acknowledged, then those it did not.
    sent_acked: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    unacked: Vec<String>,
    state: SessionState,
    /// The runtime's replay window in bytes, as it announced it (absent in tokens of clients
    /// that did not keep it: [`DEFAULT_WINDOW`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    window: Option<u64>,
}

/// The version of [`ResumeToken`]'s format.
const TOKEN_VERSION: u32 = 1;

impl std::fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumeToken")
            .field("url", &self.url)
            .field("session", &"<secret>")
            .field("received", &self.received)
            .field("unacked", &self.unacked.len())
            .field("request", &self.state.request())
            .finish_non_exhaustive()
    }
}

impl ResumeToken {
    /// The runtime's URL: where the session lives.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The request in flight when the token was taken, if any.
    pub fn request(&self) -> Option<RequestId> {
        self.state.request()
    }

    /// How many of the runtime's frames the token's owner had processed: a session taken
    /// over from it receives every frame after these.
    pub fn received(&self) -> u64 {
        self.received
    }
}

impl Resumption {
    /// A resume token of this session at this point, with the request layer's `state`: from
    /// now on acknowledgements go no further than its count (see [`ResumeToken`]).
    pub fn token(&mut self, url: &str, state: SessionState) -> ResumeToken {
        self.pin = Some(self.received);
        ResumeToken {
            v: TOKEN_VERSION,
            url: url.to_owned(),
            session: self.id.to_string(),
            grace_ms: u64::try_from(self.grace.as_millis()).unwrap_or(u64::MAX),
            received: self.received,
            sent_acked: self.sent.acked(),
            unacked: self.sent.frames().cloned().collect(),
            state,
            window: Some(self.ack_bytes.saturating_mul(ACK_WINDOW_FRACTION)),
        }
    }

    /// The client side of a session taken over from `token`, lost (to be resumed) as of
    /// `now`, and the request layer's state.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a token of another format version or with a malformed session
    /// identifier.
    pub fn from_token(token: ResumeToken, now: Instant) -> Result<(Self, SessionState), Error> {
        if token.v != TOKEN_VERSION {
            return Err(Error::Config(format!(
                "resume token of format {} (this client reads {TOKEN_VERSION})",
                token.v
            )));
        }
        let id = token
            .session
            .parse()
            .map_err(|_| Error::Config("resume token with a malformed session id".into()))?;
        let unacked = token.unacked.into_iter().map(|f| {
            let len = f.len();
            (f, len)
        });
        let resumption = Self {
            id,
            grace: Duration::from_millis(token.grace_ms),
            received: token.received,
            acked: token.received,
            unacked_bytes: 0,
            ack_bytes: ack_threshold(token.window.unwrap_or(DEFAULT_WINDOW)),
            ack_due: None,
            sent: ReplayBuffer::restore(token.sent_acked, unacked),
            lost: Some((now, 0)),
            refused: 0,
            reconnected: None,
            pin: None,
            adopted: true,
        };
        Ok((resumption, token.state))
    }
}

/// How one reconnection went; `S` is the adapter's socket.
#[derive(Debug)]
pub enum Attempt<S> {
    /// The runtime took the session back; it processed this many of the client's frames.
    Resumed(S, u64),
    /// The runtime refused: the session is gone.
    Refused(Refusal),
    /// It did not work this time (the runtime unreachable, a connection cut short).
    Failed(Error),
}

impl<S> Attempt<S> {
    /// A resuming connection failed before its `101`: a refusal ends the session (so does a
    /// refused token: trying again would not change it); anything else is worth another try.
    pub fn from_error(e: Error) -> Self {
        match e {
            Error::WebSocket(tungstenite::Error::Http(response)) => {
                let refusal =
                    Resumption::refusal(response.headers())
                        .or((response.status().as_u16() == 401).then_some(Refusal::UnknownSession));
                match refusal {
                    Some(refusal) => Self::Refused(refusal),
                    None => Self::Failed(Error::WebSocket(tungstenite::Error::Http(response))),
                }
            }
            e => Self::Failed(e),
        }
    }

    /// What the first frame after a resuming `101` says: the count of the client's frames the
    /// runtime processed, a refusal, or nothing usable (worth another try).
    pub fn from_first_frame(
        socket: S,
        first: Result<tungstenite::Message, tungstenite::Error>,
    ) -> Self {
        match first {
            Ok(tungstenite::Message::Ping(payload)) => match resume::parse_ack(&payload) {
                Some(count) => Self::Resumed(socket, count),
                None => Self::Failed(Error::ConnectionClosed),
            },
            Ok(tungstenite::Message::Close(Some(frame)))
                if u16::from(frame.code) == resume::CLOSE_REFUSED =>
            {
                Self::Refused(Refusal::from_token(&frame.reason).unwrap_or(Refusal::OutOfWindow))
            }
            Ok(_) => Self::Failed(Error::ConnectionClosed),
            Err(e) => Self::Failed(Error::WebSocket(e)),
        }
    }
}

/// The unacknowledged bytes that make an acknowledgement due, for a runtime's replay window
/// of `window` bytes (at least one byte: a window of 0 acknowledges every frame).
fn ack_threshold(window: u64) -> u64 {
    (window / ACK_WINDOW_FRACTION).max(1)
}

/// Whether connecting failed because nothing listens at the runtime's address (what
/// [`Resumption::failed`] counts).
fn connect_refused(e: &Error) -> bool {
    matches!(e, Error::Connect(io) if io.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// Whether a connection that ended with this close code from the runtime (if any) may be
/// resumed: not after a normal close (the runtime ended the session) nor after another
/// connection took the session over or the runtime refused this one.
fn resumable_after(code: Option<CloseCode>) -> bool {
    match code {
        Some(CloseCode::Normal) => false,
        Some(code) => {
            let code = u16::from(code);
            code != resume::CLOSE_SUPERSEDED && code != resume::CLOSE_REFUSED
        }
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::http::HeaderValue;

    fn granted() -> Resumption {
        let mut headers = HeaderMap::new();
        headers.insert(
            SESSION_HEADER,
            HeaderValue::from_static("0123456789abcdef0123456789abcdef"),
        );
        headers.insert(GRACE_HEADER, HeaderValue::from_static("60000"));
        headers.insert(WINDOW_HEADER, HeaderValue::from_static("4000"));
        Resumption::granted(&headers).expect("granted")
    }

    #[test]
    fn nothing_is_granted_without_the_header() {
        assert!(Resumption::granted(&HeaderMap::new()).is_none());
        let r = granted();
        assert_eq!(r.grace(), Duration::from_secs(60));
        assert_eq!(r.resume_headers()[1], (RECEIVED_HEADER, "0".to_owned()));
    }

    #[test]
    fn frames_are_acknowledged_every_64() {
        let t0 = Instant::now();
        let mut r = granted();
        let acks: Vec<_> = (0..130).filter_map(|_| r.on_received(t0, 1)).collect();
        assert_eq!(
            acks,
            vec![resume::ack_payload(64), resume::ack_payload(128)]
        );
    }

    #[test]
    fn frames_are_acknowledged_by_a_quarter_of_the_window() {
        let t0 = Instant::now();
        let mut r = granted();
        // A window of 4000 bytes: due at 1000 unacknowledged.
        assert_eq!(r.on_received(t0, 600), None);
        assert_eq!(r.on_received(t0, 399), None);
        assert_eq!(r.on_received(t0, 1), Some(resume::ack_payload(3)));
        assert_eq!(r.ack_deadline(), None, "nothing owed after it");
        // A frame larger than the threshold is acknowledged at once.
        assert_eq!(r.on_received(t0, 75_000), Some(resume::ack_payload(4)));
    }

    #[test]
    fn a_frame_is_acknowledged_within_the_delay_whatever_arrives_next() {
        let t0 = Instant::now();
        let mut r = granted();
        assert_eq!(r.ack_deadline(), None);
        assert_eq!(r.on_received(t0, 10), None);
        assert_eq!(r.on_received(t0 + ms(10), 10), None);
        // The deadline counts from the first frame not acknowledged.
        assert_eq!(r.ack_deadline(), Some(t0 + ACK_DELAY));
        assert_eq!(r.on_timeout(t0 + ms(24)), None, "early: nothing");
        assert_eq!(r.on_timeout(t0 + ACK_DELAY), Some(resume::ack_payload(2)));
        assert_eq!(r.ack_deadline(), None);
        assert_eq!(r.on_timeout(t0 + ms(500)), None, "nothing owed");
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn what_the_runtime_did_not_acknowledge_is_sent_again() {
        let t0 = Instant::now();
        let mut r = granted();
        for text in ["a", "b", "c"] {
            r.on_transmit(&Transmit::Text(text.to_owned()));
        }
        r.on_transmit(&Transmit::Ping);
        r.on_ping(&resume::ack_payload(1));
        r.on_ping(b"not an ack");
        assert!(r.connection_lost(false, None, t0));
        assert_eq!(r.resumed(2), Ok(vec!["c".to_owned()]));
        assert!(!r.is_lost());
        assert_eq!(r.take_reconnected(), Some((0, 0)));
        assert_eq!(r.take_reconnected(), None, "shown once");
        assert!(r.connection_lost(false, None, t0));
        assert_eq!(
            r.resumed(0),
            Err(Refusal::OutOfWindow),
            "frame 1 was acknowledged"
        );
    }

    #[test]
    fn reconnections_back_off_within_the_grace() {
        let t0 = Instant::now();
        let mut r = granted();
        assert_eq!(r.next_attempt(t0), None, "not lost");
        assert!(
            !r.connection_lost(true, None, t0),
            "not while the session ends"
        );
        assert!(
            !r.connection_lost(false, Some(CloseCode::Normal), t0),
            "not after a close 1000"
        );
        assert!(!r.connection_lost(false, Some(CloseCode::from(resume::CLOSE_SUPERSEDED)), t0));
        assert_eq!(r.next_attempt(t0), None);
        assert!(r.connection_lost(false, Some(CloseCode::Away), t0));
        let waits: Vec<_> = (0..8).map(|_| r.next_attempt(t0).unwrap()).collect();
        assert_eq!(waits[0], Duration::ZERO);
        assert_eq!(waits[1], FIRST_BACKOFF);
        assert_eq!(waits[2], FIRST_BACKOFF * 2);
        assert_eq!(waits[7], MAX_BACKOFF);
        assert_eq!(r.attempts(), 8);
        let late = t0 + Duration::from_secs(59) + Duration::from_millis(900);
        assert_eq!(
            r.next_attempt(late),
            Some(Duration::from_millis(100)),
            "no wait past the grace"
        );
        assert_eq!(r.next_attempt(t0 + Duration::from_secs(60)), None);
    }

    #[test]
    fn a_runtime_that_refuses_connections_is_given_up_at_once() {
        let t0 = Instant::now();
        let mut r = granted();
        let refused = || Error::Connect(std::io::ErrorKind::ConnectionRefused.into());
        assert!(r.connection_lost(false, None, t0));
        for _ in 0..MAX_REFUSED - 1 {
            assert!(r.next_attempt(t0).is_some());
            r.failed(&refused());
        }
        r.failed(&Error::ConnectionClosed);
        assert!(
            r.next_attempt(t0).is_some(),
            "a failure of another kind resets the count"
        );
        for _ in 0..MAX_REFUSED {
            r.failed(&refused());
        }
        assert_eq!(r.next_attempt(t0), None);
    }

    #[test]
    fn a_token_pins_the_acknowledgements_and_carries_the_counts() {
        let t0 = Instant::now();
        let mut r = granted();
        for text in ["a", "b"] {
            r.on_transmit(&Transmit::Text(text.to_owned()));
        }
        r.on_ping(&resume::ack_payload(1));
        for _ in 0..10 {
            r.on_received(t0, 1);
        }
        let state = runtimeuse_proto::Session::new(runtimeuse_proto::Config::default(), t0)
            .export(t0)
            .expect("export");
        let token = r.token("ws://127.0.0.1:1", state);
        assert!(
            !format!("{token:?}").contains("0123456789abcdef"),
            "the id is secret"
        );
        // Past the token, nothing is acknowledged beyond its count.
        let acks: Vec<_> = (0..200)
            .filter_map(|_| r.on_received(t0, 100_000))
            .collect();
        assert!(acks.is_empty());
        // The ten frames before the token are still owed; no more than them.
        assert_eq!(r.on_timeout(t0 + ACK_DELAY), Some(resume::ack_payload(10)));
        assert_eq!(
            r.on_timeout(t0 + ACK_DELAY * 2),
            None,
            "nothing owed past the pin"
        );
        assert_eq!(r.ack_now(), resume::ack_payload(10));

        let json = serde_json::to_string(&token).expect("serialize");
        let token: ResumeToken = serde_json::from_str(&json).expect("deserialize");
        assert_eq!((token.url(), token.received()), ("ws://127.0.0.1:1", 10));
        let (mut taken, _) = Resumption::from_token(token.clone(), t0).expect("from token");
        assert!(taken.is_lost());
        assert_eq!(
            taken.resume_headers()[1],
            (RECEIVED_HEADER, "10".to_owned())
        );
        assert_eq!(taken.resumed(1), Ok(vec!["b".to_owned()]), "b again");
        assert_eq!(
            taken.take_reconnected(),
            None,
            "a take-over is no reconnection"
        );
        // The first owner sent more, which the runtime processed.
        let (mut taken, _) = Resumption::from_token(token.clone(), t0).expect("from token");
        assert_eq!(taken.resumed(5), Ok(vec![]));
        taken.on_transmit(&Transmit::Text("c".to_owned()));
        assert!(taken.connection_lost(false, None, t0));
        assert_eq!(
            taken.resumed(5),
            Ok(vec!["c".to_owned()]),
            "counted on from 5"
        );

        let mut bad: serde_json::Value = serde_json::from_str(&json).expect("json");
        bad["v"] = 2.into();
        let bad: ResumeToken = serde_json::from_value(bad).expect("token");
        assert!(matches!(
            Resumption::from_token(bad, t0),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn refusals_are_read_from_the_response() {
        let mut headers = HeaderMap::new();
        assert_eq!(Resumption::refusal(&headers), None);
        headers.insert(REFUSED_HEADER, HeaderValue::from_static("expired"));
        assert_eq!(Resumption::refusal(&headers), Some(Refusal::Expired));
    }
}
