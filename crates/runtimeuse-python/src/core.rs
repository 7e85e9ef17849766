//! What both drivers share: the request layer of one connection, and its events as items for
//! Python. The socket connection ([`crate::conn::Conn`]) and the custom-transport driver
//! ([`crate::driver::Driver`]) differ only in how messages move.

use std::collections::HashMap;
use std::sync::{Mutex, TryLockError};
use std::time::{Duration, Instant};

use pyo3::IntoPyObjectExt;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use runtimeuse_client_core::connection::Connection;
use runtimeuse_client_core::requests::{Between, Ending, Step};
use runtimeuse_tungstenite::proto::{
    ArtifactUpload, ArtifactUploadRequest, CommandOutput, Config, Event, RequestEvent, RequestId,
};
use runtimeuse_tungstenite::{CommandExecutionResult, Error, QueryResult, SessionEnd};

use crate::convert::{self, ARTIFACT};
use crate::wire;

/// A call's `(timeout, idle_timeout, uploader)`: its limits in seconds (`None`: the default)
/// and whether an artifact uploader answers its artifact requests.
pub(crate) type Limits = (Option<f64>, Option<f64>, bool);

/// What a connection hands to Python.
pub(crate) enum Item {
    Assistant(Vec<String>),
    Output(CommandOutput),
    /// An artifact upload request, answered with `respond(key, …)` or `decline(key)`.
    Artifact(String, String, u64),
    Query(QueryResult),
    Commands(CommandExecutionResult),
    Failed(Error),
    Ended(SessionEnd),
}

/// Items as a Python list of tuples (the codes of [`convert`]).
pub(crate) fn to_py<'py>(py: Python<'py>, items: Vec<Item>) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for item in items {
        match item {
            Item::Assistant(blocks) => list.append(convert::assistant(py, blocks)?)?,
            Item::Output(out) => list.append(convert::output(py, &out)?)?,
            Item::Artifact(name, path, key) => {
                list.append((ARTIFACT, name, path, key).into_bound_py_any(py)?)?;
            }
            Item::Query(r) => list.append(convert::query_result(py, &r)?)?,
            Item::Commands(r) => list.append(convert::commands_result(py, &r)?)?,
            Item::Failed(e) => list.append(convert::failed(py, &e)?)?,
            Item::Ended(end) => list.append(convert::ended(py, end)?)?,
        }
    }
    Ok(list)
}

/// Runs `f` on the state behind `lock`, never waiting for the lock with the GIL held: a
/// blocking pump holds it with the GIL released, and needs the GIL back when it returns.
pub(crate) fn locked<S, T>(
    py: Python<'_>,
    lock: &Mutex<S>,
    f: impl FnOnce(&mut S) -> PyResult<T>,
) -> PyResult<T> {
    loop {
        match lock.try_lock() {
            Ok(mut state) => return f(&mut state),
            Err(TryLockError::WouldBlock) => py.detach(std::thread::yield_now),
            Err(TryLockError::Poisoned(_)) => {
                return Err(PyRuntimeError::new_err("the connection failed earlier"));
            }
        }
    }
}

/// One connection's request layer. The uploader type is `()`: "Python answers artifact
/// requests" (the last call that had a callback makes it the session's).
pub(crate) struct Core {
    /// The client's sans-IO connection (the request layer and every timer inside).
    pub(crate) conn: Connection<()>,
    current: Option<RequestId>,
    pending: HashMap<u64, ArtifactUploadRequest>,
    next_key: u64,
    /// The graceful end was asked for.
    ending: bool,
    /// The session ended (reported once).
    ended: bool,
}

impl Core {
    pub(crate) fn new(config: Config) -> Self {
        Self::with(Connection::new(config, Instant::now()))
    }

    /// The core of a connection taken over from a resume token: its current call is the
    /// request that was in flight.
    pub(crate) fn taken_over(conn: Connection<()>) -> Self {
        let mut core = Self::with(conn);
        core.current = core.conn.requests().current();
        core
    }

    fn with(conn: Connection<()>) -> Self {
        Self {
            conn,
            current: None,
            pending: HashMap::new(),
            next_key: 0,
            ending: false,
            ended: false,
        }
    }

    fn check_idle(&self) -> PyResult<()> {
        if self.ending || self.ended {
            return Err(PyValueError::new_err("the session has ended"));
        }
        Ok(())
    }

    /// Starts a call: a query of `prompt`, or (`None`) the command batch `wire` describes.
    pub(crate) fn start(
        &mut self,
        prompt: Option<String>,
        wire: &Bound<'_, PyDict>,
        (timeout, idle_timeout, uploader): Limits,
    ) -> PyResult<()> {
        self.check_idle()?;
        let options = wire::request_options(timeout, idle_timeout, uploader)?;
        let (now, up) = (Instant::now(), uploader.then_some(()));
        let started = match prompt {
            Some(prompt) => {
                let invocation = wire::invocation(prompt, wire)?;
                (self.conn.requests()).start_query(invocation, options, up, now)
            }
            None => {
                let batch = wire::batch(wire)?;
                (self.conn.requests()).start_commands(batch, options, up, now)
            }
        };
        self.current = Some(started.map_err(|e| convert::raise(&e))?);
        Ok(())
    }

