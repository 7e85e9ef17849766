//! A connection to a runtime whose socket the caller's thread drives: Python's event loop
//! (the socket non-blocking, its file descriptor watched by the loop) or a blocking call with
//! the GIL released. No other thread is involved, so a round trip costs no thread wake-ups.

use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use runtimeuse_client_core::close::close_wait;
use runtimeuse_client_core::connection::{Frame, Outgoing};
use runtimeuse_client_core::{AbortHandle, ClientSettings};
use runtimeuse_tungstenite::tungstenite::protocol::CloseFrame;
use runtimeuse_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use runtimeuse_tungstenite::tungstenite::{self, Message};
use runtimeuse_tungstenite::{Socket, connect_socket, tcp};

use crate::convert;
use crate::core::{self, Core, Item};
use crate::wire;

/// Most items one pump hands out: the rest stays in the socket (and its buffer) until the
/// next, which bounds what waits in Python.
const MAX_ITEMS: usize = 1024;
/// How often a blocking wait looks for a signal (Ctrl-C) to raise.
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

struct State {
    core: Core,
    abort: AbortHandle,
    ws: Socket,
    /// The connection is gone (closed, failed); nothing more is read or written.
    finished: bool,
    /// Blocking mode (the synchronous client); else the socket is non-blocking.
    blocking: bool,
    read_timeout: Option<Duration>,
}

/// What one pump did: items, when the next timer is due, whether writes wait for the socket.
struct Pumped {
    items: Vec<Item>,
    wait: Duration,
    want_write: bool,
    /// It stopped at [`MAX_ITEMS`]: frames may wait in the WebSocket's buffer, where the event
    /// loop cannot see them; pump again.
    more: bool,
}

fn would_block(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io)
        if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

impl State {
    fn lost(&mut self) {
        if !self.finished {
            self.finished = true;
            self.core.conn.connection_lost(Instant::now(), None);
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

    /// Moves frames both ways (only out, unless `read`) and runs the timers until nothing is
    /// ready, or (blocking) until there are items or `block` passed.
    fn pump(&mut self, block: Option<Duration>, read: bool) -> Pumped {
        let mut items = Vec::new();
        let mut want_write = false;
        let mut more = false;
        let started = Instant::now();
        loop {
            if self.abort.take() {
                self.core.abort();
            }
            let settled = self.core.settle(&mut items, MAX_ITEMS);
            while let Some(frame) = self.core.conn.poll_transmit() {
                let message = match frame {
                    Outgoing::Text(s) => Message::Text(s.into()),
                    Outgoing::Ping(payload) => Message::Ping(payload.into()),
                };
                // Queued; a failure shows at the flush or the next read.
                let _ = self.ws.write(message);
            }
            if settled {
                more = true;
                break;
            }
            want_write = false;
            if !self.finished {
                match self.ws.flush() {
                    Ok(()) => {}
                    Err(e) if would_block(&e) => want_write = true,
                    Err(_) => {
                        self.lost();
                        continue;
                    }
                }
            }
            if self.finished || !read {
                break;
            }
            if self.blocking {
                let Some(block) = block else { break };
                if !items.is_empty() {
                    break;
                }
                let left = block.saturating_sub(started.elapsed());
                if left.is_zero() {
                    break;
                }
                let wait = self.core.wait().min(left).max(Duration::from_millis(1));
                self.set_read_timeout(wait);
            }
            match self.ws.read() {
                Ok(message) => {
                    let now = Instant::now();
                    let conn = &mut self.core.conn;
                    match message {
                        Message::Text(t) => conn.handle_frame(now, Frame::Text(&t)),
                        Message::Binary(b) => conn.handle_frame(now, Frame::Binary(&b)),
                        Message::Pong(_) => conn.handle_frame(now, Frame::Pong),
                        Message::Ping(p) => conn.handle_frame(now, Frame::Ping(&p)),
                        Message::Close(_) => {
                            // tungstenite queued the reply to the runtime's close: send it.
                            let _ = self.ws.flush();
                            self.lost();
                        }
                        // tungstenite queues a ping's pong itself; the next flush sends it.
                        Message::Frame(_) => {}
                    }
                }
                Err(e) if would_block(&e) => {
                    if !self.blocking {
                        break;
                    }
                }
                Err(_) => self.lost(),
            }
        }
        Pumped {
            items,
            wait: self.core.wait(),
            want_write,
            more,
        }
    }
}

/// One connection to a runtime (see the module).
#[pyclass(module = "runtimeuse_rs._native", frozen)]
pub(crate) struct Conn {
    state: Mutex<State>,
    abort: AbortHandle,
    fd: i32,
}

impl Conn {
    fn with<T>(&self, py: Python<'_>, f: impl FnOnce(&mut State) -> PyResult<T>) -> PyResult<T> {
        core::locked(py, &self.state, f)
    }

    fn pumped<'py>(py: Python<'py>, state: &State, p: Pumped) -> PyResult<Bound<'py, PyTuple>> {
        let items = core::to_py(py, p.items)?;
        let over = state.finished || state.core.is_ended();
        (items, p.wait.as_secs_f64(), p.want_write, over, p.more).into_pyobject(py)
    }
}

