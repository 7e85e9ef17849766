//! Who may hold a connection. Connections that have not completed their handshake (strangers
//! until they present the token) have a budget of their own, apart from the sessions', so
//! that strangers cannot lock token holders out: when it is full the oldest handshake in
//! progress that sent nothing yet is dropped for the new one, else the oldest (a client sends
//! its request with its connection and is done in a round trip; a socket left idle by a
//! flood sends nothing, and is older). Sessions have theirs; a resumption takes none (its
//! session holds one). Refusals are logged once a second at most, as a count.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

/// The two budgets of a runtime, and the log of what they refused.
#[derive(Debug)]
pub(crate) struct Admission {
    max_handshakes: usize,
    max_sessions: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// The handshakes in progress, oldest first.
    handshakes: VecDeque<Entry>,
    sessions: usize,
    refused: Refused,
}

/// A handshake in progress.
#[derive(Debug)]
struct Entry {
    id: u64,
    /// Dropped to stop it; sent to when it ends on its own.
    stop: oneshot::Sender<()>,
    /// Whether its peer sent anything yet.
    talking: bool,
}

/// Refusals since the last log line.
#[derive(Debug, Default)]
struct Refused {
    evicted: u64,
    sessions_full: u64,
    failed: u64,
    /// What the last refusal was, in words.
    last: String,
    last_log: Option<tokio::time::Instant>,
}

/// Why a connection was refused, for the summary in the log.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refusal {
    /// Every session slot was taken.
    SessionsFull,
    /// Its handshake failed: no request, no request in time, a wrong token, …
    Failed,
}

