//! The `acp` agent: any agent that speaks the Agent Client Protocol (JSON-RPC 2.0, one JSON
//! object per line over its stdio), started per query; the runtime is the ACP client.

use std::path::{Path, PathBuf};
use std::time::Duration;

use runtimeuse_proto::{Invocation, QueryResult, ResultData};
use serde_json::{Value, json};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::lines::Lines;
use super::schema;
use crate::commands::{GroupGuard, Reaped};
use crate::handler::{AgentError, HandlerContext};

/// The ACP version spoken.
const PROTOCOL_VERSION: u64 = 1;

/// How long an agent has to stop after `session/cancel` before its process group is killed.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// Most bytes a `fs/read_text_file` answer carries.
const MAX_READ: u64 = 16 << 20;

/// What the runtime answers an agent's `session/request_permission`.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Permissions {
    /// Allow (the sandbox is the boundary): the agent's "allow once" option, else its first
    /// allowing one.
    #[default]
    Allow,
    /// Reject: its "reject once" option, else its first rejecting one.
    Deny,
}

/// Runs an ACP agent for each query: `sh -c <command>` in a process group of its own (the
/// Gemini CLI with `--experimental-acp`, `claude-code-acp`, `codex-acp`, …), over whose stdio
/// the runtime is the client: `initialize`, `session/new` in the runtime's working directory,
/// then `session/prompt` with the invocation's system prompt and prompt as text blocks.
///
/// One process per query, not per session: the runtime's requests carry no conversation (as
/// the upstream runtime's agents, each query starts afresh), a crashed or stuck agent takes
/// only its query with it, and a cancel can always end in killing the process group.
///
/// - `session/update` notifications: the message chunks of each agent message are joined
///   and streamed as one assistant message when the next update of another kind arrives or
///   the turn ends; thoughts are not streamed; tool calls, their updates and plans go into
///   the result's metadata (`tool_calls`: each call's id, title, kind and last status;
///   `plan`: the last plan's entries).
/// - `session/request_permission`: answered by the policy ([`Permissions`]).
/// - The file-system capability is offered (`fs/read_text_file`, `fs/write_text_file`: the
///   runtime reads and writes files in the sandbox); terminals are not (the agents that want
///   a shell run their own).
/// - The stop reason and usage go into the metadata; a turn that ends otherwise than
///   `end_turn` fails the query with "Agent ended with `<reason>`".
/// - Structured output: ACP has no schema, so the prompt asks for a JSON answer following the
///   schema, and the answer is checked against it.
/// - Cancel: `session/cancel`, then the process group is killed if the agent has not stopped
///   within 2 s.
///
/// The agent gets the runtime's environment with `IS_SANDBOX=1` (Claude Code, run as root,
/// accepts to bypass its permission checks only then), and the invocation's `agent_env` over
/// both.
#[derive(Clone, Debug)]
pub struct AcpAgent {
    command: String,
    permissions: Permissions,
}

impl AcpAgent {
    /// An agent started with `sh -c command` per query.
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            permissions: Permissions::Allow,
        }
    }

    /// How permission requests are answered.
    #[must_use]
    pub fn permissions(mut self, permissions: Permissions) -> Self {
        self.permissions = permissions;
        self
    }

    async fn answer(
        &self,
        invocation: Invocation,
        ctx: HandlerContext,
    ) -> Result<QueryResult, AgentError> {
        let schema = schema::of_invocation(&invocation)?;
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(&self.command)
            .process_group(0)
            // The process runs inside the sandbox: agents that check (Claude Code, as root,
            // bypasses permissions only then) may act without asking.
            .env("IS_SANDBOX", "1");
        ctx.withhold_env(&mut cmd);
        if let Some(env) = &invocation.agent_env {
            cmd.envs(env);
        }
        let (child, stdin, stdout, stderr) = super::command::spawn(cmd, "the ACP agent")?;
        let errors = tokio::spawn(super::command::stderr_tail(stderr));
        // Until the turn ends, dropping this (a cancel) cancels the turn gracefully.
        let mut turn = Turn {
            stdin: Some(stdin),
            guard: Some(GroupGuard::new(child.id())),
            child: Some(child),
            session: None,
        };
        let outcome = turn
            .run(
                Lines::new(stdout),
                &invocation,
                schema.as_ref(),
                &ctx,
                self.permissions,
            )
            .await;
        turn.close().await;
        let stderr = match errors.await {
            Ok(tail) => tail.into_text(|n| format!("[... {n} bytes cut ...]\n")),
            Err(_) => String::new(),
        };
        outcome.map_err(|mut e| {
            if !stderr.trim().is_empty() {
                e.message = format!("{}: {}", e.message, stderr.trim());
            }
            e
        })
    }
}

