//! Cancelling a client's request in flight from anywhere.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

/// Cancels the request in flight of a session from anywhere (another task or thread).
///
/// `cancel_message` goes out at once (an async session is woken; a blocking session notices
/// within about 20 ms, even while it is blocked reading), the call fails with
/// `Error::Cancelled`, and the session reads on until the runtime's terminal for it, so that
/// nothing of it leaks into the next request. Aborting with nothing in flight does nothing:
/// an abort pending when a request starts is dropped.
#[derive(Clone, Debug, Default)]
pub struct AbortHandle {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    requested: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl AbortHandle {
    /// A handle not tied to a session yet: give it to a one-shot call with
    /// `QueryOptions::abort_handle` (or `ExecuteCommandsOptions::abort_handle`) to be able to
    /// cancel that call.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether an abort is pending (requested and not yet acted on).
    pub fn is_aborted(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }

    /// Cancels the request in flight, if any.
    pub fn abort(&self) {
        self.inner.requested.store(true, Ordering::SeqCst);
        let waker = self.inner.waker.lock().ok().and_then(|mut w| w.take());
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Takes a pending abort: whether there was one. What a session calls to act on it.
    pub fn take(&self) -> bool {
        // A plain load first: this runs once per frame, and an abort is rare.
        self.inner.requested.load(Ordering::Relaxed)
            && self.inner.requested.swap(false, Ordering::SeqCst)
    }

    /// Whether a clone of this handle exists elsewhere (else nothing but its session can
    /// abort, and a waiting async session need not register to be woken).
    pub fn is_shared(&self) -> bool {
        Arc::strong_count(&self.inner) > 1
    }

    /// Wakes `waker` at the next abort. Returns whether an abort is pending already (then
    /// look again instead of waiting).
    pub fn register(&self, waker: &Waker) -> bool {
        if let Ok(mut slot) = self.inner.waker.lock() {
            match &mut *slot {
                Some(w) if w.will_wake(waker) => {}
                other => *other = Some(waker.clone()),
            }
        }
        self.inner.requested.load(Ordering::SeqCst)
    }
}
