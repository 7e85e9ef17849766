//! Anthropic: the Messages API (`POST {base}/v1/messages`, `anthropic-version: 2023-06-01`),
//! streamed.
//!
//! The system prompt goes in `system`, `max_tokens` is always sent (the API requires it), tool
//! calls come back as `tool_use` content blocks and are answered by `tool_result` blocks with
//! the same id in the next user message; thinking blocks (with their signatures) are sent back
//! unchanged. Structured output is a tool whose input schema is the answer's schema: the model
//! is told to call it, and forced to on a turn of its own if it answers in text instead.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::model::{
    Item, ModelApi, ModelEvent, Part, ProviderError, ToolCall, TurnRequest, Usage, parse_event,
    str_of,
};

/// The API version sent in `anthropic-version`.
pub(crate) const VERSION: &str = "2023-06-01";

/// The request body of one Messages API turn.
pub(crate) fn body(r: &TurnRequest<'_>) -> Value {
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

impl super::model::Decoder for Decoder {
    fn event(
        &mut self,
        _name: &str,
        data: &str,
        out: &mut Vec<ModelEvent>,
    ) -> Result<(), ProviderError> {
        let api = ModelApi::AnthropicMessages;
        let v = parse_event(api, data)?;
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        match str_of(&v, "type").unwrap_or_default() {
            "message_start" => {
                if let Some(u) = v.pointer("/message/usage") {
                    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
                    self.usage.input = n("input_tokens")
                        + n("cache_creation_input_tokens")
                        + n("cache_read_input_tokens");
                    self.usage.output = n("output_tokens");
                }
            }
            "content_block_start" => {
                let block = v.get("content_block").cloned().unwrap_or(Value::Null);
                let b = match str_of(&block, "type").unwrap_or_default() {
                    "text" => Block::Text(str_of(&block, "text").unwrap_or_default().to_owned()),
                    "tool_use" => Block::ToolUse {
                        id: str_of(&block, "id").unwrap_or_default().to_owned(),
                        name: str_of(&block, "name").unwrap_or_default().to_owned(),
                        json: String::new(),
                    },
                    _ => Block::Other {
                        block,
                        json: String::new(),
                    },
                };
                self.blocks.insert(index, b);
            }
            "content_block_delta" => {
                let delta = v.get("delta").cloned().unwrap_or(Value::Null);
                let Some(b) = self.blocks.get_mut(&index) else {
                    return Ok(());
                };
                match (b, str_of(&delta, "type").unwrap_or_default()) {
                    (Block::Text(t), "text_delta") => {
                        t.push_str(str_of(&delta, "text").unwrap_or_default());
                    }
                    (
                        Block::ToolUse { json, .. } | Block::Other { json, .. },
                        "input_json_delta",
                    ) => json.push_str(str_of(&delta, "partial_json").unwrap_or_default()),
                    (Block::Other { block, .. }, "thinking_delta") => {
                        append(block, "thinking", str_of(&delta, "thinking"));
                    }
                    (Block::Other { block, .. }, "signature_delta") => {
                        append(block, "signature", str_of(&delta, "signature"));
                    }
                    _ => {}
                }
            }
            "content_block_stop" => match self.blocks.remove(&index) {
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
            },
            "message_delta" => {
                if let Some(n) = v.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                    // Cumulative for the message.
                    self.usage.output = n;
                }
                if let Some(n) = v.pointer("/usage/input_tokens").and_then(Value::as_u64)
                    && n > 0
                {
                    self.usage.input = n;
                }
            }
            "message_stop" => {
                out.push(ModelEvent::Usage(std::mem::take(&mut self.usage)));
                out.push(ModelEvent::Done);
            }
            "error" => {
                let error = v.get("error");
                let mut e = ProviderError::stream(
                    api,
                    error
                        .and_then(|e| str_of(e, "message"))
                        .unwrap_or("the stream reported an error"),
                );
                e.kind = error.and_then(|e| str_of(e, "type")).map(str::to_owned);
                return Err(e);
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self, _out: &mut Vec<ModelEvent>) -> Result<(), ProviderError> {
        Ok(())
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
