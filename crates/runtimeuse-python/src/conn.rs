//! A connection to a runtime whose socket the caller's thread drives: Python's event loop
//! (the socket non-blocking, its file descriptor watched by the loop) or a blocking call with
//! the GIL released. No other thread is involved, so a round trip costs no thread wake-ups.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use runtimeuse_client_core::close::close_wait;
use runtimeuse_client_core::connection::Connection;
use runtimeuse_client_core::resume::{Attempt, ResumeToken, Resumption};
use runtimeuse_client_core::{AbortHandle, ClientSettings, Error};
use runtimeuse_tungstenite::tungstenite::protocol::CloseFrame;
use runtimeuse_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use runtimeuse_tungstenite::{Socket, connect_session, resume_socket, tcp};

use crate::convert;
use crate::core::{self, Core, Limits};
use crate::pump::{Pumped, State};
use crate::wire;

/// How often a blocking wait looks for a signal (Ctrl-C) to raise.
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// One connection to a runtime (see the module).
#[pyclass(module = "runtimeuse_rs._native", frozen)]
pub(crate) struct Conn {
    state: Mutex<State>,
    abort: AbortHandle,
}

/// The client's settings from the package's keyword arguments.
#[allow(clippy::too_many_arguments)]
fn settings(
    url: String,
    headers: Option<Vec<(String, String)>>,
    connect_timeout: Option<f64>,
    idle_timeout: Option<f64>,
    keepalive_interval: Option<f64>,
    max_frame_size: Option<usize>,
    resume: bool,
) -> PyResult<ClientSettings> {
    let mut settings = ClientSettings::new(url);
    settings.session = wire::config(idle_timeout, keepalive_interval, max_frame_size)?;
    if let Some(bytes) = max_frame_size {
        settings.max_frame_size = wire::frame_limit(bytes)?;
    }
    if let Some(limit) = wire::seconds("connect_timeout", connect_timeout)? {
        settings.connect_timeout = limit;
    }
    settings.headers = headers.unwrap_or_default();
    settings.resume = resume;
    Ok(settings)
}

impl Conn {
    fn with<T>(&self, py: Python<'_>, f: impl FnOnce(&mut State) -> PyResult<T>) -> PyResult<T> {
        core::locked(py, &self.state, f)
    }

    /// A connection over `ws` (its mode set for `blocking`).
    fn over(ws: Socket, core: Core, settings: ClientSettings, blocking: bool) -> PyResult<Self> {
        let tcp = tcp(&ws).ok_or_else(|| PyRuntimeError::new_err("no TCP socket"))?;
        let _ = tcp.set_read_timeout(None);
        if !blocking {
            tcp.set_nonblocking(true).map_err(|e| {
                PyRuntimeError::new_err(format!("cannot make the socket non-blocking: {e}"))
            })?;
        }
        let abort = AbortHandle::new();
        let state = State::new(core, ws, Arc::new(settings), abort.clone(), blocking);
        Ok(Self {
            abort,
            state: Mutex::new(state),
        })
    }

    /// A new session's socket and core.
    fn open(py: Python<'_>, settings: &ClientSettings) -> PyResult<(Socket, Core)> {
        let (ws, granted) = py
            .detach(|| connect_session(settings))
            .map_err(|e| convert::raise(&e))?;
        let mut core = Core::new(settings.session.clone());
        if let Some(granted) = granted {
            core.conn.make_resumable(granted);
        }
        Ok((ws, core))
    }

    /// The socket and core of the session `token` hands over.
    fn take_over(
        py: Python<'_>,
        settings: &ClientSettings,
        token: ResumeToken,
    ) -> PyResult<(Socket, Core)> {
        let (resumption, state) =
            Resumption::from_token(token, Instant::now()).map_err(|e| convert::raise(&e))?;
        let attempt = py.detach(|| resume_socket(settings, &resumption.resume_headers()));
        let (ws, count) = match attempt {
            Attempt::Resumed(ws, count) => (*ws, count),
            Attempt::Refused(refusal) => {
                return Err(convert::raise(&Error::ResumeRefused(refusal)));
            }
            Attempt::Failed(e) => return Err(convert::raise(&e)),
        };
        let config = settings.session.clone();
        let conn = Connection::take_over(config, resumption, state, count, Instant::now())
            .map_err(|e| convert::raise(&e))?;
        Ok((ws, Core::taken_over(conn)))
    }

    /// `(items, seconds until the next timer, writes wait for the socket, the session is
    /// over, frames wait to be taken, pump again soon, watch the socket for reading, the
    /// socket's file descriptor or -1, a reconnection is due)`.
    fn pumped<'py>(py: Python<'py>, state: &State, p: Pumped) -> PyResult<Bound<'py, PyTuple>> {
        let items = core::to_py(py, p.items)?;
        let flags = (p.want_write, state.over(), p.ready, p.more, p.reading);
        let (fd, due) = (state.fd().unwrap_or(-1), state.due.is_some());
        (items, p.wait.as_secs_f64(), flags, fd, due).into_pyobject(py)
    }

    fn run<'py>(
        &self,
        py: Python<'py>,
        f: impl FnOnce(&mut State) -> Pumped,
    ) -> PyResult<Bound<'py, PyTuple>> {
        self.with(py, |s| {
            let p = f(s);
            Self::pumped(py, s, p)
        })
    }
}

