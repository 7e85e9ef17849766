//! The bytes a connection holds for its client, counted where they are made and where the
//! socket takes them, so that the tasks producing them can wait for room.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// A live count of bytes waiting to go to one client, or to all clients of a server.
///
/// A [`RuntimeConnection`](super::RuntimeConnection) counts the frames it holds that the
/// socket has not taken yet; the tasks that make output for it may count what they hand it
/// (add when sent, subtract when received), and [`wait_until`](Self::wait_until) the count
/// leaves them room. A backlog made [`within`](Self::within) a total counts into that total
/// too: a server's total over all its connections. Cloning shares the count; when the last
/// clone of a connection's backlog is dropped, whatever it still counts leaves the total.
#[derive(Clone, Debug, Default)]
pub struct Backlog(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    bytes: AtomicUsize,
    room: Notify,
    /// Waiters are woken once the count drops below this (0: nobody waits), not at every
    /// byte that leaves: a producer held at a limit would otherwise run once per frame sent.
    wake_below: AtomicUsize,
    total: Option<Backlog>,
}

impl Backlog {
    /// A backlog of its own, counting from zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// A backlog whose bytes also count into `total`.
    pub fn within(total: &Backlog) -> Self {
        Self(Arc::new(Inner {
            bytes: AtomicUsize::new(0),
            room: Notify::new(),
            wake_below: AtomicUsize::new(0),
            total: Some(total.clone()),
        }))
    }

    /// Bytes counted now.
    pub fn bytes(&self) -> usize {
        self.0.bytes.load(Ordering::Relaxed)
    }

    /// The total this backlog counts into, if any.
    pub fn total(&self) -> Option<&Backlog> {
        self.0.total.as_ref()
    }

    /// Counts `n` more bytes (here and in the total).
    pub fn add(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.0.bytes.fetch_add(n, Ordering::Relaxed);
        if let Some(total) = &self.0.total {
            total.add(n);
        }
    }

    /// Counts `n` bytes fewer (here and in the total), and wakes whoever waits for room once
    /// the count is below what they wait for. Never goes below zero.
    pub fn sub(&self, n: usize) {
        if n == 0 {
            return;
        }
        let before = match self
            .0
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(n))
            }) {
            Ok(before) | Err(before) => before,
        };
        let taken = before.min(n);
        if let Some(total) = &self.0.total {
            total.sub(taken);
        }
        let wake_below = self.0.wake_below.load(Ordering::Acquire);
        if wake_below != 0 && before - taken < wake_below {
            self.0.wake_below.store(0, Ordering::Release);
            self.0.room.notify_waiters();
        }
    }

    /// Waits until `room(self)` holds. It is checked at once, then again whenever this
    /// backlog drops below `wake_below` or its total below `total_below` (pass what `room`
    /// waits for, or more). Cancel safe.
    pub async fn wait_until(
        &self,
        room: impl Fn(&Backlog) -> bool,
        wake_below: usize,
        total_below: usize,
    ) {
        // The usual case, room already: no waiter is registered.
        if room(self) {
            return;
        }
        loop {
            let mut mine = pin!(self.0.room.notified());
            let total = self.0.total.as_ref().map(|t| t.0.room.notified());
            let mut total = pin!(total);
            // Registered before the check, so that no wake-up between the two is lost.
            mine.as_mut().enable();
            self.0
                .wake_below
                .fetch_max(wake_below.max(1), Ordering::AcqRel);
            if let (Some(t), Some(backlog)) = (total.as_mut().as_pin_mut(), &self.0.total) {
                t.enable();
                backlog
                    .0
                    .wake_below
                    .fetch_max(total_below.max(1), Ordering::AcqRel);
            }
            if room(self) {
                return;
            }
            let either = std::future::poll_fn(|cx| {
                if mine.as_mut().poll(cx).is_ready() {
                    return std::task::Poll::Ready(());
                }
                match total.as_mut().as_pin_mut() {
                    Some(t) => t.poll(cx),
                    None => std::task::Poll::Pending,
                }
            });
            either.await;
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let bytes = *self.bytes.get_mut();
        if let Some(total) = &self.total {
            total.sub(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Backlog;

    #[test]
    fn counts_into_the_total_and_leaves_it_when_dropped() {
        let total = Backlog::new();
        let a = Backlog::within(&total);
        let b = Backlog::within(&total);
        a.add(10);
        b.add(5);
        assert_eq!((a.bytes(), b.bytes(), total.bytes()), (10, 5, 15));
        a.sub(20);
        assert_eq!((a.bytes(), total.bytes()), (0, 5));
        let b2 = b.clone();
        drop(b);
        assert_eq!(total.bytes(), 5, "a clone still counts");
        drop(b2);
        assert_eq!(total.bytes(), 0);
    }

    #[tokio::test]
    async fn a_waiter_wakes_when_its_total_shrinks() {
        let total = Backlog::new();
        let a = Backlog::within(&total);
        let b = Backlog::within(&total);
        b.add(100);
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move {
                a.wait_until(|me| me.total().unwrap().bytes() < 50, 1, 50)
                    .await
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        b.sub(60);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
    }
}
