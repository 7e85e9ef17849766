//! Rust values to the plain Python values the package's Python code builds its types from:
//! JSON values, events as tuples, errors as `NativeError(kind, message, details)`.

use std::error::Error as _;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PySet, PyTuple, PyType};
use pyo3::{IntoPyObjectExt, intern};
use runtimeuse_tungstenite::proto::{CommandOutput, OutputStream, TimeoutKind};
use runtimeuse_tungstenite::{CommandExecutionResult, Error, QueryResult, ResultData, SessionEnd};
use serde_json::Value;

pyo3::create_exception!(
    _native,
    NativeError,
    pyo3::exceptions::PyException,
    "An error of the Rust client: args are (kind, message, details); the package raises its \
     own exception classes from it."
);

/// Item codes of the tuples, shared with `runtimeuse_rs/_dispatch.py` (assistant messages and
/// command output are handed out as their message models, not as tuples).
pub(crate) const ARTIFACT: u8 = 2;
pub(crate) const DONE: u8 = 3;
pub(crate) const FAILED: u8 = 4;
pub(crate) const ENDED: u8 = 5;

/// A JSON value as Python's `json.loads` would give it.
pub(crate) fn json<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_bound_py_any(py)?,
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_bound_py_any(py)?
            } else if let Some(u) = n.as_u64() {
                u.into_bound_py_any(py)?
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_bound_py_any(py)?
            }
        }
        Value::String(s) => s.into_bound_py_any(py)?,
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, json(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

/// The two message models built once per frame, registered by the package at import
/// (`set_models`), and what builds them without validation (the values come from the Rust
/// decoder): `object.__new__` and `object.__setattr__`, as pydantic's `model_construct` does.
struct Models {
    output: Py<PyType>,
    assistant: Py<PyType>,
    /// Each class's `__pydantic_fields_set__`, shared by its instances: every field is set,
    /// and pydantic only ever adds a field's name to it (on assignment), which is in it
    /// already, so sharing it changes nothing anyone can see, and saves an allocation that
    /// the garbage collector would have to track, per frame.
    output_fields: Py<PySet>,
    assistant_fields: Py<PySet>,
    new: Py<PyAny>,
    set: Py<PyAny>,
}

static MODELS: PyOnceLock<Models> = PyOnceLock::new();

/// Registers the pydantic classes of command output and assistant messages.
#[pyfunction]
pub(crate) fn set_models(
    py: Python<'_>,
    output: Bound<'_, PyType>,
    assistant: Bound<'_, PyType>,
) -> PyResult<()> {
    let object = py.get_type::<PyAny>();
    let fields = |cls: &Bound<'_, PyType>| -> PyResult<Py<PySet>> {
        let names = cls
            .getattr("model_fields")?
            .try_iter()?
            .collect::<PyResult<Vec<_>>>()?;
        Ok(PySet::new(py, names)?.unbind())
    };
    let models = Models {
        output_fields: fields(&output)?,
        assistant_fields: fields(&assistant)?,
        output: output.unbind(),
        assistant: assistant.unbind(),
        new: object.getattr("__new__")?.unbind(),
        set: object.getattr("__setattr__")?.unbind(),
    };
    // Registered once per process; a second call (a reload) keeps the first.
    let _ = MODELS.set(py, models);
    Ok(())
}

/// An instance of `cls` holding `values` (every field of the class), without validation.
fn construct<'py>(
    py: Python<'py>,
    models: &Models,
    cls: &Py<PyType>,
    values: Bound<'py, PyDict>,
    fields: &Py<PySet>,
) -> PyResult<Bound<'py, PyAny>> {
    let set = models.set.bind(py);
    let obj = models.new.bind(py).call1((cls.bind(py),))?;
    let fields = fields.bind(py);
    set.call1((&obj, intern!(py, "__dict__"), values))?;
    set.call1((&obj, intern!(py, "__pydantic_fields_set__"), fields))?;
    set.call1((&obj, intern!(py, "__pydantic_extra__"), py.None()))?;
    set.call1((&obj, intern!(py, "__pydantic_private__"), py.None()))?;
    Ok(obj)
}

fn models(py: Python<'_>) -> PyResult<&Models> {
    MODELS.get(py).ok_or_else(|| {
        pyo3::exceptions::PyRuntimeError::new_err("runtimeuse_rs did not register its models")
    })
}

/// A `CommandOutputMessageInterface`: an item of its own (not a tuple), the most frequent.
pub(crate) fn output<'py>(py: Python<'py>, out: &CommandOutput) -> PyResult<Bound<'py, PyAny>> {
    let m = models(py)?;
    let keys = [
        intern!(py, "message_type"),
        intern!(py, "stream"),
        intern!(py, "text"),
        intern!(py, "command"),
    ];
    let values = PyDict::new(py);
    values.set_item(keys[0], intern!(py, "command_output_message"))?;
    let stream = match out.stream {
        OutputStream::Stderr => intern!(py, "stderr"),
        _ => intern!(py, "stdout"),
    };
    values.set_item(keys[1], stream)?;
    values.set_item(keys[2], out.text.as_str())?;
    values.set_item(keys[3], &*out.command)?;
    construct(py, m, &m.output, values, &m.output_fields)
}

