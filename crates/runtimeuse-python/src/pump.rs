//! The socket pump of [`crate::conn::Conn`]: the client's sans-IO connection driven over the
//! blocking client's WebSocket by the caller's thread. No protocol decision is made here.
//!
//! Frames are read ahead into a bounded queue and fed to the connection only as the caller
//! takes items, so the connection's count of the runtime's frames (what a resume token and
//! an acknowledgement say) is what was handed to Python. A resumable session hands out the
//! items of one frame at a time: a token taken in a callback covers exactly the messages
//! handed out until then, and the runtime keeps every later one for its holder.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runtimeuse_client_core::connection::{Frame, Outgoing};
use runtimeuse_client_core::resume::Attempt;
use runtimeuse_client_core::{AbortHandle, ClientSettings};
use runtimeuse_tungstenite::tungstenite::{self, Message};
use runtimeuse_tungstenite::{Socket, resume_socket, tcp};

use crate::core::{Core, Item};

/// Most items one pump hands out: the rest waits in the queue and the socket.
pub(crate) const MAX_ITEMS: usize = 1024;
/// Most data frames read ahead of the caller: beyond it (or [`MAX_QUEUED_BYTES`]) the socket
/// is not read, and the runtime waits, through TCP's flow control.
const MAX_QUEUED: usize = 4096;
const MAX_QUEUED_BYTES: usize = 16 << 20;