/// One query's agent process and conversation.
struct Turn {
    stdin: Option<tokio::process::ChildStdin>,
    /// Kills the agent's process group when dropped.
    guard: Option<GroupGuard>,
    child: Option<Reaped>,
    /// The ACP session, once made.
    session: Option<String>,
}

/// The text of a chunk of the agent's message being assembled, and what the turn gathered.
#[derive(Default)]
struct Gathered {
    message: String,
    text: String,
    tool_calls: Vec<Value>,
    plan: Option<Value>,
}

impl Turn {
    async fn run(
        &mut self,
        mut lines: Lines<tokio::process::ChildStdout>,
        invocation: &Invocation,
        schema: Option<&Value>,
        ctx: &HandlerContext,
        permissions: Permissions,
    ) -> Result<QueryResult, AgentError> {
        let init = json!({
            "protocolVersion": PROTOCOL_VERSION,
            "clientCapabilities": {"fs": {"readTextFile": true, "writeTextFile": true}, "terminal": false},
            "clientInfo": {"name": "runtimeuse", "version": env!("CARGO_PKG_VERSION")},
        });
        let mut gathered = Gathered::default();
        self.call(1, "initialize", init).await?;
        let initialized = self
            .response(1, &mut lines, ctx, permissions, &mut gathered)
            .await?;
        let version = initialized.get("protocolVersion").and_then(Value::as_u64);
        if version != Some(PROTOCOL_VERSION) {
            return Err(AgentError::new(format!(
                "the ACP agent speaks protocol version {version:?}, not {PROTOCOL_VERSION}"
            )));
        }
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        self.call(2, "session/new", json!({"cwd": cwd, "mcpServers": []}))
            .await?;
        let session = self
            .response(2, &mut lines, ctx, permissions, &mut gathered)
            .await?;
        let session = session
            .get("sessionId")
            .and_then(Value::as_str)
            .ok_or_else(|| AgentError::new("the ACP agent made no session"))?
            .to_owned();
        self.session = Some(session.clone());
        let mut prompt = Vec::new();
        if !invocation.system_prompt.trim().is_empty() {
            prompt.push(json!({"type": "text", "text": invocation.system_prompt}));
        }
        prompt.push(json!({"type": "text", "text": invocation.user_prompt}));
        if let Some(s) = schema {
            prompt.push(json!({"type": "text", "text": format!(
                "Give your final answer as one JSON value, and nothing else, that follows this \
                 JSON Schema:\n{s}"
            )}));
        }
        self.call(
            3,
            "session/prompt",
            json!({"sessionId": session, "prompt": prompt}),
        )
        .await?;
        let done = self
            .response(3, &mut lines, ctx, permissions, &mut gathered)
            .await?;
        flush(ctx, &mut gathered).await;
        // The turn is over: a drop from here on needs no cancel.
        self.session = None;
        let stop = done
            .get("stopReason")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        let mut metadata = json!({
            "agent": "acp",
            "stop_reason": stop,
            "tool_calls": gathered.tool_calls,
        });
        if let Some(usage) = done.get("usage").filter(|u| !u.is_null()) {
            metadata["usage"] = usage.clone();
        }
        if let Some(plan) = gathered.plan {
            metadata["plan"] = plan;
        }
        if stop != "end_turn" {
            metadata["error_name"] = json!("AgentError");
            return Err(AgentError {
                message: format!("Agent ended with {stop}"),
                metadata,
            });
        }
        let text = gathered.text.trim().to_owned();
        let data = match schema {
            None => ResultData::Text(text),
            Some(s) => ResultData::StructuredOutput(structured(&text, s)?),
        };
        Ok(QueryResult::new(data, metadata))
    }

    /// Sends a request.
    async fn call(&mut self, id: u64, method: &str, params: Value) -> Result<(), AgentError> {
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send(&message).await
    }