/// An `AssistantMessageInterface`: an item of its own.
pub(crate) fn assistant(py: Python<'_>, blocks: Vec<String>) -> PyResult<Bound<'_, PyAny>> {
    let m = models(py)?;
    let keys = [intern!(py, "message_type"), intern!(py, "text_blocks")];
    let values = PyDict::new(py);
    values.set_item(keys[0], intern!(py, "assistant_message"))?;
    values.set_item(keys[1], blocks)?;
    construct(py, m, &m.assistant, values, &m.assistant_fields)
}

/// `(DONE, (kind, data, metadata))` for a query's result.
pub(crate) fn query_result<'py>(py: Python<'py>, r: &QueryResult) -> PyResult<Bound<'py, PyTuple>> {
    let metadata = json(py, &r.metadata)?;
    let data = match &r.data {
        ResultData::Text(text) => ("text", text.into_bound_py_any(py)?, metadata),
        ResultData::StructuredOutput(value) => ("structured_output", json(py, value)?, metadata),
        _ => ("unknown", py.None().into_bound(py), metadata),
    };
    (DONE, data).into_pyobject(py)
}

/// `(DONE, [(command, exit_code, stdout), ...])` for a command batch's result.
pub(crate) fn commands_result<'py>(
    py: Python<'py>,
    r: &CommandExecutionResult,
) -> PyResult<Bound<'py, PyTuple>> {
    let list = PyList::empty(py);
    for item in &r.results {
        list.append((
            item.command.as_str(),
            item.exit_code,
            item.stdout.as_deref(),
        ))?;
    }
    (DONE, list).into_pyobject(py)
}

/// `(ENDED, how)` for the end of a session.
pub(crate) fn ended<'py>(py: Python<'py>, end: SessionEnd) -> PyResult<Bound<'py, PyTuple>> {
    let how = match end {
        SessionEnd::Confirmed => "confirmed",
        SessionEnd::EndSessionTimeout => "end_session_timeout",
        SessionEnd::TransportClosed => "transport_closed",
        SessionEnd::KeepAliveTimeout => "keepalive_timeout",
        SessionEnd::Desynchronized => "desynchronized",
        _ => "other",
    };
    (ENDED, how).into_pyobject(py)
}

/// The error's text with its chain of sources.
pub(crate) fn message(e: &Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `(kind, message, details)`: the error's kind as the package names it, its text with its
/// chain, and the fields its Python exception carries.
pub(crate) fn error_parts<'py>(
    py: Python<'py>,
    e: &Error,
) -> PyResult<(&'static str, String, Bound<'py, PyDict>)> {
    let details = PyDict::new(py);
    let kind = match e {
        Error::Runtime(r) => {
            details.set_item("error", &r.error)?;
            details.set_item("metadata", json(py, &r.metadata)?)?;
            "runtime"
        }
        Error::Cancelled => "cancelled",
        Error::Timeout { kind, diagnostics } => {
            let (name, limit) = match kind {
                TimeoutKind::Overall(d) => ("timeout", d),
                TimeoutKind::Idle(d) => ("idle_timeout", d),
                _ => ("timeout", &std::time::Duration::ZERO),
            };
            details.set_item("timeout_type", name)?;
            details.set_item(name, limit.as_secs_f64())?;
            details.set_item(
                "last_message_type",
                diagnostics.last_message.map(|k| k.as_str()),
            )?;
            details.set_item("message_count", diagnostics.message_count)?;
            // The upstream's name for where the client stood: waiting for the next message
            // (a callback's own limit is a `callback_timeout`).
            details.set_item("phase", "waiting_for_message")?;
            name
        }
        Error::CallbackTimeout { callback, limit } => {
            details.set_item("callback", *callback)?;
            details.set_item("timeout", limit.as_secs_f64())?;
            "callback_timeout"
        }
        Error::ConnectTimeout(limit) => {
            details.set_item("timeout", limit.as_secs_f64())?;
            "connect_timeout"
        }
        Error::Connect(_)
        | Error::WebSocket(_)
        | Error::ConnectionClosed
        | Error::KeepAliveTimeout
        | Error::Desynchronized
        | Error::ResumeRefused(_) => "connection",
        Error::Config(_) | Error::Usage(_) => "usage",
        _ => "protocol",
    };
    let text = match e {
        // The upstream's words for a stream that ended without its terminal.
        Error::ConnectionClosed => {
            "No result message received: the connection closed before the request finished".into()
        }
        _ => message(e),
    };
    Ok((kind, text, details))
}

/// `(FAILED, (kind, message, details))` for a call that failed.
pub(crate) fn failed<'py>(py: Python<'py>, e: &Error) -> PyResult<Bound<'py, PyTuple>> {
    (FAILED, error_parts(py, e)?).into_pyobject(py)
}

/// The error as a `NativeError` to raise.
pub(crate) fn raise(e: &Error) -> PyErr {
    Python::attach(|py| match error_parts(py, e) {
        Ok(parts) => NativeError::new_err(parts.into_py_any(py).unwrap_or_else(|_| py.None())),
        Err(err) => err,
    })
}
