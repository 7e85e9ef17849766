//! What the client commands print: one renderer per output format, for a person ([`Human`])
//! or as one JSON object per line ([`Json`]); the progress line; the low-level writers.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use runtimeuse_proto::{
    CommandExecutionResult, CommandResultItem, OutputStream, QueryResult, RequestEvent, ResultData,
};
use serde_json::{Value, json};

use crate::exit;

/// Prints a request's events and outcome in one output format.
pub(super) trait Renderer {
    /// A non-terminal event.
    fn event(&mut self, event: RequestEvent);
    /// An artifact the command line cannot upload (it has no uploader).
    fn artifact(&self, filename: &str, filepath: &str);
    /// A query's result.
    fn result(&self, result: &QueryResult);
    /// A batch's outcome; `total` commands were sent.
    fn command_result(&self, result: &CommandExecutionResult, total: usize);
    /// A failure (printed here only as JSON; a person reads it from the error report).
    fn error(&self, kind: &str, message: &str, metadata: &Value);
}

/// The renderer of the chosen format.
pub(super) fn renderer(json: bool) -> Box<dyn Renderer + Send> {
    if json {
        Box::new(Json)
    } else {
        Box::new(Human::default())
    }
}

/// The exit code of a batch: the failing command's (1 when it does not fit), else 0; and the
/// failing command.
pub(super) fn batch_outcome(result: &CommandExecutionResult) -> (u8, Option<&CommandResultItem>) {
    match result.results.iter().find(|r| r.exit_code != 0) {
        None => (exit::OK, None),
        Some(failed) => {
            let code = u8::try_from(failed.exit_code)
                .ok()
                .filter(|c| *c != 0)
                .unwrap_or(1);
            (code, Some(failed))
        }
    }
}

/// Whether two texts have the same non-blank lines, in order.
fn same_lines(a: &str, b: &str) -> bool {
    fn lines(t: &str) -> impl Iterator<Item = &str> {
        t.lines().filter(|l| !l.trim().is_empty())
    }
    lines(a).eq(lines(b))
}

/// For a person: text as it comes, errors and notes on stderr.
#[derive(Default)]
pub(super) struct Human {
    last_assistant: Option<String>,
    /// Every assistant message's text so far, one per line (an agent whose result is all it
    /// said, as the command agent's, is not printed twice).
    said: String,
    /// The runtime's non-terminal errors: said with the failure they usually precede (the
    /// error report carries them), or before the result when the request succeeds anyway.
    runtime_errors: Vec<String>,
}

impl Human {
    fn say_runtime_errors(&self) {
        for e in &self.runtime_errors {
            note(&format!("the runtime reported: {e}"));
        }
    }
}

impl Renderer for Human {
    fn event(&mut self, event: RequestEvent) {
        match event {
            RequestEvent::AssistantMessage(blocks) => {
                let text = blocks.join("");
                emit(false, &format!("{text}\n"));
                self.said.push_str(&text);
                self.said.push('\n');
                self.last_assistant = Some(text);
            }
            RequestEvent::CommandOutput(o) => emit(o.stream == OutputStream::Stderr, &o.text),
            RequestEvent::RuntimeError(e) => self.runtime_errors.push(e.error),
            RequestEvent::Reconnected { attempts, .. } => {
                note(&format!("connection lost; resumed (attempt {attempts})"));
            }
            _ => {}
        }
    }

    fn artifact(&self, _filename: &str, filepath: &str) {
        note(&format!(
            "artifact {filepath} not uploaded (the command line has no uploader)"
        ));
    }