    /// Moves the connection's events into `out` until nothing is ready, expired timers fed
    /// (its frames wait in `poll_transmit`). Stops early once `out` holds `max` items: then
    /// more may be ready, and it returns `true`.
    /// `timers`: whether expired timers run (a driver with frames still to feed holds them:
    /// a frame waiting is news the timers have not heard yet).
    pub(crate) fn settle(&mut self, out: &mut Vec<Item>, max: usize, timers: bool) -> bool {
        loop {
            if let Some(event) = self.conn.poll_event() {
                self.route(event, out);
                if out.len() >= max {
                    return true;
                }
                continue;
            }
            let now = Instant::now();
            if timers && self.conn.poll_timeout() <= now {
                self.conn.handle_timeout(now);
                continue;
            }
            return false;
        }
    }

    /// How long until the next timer is due.
    pub(crate) fn wait(&mut self) -> Duration {
        self.conn
            .poll_timeout()
            .saturating_duration_since(Instant::now())
    }

    /// Cancels the request in flight.
    pub(crate) fn abort(&mut self) {
        self.conn.abort(Instant::now());
    }

    /// Starts the graceful end of the session (a request still in flight is cancelled and
    /// read to its end first).
    pub(crate) fn end(&mut self, out: &mut Vec<Item>) {
        if self.ending || self.ended {
            return;
        }
        self.ending = true;
        self.current = None;
        let step = self.conn.requests().end(Instant::now());
        self.on_ending(step, out);
    }

    fn on_ending(&mut self, step: Result<Ending<()>, Error>, out: &mut Vec<Item>) {
        match step {
            Ok(Ending::Read) => {}
            Ok(Ending::Upload(req, ())) => self.hand_out(req, out),
            Ok(Ending::Done(end)) => {
                self.ended = true;
                out.push(Item::Ended(end));
            }
            Err(e) => {
                self.ended = true;
                out.push(Item::Failed(e));
            }
        }
    }

    /// Whether a call's request is in flight.
    pub(crate) fn is_calling(&self) -> bool {
        self.current.is_some()
    }

    /// Whether the session ended (its end was reported).
    pub(crate) fn is_ended(&self) -> bool {
        self.ended
    }

    /// Answers the artifact request handed out with `key`.
    pub(crate) fn respond(&mut self, key: u64, url: String, content_type: String) -> PyResult<()> {
        let req = self
            .pending
            .remove(&key)
            .ok_or_else(|| PyValueError::new_err("no such artifact upload request"))?;
        (self.conn.requests())
            .respond(req, ArtifactUpload::new(url, content_type), Instant::now())
            .map_err(|e| convert::raise(&e))
    }

    /// Declines the artifact request handed out with `key` (unknown keys are ignored).
    pub(crate) fn decline(&mut self, key: u64) {
        if let Some(req) = self.pending.remove(&key) {
            self.conn.requests().decline(req);
        }
    }

    fn hand_out(&mut self, req: ArtifactUploadRequest, out: &mut Vec<Item>) {
        let key = self.next_key;
        self.next_key = self.next_key.wrapping_add(1);
        let item = Item::Artifact(req.filename().to_owned(), req.filepath().to_owned(), key);
        self.pending.insert(key, req);
        out.push(item);
    }

    /// What `event` means, as items.
    pub(crate) fn route(&mut self, event: Event, out: &mut Vec<Item>) {
        if self.ending {
            let step = self.conn.requests().end_on(event, Instant::now());
            return self.on_ending(step, out);
        }
        let Some(id) = self.current else {
            match self.conn.requests().between_calls(event) {
                Between::Upload(req, ()) => self.hand_out(req, out),
                Between::Ended if !self.ended => {
                    self.ended = true;
                    out.push(Item::Failed(Error::ConnectionClosed));
                }
                _ => {}
            }
            return;
        };
        match self.conn.requests().route(event, id, None) {
            Step::Item(item) => match item {
                RequestEvent::AssistantMessage(blocks) => out.push(Item::Assistant(blocks)),
                RequestEvent::CommandOutput(o) => out.push(Item::Output(o)),
                RequestEvent::ArtifactUploadRequest(req) => self.hand_out(req, out),
                RequestEvent::Result(r) => {
                    self.current = None;
                    out.push(Item::Query(r));
                }
                RequestEvent::CommandResult(r) => {
                    self.current = None;
                    out.push(Item::Commands(r));
                }
                _ => {}
            },
            Step::Upload(req, ()) => self.hand_out(req, out),
            Step::Failed(e) => {
                self.current = None;
                out.push(Item::Failed(e));
            }
            Step::Skip => {}
        }
    }
}