/// The state of one connection.
pub(crate) struct State {
    pub(crate) core: Core,
    pub(crate) abort: AbortHandle,
    pub(crate) ws: Socket,
    pub(crate) settings: Arc<ClientSettings>,
    /// The socket can be read and written.
    pub(crate) up: bool,
    /// The socket ended (with the runtime's close code, if any); the connection hears it
    /// once the frames read before it were fed.
    lost: Option<Option<u16>>,
    /// Blocking mode (the synchronous client); else the socket is non-blocking.
    pub(crate) blocking: bool,
    read_timeout: Option<Duration>,
    /// Data frames read and not fed yet, and their bytes.
    queued: VecDeque<Message>,
    queued_bytes: usize,
    /// A reconnection is due, with these handshake headers (the event loop runs it in a
    /// worker thread: [`crate::conn::Conn::reconnect`]).
    pub(crate) due: Option<[(&'static str, String); 2]>,
}

/// What one pump did.
pub(crate) struct Pumped {
    pub(crate) items: Vec<Item>,
    /// When the next timer is due.
    pub(crate) wait: Duration,
    /// Writes wait for the socket to be writable.
    pub(crate) want_write: bool,
    /// Frames wait to be taken.
    pub(crate) ready: bool,
    /// Frames may wait in the WebSocket's buffers, where the event loop cannot see them:
    /// pump again.
    pub(crate) more: bool,
    /// The socket is to be watched for reading (it is up and the queue is not full).
    pub(crate) reading: bool,
}

fn would_block(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io)
        if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

fn size(m: &Message) -> usize {
    match m {
        Message::Text(t) => t.len(),
        Message::Binary(b) => b.len(),
        _ => 0,
    }
}

impl State {
    pub(crate) fn new(
        core: Core,
        ws: Socket,
        settings: Arc<ClientSettings>,
        abort: AbortHandle,
        blocking: bool,
    ) -> Self {
        Self {
            core,
            abort,
            ws,
            settings,
            up: true,
            lost: None,
            blocking,
            read_timeout: None,
            queued: VecDeque::new(),
            queued_bytes: 0,
            due: None,
        }
    }

    /// The socket's file descriptor while it is up.
    pub(crate) fn fd(&self) -> Option<i32> {
        use std::os::fd::AsRawFd;
        self.up
            .then(|| tcp(&self.ws).map(|t| t.as_raw_fd()))
            .flatten()
    }

    /// The session is over and nothing waits to be handed out.
    pub(crate) fn over(&self) -> bool {
        (self.core.conn.is_finished() || self.core.is_ended()) && self.queued.is_empty()
    }

    fn ended(&mut self, code: Option<u16>) {
        if self.up {
            self.up = false;
            self.lost = Some(code);
        }
    }

    fn set_read_timeout(&mut self, timeout: Duration) {
        if self.read_timeout != Some(timeout) {
            self.read_timeout = Some(timeout);
            if let Some(t) = tcp(&self.ws) {
                let _ = t.set_read_timeout(Some(timeout));
            }
        }
    }

    /// Feeds queued frames while the caller takes items: the items of at most `frames`
    /// frames that produced some.
    fn feed(&mut self, items: &mut Vec<Item>, frames: usize) {
        let mut fed = 0;
        while fed < frames && items.len() < MAX_ITEMS {
            let Some(message) = self.queued.pop_front() else {
                break;
            };
            self.queued_bytes -= size(&message);
            let now = Instant::now();
            match &message {
                Message::Text(t) => self.core.conn.handle_frame(now, Frame::Text(t)),
                Message::Binary(b) => self.core.conn.handle_frame(now, Frame::Binary(b)),
                _ => {}
            }
            let before = items.len();
            self.core.settle(items, MAX_ITEMS, false);
            if items.len() > before {
                fed += 1;
            }
        }
        if self.queued.is_empty()
            && let Some(code) = self.lost.take()
        {
            self.core.conn.connection_lost(Instant::now(), code);
        }
    }

    fn write_out(&mut self) -> bool {
        while let Some(frame) = self.core.conn.poll_transmit() {
            let message = match frame {
                Outgoing::Text(s) => Message::Text(s.into()),
                Outgoing::Ping(payload) => Message::Ping(payload.into()),
            };
            // Queued; a failure shows at the flush or the next read.
            let _ = self.ws.write(message);
        }
        if !self.up {
            return false;
        }
        match self.ws.flush() {
            Ok(()) => false,
            Err(e) if would_block(&e) => true,
            Err(_) => {
                self.ended(None);
                false
            }
        }
    }

    /// Reads one frame (data frames to the queue, control frames to the connection at once);
    /// `false` when nothing was there.
    fn read(&mut self) -> bool {
        match self.ws.read() {
            Ok(message) => {
                let now = Instant::now();
                match message {
                    Message::Text(_) | Message::Binary(_) => {
                        self.queued_bytes += size(&message);
                        self.queued.push_back(message);
                    }
                    Message::Pong(_) => self.core.conn.handle_frame(now, Frame::Pong),
                    // tungstenite queues the pong itself; the next flush sends it.
                    Message::Ping(p) => self.core.conn.handle_frame(now, Frame::Ping(&p)),
                    Message::Close(frame) => {
                        // tungstenite queued the reply to the runtime's close: send it.
                        let _ = self.ws.flush();
                        self.ended(frame.map(|f| u16::from(f.code)));
                    }
                    Message::Frame(_) => {}
                }
                true
            }
            Err(e) if would_block(&e) => false,
            Err(_) => {
                self.ended(None);
                false
            }
        }
    }

    fn full(&self) -> bool {
        self.queued.len() >= MAX_QUEUED || self.queued_bytes >= MAX_QUEUED_BYTES
    }

    /// Moves frames both ways and runs the timers until nothing is ready; `take`: hands out
    /// items (else frames are only read ahead); blocking: until there are items, the session
    /// is over, or `block` passed.
    pub(crate) fn pump(&mut self, block: Option<Duration>, take: bool) -> Pumped {
        let mut items = Vec::new();
        let frames = if self.core.conn.is_resumable() {
            1
        } else {
            MAX_ITEMS
        };
        let started = Instant::now();
        let mut want_write;
        // The socket was read until it had nothing more (else frames may wait in the
        // WebSocket's buffers, where the event loop cannot see them).
        let mut drained = false;
        loop {
            if self.abort.take() {
                self.core.abort();
            }
            // What waits (a start, an abort, an answer) first, then the frames read.
            self.core.settle(&mut items, MAX_ITEMS, false);
            if take || self.lost.is_some() && self.queued.is_empty() {
                self.feed(&mut items, frames);
            }
            if self.queued.is_empty() {
                self.core.settle(&mut items, MAX_ITEMS, true);
            }
            want_write = self.write_out();
            if let Some(headers) = self.core.conn.poll_reconnect() {
                if !self.blocking {
                    self.due = Some(headers);
                    break;
                }
                self.reconnect_with(&headers);
                continue;
            }
            // Taking: one frame's items (resumable), or up to MAX_ITEMS and what the socket
            // has; a blocking take returns as soon as there are items.
            let enough = if frames == 1 {
                !items.is_empty()
            } else {
                items.len() >= MAX_ITEMS
            };
            let taken = take && (enough || self.blocking && !items.is_empty());
            if taken || self.over() || self.full() {
                break;
            }
            if self.blocking {
                // Reading (or, the socket down, waiting to reconnect) until the connection's
                // deadline, or `block` passed.
                let left = block.map_or(Duration::ZERO, |b| b.saturating_sub(started.elapsed()));
                if left.is_zero() || self.core.conn.is_finished() {
                    break;
                }
                let wait = self.core.wait().min(left);
                if self.up {
                    self.set_read_timeout(wait.max(Duration::from_millis(1)));
                    self.read();
                } else {
                    std::thread::sleep(wait);
                }
                continue;
            }
            if !self.up || !self.read() {
                // The socket just ended with nothing left to hand out: once more round, so
                // that the connection learns of the loss now and a reconnection is due at
                // once. Without it the loss waited for the next timer (the idle limit): no
                // socket is watched then, and nothing else pumps.
                if self.lost.is_some() && self.queued.is_empty() {
                    continue;
                }
                drained = self.up;
                break;
            }
        }
        Pumped {
            items,
            wait: self.core.wait(),
            want_write,
            ready: !self.queued.is_empty(),
            more: self.up && !drained && self.queued.is_empty() && !self.blocking,
            reading: self.up && !self.full(),
        }
    }

    /// One reconnection, blocking (the caller released the GIL, and holds no lock the event
    /// loop needs when this runs in a worker: see `Conn::reconnect`).
    pub(crate) fn reconnect_with(&mut self, headers: &[(&'static str, String); 2]) {
        let attempt = resume_socket(&self.settings, headers);
        self.install(attempt);
    }

    /// The outcome of a reconnection, told to the connection.
    pub(crate) fn install(&mut self, attempt: Attempt<Box<Socket>>) {
        let now = Instant::now();
        match attempt {
            Attempt::Resumed(ws, count) => {
                self.ws = *ws;
                self.read_timeout = None;
                if let Some(t) = tcp(&self.ws) {
                    let _ = t.set_read_timeout(None);
                    if !self.blocking {
                        let _ = t.set_nonblocking(true);
                    }
                }
                self.up = true;
                self.lost = None;
                self.core.conn.connected(now, count);
            }
            Attempt::Refused(refusal) => self.core.conn.reconnect_refused(now, refusal),
            Attempt::Failed(e) => self.core.conn.reconnect_failed(now, &e),
        }
    }
}