    async fn send(&mut self, message: &Value) -> Result<(), AgentError> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| AgentError::new("the ACP agent's stdin is closed"))?;
        send_line(stdin, message)
            .await
            .map_err(|e| AgentError::new(format!("writing to the ACP agent: {e}")))
    }

    /// Reads messages until the response to request `id`, serving the agent's requests and
    /// notifications meanwhile; its result.
    async fn response(
        &mut self,
        id: u64,
        lines: &mut Lines<tokio::process::ChildStdout>,
        ctx: &HandlerContext,
        permissions: Permissions,
        gathered: &mut Gathered,
    ) -> Result<Value, AgentError> {
        loop {
            let Some(line) = lines.next().await else {
                return Err(AgentError::new("the ACP agent exited"));
            };
            let Ok(message) = serde_json::from_slice::<Value>(&line) else {
                tracing::debug!("a line of the ACP agent that is not JSON; skipped");
                continue;
            };
            let method = message.get("method").and_then(Value::as_str);
            match (method, message.get("id")) {
                (Some(method), Some(call)) => {
                    let reply = serve(method, &message["params"], permissions).await;
                    let mut answer = json!({"jsonrpc": "2.0", "id": call});
                    match reply {
                        Ok(result) => answer["result"] = result,
                        Err((code, text)) => {
                            answer["error"] = json!({"code": code, "message": text});
                        }
                    }
                    self.send(&answer).await?;
                }
                (Some("session/update"), None) => {
                    update(ctx, gathered, &message["params"]["update"]).await;
                }
                (Some(_), None) => {}
                (None, Some(got)) if got.as_u64() == Some(id) => {
                    if let Some(e) = message.get("error") {
                        let text = e.get("message").and_then(Value::as_str).unwrap_or("");
                        return Err(AgentError {
                            message: format!("the ACP agent refused: {text}"),
                            metadata: json!({"error_name": "AcpError", "error": e}),
                        });
                    }
                    return Ok(message.get("result").cloned().unwrap_or(Value::Null));
                }
                (None, _) => {}
            }
        }
    }

    /// The turn ended (or failed): the agent's stdin closes and it is given a moment to exit
    /// before its group is killed.
    async fn close(&mut self) {
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            // Exited or not, what is left in its group goes with the guard.
            let _ = tokio::time::timeout(CANCEL_GRACE, child.wait()).await;
        }
        self.guard = None;
    }
}

impl Drop for Turn {
    /// Dropped mid-turn (the query was cancelled): `session/cancel`, then the process group is
    /// killed if the agent has not stopped within [`CANCEL_GRACE`].
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let session = self.session.take();
        let stdin = self.stdin.take();
        let guard = self.guard.take();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if let (Some(session), Some(mut stdin)) = (session, stdin) {
                let cancel = json!({"jsonrpc": "2.0", "method": "session/cancel",
                    "params": {"sessionId": session}});
                let _ = send_line(&mut stdin, &cancel).await;
                let _ = tokio::time::timeout(CANCEL_GRACE, child.wait()).await;
            }
            drop(guard);
        });
    }
}

async fn send_line(stdin: &mut (impl AsyncWrite + Unpin), message: &Value) -> std::io::Result<()> {
    let mut line = message.to_string();
    line.push('\n');
    stdin.write_all(line.as_bytes()).await?;
    stdin.flush().await
}

/// A `session/update`: message chunks gathered, the rest noted.
async fn update(ctx: &HandlerContext, g: &mut Gathered, update: &Value) {
    let kind = update.get("sessionUpdate").and_then(Value::as_str);
    if kind == Some("agent_message_chunk") {
        if let Some(text) = update.pointer("/content/text").and_then(Value::as_str) {
            g.message.push_str(text);
        }
        return;
    }
    flush(ctx, g).await;
    match kind {
        // A call is reported once and updated after (some agents report it again): one
        // entry per call id, with its latest title, kind and status.
        Some("tool_call" | "tool_call_update") => {
            let id = update.get("toolCallId").cloned().unwrap_or(Value::Null);
            let index = match g.tool_calls.iter().position(|c| c["id"] == id) {
                Some(i) => i,
                None if kind == Some("tool_call") => {
                    g.tool_calls.push(json!({"id": id}));
                    g.tool_calls.len() - 1
                }
                None => return,
            };
            for key in ["title", "kind", "status"] {
                if let Some(v) = update.get(key).filter(|v| !v.is_null()) {
                    g.tool_calls[index][key] = v.clone();
                }
            }
        }
        Some("plan") => g.plan = update.get("entries").cloned(),
        _ => {}
    }
}

/// Streams the agent message gathered so far, if any, as one assistant message.
async fn flush(ctx: &HandlerContext, g: &mut Gathered) {
    if g.message.trim().is_empty() {
        g.message.clear();
        return;
    }
    let message = std::mem::take(&mut g.message);
    if !g.text.is_empty() {
        g.text.push('\n');
    }
    g.text.push_str(&message);
    ctx.send_assistant(vec![message]).await;
}

