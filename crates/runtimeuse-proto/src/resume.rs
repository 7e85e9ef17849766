//! Resumable sessions: the names of the handshake extension and its pure bookkeeping. The
//! extension itself is written down in the repository's `docs/resume.md`.
//!
//! A client asks for resumption with [`RESUME_HEADER`]; a runtime that grants it answers with a
//! [`SessionId`] in [`SESSION_HEADER`]. Each side counts the data frames it has processed from
//! the other (control frames are not counted) and acknowledges them with a WebSocket ping whose
//! payload is [`ack_payload`]. A client that lost its connection opens a new one naming the
//! session and the count of runtime frames it processed ([`RECEIVED_HEADER`]); the runtime
//! first pings its own count, then replays the frames the client missed from its
//! [`ReplayBuffer`], then goes on live. Nothing here does I/O or reads a clock.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

/// Request header of a client that asks for resumption; its value is [`RESUME_VERSION`].
pub const RESUME_HEADER: &str = "runtimeuse-resume";
/// The extension's version, the value of [`RESUME_HEADER`].
pub const RESUME_VERSION: &str = "1";
/// Response header carrying the granted [`SessionId`]; request header of a resuming client.
pub const SESSION_HEADER: &str = "runtimeuse-session";
/// Request header of a resuming client: how many of the runtime's data frames it processed.
pub const RECEIVED_HEADER: &str = "runtimeuse-received";
/// Response header of a granting runtime: how long, in milliseconds, a session outlives its
/// connection.
pub const GRACE_HEADER: &str = "runtimeuse-resume-grace-ms";
/// Response header of a granting runtime: its replay window, the bytes of unacknowledged
/// frames it holds for the client before what produces them waits. A client acknowledges well
/// before that much is outstanding (`docs/resume.md`, "Acknowledgements"); absent, a client
/// assumes [`DEFAULT_WINDOW`].
pub const WINDOW_HEADER: &str = "runtimeuse-resume-window";
/// The replay window a client assumes when the runtime announces none: what this project's
/// runtime holds by default (1 MiB).
pub const DEFAULT_WINDOW: u64 = 1 << 20;
/// Response header of a refused resumption: the [`Refusal`]'s token.
pub const REFUSED_HEADER: &str = "runtimeuse-resume-refused";

/// The close code a runtime sends an older connection of a session another connection resumed.
pub const CLOSE_SUPERSEDED: u16 = 4000;
/// The close code of a resumption refused after the handshake (the counts moved meanwhile).
pub const CLOSE_REFUSED: u16 = 4009;

/// The payload prefix of an acknowledgement ping: `ack <count>`.
const ACK_PREFIX: &[u8] = b"ack ";

/// The payload of a ping that acknowledges `count` processed data frames of the peer.
pub fn ack_payload(count: u64) -> Vec<u8> {
    let mut payload = ACK_PREFIX.to_vec();
    payload.extend_from_slice(count.to_string().as_bytes());
    payload
}

/// The count a ping payload acknowledges, if it is an acknowledgement (`ack <decimal>`).
pub fn parse_ack(payload: &[u8]) -> Option<u64> {
    parse_count(payload.strip_prefix(ACK_PREFIX)?)
}

