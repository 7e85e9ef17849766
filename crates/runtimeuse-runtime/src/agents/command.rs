//! The `command` agent: an external agent CLI (a coding agent's non-interactive mode, a
//! script) run once per query.

use std::process::Stdio;

use runtimeuse_proto::{Invocation, QueryResult, ResultData};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::schema;
use crate::commands::{Budget, Capture, GroupGuard, Reaped};
use crate::handler::{AgentError, HandlerContext};

/// How the prompt reaches the agent command.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PromptInput {
    /// Written to its stdin, which is then closed.
    #[default]
    Stdin,
    /// Appended to the command line as one more argument.
    Argument,
}

/// Runs an agent CLI for each query: `sh -c <command>` in a process group of its own, the
/// prompt on stdin or as the last argument; each line of its stdout is streamed as an
/// assistant message and its whole stdout (trimmed) is the text result; a non-zero exit fails
/// the query with the end of its stderr. Cancel kills its process group.
///
/// It also gets, besides the invocation's `agent_env`: `RUNTIMEUSE_PROMPT`,
/// `RUNTIMEUSE_SYSTEM_PROMPT`, `RUNTIMEUSE_MODEL` (the query's model, or the
/// [`default_model`](Self::default_model) when it names none) and, when structured output is asked for,
/// `RUNTIMEUSE_OUTPUT_SCHEMA` (the answer's JSON Schema); its stdout (or its last line) must
/// then be that JSON.
#[derive(Clone, Debug)]
pub struct CommandAgent {
    command: String,
    prompt: PromptInput,
    max_result: usize,
    default_model: Option<String>,
}

/// The longest line streamed as one assistant message; longer lines go out in pieces.
const MAX_LINE: usize = 64 * 1024;

impl CommandAgent {
    /// An agent running `command` through `sh -c`, the prompt on stdin.
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            prompt: PromptInput::Stdin,
            max_result: 512 * 1024,
            default_model: None,
        }
    }

    /// The model `RUNTIMEUSE_MODEL` names when a query names none (`serve --model`).
    #[must_use]
    pub fn default_model(mut self, model: impl Into<String>) -> Self {
        self.default_model = Some(model.into());
        self
    }

    /// Sets how the prompt is passed.
    #[must_use]
    pub fn prompt_input(mut self, how: PromptInput) -> Self {
        self.prompt = how;
        self
    }

    /// Most bytes of stdout kept for the result (the end is kept). Default 512 KiB.
    #[must_use]
    pub fn max_result(mut self, bytes: usize) -> Self {
        self.max_result = bytes;
        self
    }

    async fn answer(
        &self,
        invocation: Invocation,
        ctx: HandlerContext,
    ) -> Result<QueryResult, AgentError> {
        let schema = schema::of_invocation(&invocation)?;
        let (mut child, mut stdin, stdout, stderr) = spawn(
            self.command(&invocation, schema.as_ref(), &ctx),
            "the agent command",
        )?;
        // Kills the whole group when the query ends early (cancel, connection gone).
        let mut guard = GroupGuard::new(child.id());
        let prompt = (self.prompt == PromptInput::Stdin).then(|| invocation.user_prompt.clone());
        let feed = async move {
            if let Some(p) = prompt {
                // An agent that exits without reading its stdin is not an error.
                let _ = stdin.write_all(p.as_bytes()).await;
            }
            drop(stdin);
        };
        let budget = Budget {
            head: 0,
            tail: self.max_result,
        };
        let ((), out, err) = tokio::join!(
            feed,
            stream_lines(stdout, &ctx, budget),
            stderr_tail(stderr)
        );
        let status = child
            .wait()
            .await
            .map_err(|e| AgentError::new(format!("waiting for the agent command: {e}")))?;
        guard.disarm();
        let marker = |n: usize| format!("[... {n} bytes cut ...]\n");
        if !status.success() {
            let code = status.code().map_or(-1, i64::from);
            let stderr = err.into_text(marker);
            return Err(AgentError {
                message: format!(
                    "the agent command exited with code {code}: {}",
                    stderr.trim()
                ),
                metadata: json!({ "error_name": "CommandAgentError", "exit_code": code }),
            });
        }
        let text = out.into_text(marker).trim().to_owned();
        let data = match schema {
            None => ResultData::Text(text),
            Some(s) => ResultData::StructuredOutput(structured(&text, &s)?),
        };
        Ok(QueryResult::new(data, json!({ "agent": "command" })))
    }

    /// The query's model, or the default when it names none.
    fn model<'a>(&'a self, invocation: &'a Invocation) -> &'a str {
        match (invocation.model.trim(), &self.default_model) {
            ("", Some(default)) => default,
            _ => &invocation.model,
        }
    }

    /// The agent command for `invocation`: `sh -c` in a process group of its own, the prompt
    /// on stdin or as its last argument, the invocation in `RUNTIMEUSE_*` variables.
    fn command(
        &self,
        invocation: &Invocation,
        schema: Option<&Value>,
        ctx: &HandlerContext,
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("/bin/sh");
        match self.prompt {
            PromptInput::Stdin => {
                cmd.arg("-c").arg(&self.command);
            }
            PromptInput::Argument => {
                cmd.arg("-c")
                    .arg(format!("{} \"$@\"", self.command))
                    .arg("runtimeuse")
                    .arg(&invocation.user_prompt);
            }
        }
        cmd.process_group(0).kill_on_drop(true);
        ctx.withhold_env(&mut cmd);
        if let Some(env) = &invocation.agent_env {
            cmd.envs(env);
        }
        cmd.env("RUNTIMEUSE_PROMPT", &invocation.user_prompt)
            .env("RUNTIMEUSE_SYSTEM_PROMPT", &invocation.system_prompt)
            .env("RUNTIMEUSE_MODEL", self.model(invocation));
        if let Some(s) = schema {
            cmd.env("RUNTIMEUSE_OUTPUT_SCHEMA", s.to_string());
        }
        cmd
    }
}

