//! The session's timers: a closed set with a fixed table, the earliest one is the next timeout.

use std::time::Instant;

/// A timer of the client session.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// The overall timeout of the request in flight.
    Overall,
    /// No message received for the idle timeout.
    Idle,
    /// An `error_message` has waited long enough for a follow-up: it is the terminal.
    ErrorSettle,
    /// An abandoned request did not reach its terminal in time.
    Drain,
    /// The end-of-session handshake took too long.
    EndSession,
    /// Time to send a keepalive ping.
    KeepAlive,
    /// A keepalive ping went unanswered.
    PongDeadline,
}

impl Timer {
    const ALL: [Self; 7] = [
        Self::Overall,
        Self::Idle,
        Self::ErrorSettle,
        Self::Drain,
        Self::EndSession,
        Self::KeepAlive,
        Self::PongDeadline,
    ];

    /// Every timer, in the order an expired one is handled when several are: the connection's
    /// own deadlines first (they end the session), then the request's, then the keepalive.
    pub(crate) const BY_PRIORITY: [Self; 7] = [
        Self::PongDeadline,
        Self::EndSession,
        Self::ErrorSettle,
        Self::Drain,
        Self::Overall,
        Self::Idle,
        Self::KeepAlive,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// A deadline per [`Timer`], and the earliest one, recomputed when a timer changes (on the hot
/// path no timer changes, so the earliest is not searched per frame).
#[derive(Clone, Debug, Default)]
pub(crate) struct TimerTable {
    data: [Option<Instant>; 7],
    earliest: Option<(Timer, Instant)>,
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.data[timer.index()] = Some(at);
        self.recompute();
    }

    pub(crate) fn set_opt(&mut self, timer: Timer, at: Option<Instant>) {
        self.data[timer.index()] = at;
        self.recompute();
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.data[timer.index()]
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.data[timer.index()] = None;
        self.recompute();
    }

    pub(crate) fn stop_all(&mut self) {
        self.data = [None; 7];
        self.recompute();
    }

    /// The earliest deadline and its timer.
    #[inline]
    pub(crate) fn next(&self) -> Option<(Timer, Instant)> {
        self.earliest
    }

    fn recompute(&mut self) {
        let mut next: Option<(Timer, Instant)> = None;
        for (timer, at) in Timer::ALL.iter().zip(&self.data) {
            if let Some(at) = *at
                && next.is_none_or(|(_, n)| at < n)
            {
                next = Some((*timer, at));
            }
        }
        self.earliest = next;
    }

    /// Whether any timer is due at `now`.
    pub(crate) fn any_expired(&self, now: Instant) -> bool {
        self.next().is_some_and(|(_, at)| at <= now)
    }

    /// Whether `timer` is set and due at `now`.
    pub(crate) fn is_expired(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|at| at <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::Timer;

    #[test]
    fn the_priority_order_names_every_timer_once() {
        for timer in Timer::ALL {
            let n = Timer::BY_PRIORITY.iter().filter(|t| **t == timer).count();
            assert_eq!(n, 1, "{timer:?}");
        }
    }
}