/// A count as the extension writes it (an acknowledgement's, [`RECEIVED_HEADER`]'s): ASCII
/// decimal digits only, no sign, no space, at most 20 of them, within `u64`.
pub fn parse_count(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A resumable session's identifier: 128 bits, from the operating system's random source (the
/// adapter draws them; this crate does no I/O), written as 32 lowercase hex digits.
///
/// Comparisons are in constant time ([`SessionId::matches`]; `==` too).
#[derive(Clone, Copy, Eq)]
pub struct SessionId([u8; 16]);

impl SessionId {
    /// The identifier of these random bytes.
    pub fn from_random(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// Whether `other` is this identifier, compared in constant time.
    pub fn matches(&self, other: &SessionId) -> bool {
        let diff = self
            .0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0
    }
}

impl PartialEq for SessionId {
    fn eq(&self, other: &Self) -> bool {
        self.matches(other)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SessionId {
    /// Only a prefix: the identifier is a secret of the session's client.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

/// A text that is not a session identifier (32 hex digits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a session identifier (32 hex digits)")]
pub struct BadSessionId;

impl FromStr for SessionId {
    type Err = BadSessionId;

    fn from_str(s: &str) -> Result<Self, BadSessionId> {
        let s = s.trim().as_bytes();
        if s.len() != 32 {
            return Err(BadSessionId);
        }
        let mut out = [0u8; 16];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            let hex = |c: u8| (c as char).to_digit(16).ok_or(BadSessionId);
            out[i] = u8::try_from(hex(pair[0])? * 16 + hex(pair[1])?).map_err(|_| BadSessionId)?;
        }
        Ok(Self(out))
    }
}

/// Why a runtime refused a resumption. Sent as an HTTP status with [`REFUSED_HEADER`] set to
/// [`token`](Self::token) (and the [`message`](Self::message) as the body), or, when the
/// counts moved after the handshake, as a close frame with code [`CLOSE_REFUSED`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No session has this identifier (or the runtime restarted).
    #[error("no session has this identifier")]
    UnknownSession,
    /// The session was not resumed within the grace period; its request was cancelled.
    #[error("the session was not resumed in time; its request was cancelled")]
    Expired,
    /// What the session sent while no client was attached outgrew the replay buffer; its
    /// request was cancelled.
    #[error("the replay buffer overflowed while no client was attached; the request was cancelled")]
    Overflowed,
    /// The count of frames the client says it processed is outside what the runtime still
    /// holds (below what was acknowledged, or above what was sent).
    #[error("the count of received frames is outside the replay window")]
    OutOfWindow,
    /// The session ended (its end was confirmed, or its client closed it normally).
    #[error("the session has ended")]
    Ended,
}

impl Refusal {
    /// Every refusal, for lookups by token.
    pub const ALL: [Refusal; 5] = [
        Self::UnknownSession,
        Self::Expired,
        Self::Overflowed,
        Self::OutOfWindow,
        Self::Ended,
    ];

    /// The HTTP status of the refused handshake.
    pub fn status(self) -> u16 {
        match self {
            Self::UnknownSession => 404,
            Self::Expired | Self::Overflowed | Self::Ended => 410,
            Self::OutOfWindow => 409,
        }
    }

    /// The value of [`REFUSED_HEADER`].
    pub fn token(self) -> &'static str {
        match self {
            Self::UnknownSession => "unknown-session",
            Self::Expired => "expired",
            Self::Overflowed => "replay-overflow",
            Self::OutOfWindow => "out-of-window",
            Self::Ended => "ended",
        }
    }

    /// The refusal a [`token`](Self::token) names.
    pub fn from_token(token: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.token() == token.trim())
    }

    /// A sentence for the body of the refusal.
    pub fn message(self) -> String {
        self.to_string()
    }
}

/// The data frames one side sent and the other has not acknowledged, numbered from 1 in the
/// order sent: what a resumption replays. `F` is the adapter's frame type; the buffer counts
/// the bytes the adapter says each frame holds.
#[derive(Debug)]
pub struct ReplayBuffer<F> {
    frames: VecDeque<(F, usize)>,
    /// Frames sent since the session started (the number of the newest).
    sent: u64,
    /// Frames the peer acknowledged (all numbered up to this one are gone).
    acked: u64,
    bytes: usize,
}

impl<F> Default for ReplayBuffer<F> {
    fn default() -> Self {
        Self {
            frames: VecDeque::new(),
            sent: 0,
            acked: 0,
            bytes: 0,
        }
    }
}

impl<F: Clone> ReplayBuffer<F> {
    /// An empty buffer: nothing sent.
    pub fn new() -> Self {
        Self::default()
    }

    /// A buffer that goes on from another's (in another process, say): `acked` frames were
    /// acknowledged, and these (with their lengths) were sent after them and not yet.
    pub fn restore(acked: u64, frames: impl IntoIterator<Item = (F, usize)>) -> Self {
        let frames: VecDeque<_> = frames.into_iter().collect();
        let bytes = frames.iter().map(|(_, len)| *len).sum();
        let sent = acked.saturating_add(u64::try_from(frames.len()).unwrap_or(u64::MAX));
        Self {
            frames,
            sent,
            acked,
            bytes,
        }
    }

    /// The frames held, oldest first (numbered from [`acked`](Self::acked) + 1).
    pub fn frames(&self) -> impl ExactSizeIterator<Item = &F> {
        self.frames.iter().map(|(f, _)| f)
    }

    /// Keeps a frame that goes out now (of `len` bytes); returns its number.
    pub fn push(&mut self, frame: F, len: usize) -> u64 {
        self.sent += 1;
        self.bytes += len;
        self.frames.push_back((frame, len));
        self.sent
    }

    /// The peer processed the frames up to `count`: they are forgotten. A count above what
    /// was sent, or below an earlier acknowledgement, changes nothing (and returns `false`).
    pub fn ack(&mut self, count: u64) -> bool {
        if count > self.sent || count < self.acked {
            return false;
        }
        while self.acked < count {
            if let Some((_, len)) = self.frames.pop_front() {
                self.bytes -= len;
            }
            self.acked += 1;
        }
        true
    }

    /// The frames after the first `received`, for a peer that processed that many: they go
    /// out again, in order. The ones up to `received` are forgotten.
    ///
    /// # Errors
    ///
    /// [`Refusal::OutOfWindow`] when `received` is below what was acknowledged (those frames
    /// are gone) or above what was sent.
    pub fn replay_after(&mut self, received: u64) -> Result<Vec<F>, Refusal> {
        if !self.ack(received) {
            return Err(Refusal::OutOfWindow);
        }
        Ok(self.frames.iter().map(|(f, _)| f.clone()).collect())
    }

    /// Whether a peer that processed `received` frames can be served from this buffer.
    pub fn in_window(&self, received: u64) -> bool {
        (self.acked..=self.sent).contains(&received)
    }

    /// Frames sent since the session started.
    #[inline]
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Frames the peer acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Bytes of the frames held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether no frame is held.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_round_trip_and_refuse_anything_else() {
        for n in [0, 1, 64, u64::MAX] {
            assert_eq!(parse_ack(&ack_payload(n)), Some(n));
        }
        for bad in [
            &b""[..],
            b"ack",
            b"ack ",
            b"ack -1",
            b"ack 1 ",
            b"ACK 1",
            b"ack 99999999999999999999999",
        ] {
            assert_eq!(parse_ack(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn session_ids_print_and_parse_as_32_hex_digits() {
        let id = SessionId::from_random([0xab; 16]);
        let text = id.to_string();
        assert_eq!(text, "ab".repeat(16));
        assert_eq!(text.parse::<SessionId>(), Ok(id));
        assert_eq!(text.to_uppercase().parse::<SessionId>(), Ok(id));
        for bad in [
            "",
            "ab",
            &"ab".repeat(17),
            &"zz".repeat(16),
            &"é".repeat(16),
        ] {
            assert_eq!(bad.parse::<SessionId>(), Err(BadSessionId), "{bad}");
        }
        assert!(!id.matches(&SessionId::from_random([0xac; 16])));
        assert!(
            !format!("{id:?}").contains(&text),
            "Debug must not show the whole id"
        );
    }

    #[test]
    fn refusals_map_to_statuses_and_tokens() {
        for r in Refusal::ALL {
            assert_eq!(Refusal::from_token(r.token()), Some(r));
            assert!(matches!(r.status(), 404 | 409 | 410));
        }
        assert_eq!(Refusal::from_token("nonsense"), None);
    }

    #[test]
    fn a_restored_buffer_goes_on_from_the_counts() {
        let mut b = ReplayBuffer::restore(5, [("f6", 2), ("f7", 3)]);
        assert_eq!((b.acked(), b.sent(), b.bytes(), b.len()), (5, 7, 5, 2));
        assert_eq!(b.frames().copied().collect::<Vec<_>>(), ["f6", "f7"]);
        assert_eq!(b.push("f8", 1), 8);
        assert_eq!(b.replay_after(6), Ok(vec!["f7", "f8"]));
        assert_eq!(b.replay_after(4), Err(Refusal::OutOfWindow));
    }

    #[test]
    fn the_replay_buffer_keeps_what_was_not_acknowledged() {
        let mut b = ReplayBuffer::new();
        for i in 1..=5u64 {
            assert_eq!(b.push(i, 10), i);
        }
        assert_eq!((b.sent(), b.acked(), b.bytes(), b.len()), (5, 0, 50, 5));
        assert!(b.ack(2));
        assert_eq!((b.acked(), b.bytes()), (2, 30));
        // Stale and future acks change nothing.
        assert!(!b.ack(1));
        assert!(!b.ack(6));
        assert_eq!(b.acked(), 2);
        // A peer that processed 3 gets 4 and 5 again.
        assert!(b.in_window(3) && !b.in_window(1) && !b.in_window(6));
        assert_eq!(b.replay_after(3), Ok(vec![4, 5]));
        assert_eq!(b.replay_after(1), Err(Refusal::OutOfWindow));
        assert_eq!(b.replay_after(6), Err(Refusal::OutOfWindow));
        assert_eq!(b.replay_after(5), Ok(vec![]));
        assert!(b.is_empty() && b.bytes() == 0);
    }
}