    fn result(&self, result: &QueryResult) {
        self.say_runtime_errors();
        match &result.data {
            // The final answer is often the last assistant message: do not print it twice.
            ResultData::Text(t)
                if self.last_assistant.as_deref() == Some(t.as_str())
                    || (!self.said.is_empty() && same_lines(t, &self.said)) => {}
            ResultData::Text(t) => emit(false, &format!("{t}\n")),
            ResultData::StructuredOutput(v) => emit(
                false,
                &format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default()),
            ),
            _ => {}
        }
        if result.metadata.as_object().is_some_and(|o| !o.is_empty()) {
            note(&format!("metadata: {}", result.metadata));
        }
    }

    fn command_result(&self, result: &CommandExecutionResult, total: usize) {
        self.say_runtime_errors();
        let (_, Some(failed)) = batch_outcome(result) else {
            return;
        };
        let rest = match total.saturating_sub(result.results.len()) {
            0 => String::new(),
            1 => "; the 1 command after it was skipped".to_owned(),
            n => format!("; the {n} commands after it were skipped"),
        };
        let how = match failed.exit_code {
            // The shell's convention, which the runtime follows: 128 + the signal's number.
            code @ 129..=192 => format!("was killed by signal {}", code - 128),
            code => format!("failed with exit code {code}"),
        };
        note(&format!("command `{}` {how}{rest}", failed.command));
    }

    fn error(&self, _kind: &str, _message: &str, _metadata: &Value) {}
}

/// For scripts: one JSON object per event, per line, on stdout.
pub(super) struct Json;

impl Renderer for Json {
    fn event(&mut self, event: RequestEvent) {
        let line = match event {
            RequestEvent::AssistantMessage(blocks) => {
                json!({"type": "assistant_message", "text": blocks.join(""), "blocks": blocks})
            }
            RequestEvent::CommandOutput(o) => json!({
                "type": "command_output",
                "stream": o.stream.as_str(),
                "command": &*o.command,
                "text": o.text,
            }),
            RequestEvent::Heartbeat { phase, elapsed_ms } => {
                json!({"type": "heartbeat", "phase": phase, "elapsed_ms": elapsed_ms})
            }
            RequestEvent::RuntimeError(e) => {
                json!({"type": "runtime_error", "error": e.error, "metadata": e.metadata})
            }
            RequestEvent::Reconnected { attempts, received } => {
                json!({"type": "reconnected", "attempts": attempts, "received": received})
            }
            _ => return,
        };
        json_line(&line);
    }

    fn artifact(&self, filename: &str, filepath: &str) {
        json_line(&json!({
            "type": "artifact_upload_request", "filename": filename, "filepath": filepath,
            "declined": true
        }));
    }

    fn result(&self, result: &QueryResult) {
        let line = match &result.data {
            ResultData::Text(t) => {
                json!({"type": "result", "text": t, "metadata": result.metadata})
            }
            ResultData::StructuredOutput(v) => {
                json!({"type": "result", "structured_output": v, "metadata": result.metadata})
            }
            _ => json!({"type": "result", "metadata": result.metadata}),
        };
        json_line(&line);
    }

    fn command_result(&self, result: &CommandExecutionResult, _total: usize) {
        let results: Vec<Value> = result
            .results
            .iter()
            .map(|r| json!({"command": r.command, "exit_code": r.exit_code, "stdout": r.stdout}))
            .collect();
        json_line(&json!({"type": "command_result", "results": results}));
    }

    fn error(&self, kind: &str, message: &str, metadata: &Value) {
        json_line(
            &json!({"type": "error", "kind": kind, "message": message, "metadata": metadata}),
        );
    }
}

/// A progress line on stderr while a request runs (only when stderr and stdout are terminals
/// and the output is for a person): elapsed time, phase, heartbeats. It is cleared before any output
/// and redrawn on the next tick.
pub(super) struct Progress {
    pub(super) enabled: bool,
    started: std::time::Instant,
    pub(super) events: u64,
    pub(super) heartbeats: u64,
    frame: usize,
}

/// Whether the progress line is on the screen now (a note clears it first).
static PROGRESS_SHOWN: AtomicBool = AtomicBool::new(false);

impl Progress {
    pub(super) fn new(json: bool) -> Self {
        Self {
            // On a terminal only, and only when the output shares it: a line drawn on stderr
            // while stdout goes to a pipe or a file garbles what a person reads of both.
            enabled: !json && std::io::stderr().is_terminal() && std::io::stdout().is_terminal(),
            started: std::time::Instant::now(),
            events: 0,
            heartbeats: 0,
            frame: 0,
        }
    }

