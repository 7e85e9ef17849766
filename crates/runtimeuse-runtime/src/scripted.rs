//! The deterministic `scripted` handler, for tests and demos.

use std::path::Path;
use std::time::Duration;

use runtimeuse_proto::{Invocation, QueryResult, ResultData};
use serde_json::{Value, json};

use crate::handler::{AgentError, AgentHandler, BoxFuture, HandlerContext};

/// A handler driven by the user prompt, like the upstream end-to-end tests' echo handler:
///
/// | prompt | behaviour |
/// |---|---|
/// | `ECHO:<text>` | text result `<text>` |
/// | `STRUCTURED:<json>` | structured result, the parsed JSON |
/// | `ECHO_FORMAT:` | structured result, the invocation's `output_format_json_schema_str` parsed (what the client sent) |
/// | `SLOW:<ms>` | waits that long (cancellable at once), then text `done` |
/// | `STREAM:<n>` | n assistant messages `message i of n`, then text `streamed n messages` |
/// | `STREAM_TEXT:<text>` | one assistant message `<text>`, then text `done` |
/// | `ERROR:<msg>` | a non-terminal error (`<msg>`, `{"source": "scripted"}`), then fails with `<msg>` |
/// | `WRITE_FILE:<path> <content>` | writes the file, waits (at most 3 s) until the artifact watcher reported it, then text `wrote <path>` |
/// | `READ_FILE:<path>` | text result, the file's content |
/// | anything else | text result, the prompt itself |
#[derive(Debug, Clone, Copy, Default)]
pub struct ScriptedHandler;

fn text(t: impl Into<String>) -> QueryResult {
    QueryResult::new(ResultData::Text(t.into()), json!({}))
}

impl AgentHandler for ScriptedHandler {
    fn run<'a>(
        &'a self,
        invocation: Invocation,
        ctx: HandlerContext,
    ) -> BoxFuture<'a, Result<QueryResult, AgentError>> {
        Box::pin(async move {
            let prompt = invocation.user_prompt;
            let (directive, arg) = prompt.split_once(':').unwrap_or(("", ""));
            match directive {
                "ECHO" => Ok(text(arg)),
                "STRUCTURED" => {
                    let value: Value = serde_json::from_str(arg)
                        .map_err(|e| AgentError::new(format!("STRUCTURED: invalid JSON: {e}")))?;
                    Ok(QueryResult::new(
                        ResultData::StructuredOutput(value),
                        json!({}),
                    ))
                }
                "ECHO_FORMAT" => {
                    let format =
                        invocation
                            .output_format_json_schema
                            .as_deref()
                            .ok_or_else(|| {
                                AgentError::new("ECHO_FORMAT: the invocation has no output format")
                            })?;
                    let value: Value = serde_json::from_str(format)
                        .map_err(|e| AgentError::new(format!("ECHO_FORMAT: invalid JSON: {e}")))?;
                    Ok(QueryResult::new(
                        ResultData::StructuredOutput(value),
                        json!({}),
                    ))
                }
                "SLOW" => {
                    let ms: u64 = arg
                        .trim()
                        .parse()
                        .map_err(|_| AgentError::new(format!("SLOW: not a number: {arg}")))?;
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(ms)) => Ok(text("done")),
                        () = ctx.cancelled() => Err(AgentError::new("cancelled")),
                    }
                }
                "STREAM" => {
                    let n: u64 = arg
                        .trim()
                        .parse()
                        .map_err(|_| AgentError::new(format!("STREAM: not a number: {arg}")))?;
                    for i in 1..=n {
                        if ctx.is_cancelled() {
                            break;
                        }
                        ctx.send_assistant(vec![format!("message {i} of {n}")])
                            .await;
                    }
                    Ok(text(format!("streamed {n} messages")))
                }
                "STREAM_TEXT" => {
                    ctx.send_assistant(vec![arg.to_owned()]).await;
                    Ok(text("done"))
                }
                "ERROR" => {
                    ctx.send_error(arg, json!({ "source": "scripted" })).await;
                    Err(AgentError::new(arg))
                }
                "WRITE_FILE" => {
                    let (path, content) = arg.split_once(' ').unwrap_or((arg, ""));
                    let file = Path::new(path);
                    if let Some(parent) = file.parent() {
                        tokio::fs::create_dir_all(parent)
                            .await
                            .map_err(|e| AgentError::new(format!("WRITE_FILE {path}: {e}")))?;
                    }
                    tokio::fs::write(file, content)
                        .await
                        .map_err(|e| AgentError::new(format!("WRITE_FILE {path}: {e}")))?;
                    ctx.wait_artifact_reported(file, Duration::from_secs(3))
                        .await;
                    Ok(text(format!("wrote {path}")))
                }
                "READ_FILE" => tokio::fs::read_to_string(arg)
                    .await
                    .map(text)
                    .map_err(|e| AgentError::new(format!("READ_FILE {arg}: {e}"))),
                _ => Ok(text(prompt.clone())),
            }
        })
    }
}