#[pymethods]
impl Conn {
    /// Connects (blocking, the GIL released). `blocking`: for the synchronous client; else the
    /// socket is made non-blocking for an event loop.
    #[staticmethod]
    #[pyo3(signature = (url, *, headers=None, connect_timeout=None, idle_timeout=None, keepalive_interval=None, max_frame_size=None, blocking=false))]
    #[allow(clippy::too_many_arguments)]
    fn connect(
        py: Python<'_>,
        url: String,
        headers: Option<Vec<(String, String)>>,
        connect_timeout: Option<f64>,
        idle_timeout: Option<f64>,
        keepalive_interval: Option<f64>,
        max_frame_size: Option<usize>,
        blocking: bool,
    ) -> PyResult<Self> {
        let mut settings = ClientSettings::new(url);
        settings.session = wire::config(idle_timeout, keepalive_interval, max_frame_size)?;
        if let Some(bytes) = max_frame_size {
            settings.max_frame_size = bytes;
        }
        if let Some(limit) = wire::seconds("connect_timeout", connect_timeout)? {
            settings.connect_timeout = limit;
        }
        settings.headers = headers.unwrap_or_default();
        let config = settings.session.clone();
        let ws = py
            .detach(|| connect_socket(&settings))
            .map_err(|e| convert::raise(&e))?;
        let tcp = tcp(&ws).ok_or_else(|| PyRuntimeError::new_err("no TCP socket"))?;
        let fd = tcp.as_raw_fd();
        if !blocking {
            tcp.set_nonblocking(true).map_err(|e| {
                PyRuntimeError::new_err(format!("cannot make the socket non-blocking: {e}"))
            })?;
        }
        let abort = AbortHandle::new();
        Ok(Self {
            abort: abort.clone(),
            state: Mutex::new(State {
                abort,
                core: Core::new(config),
                ws,
                finished: false,
                blocking,
                read_timeout: None,
            }),
            fd,
        })
    }

    /// The socket's file descriptor, for the event loop.
    fn fileno(&self) -> i32 {
        self.fd
    }

    /// Starts a query (`pump` sends it).
    #[pyo3(signature = (prompt, wire, timeout, idle_timeout, uploader))]
    fn query(
        &self,
        py: Python<'_>,
        prompt: String,
        wire: &Bound<'_, PyDict>,
        timeout: Option<f64>,
        idle_timeout: Option<f64>,
        uploader: bool,
    ) -> PyResult<()> {
        self.with(py, |s| {
            // An abort asked for while nothing ran does not apply to this request.
            s.abort.take();
            s.core.query(prompt, wire, timeout, idle_timeout, uploader)
        })
    }

