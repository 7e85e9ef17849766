//! The bytes read from clients that are not a whole frame yet, over all the connections of
//! a server, so that many large frames arriving at once cannot take the runtime's memory:
//! past the budget, only one connection at a time reads on beyond a small allowance.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

/// What a connection may always hold of an unfinished frame, whatever the others hold: small
/// requests are served during a flood of large frames.
pub const INBOUND_ALLOWANCE: usize = 64 << 10;

/// A server's budget of bytes read from clients and not yet a whole frame.
///
/// Below [`limit`](Self::limit) every connection reads freely. Over it, a connection that
/// holds more than [`INBOUND_ALLOWANCE`] of an unfinished frame stops reading (TCP's flow
/// control then holds its client back), except one, the first to find the budget spent,
/// which reads on until its frame is whole, so that the budget always drains. What the
/// server holds of unfinished frames is so bounded by the limit, one largest frame and the
/// allowance of each connection. Cloning shares the budget.
#[derive(Clone, Debug)]
pub struct InboundBudget(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    limit: usize,
    bytes: AtomicUsize,
    /// The connection that reads on over the budget (0: none).
    leader: AtomicU64,
    next_id: AtomicU64,
    waiting: Mutex<Vec<Waker>>,
}

impl InboundBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(Shared {
            limit,
            bytes: AtomicUsize::new(0),
            leader: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            waiting: Mutex::new(Vec::new()),
        }))
    }

    /// The budget, in bytes.
    pub fn limit(&self) -> usize {
        self.0.limit
    }

    /// Bytes held now of unfinished frames, over all connections.
    pub fn bytes(&self) -> usize {
        self.0.bytes.load(Ordering::Relaxed)
    }

    /// One connection's share.
    pub(super) fn share(&self) -> Arc<Held> {
        Arc::new(Held {
            budget: self.clone(),
            id: self.0.next_id.fetch_add(1, Ordering::Relaxed),
            bytes: AtomicUsize::new(0),
        })
    }

    fn wake_all(&self) {
        let waiting = std::mem::take(
            &mut *self
                .0
                .waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for w in waiting {
            w.wake();
        }
    }
}

/// What one connection holds of its unfinished frame, counted into its server's budget.
#[derive(Debug)]
pub(super) struct Held {
    budget: InboundBudget,
    id: u64,
    bytes: AtomicUsize,
}

impl Held {
    /// Whether the connection may read now; if not, `cx` is woken once it may try again.
    pub(super) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.may_read() {
            return Poll::Ready(());
        }
        {
            let mut waiting = (self.budget.0.waiting)
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
                waiting.push(cx.waker().clone());
            }
        }
        // Checked again once registered: a release in between is not lost.
        if self.may_read() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn may_read(&self) -> bool {
        let shared = &self.budget.0;
        if self.bytes.load(Ordering::Relaxed) <= INBOUND_ALLOWANCE
            || shared.bytes.load(Ordering::Relaxed) <= shared.limit
        {
            return true;
        }
        match shared
            .leader
            .compare_exchange(0, self.id, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(leader) => leader == self.id,
        }
    }

    /// Counts `n` bytes read.
    pub(super) fn add(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        self.budget.0.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// A frame is whole: what was held of it leaves the budget, and the waiting
    /// connections try again.
    pub(super) fn release(&self) {
        let held = self.bytes.swap(0, Ordering::Relaxed);
        let shared = &self.budget.0;
        let was_leader = shared
            .leader
            .compare_exchange(self.id, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if held == 0 && !was_leader {
            return;
        }
        shared.bytes.fetch_sub(held, Ordering::Relaxed);
        if was_leader || shared.bytes.load(Ordering::Relaxed) <= shared.limit {
            self.budget.wake_all();
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(held: &Held) -> Poll<()> {
        held.poll_room(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn over_the_budget_one_large_frame_reads_on_and_small_ones_always_do() {
        let budget = InboundBudget::new(1 << 20);
        let [a, b, small] = [budget.share(), budget.share(), budget.share()];
        a.add(700 << 10);
        b.add(700 << 10);
        assert_eq!(budget.bytes(), 1400 << 10);
        // Over the budget: the first to ask leads, the other waits.
        assert!(poll(&b).is_ready());
        assert!(poll(&a).is_pending());
        small.add(1000);
        assert!(poll(&small).is_ready(), "within the allowance");
        // The leader's frame is whole: the other may lead now.
        b.release();
        assert_eq!(budget.bytes(), (700 << 10) + 1000);
        assert!(poll(&a).is_ready());
        a.add(400 << 10);
        b.add(200 << 10);
        assert!(poll(&a).is_ready(), "a leads");
        assert!(poll(&b).is_pending());
        // A connection that goes away gives its part back.
        drop(a);
        assert_eq!(budget.bytes(), (200 << 10) + 1000);
        assert!(poll(&b).is_ready());
    }
}