impl Admission {
    pub(crate) fn new(max_handshakes: usize, max_sessions: usize) -> Arc<Self> {
        Arc::new(Self {
            max_handshakes: max_handshakes.max(1),
            max_sessions: max_sessions.max(1),
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new connection's handshake begins, and what resolves when a newer one takes its
    /// place; the oldest in progress is dropped when the budget is full, or when `no_room`
    /// (the connections take every descriptor they may). `talking`: its peer sent something
    /// already. `None` when there is no room and no handshake to drop (every connection is a
    /// session).
    pub(crate) fn handshake(
        self: &Arc<Self>,
        no_room: bool,
        talking: bool,
    ) -> Option<(Handshake, Evicted)> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        if no_room || inner.handshakes.len() >= self.max_handshakes {
            let silent = inner.handshakes.iter().position(|e| !e.talking);
            let Some(oldest) = inner.handshakes.remove(silent.unwrap_or(0)) else {
                inner.refused.sessions_full += 1;
                "no descriptor left for a connection".clone_into(&mut inner.refused.last);
                self.summarize(&mut inner);
                return None;
            };
            drop(oldest);
            inner.refused.evicted += 1;
            "handshake dropped for a newer one".clone_into(&mut inner.refused.last);
            self.summarize(&mut inner);
        }
        inner.next_id += 1;
        let id = inner.next_id;
        inner.handshakes.push_back(Entry {
            id,
            stop: tx,
            talking,
        });
        let handshake = Handshake {
            admission: Arc::clone(self),
            id,
        };
        Some((handshake, Evicted(rx)))
    }

    /// Counts a refusal (`detail`: what happened, in words), and logs the counts once a
    /// second at most.
    pub(crate) fn refused(&self, why: Refusal, detail: &str) {
        let mut inner = self.lock();
        detail.clone_into(&mut inner.refused.last);
        match why {
            Refusal::SessionsFull => inner.refused.sessions_full += 1,
            Refusal::Failed => inner.refused.failed += 1,
        }
        self.summarize(&mut inner);
    }

    fn summarize(&self, inner: &mut Inner) {
        let now = tokio::time::Instant::now();
        let r = &mut inner.refused;
        if r.last_log.is_some_and(|t| now - t < Duration::from_secs(1)) {
            return;
        }
        tracing::info!(
            handshakes_dropped_for_newer = r.evicted,
            sessions_full = r.sessions_full,
            handshakes_failed = r.failed,
            max_handshakes = self.max_handshakes,
            max_sessions = self.max_sessions,
            last = %r.last,
            "connections refused since the last such line"
        );
        *r = Refused {
            last_log: Some(now),
            ..Refused::default()
        };
    }

    /// Handshakes in progress now.
    #[cfg(test)]
    fn handshakes(&self) -> usize {
        self.lock().handshakes.len()
    }
}

/// A connection whose handshake is in progress: it holds a place in the handshake budget
/// until it becomes a session or ends.
#[derive(Debug)]
pub(crate) struct Handshake {
    admission: Arc<Admission>,
    id: u64,
}

/// Resolves when a newer handshake took the place of its own.
#[derive(Debug)]
pub(crate) struct Evicted(oneshot::Receiver<()>);

impl Evicted {
    /// Waits until then (forever once the handshake ended on its own).
    pub(crate) async fn wait(self) {
        // Evicted: the sender was dropped; ended: it sent.
        if self.0.await.is_ok() {
            std::future::pending::<()>().await;
        }
    }
}

impl Handshake {
    /// Its peer sent something: it is dropped for a newer one only when every handshake in
    /// progress did.
    pub(crate) fn talking(&self) {
        let mut inner = self.admission.lock();
        if let Some(e) = inner.handshakes.iter_mut().find(|e| e.id == self.id) {
            e.talking = true;
        }
    }

    /// The handshake is done: a session slot, or `None` when all are taken. Its place in the
    /// handshake budget is freed either way.
    pub(crate) fn session(self) -> Option<Session> {
        let admission = Arc::clone(&self.admission);
        drop(self);
        let mut inner = admission.lock();
        if inner.sessions >= admission.max_sessions {
            return None;
        }
        inner.sessions += 1;
        drop(inner);
        Some(Session { admission })
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        let mut inner = self.admission.lock();
        if let Some(at) = inner.handshakes.iter().position(|e| e.id == self.id)
            && let Some(e) = inner.handshakes.remove(at)
        {
            let _ = e.stop.send(());
        }
    }
}

/// A session's slot, given back when dropped.
#[derive(Debug)]
pub(crate) struct Session {
    admission: Arc<Admission>,
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut inner = self.admission.lock();
        inner.sessions = inner.sessions.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_handshake_budget_drops_the_oldest_and_sessions_have_their_own() {
        let admission = Admission::new(2, 1);
        let handshake = |no_room| admission.handshake(no_room, false).expect("room");
        let (_first, first_out) = handshake(false);
        let (second, second_out) = handshake(false);
        let (third, _) = handshake(false);
        assert_eq!(admission.handshakes(), 2);
        // The oldest is told to go.
        tokio::time::timeout(Duration::from_secs(5), first_out.wait())
            .await
            .expect("the oldest handshake is dropped");
        // One that became a session is not told to go, ever.
        let session = second.session().expect("a session slot");
        assert_eq!(admission.handshakes(), 1);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), second_out.wait())
                .await
                .is_err()
        );
        // Sessions do not count against handshakes, nor the reverse.
        let (fourth, _) = handshake(false);
        let (fifth, _) = handshake(false);
        assert!(fourth.session().is_none(), "the one session slot is taken");
        drop(session);
        assert!(fifth.session().is_some());
        drop(third);
        assert_eq!(admission.handshakes(), 0);
        // Out of descriptors: the oldest handshake makes room, and without one, none is made.
        let (sixth, sixth_out) = handshake(false);
        let (_seventh, _) = handshake(true);
        tokio::time::timeout(Duration::from_secs(5), sixth_out.wait())
            .await
            .expect("dropped for room");
        drop(sixth);
        let (eighth, _) = handshake(false);
        let _session = eighth.session().expect("a session");
        drop(_seventh);
        assert!(admission.handshake(true, false).is_none());
        drop(_session);
        // A handshake whose peer talks is dropped after the silent ones, older or not.
        let (ninth, ninth_out) = handshake(false);
        ninth.talking();
        let (_tenth, tenth_out) = handshake(false);
        let (_eleventh, _) = handshake(false);
        tokio::time::timeout(Duration::from_secs(5), tenth_out.wait())
            .await
            .expect("the silent one goes first");
        assert!(
            tokio::time::timeout(Duration::from_millis(20), ninth_out.wait())
                .await
                .is_err()
        );
    }
}