/// An agent's process, started with its three pipes (`what` names it in the errors).
pub(super) fn spawn(
    mut command: tokio::process::Command,
    what: &str,
) -> Result<
    (
        Reaped,
        tokio::process::ChildStdin,
        tokio::process::ChildStdout,
        tokio::process::ChildStderr,
    ),
    AgentError,
> {
    let child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| AgentError::new(format!("{what} could not start: {e}")))?;
    let mut child = Reaped::new(child);
    match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
        (Some(stdin), Some(stdout), Some(stderr)) => Ok((child, stdin, stdout, stderr)),
        _ => Err(AgentError::new(format!("{what} has no pipes"))),
    }
}

/// Streams the agent's stdout line by line as assistant messages; what `budget` keeps of it.
async fn stream_lines(
    mut stdout: impl tokio::io::AsyncRead + Unpin,
    ctx: &HandlerContext,
    budget: Budget,
) -> Capture {
    let mut kept = Capture::new(budget);
    let mut line = Vec::new();
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match stdout.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' || line.len() >= MAX_LINE {
                if b != b'\n' {
                    line.push(b);
                }
                emit(ctx, &mut kept, &mut line, true).await;
            } else {
                line.push(b);
            }
        }
    }
    emit(ctx, &mut kept, &mut line, false).await;
    kept
}

/// The end of the agent's stderr, for the error when it fails.
pub(super) async fn stderr_tail(mut stderr: impl tokio::io::AsyncRead + Unpin) -> Capture {
    let mut kept = Capture::new(Budget {
        head: 0,
        tail: 4096,
    });
    let mut buf = vec![0; 8 * 1024];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.push(&String::from_utf8_lossy(&buf[..n]));
    }
    kept
}

/// The structured answer in the agent's output: all of it as JSON, or its last non-blank
/// line; checked against `schema`.
fn structured(text: &str, schema: &Value) -> Result<Value, AgentError> {
    let value = serde_json::from_str::<Value>(text)
        .ok()
        .or_else(|| {
            text.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .and_then(|l| serde_json::from_str(l).ok())
        })
        .ok_or_else(|| AgentError::new("the agent command's output is not JSON"))?;
    schema::check(&value, schema).map_err(|e| {
        AgentError::new(format!(
            "the agent command's output does not follow the schema: {e}"
        ))
    })?;
    Ok(value)
}

/// Streams one line of stdout as an assistant message (blank lines are kept for the result
/// but not sent) and keeps it for the result.
async fn emit(ctx: &HandlerContext, kept: &mut Capture, line: &mut Vec<u8>, newline: bool) {
    if line.is_empty() && !newline {
        return;
    }
    let text = String::from_utf8_lossy(line).into_owned();
    line.clear();
    kept.push(&text);
    if newline {
        kept.push("\n");
    }
    if !text.trim().is_empty() {
        ctx.send_assistant(vec![text]).await;
    }
}

super::handler_by_answer!(CommandAgent);
