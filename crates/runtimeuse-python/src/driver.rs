//! Custom transports: Python moves the messages (dicts from the user's transport, as JSON
//! text), the request layer keeps the rules.

use std::sync::Mutex;
use std::time::Instant;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use runtimeuse_client_core::connection::{Frame, Outgoing};

use crate::core::{self, Core, Limits};
use crate::wire;

/// One custom-transport connection: feed it the runtime's messages (`receive`, `closed`),
/// take what to send and what happened (`poll`).
#[pyclass(module = "runtimeuse_rs._native", frozen)]
pub(crate) struct Driver {
    core: Mutex<Core>,
}

impl Driver {
    fn with<T>(&self, py: Python<'_>, f: impl FnOnce(&mut Core) -> PyResult<T>) -> PyResult<T> {
        core::locked(py, &self.core, f)
    }
}

#[pymethods]
impl Driver {
    /// A session with the core's defaults (no keepalive pings: a message transport has none)
    /// and this default idle limit (`inf`: none).
    #[new]
    #[pyo3(signature = (*, idle_timeout=None, max_frame_size=None))]
    fn new(idle_timeout: Option<f64>, max_frame_size: Option<usize>) -> PyResult<Self> {
        let mut config = wire::config(idle_timeout, None, max_frame_size)?;
        config.keepalive_interval = None;
        Ok(Self {
            core: Mutex::new(Core::new(config)),
        })
    }

    /// Starts a call: a query of `prompt`, or (`None`) the command batch of `wire`.
    fn start(
        &self,
        py: Python<'_>,
        prompt: Option<String>,
        wire: &Bound<'_, PyDict>,
        limits: Limits,
    ) -> PyResult<()> {
        self.with(py, |c| c.start(prompt, wire, limits))
    }

    /// A message of the runtime, as JSON text.
    fn receive(&self, py: Python<'_>, text: &str) -> PyResult<()> {
        self.with(py, |c| {
            c.conn.handle_frame(Instant::now(), Frame::Text(text));
            Ok(())
        })
    }

    /// The transport ended.
    fn closed(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |c| {
            c.conn.connection_lost(Instant::now(), None);
            Ok(())
        })
    }

    /// Cancels the request in flight.
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |c| {
            c.abort();
            Ok(())
        })
    }

    /// Answers the artifact request handed out with `key`.
    fn respond(
        &self,
        py: Python<'_>,
        key: u64,
        presigned_url: String,
        content_type: String,
    ) -> PyResult<()> {
        self.with(py, |c| c.respond(key, presigned_url, content_type))
    }

    /// Declines the artifact request handed out with `key`.
    fn decline(&self, py: Python<'_>, key: u64) -> PyResult<()> {
        self.with(py, |c| {
            c.decline(key);
            Ok(())
        })
    }

    /// `(messages to send as JSON texts, items, seconds until poll is due again)`.
    fn poll<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        self.with(py, |c| {
            let (mut texts, mut items) = (Vec::new(), Vec::new());
            c.settle(&mut items, usize::MAX, true);
            while let Some(frame) = c.conn.poll_transmit() {
                if let Outgoing::Text(text) = frame {
                    texts.push(text);
                }
            }
            (texts, core::to_py(py, items)?, c.wait().as_secs_f64()).into_pyobject(py)
        })
    }
}
