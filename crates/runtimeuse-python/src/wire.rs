//! The upstream message fields (a dict built by the Python code from the caller's options) to
//! the Rust request types.

use std::collections::BTreeMap;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use runtimeuse_tungstenite::proto::{
    Command, CommandBatch, Config, Downloadable, Invocation, RequestOptions,
};

fn field<'py, T>(wire: &Bound<'py, PyDict>, name: &str) -> PyResult<Option<T>>
where
    T: for<'a> FromPyObject<'a, 'py, Error = PyErr>,
{
    match wire.get_item(name)? {
        Some(v) if !v.is_none() => v
            .extract::<T>()
            .map(Some)
            .map_err(|e| PyValueError::new_err(format!("{name}: {e}"))),
        _ => Ok(None),
    }
}

/// A `CommandInterface` (anything with `command`, `cwd`, `env` attributes).
fn command(obj: &Bound<'_, PyAny>) -> PyResult<Command> {
    let mut c = Command::new(obj.getattr("command")?.extract::<String>()?);
    c.cwd = obj.getattr("cwd")?.extract()?;
    c.env = obj.getattr("env")?.extract()?;
    Ok(c)
}

fn commands(wire: &Bound<'_, PyDict>, name: &str) -> PyResult<Option<Vec<Command>>> {
    match wire.get_item(name)? {
        Some(v) if !v.is_none() => v
            .try_iter()?
            .map(|c| command(&c?))
            .collect::<PyResult<_>>()
            .map(Some),
        _ => Ok(None),
    }
}

fn downloads(wire: &Bound<'_, PyDict>, name: &str) -> PyResult<Option<Vec<Downloadable>>> {
    match wire.get_item(name)? {
        Some(v) if !v.is_none() => v
            .try_iter()?
            .map(|d| {
                let d = d?;
                Ok(Downloadable::new(
                    d.getattr("download_url")?.extract::<String>()?,
                    d.getattr("working_dir")?.extract::<String>()?,
                ))
            })
            .collect::<PyResult<_>>()
            .map(Some),
        _ => Ok(None),
    }
}

/// The fields of an `invocation_message`, from the upstream field names.
pub(crate) fn invocation(prompt: String, wire: &Bound<'_, PyDict>) -> PyResult<Invocation> {
    let model: String =
        field(wire, "model")?.ok_or_else(|| PyValueError::new_err("model is required"))?;
    let mut inv = Invocation::new(prompt, model);
    inv.system_prompt = field(wire, "system_prompt")?.unwrap_or_default();
    inv.output_format_json_schema = field(wire, "output_format_json_schema_str")?;
    inv.source_id = field(wire, "source_id")?;
    inv.agent_env = field::<BTreeMap<String, String>>(wire, "agent_env")?;
    inv.secrets_to_redact = field(wire, "secrets_to_redact")?.unwrap_or_default();
    inv.artifacts_dirs = field(wire, "artifacts_dirs")?.unwrap_or_default();
    inv.artifacts_ignore_content = field(wire, "artifacts_ignore_content")?;
    inv.pre_agent_invocation_commands = commands(wire, "pre_agent_invocation_commands")?;
    inv.post_agent_invocation_commands = commands(wire, "post_agent_invocation_commands")?;
    inv.pre_agent_downloadables = downloads(wire, "pre_agent_downloadables")?;
    Ok(inv)
}

/// The fields of a `command_execution_message` (its commands apart).
pub(crate) fn batch(wire: &Bound<'_, PyDict>) -> PyResult<CommandBatch> {
    let mut b = CommandBatch::new(commands(wire, "commands")?.unwrap_or_default());
    b.source_id = field(wire, "source_id")?;
    b.secrets_to_redact = field(wire, "secrets_to_redact")?.unwrap_or_default();
    b.artifacts_dirs = field(wire, "artifacts_dirs")?.unwrap_or_default();
    b.artifacts_ignore_content = field(wire, "artifacts_ignore_content")?;
    b.pre_execution_downloadables = downloads(wire, "pre_execution_downloadables")?;
    Ok(b)
}

/// Seconds from Python (`None`: no limit) as a duration; negative or not finite is refused.
pub(crate) fn seconds(name: &str, value: Option<f64>) -> PyResult<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(s) => Duration::try_from_secs_f64(s).map(Some).map_err(|_| {
            PyValueError::new_err(format!(
                "{name} must be a finite number of seconds >= 0, not {s}"
            ))
        }),
    }
}

/// The core's per-request options: `idle_timeout` `None` keeps the session's default limit.
pub(crate) fn request_options(
    timeout: Option<f64>,
    idle_timeout: Option<f64>,
    uploader: bool,
) -> PyResult<RequestOptions> {
    let mut o = RequestOptions::default().artifact_uploader(uploader);
    // `inf`: no limit (no overall limit is `None`; no idle limit, `Duration::MAX`).
    o.timeout = limit("timeout", timeout)?.flatten();
    o.idle_timeout = limit("idle_timeout", idle_timeout)?.map(|l| l.unwrap_or(Duration::MAX));
    Ok(o)
}

/// `inf` turns a limit off (`Some(None)`); `None` keeps the default (`None`); other values as
/// [`seconds`].
fn limit(name: &str, value: Option<f64>) -> PyResult<Option<Option<Duration>>> {
    match value {
        Some(s) if s == f64::INFINITY => Ok(Some(None)),
        other => Ok(seconds(name, other)?.map(Some)),
    }
}

/// The session settings from the client's keyword arguments: the default idle limit of each
/// request (`inf`: none), the keepalive interval (`0` or `inf`: no pings), the largest frame.
pub(crate) fn config(
    idle_timeout: Option<f64>,
    keepalive_interval: Option<f64>,
    max_frame_size: Option<usize>,
) -> PyResult<Config> {
    let mut config = Config::default();
    if let Some(idle) = limit("idle_timeout", idle_timeout)? {
        config.request_idle_timeout = idle;
    }
    if let Some(interval) = limit("keepalive_interval", keepalive_interval)? {
        config.keepalive_interval = interval.filter(|d| !d.is_zero());
    }
    if let Some(bytes) = max_frame_size {
        config.max_frame_size = frame_limit(bytes)?;
    }
    Ok(config)
}

/// The smallest frame limit: below it no message of the protocol fits.
pub(crate) const MIN_FRAME_SIZE: usize = 1024;

/// A frame limit from Python, refused below [`MIN_FRAME_SIZE`].
pub(crate) fn frame_limit(bytes: usize) -> PyResult<usize> {
    if bytes < MIN_FRAME_SIZE {
        return Err(PyValueError::new_err(format!(
            "max_frame_size must be at least {MIN_FRAME_SIZE} bytes (no message fits in {bytes})"
        )));
    }
    Ok(bytes)
}