#[pymethods]
impl Conn {
    /// Connects (blocking, the GIL released). `blocking`: for the synchronous client; else the
    /// socket is made non-blocking for an event loop. `resume`: asks for a resumable session.
    /// With `token` (a resume token's JSON text), takes over its session instead, at the
    /// token's URL (`url` is not used): the request in flight when it was taken becomes the
    /// current call's.
    #[staticmethod]
    #[pyo3(signature = (url, *, token=None, headers=None, connect_timeout=None, idle_timeout=None, keepalive_interval=None, max_frame_size=None, blocking=false, resume=false))]
    #[allow(clippy::too_many_arguments)]
    fn connect(
        py: Python<'_>,
        url: String,
        token: Option<&str>,
        headers: Option<Vec<(String, String)>>,
        connect_timeout: Option<f64>,
        idle_timeout: Option<f64>,
        keepalive_interval: Option<f64>,
        max_frame_size: Option<usize>,
        blocking: bool,
        resume: bool,
    ) -> PyResult<Self> {
        let token: Option<ResumeToken> = token
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| PyValueError::new_err(format!("not a resume token: {e}")))?;
        let url = token.as_ref().map_or(url, |t| t.url().to_owned());
        let settings = settings(
            url,
            headers,
            connect_timeout,
            idle_timeout,
            keepalive_interval,
            max_frame_size,
            resume || token.is_some(),
        )?;
        let (ws, core) = match token {
            None => Self::open(py, &settings)?,
            Some(token) => Self::take_over(py, &settings, token)?,
        };
        Self::over(ws, core, settings, blocking)
    }

    /// The socket's file descriptor, for the event loop (`-1` while it is down).
    fn fileno(&self, py: Python<'_>) -> PyResult<i32> {
        self.with(py, |s| Ok(s.fd().unwrap_or(-1)))
    }

    /// Whether the runtime granted resumption.
    fn is_resumable(&self, py: Python<'_>) -> PyResult<bool> {
        self.with(py, |s| Ok(s.core.conn.is_resumable()))
    }

    /// Whether a call's request is in flight (after a take-over: the token's request).
    fn following(&self, py: Python<'_>) -> PyResult<bool> {
        self.with(py, |s| Ok(s.core.is_calling()))
    }

    /// A resume token of the session as it stands (JSON text): its count is the runtime's
    /// frames handed out so far.
    fn resume_token(&self, py: Python<'_>) -> PyResult<String> {
        self.with(py, |s| {
            let url = s.settings.url.clone();
            let token = (s.core.conn)
                .resume_token(&url, Instant::now())
                .map_err(|e| convert::raise(&e))?;
            serde_json::to_string(&token).map_err(|e| PyRuntimeError::new_err(e.to_string()))
        })
    }

    /// Starts a call (`pump` sends it): a query of `prompt`, or (`None`) the command batch
    /// of `wire`.
    fn start(
        &self,
        py: Python<'_>,
        prompt: Option<String>,
        wire: &Bound<'_, PyDict>,
        limits: Limits,
    ) -> PyResult<()> {
        self.with(py, |s| {
            // An abort asked for while nothing ran does not apply to this request.
            s.abort.take();
            s.core.start(prompt, wire, limits)
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

    /// Starts the graceful end of the session; its end comes as an item (`take`).
    fn end<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        self.run(py, |s| {
            let mut items = Vec::new();
            s.core.end(&mut items);
            let mut p = s.pump(None, true);
            items.append(&mut p.items);
            p.items = items;
            p
        })
    }

    /// Sends what the session has to send (a request just started, an answer, a cancel),
    /// reads what is ready and runs the timers, without handing out items of frames: the
    /// event loop's pump. The tuple of [`Conn::take`].
    fn pump<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        self.run(py, |s| s.pump(None, false))
    }

    /// As `pump`, handing out the items of the frames read (one frame's on a resumable
    /// session): `(items, seconds until the next timer, (writes wait, the session is over,
    /// frames wait to be taken, pump again soon, watch for reading), the socket's file
    /// descriptor or -1, a reconnection is due)`.
    fn take<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        self.run(py, |s| s.pump(None, true))
    }

    /// As `take`, waiting (the GIL released) until there are items or the session is over;
    /// a signal such as Ctrl-C raises meanwhile. Reconnects itself.
    fn take_blocking<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        self.with(py, |s| {
            loop {
                let p = py.detach(|| s.pump(Some(SIGNAL_CHECK), true));
                if !p.items.is_empty() || s.over() {
                    return Self::pumped(py, s, p);
                }
                py.check_signals()?;
            }
        })
    }

    /// Runs the reconnection that is due (blocking, the GIL released; for the event loop, in
    /// a worker thread). The state's lock is not held while it connects: the loop's pumps go
    /// on meanwhile (the connection knows a reconnection is under way).
    fn reconnect(&self, py: Python<'_>) -> PyResult<()> {
        let job = self.with(py, |s| {
            Ok(s.due.take().map(|h| (h, Arc::clone(&s.settings))))
        })?;
        let Some((headers, settings)) = job else {
            return Ok(());
        };
        let attempt = py.detach(|| resume_socket(&settings, &headers));
        self.with(py, |s| {
            s.install(attempt);
            Ok(())
        })
    }

    /// Closes the connection: a close frame (code 1000), then (the GIL released) a wait for
    /// the runtime's, of at most 1 s after a success (`ok`), 100 ms otherwise.
    fn close(&self, py: Python<'_>, ok: bool) -> PyResult<()> {
        self.with(py, |s| {
            let up = std::mem::replace(&mut s.up, false);
            let wait = close_wait(ok && up);
            py.detach(|| {
                if let Some(t) = tcp(&s.ws) {
                    let _ = t.set_nonblocking(false);
                    let _ = t.set_write_timeout(Some(wait));
                    let _ = t.set_read_timeout(Some(wait));
                }
                if up {
                    let frame = CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    };
                    if s.ws.close(Some(frame)).is_ok() {
                        let until = Instant::now() + wait;
                        while Instant::now() < until && s.ws.read().is_ok() {}
                    }
                } else {
                    // Gone already; a close reply tungstenite queued goes out.
                    let _ = s.ws.flush();
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