    /// Starts a command batch (`pump` sends it).
    #[pyo3(signature = (wire, timeout, idle_timeout, uploader))]
    fn execute_commands(
        &self,
        py: Python<'_>,
        wire: &Bound<'_, PyDict>,
        timeout: Option<f64>,
        idle_timeout: Option<f64>,
        uploader: bool,
    ) -> PyResult<()> {
        self.with(py, |s| {
            s.abort.take();
            s.core
                .execute_commands(wire, timeout, idle_timeout, uploader)
        })
    }

    /// Cancels the request in flight, from any thread (the next `pump` sends the cancel; a
    /// blocking pump notices within 100 ms).
    fn abort(&self) {
        self.abort.abort();
    }

    /// Answers the artifact request handed out with `key`.
    fn respond(
        &self,
        py: Python<'_>,
        key: u64,
        presigned_url: String,
        content_type: String,
    ) -> PyResult<()> {
        self.with(py, |s| s.core.respond(key, presigned_url, content_type))
    }

    /// Declines the artifact request handed out with `key`.
    fn decline(&self, py: Python<'_>, key: u64) -> PyResult<()> {
        self.with(py, |s| {
            s.core.decline(key);
            Ok(())
        })
    }

    /// Starts the graceful end of the session; its end comes as an item.
    fn end<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        self.with(py, |s| {
            let mut items = Vec::new();
            s.core.end(&mut items);
            let mut p = s.pump(None, true);
            items.append(&mut p.items);
            p.items = items;
            Self::pumped(py, s, p)
        })
    }

    /// Sends what the session has to send (a request just started, an answer, a cancel)
    /// without reading: `pump`'s tuple.
    fn send<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        self.with(py, |s| {
            let p = s.pump(None, false);
            Self::pumped(py, s, p)
        })
    }

    /// Moves what is ready without waiting: `(items, seconds until the next timer,
    /// writes wait for the socket, the session is over, more may be ready at once)`.
    fn pump<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        self.with(py, |s| {
            let p = s.pump(None, true);
            Self::pumped(py, s, p)
        })
    }

    /// As `pump`, waiting (the GIL released) until there are items or the session is over; a
    /// signal such as Ctrl-C raises meanwhile.
    fn pump_blocking<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        self.with(py, |s| {
            loop {
                let p = py.detach(|| s.pump(Some(SIGNAL_CHECK), true));
                if !p.items.is_empty() || s.finished || s.core.is_ended() {
                    return Self::pumped(py, s, p);
                }
                py.check_signals()?;
            }
        })
    }

    /// Closes the connection: a close frame (code 1000), then (the GIL released) a wait for
    /// the runtime's, of at most 1 s after a success (`ok`), 100 ms otherwise.
    fn close(&self, py: Python<'_>, ok: bool) -> PyResult<()> {
        self.with(py, |s| {
            if s.finished {
                // Gone already; a close reply tungstenite queued goes out, then the socket ends.
                if let Some(t) = tcp(&s.ws) {
                    let _ = t.set_nonblocking(false);
                    let _ = t.set_write_timeout(Some(close_wait(false)));
                }
                let _ = s.ws.flush();
                if let Some(t) = tcp(&s.ws) {
                    let _ = t.shutdown(std::net::Shutdown::Both);
                }
                return Ok(());
            }
            s.finished = true;
            let wait = close_wait(ok);
            py.detach(|| {
                if let Some(t) = tcp(&s.ws) {
                    let _ = t.set_nonblocking(false);
                    let _ = t.set_write_timeout(Some(wait));
                    let _ = t.set_read_timeout(Some(wait));
                }
                let frame = CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                };
                if s.ws.close(Some(frame)).is_ok() {
                    let until = Instant::now() + wait;
                    while Instant::now() < until && s.ws.read().is_ok() {}
                }
                // The TCP connection ends now, whenever Python drops this object.
                if let Some(t) = tcp(&s.ws) {
                    let _ = t.shutdown(std::net::Shutdown::Both);
                }
            });
            Ok(())
        })
    }
}
