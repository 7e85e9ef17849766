//! Leaving while a request runs: Ctrl-C, SIGTERM, SIGHUP or a closed output cancel the request
//! on the runtime first (a command the CLI started must not outlive it in the sandbox), and
//! the CLI exits once the runtime confirmed, or after [`CANCEL_BOUND`] at the latest.
//!
//! One watcher per process ([`watch`]) owns the signals for the whole run of a client
//! command, so a signal between two requests of a session is not swallowed: with nothing
//! running, the CLI exits at once with the signal's code.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use runtimeuse_tokio::AbortHandle;

use crate::exit;

/// How long the CLI waits for the runtime to confirm a cancel before it leaves anyway.
pub(super) const CANCEL_BOUND: Duration = Duration::from_secs(5);

/// Why a request was stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reason {
    /// Ctrl-C: the request is cancelled, a session goes on.
    Interrupt = 1,
    /// SIGTERM: cancel, then exit.
    Terminate = 2,
    /// SIGHUP (the terminal went away): cancel, then exit.
    Hangup = 3,
    /// Standard output or error was closed (`| head`): cancel, then exit.
    OutputClosed = 4,
}

impl Reason {
    /// The exit code the CLI leaves with for it (the shell's 128 + signal, 141 for SIGPIPE).
    pub(super) fn code(self) -> u8 {
        match self {
            Self::Interrupt => exit::CANCELLED,
            Self::Terminate => exit::TERMINATED,
            Self::Hangup => exit::HANGUP,
            Self::OutputClosed => exit::BROKEN_PIPE,
        }
    }

    /// Whether the CLI leaves after it (all but Ctrl-C, which ends only the request).
    pub(super) fn leaves(self) -> bool {
        self != Self::Interrupt
    }

    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Interrupt),
            2 => Some(Self::Terminate),
            3 => Some(Self::Hangup),
            4 => Some(Self::OutputClosed),
            _ => None,
        }
    }
}

/// The request running now, to abort.
static RUNNING: Mutex<Option<AbortHandle>> = Mutex::new(None);
/// Why the running (or last) request was stopped; 0 for not.
static REASON: AtomicU8 = AtomicU8::new(0);

/// Marks a request as running until dropped: a signal or a closed output aborts it.
pub(super) struct Running(());

impl Running {
    /// The request of `abort` runs.
    pub(super) fn new(abort: AbortHandle) -> Self {
        REASON.store(0, Ordering::SeqCst);
        *RUNNING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(abort);
        Self(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        *RUNNING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

/// Why the running or last request was stopped, if it was.
pub(super) fn reason() -> Option<Reason> {
    Reason::from_u8(REASON.load(Ordering::SeqCst))
}

/// Stops the running request for `reason` (the first reason is kept, but for a Ctrl-C that
/// a reason to leave follows); whether one was running.
pub(super) fn stop(reason: Reason) -> bool {
    // A reason to leave overrides a Ctrl-C whose cancel is still being confirmed: the CLI
    // must then exit, not go on with the session.
    let _ = REASON.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
        let overrides = now == 0 || (now == Reason::Interrupt as u8 && reason.leaves());
        overrides.then_some(reason as u8)
    });
    let running = RUNNING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match running.as_ref() {
        Some(abort) => {
            abort.abort();
            true
        }
        None => false,
    }
}

/// Starts the process's signal watcher (once; later calls do nothing); `note` says that a
/// Ctrl-C is cancelling.
pub(super) fn watch(note: fn(&str)) {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        tokio::spawn(watcher(note));
    });
}

async fn watcher(note: fn(&str)) {
    #[cfg(unix)]
    let (mut term, mut hup) = {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(t), Ok(h)) => (t, h),
            _ => return,
        }
    };
    loop {
        #[cfg(unix)]
        let reason = tokio::select! {
            r = tokio::signal::ctrl_c() => match r {
                Ok(()) => Reason::Interrupt,
                Err(_) => return,
            },
            _ = term.recv() => Reason::Terminate,
            _ = hup.recv() => Reason::Hangup,
        };
        #[cfg(not(unix))]
        let reason = match tokio::signal::ctrl_c().await {
            Ok(()) => Reason::Interrupt,
            Err(_) => return,
        };
        on_signal(reason, note);
    }
}

fn on_signal(reason: Reason, note: fn(&str)) {
    if reason.leaves() {
        return leave(reason);
    }
    // Ctrl-C with nothing running, or a second one while the first cancel is confirmed:
    // quit at once.
    if self::reason() == Some(Reason::Interrupt) || !is_running() {
        std::process::exit(i32::from(reason.code()));
    }
    // Said before the abort: once aborted, the request may end (and say "cancelled") before
    // this task runs again.
    note("cancelling (Ctrl-C again to quit at once)");
    stop(reason);
}

/// Leaves for `reason`: at once when no request runs, else once it ended (the caller sees
/// [`reason`]) or after [`CANCEL_BOUND`], whichever comes first. Called inside the async
/// runtime.
pub(super) fn leave(reason: Reason) {
    if !stop(reason) {
        std::process::exit(i32::from(reason.code()));
    }
    tokio::spawn(async move {
        tokio::time::sleep(CANCEL_BOUND).await;
        tracing::warn!(
            "the runtime did not confirm the cancel within {} s; leaving anyway",
            CANCEL_BOUND.as_secs()
        );
        std::process::exit(i32::from(reason.code()));
    });
}

/// Whether a request runs now.
fn is_running() -> bool {
    RUNNING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .is_some()
}
