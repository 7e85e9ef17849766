//! The `claude` agent: Claude Code's CLI, run per query in its non-interactive streaming JSON
//! mode (`claude -p --output-format stream-json`), as the upstream runtime's `claude` agent
//! drives it through the Claude Agent SDK.

use std::path::{Path, PathBuf};

use runtimeuse_proto::{Invocation, QueryResult, ResultData};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncWriteExt};

use super::lines::Lines;
use super::schema;
use crate::commands::GroupGuard;
use crate::handler::{AgentError, HandlerContext};

/// How to install the CLI, for the error when it is missing.
const INSTALL: &str = "npm install -g @anthropic-ai/claude-code";

/// Runs Claude Code for each query: `claude -p --output-format stream-json --verbose
/// --dangerously-skip-permissions` in a process group of its own, the prompt on stdin, with
/// the full tool preset and permissions bypassed (the sandbox is the boundary). The
/// invocation's system prompt is appended to Claude Code's own (`--append-system-prompt`, so
/// that its tools keep their instructions), its model passed with `--model` when it names
/// one, and its output schema with `--json-schema`.
///
/// The CLI gets the runtime's environment with `IS_SANDBOX=1` (as root it bypasses
/// permissions only then) and `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`, then the
/// invocation's `agent_env` over both. The text of each assistant message is streamed; the
/// result is the CLI's `result` (or its `structured_output` when a schema was given), with
/// `duration_ms`, `duration_api_ms`, `num_turns`, `total_cost_usd`, `usage` and `session_id`
/// as metadata. A result that is not a success (or is an error, as a provider's 401) fails the
/// query with "Agent ended with …"; a CLI that dies without a result fails it with the end of
/// its stderr. Cancel kills its process group at once.
#[derive(Clone, Debug)]
pub struct ClaudeAgent {
    program: PathBuf,
}

impl Default for ClaudeAgent {
    fn default() -> Self {
        Self::new()
    }
}

impl ClaudeAgent {
    /// The agent running `claude` from `PATH`.
    pub fn new() -> Self {
        Self {
            program: PathBuf::from("claude"),
        }
    }

    /// Runs this program instead (the CLI's path, or the Claude Agent SDK's `cli.js` through
    /// a wrapper).
    #[must_use]
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// Whether the CLI can be found: the error to show at start when not, with the install
    /// line.
    ///
    /// # Errors
    ///
    /// When the program is neither an executable path nor found in `PATH`.
    pub fn check(&self) -> Result<PathBuf, String> {
        find(&self.program).ok_or_else(|| {
            format!(
                "the `claude` agent needs Claude Code's CLI, and `{}` was not found; install it \
                 with `{INSTALL}` (or name it with --agent-command)",
                self.program.display()
            )
        })
    }

    async fn answer(
        &self,
        invocation: Invocation,
        ctx: HandlerContext,
    ) -> Result<QueryResult, AgentError> {
        let schema = schema::of_invocation(&invocation)?;
        let program = self.check().map_err(AgentError::new)?;
        let (mut child, mut stdin, stdout, stderr) = super::command::spawn(
            command(&program, &invocation, schema.as_ref(), &ctx),
            "Claude Code",
        )?;
        // Kills the whole group when the query ends early (cancel, connection gone).
        let mut guard = GroupGuard::new(child.id());
        let prompt = invocation.user_prompt.clone();
        let feed = async move {
            // A CLI that exits without reading its stdin is not an error here.
            let _ = stdin.write_all(prompt.as_bytes()).await;
            drop(stdin);
        };
        let ((), result, err) = tokio::join!(
            feed,
            read_events(stdout, &ctx),
            super::command::stderr_tail(stderr)
        );
        let status = child
            .wait()
            .await
            .map_err(|e| AgentError::new(format!("waiting for Claude Code: {e}")))?;
        guard.disarm();
        let Some(result) = result else {
            let code = status.code().map_or(-1, i64::from);
            let stderr = err.into_text(|n| format!("[... {n} bytes cut ...]\n"));
            return Err(AgentError {
                message: format!(
                    "Claude Code ended without a result (exit code {code}): {}",
                    stderr.trim()
                ),
                metadata: json!({ "error_name": "ClaudeCodeError", "exit_code": code }),
            });
        };
        finish(&result, schema.as_ref())
    }
}

