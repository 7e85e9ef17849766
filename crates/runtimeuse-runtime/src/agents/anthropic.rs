//! Anthropic: the Messages API (`POST {base}/v1/messages`, `anthropic-version: 2023-06-01`),
//! streamed.
//!
//! The system prompt goes in `system`, `max_tokens` is always sent (the API requires it), tool
//! calls come back as `tool_use` content blocks and are answered by `tool_result` blocks with
//! the same id in the next user message; thinking blocks (with their signatures) are sent back
//! unchanged. Structured output is a tool whose input schema is the answer's schema: the model
//! is told to call it, and forced to on a turn of its own if it answers in text instead.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::model::{
    Item, ModelApi, ModelEvent, Part, ProviderError, ToolCall, TurnRequest, Usage, WireApi,
    secret_header,
};

/// The API version sent in `anthropic-version`.
const VERSION: &str = "2023-06-01";

/// The Messages API.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Messages;

impl WireApi for Messages {
    fn api(&self) -> ModelApi {
        ModelApi::AnthropicMessages
    }
    fn path(&self) -> &'static str {
        "v1/messages"
    }
    fn body(&self, request: &TurnRequest<'_>) -> Value {
        body(request)
    }
    fn auth(&self, key: &str, headers: &mut reqwest::header::HeaderMap) {
        if let Some(v) = secret_header(key) {
            headers.insert("x-api-key", v);
        }
        headers.insert(
            "anthropic-version",
            reqwest::header::HeaderValue::from_static(VERSION),
        );
    }
    fn decoder(&self) -> Box<dyn super::model::Decoder> {
        Box::new(Decoder::default())
    }
    fn structured_via_tool(&self) -> bool {
        true
    }
}

/// The request body of one Messages API turn.
fn body(r: &TurnRequest<'_>) -> Value {
    let mut messages: Vec<Value> = Vec::new();
    for item in r.items {
        match item {
            Item::User(text) => messages.push(json!({ "role": "user", "content": text })),
            Item::Assistant(parts) => {
                let content: Vec<Value> = parts
                    .iter()
                    .map(|p| match p {
                        Part::Text(t) => json!({ "type": "text", "text": t }),
                        Part::Call(c) => json!({
                            "type": "tool_use",
                            "id": c.id,
                            "name": c.name,
                            "input": serde_json::from_str::<Value>(&c.arguments)
                                .ok()
                                .filter(Value::is_object)
                                .unwrap_or_else(|| json!({})),
                        }),
                        Part::Opaque(v) => v.clone(),
                    })
                    .collect();
                // The API refuses an assistant message without content.
                if !content.is_empty() {
                    messages.push(json!({ "role": "assistant", "content": content }));
                }
            }
            Item::Results(results) => {
                let content: Vec<Value> = results
                    .iter()
                    .map(|(id, output)| {
                        json!({ "type": "tool_result", "tool_use_id": id, "content": output })
                    })
                    .collect();
                messages.push(json!({ "role": "user", "content": content }));
            }
        }
    }
    let mut tools: Vec<Value> = r
        .tools
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "description": t.description,
                "input_schema": t.parameters,
            })
        })
        .collect();
    if r.web_search {
        tools.push(json!({ "type": "web_search_20250305", "name": "web_search" }));
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(r.model));
    body.insert("max_tokens".into(), json!(r.max_tokens));
    if !r.system.is_empty() {
        body.insert("system".into(), json!(r.system));
    }
    body.insert("messages".into(), Value::Array(messages));
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(name) = r.force_tool {
        body.insert(
            "tool_choice".into(),
            json!({ "type": "tool", "name": name }),
        );
    }
    body.insert("stream".into(), json!(true));
    Value::Object(body)
}

/// A content block being streamed.
#[derive(Debug)]
enum Block {
    Text(String),
    ToolUse {
        id: String,
        name: String,
        json: String,
    },
    /// Anything else (thinking, redacted thinking, server tools): the start block, completed
    /// by its deltas, sent back as it is.
    Other {
        block: Value,
        json: String,
    },
}

/// Decodes the Messages API's stream: whole content blocks at `content_block_stop`, usage at
/// `message_start` and `message_delta`, the end at `message_stop`.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    blocks: BTreeMap<u64, Block>,
    usage: Usage,
}

/// One event of the Messages API's stream, as documented (unknown types, `ping` among them,
/// are [`StreamEvent::Other`]).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: MessageStart,
    },
    ContentBlockStart {
        #[serde(default)]
        index: u64,
        /// Kept whole: blocks other than text and tool calls go back to the API unchanged.
        #[serde(default)]
        content_block: Value,
    },
    ContentBlockDelta {
        #[serde(default)]
        index: u64,
        #[serde(default)]
        delta: Delta,
    },
    ContentBlockStop {
        #[serde(default)]
        index: u64,
    },
    MessageDelta {
        #[serde(default)]
        usage: StreamUsage,
    },
    MessageStop,
    Error {
        #[serde(default)]
        error: ErrorBody,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Default, Deserialize)]
struct MessageStart {
    #[serde(default)]
    usage: StreamUsage,
}

/// Token counts as the stream reports them (`message_delta`'s are cumulative).
#[derive(Debug, Default, Deserialize)]
struct StreamUsage {
    input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

/// A content block's delta.
#[derive(Debug, Default, Deserialize)]
#[serde(tag = "type")]
enum Delta {
    #[serde(rename = "text_delta")]
    Text { text: String },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: String },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: String },
    #[serde(rename = "signature_delta")]
    Signature { signature: String },
    #[default]
    #[serde(other)]
    Other,
}