/// Answers a request of the agent: a permission, or a file.
async fn serve(
    method: &str,
    params: &Value,
    permissions: Permissions,
) -> Result<Value, (i64, String)> {
    match method {
        "session/request_permission" => Ok(permission(params, permissions)),
        "fs/read_text_file" => {
            let path = params
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or_default();
            read_text(Path::new(path), params)
                .await
                .map(|content| json!({"content": content}))
                .map_err(|e| (-32603, format!("{path}: {e}")))
        }
        "fs/write_text_file" => {
            let path = params
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let content = params
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let write = async {
                if let Some(dir) = Path::new(path).parent() {
                    tokio::fs::create_dir_all(dir).await?;
                }
                tokio::fs::write(path, content).await
            };
            write
                .await
                .map(|()| Value::Null)
                .map_err(|e| (-32603, format!("{path}: {e}")))
        }
        other => Err((-32601, format!("method not found: {other}"))),
    }
}

/// The answer to a permission request under `policy`.
fn permission(params: &Value, policy: Permissions) -> Value {
    let options = params
        .get("options")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let kind = |o: &Value| {
        o.get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (once, family) = match policy {
        Permissions::Allow => ("allow_once", "allow"),
        Permissions::Deny => ("reject_once", "reject"),
    };
    let chosen = options
        .iter()
        .find(|o| kind(o) == once)
        .or_else(|| options.iter().find(|o| kind(o).starts_with(family)));
    match chosen.and_then(|o| o.get("optionId")) {
        Some(id) => json!({"outcome": {"outcome": "selected", "optionId": id}}),
        None => json!({"outcome": {"outcome": "cancelled"}}),
    }
}

/// A text file's lines `line` (1-based) on, at most `limit` of them.
async fn read_text(path: &Path, params: &Value) -> std::io::Result<String> {
    let file = tokio::fs::File::open(path).await?;
    let mut text = String::new();
    tokio::io::AsyncReadExt::read_to_string(
        &mut tokio::io::AsyncReadExt::take(file, MAX_READ),
        &mut text,
    )
    .await?;
    let line = params
        .get("line")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .max(1);
    let limit = params.get("limit").and_then(Value::as_u64);
    if line == 1 && limit.is_none() {
        return Ok(text);
    }
    let skip = usize::try_from(line - 1).unwrap_or(usize::MAX);
    let take = limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    Ok(text.split_inclusive('\n').skip(skip).take(take).collect())
}

/// The structured answer in the agent's text: all of it, the body of its last fenced block,
/// or its last line, as JSON; checked against `schema`.
fn structured(text: &str, schema: &Value) -> Result<Value, AgentError> {
    let fenced = text
        .rsplit("```")
        .nth(1)
        .map(|b| b.trim_start_matches("json").trim());
    let value = [Some(text.trim()), fenced, text.lines().last()]
        .into_iter()
        .flatten()
        .find_map(|t| serde_json::from_str::<Value>(t).ok())
        .ok_or_else(|| AgentError::new("the ACP agent's answer is not JSON"))?;
    schema::check(&value, schema).map_err(|e| {
        AgentError::new(format!(
            "the ACP agent's answer does not follow the schema: {e}"
        ))
    })?;
    Ok(value)
}

super::handler_by_answer!(AcpAgent);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_follow_the_policy() {
        let asked = json!({"options": [
            {"optionId": "a1", "name": "Always", "kind": "allow_always"},
            {"optionId": "a", "name": "Allow", "kind": "allow_once"},
            {"optionId": "r", "name": "Reject", "kind": "reject_once"},
        ]});
        assert_eq!(
            permission(&asked, Permissions::Allow)["outcome"]["optionId"],
            "a"
        );
        assert_eq!(
            permission(&asked, Permissions::Deny)["outcome"]["optionId"],
            "r"
        );
        let none = json!({"options": []});
        assert_eq!(
            permission(&none, Permissions::Allow)["outcome"]["outcome"],
            "cancelled"
        );
    }

    #[test]
    fn a_structured_answer_is_found_and_checked() {
        let schema =
            json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
        assert_eq!(structured(r#"{"n": 1}"#, &schema).unwrap(), json!({"n": 1}));
        let fenced = "Here it is:\n```json\n{\"n\": 2}\n```\n";
        assert_eq!(structured(fenced, &schema).unwrap(), json!({"n": 2}));
        assert!(structured("no json", &schema).is_err());
        assert!(structured(r#"{"n": "x"}"#, &schema).is_err());
    }
}