/// The CLI's command line for `invocation`.
fn command(
    program: &Path,
    invocation: &Invocation,
    schema: Option<&Value>,
    ctx: &HandlerContext,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args([
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--dangerously-skip-permissions",
    ]);
    if !invocation.model.trim().is_empty() {
        cmd.arg("--model").arg(&invocation.model);
    }
    if !invocation.system_prompt.trim().is_empty() {
        cmd.arg("--append-system-prompt")
            .arg(&invocation.system_prompt);
    }
    if let Some(s) = schema {
        cmd.arg("--json-schema").arg(s.to_string());
    }
    cmd.env("IS_SANDBOX", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
    ctx.withhold_env(&mut cmd);
    if let Some(env) = &invocation.agent_env {
        cmd.envs(env);
    }
    cmd.process_group(0).kill_on_drop(true);
    cmd
}

/// Reads the CLI's events: streams each assistant message's text; returns its `result` event.
async fn read_events(stdout: impl AsyncRead + Unpin, ctx: &HandlerContext) -> Option<Value> {
    let mut lines = Lines::new(stdout);
    let mut result = None;
    while let Some(line) = lines.next().await {
        let Ok(event) = serde_json::from_slice::<Value>(&line) else {
            tracing::debug!(
                bytes = line.len(),
                "a line of Claude Code that is not JSON; skipped"
            );
            continue;
        };
        match event.get("type").and_then(Value::as_str) {
            Some("assistant") => {
                let texts = assistant_texts(&event);
                if !texts.is_empty() {
                    ctx.send_assistant(texts).await;
                }
            }
            Some("result") => result = Some(event),
            _ => {}
        }
    }
    result
}

/// The text blocks of an assistant event; none for the CLI's own notices of an API error
/// (their text is the result's, which fails the query).
fn assistant_texts(event: &Value) -> Vec<String> {
    if event.get("error").is_some() {
        return Vec::new();
    }
    let content = event
        .pointer("/message/content")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    content
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .filter(|t| !t.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// The query's outcome from the CLI's `result` event.
fn finish(result: &Value, schema: Option<&Value>) -> Result<QueryResult, AgentError> {
    let mut metadata = Map::new();
    for key in [
        "duration_ms",
        "duration_api_ms",
        "num_turns",
        "total_cost_usd",
        "usage",
        "session_id",
    ] {
        if let Some(v) = result.get(key) {
            metadata.insert(key.to_owned(), v.clone());
        }
    }
    let subtype = result
        .get("subtype")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let is_error = result.get("is_error").and_then(Value::as_bool) == Some(true);
    if subtype != "success" || is_error {
        let mut message = format!("Agent ended with {subtype}");
        if is_error {
            message = "Agent ended with an error".to_owned();
            if let Some(text) = result.get("result").and_then(Value::as_str) {
                message.push_str(": ");
                message.push_str(text);
            }
            if let Some(status) = result.get("api_error_status").filter(|s| !s.is_null()) {
                message.push_str(&format!(" (HTTP {status})"));
                metadata.insert("api_error_status".into(), status.clone());
            }
        }
        metadata.insert("error_name".into(), json!("AgentError"));
        metadata.insert("subtype".into(), json!(subtype));
        return Err(AgentError {
            message,
            metadata: Value::Object(metadata),
        });
    }
    let data = match schema {
        Some(schema) => {
            let value = result
                .get("structured_output")
                .filter(|v| !v.is_null())
                .cloned()
                .ok_or_else(|| AgentError::new("Claude Code gave no structured output"))?;
            schema::check(&value, schema).map_err(|e| {
                AgentError::new(format!(
                    "Claude Code's answer does not follow the schema: {e}"
                ))
            })?;
            ResultData::StructuredOutput(value)
        }
        None => ResultData::Text(
            result
                .get("result")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        ),
    };
    Ok(QueryResult::new(data, Value::Object(metadata)))
}

/// The path of `program`: itself when it names a file, else the first match in `PATH`.
fn find(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

super::handler_by_answer!(ClaudeAgent);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_becomes_the_query_result_with_its_metadata() {
        let ok = json!({"type": "result", "subtype": "success", "is_error": false,
            "result": "hi", "duration_ms": 5, "num_turns": 1, "session_id": "s",
            "total_cost_usd": 0.1, "usage": {"input_tokens": 1}, "duration_api_ms": 2});
        let r = finish(&ok, None).unwrap();
        assert_eq!(r.data, ResultData::Text("hi".into()));
        assert_eq!(r.metadata["num_turns"], 1);
        assert_eq!(r.metadata["session_id"], "s");
        let max = json!({"type": "result", "subtype": "error_max_turns", "is_error": true});
        let e = finish(&max, None).unwrap_err();
        assert!(e.message.starts_with("Agent ended with"), "{}", e.message);
        assert_eq!(e.metadata["subtype"], "error_max_turns");
        let turns = json!({"type": "result", "subtype": "error_max_turns"});
        assert_eq!(
            finish(&turns, None).unwrap_err().message,
            "Agent ended with error_max_turns"
        );
        let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}},
            "required": ["n"]});
        let structured = json!({"subtype": "success", "structured_output": {"n": 3}});
        assert_eq!(
            finish(&structured, Some(&schema)).unwrap().data,
            ResultData::StructuredOutput(json!({"n": 3}))
        );
        let wrong = json!({"subtype": "success", "structured_output": {"n": "x"}});
        assert!(finish(&wrong, Some(&schema)).is_err());
    }

    #[test]
    fn a_missing_cli_says_how_to_install_it() {
        let agent = ClaudeAgent::new().program("/nonexistent/claude");
        let e = agent.check().unwrap_err();
        assert!(e.contains(INSTALL), "{e}");
        let agent = ClaudeAgent::new().program("no-such-claude-cli");
        assert!(agent.check().is_err());
    }
}