    pub(super) fn draw(&mut self) {
        // Drawn from the start of a line: over a line that output left open (a prompt
        // without a newline), it would erase what the person is reading.
        if !self.enabled || OPEN.iter().any(|open| open.load(Ordering::Relaxed)) {
            return;
        }
        const SPIN: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
        self.frame += 1;
        let phase = if self.events == 0 {
            "waiting for the runtime"
        } else {
            "running"
        };
        let beats = match self.heartbeats {
            0 => String::new(),
            1 => " · 1 heartbeat".to_owned(),
            n => format!(" · {n} heartbeats"),
        };
        write(
            true,
            &format!(
                "\r\x1b[K{} {:.1}s {phase}{beats}",
                SPIN[self.frame % SPIN.len()],
                self.started.elapsed().as_secs_f64()
            ),
        );
        PROGRESS_SHOWN.store(true, Ordering::Relaxed);
    }

    pub(super) fn clear(&mut self) {
        clear_progress();
    }
}

/// Takes the progress line off the screen if it is on it.
fn clear_progress() {
    if PROGRESS_SHOWN.swap(false, Ordering::Relaxed) {
        write(true, "\r\x1b[K");
    }
}

/// Whether standard output or error was found closed: nothing more is written.
static CLOSED: AtomicBool = AtomicBool::new(false);
/// Whether the last text written to stdout (0) or stderr (1) left its line open (a
/// command's output without a final newline).
static OPEN: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];

/// Writes to stdout or stderr; a closed pipe ends the program quietly (exit 141, as a shell
/// reports SIGPIPE), never a panic: at once when no request runs, else once the runtime
/// confirmed the request's cancel (within a bound), and nothing more is written meanwhile.
pub(super) fn emit(to_stderr: bool, text: &str) {
    write(to_stderr, text);
    if !text.is_empty() {
        OPEN[usize::from(to_stderr)].store(!text.ends_with('\n'), Ordering::Relaxed);
    }
}

/// [`emit`] without noting where the line stands (the progress line redraws itself).
fn write(to_stderr: bool, text: &str) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let result = if to_stderr {
        std::io::stderr().lock().write_all(text.as_bytes())
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes()).and_then(|()| out.flush())
    };
    if let Err(e) = result
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        CLOSED.store(true, Ordering::Relaxed);
        super::stop::leave(super::stop::Reason::OutputClosed);
    }
}

/// Ends a line that output left open where a note is about to be read: on stderr, or on
/// stdout when both go to the same place (a terminal, `2>&1`). A note never runs into a
/// command's last line.
pub(crate) fn start_line() {
    clear_progress();
    let on_stderr = OPEN[1].swap(false, Ordering::Relaxed);
    let on_stdout = OPEN[0].load(Ordering::Relaxed) && same_destination();
    if on_stdout {
        OPEN[0].store(false, Ordering::Relaxed);
    }
    if on_stderr || on_stdout {
        write(true, "\n");
    }
}

/// Whether stdout and stderr are the same file (a terminal, or `2>&1`).
fn same_destination() -> bool {
    static SAME: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SAME.get_or_init(|| {
        match (
            nix::sys::stat::fstat(std::io::stdout()),
            nix::sys::stat::fstat(std::io::stderr()),
        ) {
            (Ok(out), Ok(err)) => out.st_dev == err.st_dev && out.st_ino == err.st_ino,
            _ => false,
        }
    })
}

pub(super) fn json_line(v: &Value) {
    emit(false, &format!("{v}\n"));
}

pub(super) fn note(text: &str) {
    start_line();
    emit(true, &format!("runtimeuse: {text}\n"));
}

/// What a person reads about a runtime error's metadata: each field on its own line, a stack
/// trace with its own line breaks.
pub(crate) fn print_metadata(metadata: &Value) {
    let Some(fields) = metadata.as_object().filter(|o| !o.is_empty()) else {
        return;
    };
    for (k, v) in fields {
        match v {
            Value::String(s) if s.contains('\n') => {
                emit(true, &format!("  {k}:\n"));
                for line in s.lines() {
                    emit(true, &format!("    {line}\n"));
                }
            }
            Value::String(s) => emit(true, &format!("  {k}: {s}\n")),
            v => emit(true, &format!("  {k}: {v}\n")),
        }
    }
}
