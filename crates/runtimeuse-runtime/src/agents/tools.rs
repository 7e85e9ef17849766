//! The tools the model may call: `shell` (through the runtime's command machinery),
//! `read_file` and `write_file`. Each is a plain function tool, so every OpenAI-compatible
//! server and the Anthropic API can offer it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use runtimeuse_proto::Command;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use super::AgentOptions;
use super::model::{ToolCall, ToolSpec};
use crate::commands::{self, Budget, Collect, RunError};
use crate::handler::CancelSignal;

/// The tool the structured answer is given through (Anthropic).
pub(crate) const FINAL_OUTPUT: &str = "final_output";

/// The built-in tools.
pub(crate) fn builtin() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "shell",
            description: "Run a shell command (sh -c) in the sandbox and get its exit code, \
                stdout and stderr. Long output is cut in the middle; the command is killed \
                when it runs longer than the time limit.",
            parameters: json!({
                "type": "object",
                "properties": {
                    "command": { "type": "string", "description": "The command line to run." }
                },
                "required": ["command"],
                "additionalProperties": false
            }),
        },
        ToolSpec {
            name: "read_file",
            description: "Read a text file of the sandbox (long files are cut).",
            parameters: json!({
                "type": "object",
                "properties": {
                    "path": { "type": "string", "description": "The file's path." }
                },
                "required": ["path"],
                "additionalProperties": false
            }),
        },
        ToolSpec {
            name: "write_file",
            description: "Write a text file in the sandbox, creating its directories; \
                replaces the file when it exists.",
            parameters: json!({
                "type": "object",
                "properties": {
                    "path": { "type": "string", "description": "The file's path." },
                    "content": { "type": "string", "description": "The whole new content." }
                },
                "required": ["path", "content"],
                "additionalProperties": false
            }),
        },
    ]
}

/// The tool through which the model gives a structured answer matching `schema`.
pub(crate) fn final_output(schema: Value) -> ToolSpec {
    ToolSpec {
        name: FINAL_OUTPUT,
        description: "Give your final answer. Call this once you are done, with the answer \
            as the input; it must follow the input schema.",
        parameters: schema,
    }
}

/// What tools run with.
#[derive(Debug)]
pub(crate) struct ToolEnv<'a> {
    pub(crate) cancel: &'a CancelSignal,
    pub(crate) env: Option<&'a BTreeMap<String, String>>,
    pub(crate) options: &'a AgentOptions,
    pub(crate) secrets: &'a [String],
    /// What the shell gets not of the runtime's environment.
    pub(crate) withheld_env: &'a [String],
}

#[derive(Deserialize)]
struct ShellArgs {
    command: String,
}

#[derive(Deserialize)]
struct ReadArgs {
    path: String,
}

#[derive(Deserialize)]
struct WriteArgs {
    path: String,
    content: String,
}

/// Runs one tool call and returns what the model gets back: the output, or what went wrong.
/// The invocation's secrets are replaced by `[REDACTED]` in it.
pub(crate) async fn call(call: &ToolCall, env: &ToolEnv<'_>) -> String {
    let output = match call.name.as_str() {
        "shell" => match parse::<ShellArgs>(&call.arguments) {
            Ok(a) => shell(&a.command, env).await,
            Err(e) => e,
        },
        "read_file" => match parse::<ReadArgs>(&call.arguments) {
            Ok(a) => read_file(&a.path, env.options.max_tool_output).await,
            Err(e) => e,
        },
        "write_file" => match parse::<WriteArgs>(&call.arguments) {
            Ok(a) => write_file(&a.path, &a.content).await,
            Err(e) => e,
        },
        other => format!("error: there is no tool named {other:?}"),
    };
    redact(output, env.secrets)
}

fn parse<T: for<'de> Deserialize<'de>>(arguments: &str) -> Result<T, String> {
    serde_json::from_str(arguments).map_err(|e| format!("error: invalid arguments: {e}"))
}

/// Replaces every secret by `[REDACTED]`.
pub(crate) fn redact(mut text: String, secrets: &[String]) -> String {
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        if text.contains(s.as_str()) {
            text = text.replace(s.as_str(), "[REDACTED]");
        }
    }
    text
}

fn cut_marker(n: usize) -> String {
    format!("\n[... {n} bytes cut ...]\n")
}

async fn shell(command: &str, env: &ToolEnv<'_>) -> String {
    let max = env.options.max_tool_output;
    let collect = Collect {
        stdout: Budget {
            head: max * 3 / 8,
            tail: max * 3 / 8,
        },
        stderr: Budget {
            head: max / 8,
            tail: max / 8,
        },
    };
    let mut cmd = Command::new(command);
    cmd.env = env.env.cloned();
    let limit = env.options.tool_timeout;
    let run = commands::run(&cmd, None, env.cancel, collect, env.withheld_env);
    match tokio::time::timeout(limit, run).await {
        Err(_) => format!(
            "error: the command ran longer than {} and was killed",
            seconds(limit)
        ),
        Ok(Err(RunError::Cancelled)) => "error: cancelled".to_owned(),
        Ok(Err(RunError::Spawn(e))) => format!("error: the command could not start: {e}"),
        Ok(Ok(exit)) => format!(
            "exit_code: {}\nstdout:\n{}\nstderr:\n{}",
            exit.code,
            exit.stdout.into_text(cut_marker),
            exit.stderr.into_text(cut_marker)
        ),
    }
}

fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

async fn read_file(path: &str, max: usize) -> String {
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => return format!("error: {path}: {e}"),
    };
    let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX);
    if let Err(e) = file.take(limit).read_to_end(&mut bytes).await {
        return format!("error: {path}: {e}");
    }
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if size > read {
        text.push_str(&format!(
            "\n[... the file has {size} bytes; only the first {read} are shown ...]"
        ));
    }
    text
}

async fn write_file(path: &str, content: &str) -> String {
    let file = Path::new(path);
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty())
        && let Err(e) = tokio::fs::create_dir_all(parent).await
    {
        return format!("error: {}: {e}", parent.display());
    }
    match tokio::fs::write(file, content).await {
        Ok(()) => format!("wrote {} bytes to {path}", content.len()),
        Err(e) => format!("error: {path}: {e}"),
    }
}
