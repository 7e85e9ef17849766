//! The resumable sessions of a runtime: which connection task owns each, how a resuming
//! handshake is judged, and why a session that is gone went (the extension is written down in
//! the repository's `docs/resume.md`).

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use runtimeuse_proto::resume::{
    GRACE_HEADER, RECEIVED_HEADER, RESUME_HEADER, RESUME_VERSION, Refusal, SESSION_HEADER,
    SessionId, WINDOW_HEADER,
};
use runtimeuse_tokio::server::{Admit, ReplayWindow, RuntimeConnection};
use runtimeuse_tokio::tokio_tungstenite::tungstenite::handshake::server::Request;
use tokio::sync::mpsc;

use crate::stream::BoxIo;

/// Sessions gone (expired, overflowed, ended) are remembered this long, to tell a client that
/// comes back why, instead of "unknown".
const REMEMBER_GONE: Duration = Duration::from_secs(600);
/// At most this many gone sessions are remembered.
const MAX_GONE: usize = 4096;

/// A resuming client's socket, handed to the task that owns its session.
pub(crate) struct Attach {
    pub(crate) conn: RuntimeConnection<BoxIo>,
    /// The runtime's data frames the client processed.
    pub(crate) received: u64,
}

/// What a handshake asked and what it was granted.
pub(crate) enum Kind {
    /// No resumption (not asked, or not granted).
    Plain,
    /// A new resumable session.
    New(Owner),
    /// The resumption of a live session: the handshake's socket goes to its owner.
    Resume(mpsc::Sender<Attach>, u64),
}

/// The connection task's side of a resumable session.
pub(crate) struct Owner {
    pub(crate) id: SessionId,
    pub(crate) attach: mpsc::Receiver<Attach>,
    pub(crate) window: Arc<ReplayWindow>,
}

struct Live {
    id: SessionId,
    attach: mpsc::Sender<Attach>,
    window: Arc<ReplayWindow>,
}

struct Gone {
    id: SessionId,
    why: Refusal,
    at: Instant,
}

/// The resumable sessions of one runtime.
#[derive(Default)]
pub(crate) struct Sessions {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    live: Vec<Live>,
    gone: VecDeque<Gone>,
}

impl Sessions {
    /// Judges a handshake: a plain connection, a new resumable session (granted when `grace`
    /// is not zero and the operating system gave random bytes), or the resumption of a live
    /// one. Runs inside the handshake, after the token was checked. A grant announces the
    /// grace and the `replay_window` (the bytes held for the client before producers wait).
    pub(crate) fn admit(
        &self,
        request: &Request,
        grace: Duration,
        replay_window: usize,
        kind: &mut Kind,
    ) -> Admit {
        // Each of the extension's headers at most once (a second one makes it not one), its
        // value without HTTP's optional whitespace around it (RFC 9110, 5.5) and nothing else.
        let header = |name: &str| {
            let mut all = request.headers().get_all(name).iter();
            match (all.next(), all.next()) {
                (Some(v), None) => Some(v.as_bytes().trim_ascii()),
                (None, _) => None,
                (Some(_), Some(_)) => Some(&b""[..]),
            }
        };
        if let Some(id) = header(SESSION_HEADER) {
            let id = std::str::from_utf8(id).unwrap_or_default();
            let received = header(RECEIVED_HEADER).and_then(runtimeuse_proto::resume::parse_count);
            return match self.find(id, received) {
                Ok((attach, received)) => {
                    *kind = Kind::Resume(attach, received);
                    Admit::Accept(vec![(SESSION_HEADER, id.to_owned())])
                }
                Err(refusal) => {
                    tracing::info!(why = refusal.token(), "resumption refused");
                    Admit::refuse_resume(refusal)
                }
            };
        }
        if grace.is_zero() || header(RESUME_HEADER) != Some(RESUME_VERSION.as_bytes()) {
            return Admit::Accept(Vec::new());
        }
        let Some(id) = random_id() else {
            tracing::warn!("no random bytes from the operating system; resumption not granted");
            return Admit::Accept(Vec::new());
        };
        let (tx, rx) = mpsc::channel(1);
        let window = Arc::new(ReplayWindow::default());
        self.lock().live.push(Live {
            id,
            attach: tx,
            window: Arc::clone(&window),
        });
        *kind = Kind::New(Owner {
            id,
            attach: rx,
            window,
        });
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        Admit::Accept(vec![
            (SESSION_HEADER, id.to_string()),
            (GRACE_HEADER, grace_ms.to_string()),
            (WINDOW_HEADER, replay_window.to_string()),
        ])
    }

    /// The owner of session `id`, for a client that processed `received` of its frames. Every
    /// live and gone session is compared, in constant time each.
    fn find(
        &self,
        id: &str,
        received: Option<u64>,
    ) -> Result<(mpsc::Sender<Attach>, u64), Refusal> {
        let id: SessionId = id.parse().map_err(|_| Refusal::UnknownSession)?;
        let inner = self.lock();
        let live = inner.live.iter().fold(
            None,
            |found, s| if s.id.matches(&id) { Some(s) } else { found },
        );
        if let Some(s) = live {
            let received = received.ok_or(Refusal::OutOfWindow)?;
            if !s.window.contains(received) {
                return Err(Refusal::OutOfWindow);
            }
            return Ok((s.attach.clone(), received));
        }
        let gone = inner.gone.iter().fold(None, |found, g| {
            if g.id.matches(&id) {
                Some(g.why)
            } else {
                found
            }
        });
        Err(gone.unwrap_or(Refusal::UnknownSession))
    }

    /// Session `id` is gone, for this reason: it can no longer be resumed. The first reason
    /// given stays.
    pub(crate) fn remove(&self, id: &SessionId, why: Refusal) {
        let mut inner = self.lock();
        let before = inner.live.len();
        inner.live.retain(|s| !s.id.matches(id));
        if inner.live.len() == before {
            return;
        }
        let now = Instant::now();
        while inner
            .gone
            .front()
            .is_some_and(|g| now.duration_since(g.at) > REMEMBER_GONE)
            || inner.gone.len() >= MAX_GONE
        {
            inner.gone.pop_front();
        }
        inner.gone.push_back(Gone {
            id: *id,
            why,
            at: now,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// 128 bits from the operating system's random source.
fn random_id() -> Option<SessionId> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .ok()?;
    Some(SessionId::from_random(bytes))
}