/// The content blocks the loop interprets, as they start.
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum StartBlock {
    #[serde(rename = "text")]
    Text {
        #[serde(default)]
        text: String,
    },
    #[serde(rename = "tool_use")]
    ToolUse {
        #[serde(default)]
        id: String,
        #[serde(default)]
        name: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
}

impl super::model::Decoder for Decoder {
    fn event(
        &mut self,
        _name: &str,
        data: &str,
        out: &mut Vec<ModelEvent>,
    ) -> Result<(), ProviderError> {
        let api = ModelApi::AnthropicMessages;
        let event: StreamEvent = serde_json::from_str(data)
            .map_err(|e| ProviderError::stream(api, format!("invalid event in the stream: {e}")))?;
        match event {
            StreamEvent::MessageStart { message } => {
                let u = message.usage;
                let n = |v: Option<u64>| v.unwrap_or(0);
                self.usage.input = n(u.input_tokens)
                    + n(u.cache_creation_input_tokens)
                    + n(u.cache_read_input_tokens);
                self.usage.output = n(u.output_tokens);
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => self.block_started(index, content_block),
            StreamEvent::ContentBlockDelta { index, delta } => self.block_delta(index, delta),
            StreamEvent::ContentBlockStop { index } => self.block_stopped(index, out),
            StreamEvent::MessageDelta { usage } => {
                if let Some(n) = usage.output_tokens {
                    // Cumulative for the message.
                    self.usage.output = n;
                }
                if let Some(n) = usage.input_tokens.filter(|n| *n > 0) {
                    self.usage.input = n;
                }
            }
            StreamEvent::MessageStop => {
                out.push(ModelEvent::Usage(std::mem::take(&mut self.usage)));
                out.push(ModelEvent::Done);
            }
            StreamEvent::Error { error } => {
                let message = error.message.as_deref();
                let mut e =
                    ProviderError::stream(api, message.unwrap_or("the stream reported an error"));
                e.kind = error.kind;
                return Err(e);
            }
            StreamEvent::Other => {}
        }
        Ok(())
    }

    fn finish(&mut self, _out: &mut Vec<ModelEvent>) -> Result<(), ProviderError> {
        Ok(())
    }
}

impl Decoder {
    fn block_started(&mut self, index: u64, block: Value) {
        let b = match StartBlock::deserialize(&block) {
            Ok(StartBlock::Text { text }) => Block::Text(text),
            Ok(StartBlock::ToolUse { id, name }) => Block::ToolUse {
                id,
                name,
                json: String::new(),
            },
            Ok(StartBlock::Other) | Err(_) => Block::Other {
                block,
                json: String::new(),
            },
        };
        self.blocks.insert(index, b);
    }

    fn block_delta(&mut self, index: u64, delta: Delta) {
        let Some(b) = self.blocks.get_mut(&index) else {
            return;
        };
        match (b, delta) {
            (Block::Text(t), Delta::Text { text }) => t.push_str(&text),
            (
                Block::ToolUse { json, .. } | Block::Other { json, .. },
                Delta::InputJson { partial_json },
            ) => json.push_str(&partial_json),
            (Block::Other { block, .. }, Delta::Thinking { thinking }) => {
                append(block, "thinking", Some(&thinking));
            }
            (Block::Other { block, .. }, Delta::Signature { signature }) => {
                append(block, "signature", Some(&signature));
            }
            _ => {}
        }
    }

    fn block_stopped(&mut self, index: u64, out: &mut Vec<ModelEvent>) {
        match self.blocks.remove(&index) {
            Some(Block::Text(t)) if !t.is_empty() => out.push(ModelEvent::Part(Part::Text(t))),
            Some(Block::ToolUse { id, name, json }) => {
                let arguments = if json.trim().is_empty() {
                    "{}".to_owned()
                } else {
                    json
                };
                out.push(ModelEvent::Part(Part::Call(ToolCall {
                    id,
                    name,
                    arguments,
                })));
            }
            Some(Block::Other { mut block, json }) => {
                if !json.is_empty()
                    && let (Ok(input), Some(o)) =
                        (serde_json::from_str::<Value>(&json), block.as_object_mut())
                {
                    o.insert("input".into(), input);
                }
                out.push(ModelEvent::Part(Part::Opaque(block)));
            }
            _ => {}
        }
    }
}

fn append(block: &mut Value, key: &str, text: Option<&str>) {
    let Some(o) = block.as_object_mut() else {
        return;
    };
    let entry = o.entry(key).or_insert_with(|| json!(""));
    if let (Some(s), Some(t)) = (entry.as_str(), text) {
        *entry = json!(format!("{s}{t}"));
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::Decoder as _;
    use super::*;

    #[test]
    fn thinking_blocks_come_back_whole_with_their_signature() {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for e in [
            r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me think"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"sig=="}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"shell","input":{}}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"command\": \"ls\"}"}}"#,
            r#"{"type":"content_block_stop","index":1}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":30}}"#,
            r#"{"type":"message_stop"}"#,
        ] {
            d.event("x", e, &mut out).unwrap();
        }
        assert_eq!(
            out,
            [
                ModelEvent::Part(Part::Opaque(
                    json!({"type":"thinking","thinking":"Let me think","signature":"sig=="})
                )),
                ModelEvent::Part(Part::Call(ToolCall {
                    id: "toolu_1".into(),
                    name: "shell".into(),
                    arguments: r#"{"command": "ls"}"#.into()
                })),
                ModelEvent::Usage(Usage {
                    input: 12,
                    output: 30
                }),
                ModelEvent::Done,
            ]
        );
    }
}
