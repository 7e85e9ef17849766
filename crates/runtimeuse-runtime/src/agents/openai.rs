//! OpenAI: the Responses API (`POST {base}/responses`) and Chat Completions
//! (`POST {base}/chat/completions`, what OpenAI-compatible servers speak), both streamed.
//!
//! Responses: `instructions` carries the system prompt, `input` the whole conversation again
//! on every turn (no `store`, no `previous_response_id`, as the upstream runtime sends it), tool
//! calls come back as `function_call` output items answered by `function_call_output` items
//! with the same `call_id`, and items the loop does not interpret (reasoning, hosted tool
//! calls) are sent back unchanged. The stream ends with `response.completed`,
//! `response.incomplete` or `response.failed`.
//!
//! Chat Completions: a `system` message, function tools, `stream_options.include_usage`, the
//! assistant's text and tool calls aggregated from the deltas, and `data: [DONE]` at the end.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::model::{
    Decoder, Item, ModelApi, ModelEvent, Part, ProviderError, ToolCall, TurnRequest, Usage,
    WireApi, secret_header,
};

/// The Responses API.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Responses;

/// Chat Completions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chat;

/// `Authorization: Bearer <key>`, as both OpenAI APIs take it.
fn bearer(key: &str, headers: &mut reqwest::header::HeaderMap) {
    if let Some(v) = secret_header(&format!("Bearer {key}")) {
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
}

impl WireApi for Responses {
    fn api(&self) -> ModelApi {
        ModelApi::OpenAiResponses
    }
    fn path(&self) -> &'static str {
        "responses"
    }
    fn body(&self, request: &TurnRequest<'_>) -> Value {
        responses_body(request)
    }
    fn auth(&self, key: &str, headers: &mut reqwest::header::HeaderMap) {
        bearer(key, headers);
    }
    fn decoder(&self) -> Box<dyn Decoder> {
        Box::new(ResponsesDecoder)
    }
}

impl WireApi for Chat {
    fn api(&self) -> ModelApi {
        ModelApi::OpenAiChat
    }
    fn path(&self) -> &'static str {
        "chat/completions"
    }
    fn body(&self, request: &TurnRequest<'_>) -> Value {
        chat_body(request)
    }
    fn auth(&self, key: &str, headers: &mut reqwest::header::HeaderMap) {
        bearer(key, headers);
    }
    fn decoder(&self) -> Box<dyn Decoder> {
        Box::new(ChatDecoder::default())
    }
}

/// The name structured output is requested under.
const FORMAT_NAME: &str = "final_output";

/// The request body of one Responses API turn.
fn responses_body(r: &TurnRequest<'_>) -> Value {
    let mut input = Vec::new();
    for item in r.items {
        match item {
            Item::User(text) => input.push(json!({ "role": "user", "content": text })),
            Item::Assistant(parts) => {
                for part in parts {
                    input.push(match part {
                        Part::Text(t) => {
                            json!({ "type": "message", "role": "assistant", "content": t })
                        }
                        Part::Call(c) => json!({
                            "type": "function_call",
                            "call_id": c.id,
                            "name": c.name,
                            "arguments": c.arguments,
                        }),
                        Part::Opaque(v) => v.clone(),
                    });
                }
            }
            Item::Results(results) => {
                for (id, output) in results {
                    input.push(json!({
                        "type": "function_call_output",
                        "call_id": id,
                        "output": output,
                    }));
                }
            }
        }
    }
    let mut tools: Vec<Value> = r
        .tools
        .iter()
        .map(|t| {
            json!({
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters,
                "strict": true,
            })
        })
        .collect();
    if r.web_search {
        tools.push(json!({ "type": "web_search" }));
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(r.model));
    if !r.system.is_empty() {
        body.insert("instructions".into(), json!(r.system));
    }
    body.insert("input".into(), Value::Array(input));
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(schema) = r.schema {
        body.insert(
            "text".into(),
            json!({ "format": {
                "type": "json_schema",
                "name": FORMAT_NAME,
                "strict": true,
                "schema": schema,
            }}),
        );
    }
    body.insert("stream".into(), json!(true));
    Value::Object(body)
}

/// The request body of one Chat Completions turn.
fn chat_body(r: &TurnRequest<'_>) -> Value {
    let mut messages = Vec::new();
    if !r.system.is_empty() {
        messages.push(json!({ "role": "system", "content": r.system }));
    }
    for item in r.items {
        match item {
            Item::User(text) => messages.push(json!({ "role": "user", "content": text })),
            Item::Assistant(parts) => {
                let text: Vec<&str> = parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::Text(t) => Some(t.as_str()),
                        _ => None,
                    })
                    .collect();
                let calls: Vec<Value> = parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::Call(c) => Some(json!({
                            "id": c.id,
                            "type": "function",
                            "function": { "name": c.name, "arguments": c.arguments },
                        })),
                        _ => None,
                    })
                    .collect();
                let mut m = Map::new();
                m.insert("role".into(), json!("assistant"));
                m.insert(
                    "content".into(),
                    if text.is_empty() {
                        Value::Null
                    } else {
                        json!(text.concat())
                    },
                );
                if !calls.is_empty() {
                    m.insert("tool_calls".into(), Value::Array(calls));
                }
                messages.push(Value::Object(m));
            }
            Item::Results(results) => {
                for (id, output) in results {
                    messages.push(json!({ "role": "tool", "tool_call_id": id, "content": output }));
                }
            }
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(r.model));
    body.insert("messages".into(), Value::Array(messages));
    if !r.tools.is_empty() {
        let tools = r
            .tools
            .iter()
            .map(|t| {
                json!({ "type": "function", "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                    "strict": true,
                }})
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(schema) = r.schema {
        body.insert(
            "response_format".into(),
            json!({ "type": "json_schema", "json_schema": {
                "name": FORMAT_NAME,
                "strict": true,
                "schema": schema,
            }}),
        );
    }
    body.insert("stream".into(), json!(true));
    body.insert("stream_options".into(), json!({ "include_usage": true }));
    Value::Object(body)
}

/// An error as both APIs report it in their streams.
#[derive(Debug, Default, Deserialize)]
struct StreamErrorBody {
    message: Option<String>,
    code: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

fn stream_error(api: ModelApi, error: Option<StreamErrorBody>, fallback: &str) -> ProviderError {
    let error = error.unwrap_or_default();
    let mut e = ProviderError::stream(api, error.message.as_deref().unwrap_or(fallback));
    e.code = error.code;
    e.kind = error.kind;
    e
}

fn invalid(api: ModelApi, e: &serde_json::Error) -> ProviderError {
    ProviderError::stream(api, format!("invalid event in the stream: {e}"))
}

/// One event of the Responses API's stream, as documented (the many delta events the loop
/// does not need are [`ResponsesEvent::Other`]).
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum ResponsesEvent {
    #[serde(rename = "response.output_item.done")]
    OutputItemDone {
        /// Kept whole: items the loop does not interpret go back to the API unchanged.
        #[serde(default)]
        item: Value,
    },
    #[serde(rename = "response.completed")]
    Completed {
        #[serde(default)]
        response: ResponseBody,
    },
    #[serde(rename = "response.incomplete")]
    Incomplete {
        #[serde(default)]
        response: ResponseBody,
    },
    #[serde(rename = "response.failed")]
    Failed {
        #[serde(default)]
        response: ResponseBody,
    },
    #[serde(rename = "error")]
    Error(StreamErrorBody),
    #[serde(other)]
    Other,
}

#[derive(Debug, Default, Deserialize)]
struct ResponseBody {
    usage: Option<ResponsesUsage>,
    incomplete_details: Option<IncompleteDetails>,
    error: Option<StreamErrorBody>,
}

#[derive(Debug, Default, Deserialize)]
struct ResponsesUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

#[derive(Debug, Default, Deserialize)]
struct IncompleteDetails {
    reason: Option<String>,
}

/// The output items the loop interprets.
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum OutputItem {
    #[serde(rename = "message")]
    Message {
        #[serde(default)]
        content: Vec<ContentPart>,
    },
    #[serde(rename = "function_call")]
    FunctionCall {
        #[serde(default)]
        call_id: String,
        #[serde(default)]
        name: String,
        arguments: Option<String>,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct ContentPart {
    text: Option<String>,
    refusal: Option<String>,
}

/// Decodes the Responses API's stream: whole output items from `response.output_item.done`,
/// usage and the end from `response.completed`.
#[derive(Debug, Default)]
pub(crate) struct ResponsesDecoder;

impl Decoder for ResponsesDecoder {
    fn event(
        &mut self,
        _name: &str,
        data: &str,
        out: &mut Vec<ModelEvent>,
    ) -> Result<(), ProviderError> {
        let api = ModelApi::OpenAiResponses;
        let event: ResponsesEvent = serde_json::from_str(data).map_err(|e| invalid(api, &e))?;
        match event {
            ResponsesEvent::OutputItemDone { item } if item.is_null() => {}
            ResponsesEvent::OutputItemDone { item } => {
                out.push(ModelEvent::Part(output_part(item)))
            }
            ResponsesEvent::Completed { response } => {
                let usage = response.usage.unwrap_or_default();
                out.push(ModelEvent::Usage(Usage {
                    input: usage.input_tokens,
                    output: usage.output_tokens,
                }));
                out.push(ModelEvent::Done);
            }
            ResponsesEvent::Incomplete { response } => {
                let reason = response
                    .incomplete_details
                    .and_then(|d| d.reason)
                    .unwrap_or_else(|| "unknown".to_owned());
                return Err(ProviderError::stream(
                    api,
                    format!("the response is incomplete: {reason}"),
                ));
            }
            ResponsesEvent::Failed { response } => {
                return Err(stream_error(api, response.error, "the response failed"));
            }
            ResponsesEvent::Error(error) => {
                return Err(stream_error(
                    api,
                    Some(error),
                    "the stream reported an error",
                ));
            }
            ResponsesEvent::Other => {}
        }
        Ok(())
    }

    fn finish(&mut self, _out: &mut Vec<ModelEvent>) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// A finished output item as a part: text, a tool call, or an item sent back as it is.
fn output_part(item: Value) -> Part {
    match OutputItem::deserialize(&item) {
        Ok(OutputItem::Message { content }) => Part::Text(
            content
                .into_iter()
                .filter_map(|c| c.text.or(c.refusal))
                .collect(),
        ),
        Ok(OutputItem::FunctionCall {
            call_id,
            name,
            arguments,
        }) => Part::Call(ToolCall {
            id: call_id,
            name,
            arguments: arguments.unwrap_or_else(|| "{}".to_owned()),
        }),
        Ok(OutputItem::Other) | Err(_) => Part::Opaque(item),
    }
}

/// Aggregates Chat Completions deltas into one message and its tool calls.
#[derive(Debug, Default)]
pub(crate) struct ChatDecoder {
    text: String,
    /// Tool calls by their `index`: id, name, arguments.
    calls: BTreeMap<u64, (String, String, String)>,
    finished: bool,
    done: bool,
}

impl ChatDecoder {
    fn flush(&mut self, out: &mut Vec<ModelEvent>) {
        if self.done {
            return;
        }
        self.done = true;
        if !self.text.is_empty() {
            out.push(ModelEvent::Part(Part::Text(std::mem::take(&mut self.text))));
        }
        for (_, (id, name, arguments)) in std::mem::take(&mut self.calls) {
            let arguments = if arguments.is_empty() {
                "{}".to_owned()
            } else {
                arguments
            };
            out.push(ModelEvent::Part(Part::Call(ToolCall {
                id,
                name,
                arguments,
            })));
        }
        out.push(ModelEvent::Done);
    }
}

/// One chunk of a Chat Completions stream.
#[derive(Debug, Deserialize)]
struct ChatChunk {
    error: Option<StreamErrorBody>,
    usage: Option<ChatUsage>,
    #[serde(default)]
    choices: Vec<ChatChoice>,
}

#[derive(Debug, Deserialize)]
struct ChatUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

#[derive(Debug, Deserialize)]
struct ChatChoice {
    #[serde(default)]
    index: u64,
    delta: Option<ChatDelta>,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChatDelta {
    content: Option<String>,
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ChatToolCall>,
}

#[derive(Debug, Deserialize)]
struct ChatToolCall {
    #[serde(default)]
    index: u64,
    id: Option<String>,
    function: Option<ChatFunction>,
}

#[derive(Debug, Deserialize)]
struct ChatFunction {
    name: Option<String>,
    arguments: Option<String>,
}

impl Decoder for ChatDecoder {
    fn event(
        &mut self,
        _name: &str,
        data: &str,
        out: &mut Vec<ModelEvent>,
    ) -> Result<(), ProviderError> {
        let api = ModelApi::OpenAiChat;
        if data.trim() == "[DONE]" {
            self.flush(out);
            return Ok(());
        }
        let chunk: ChatChunk = serde_json::from_str(data).map_err(|e| invalid(api, &e))?;
        if let Some(error) = chunk.error {
            return Err(stream_error(
                api,
                Some(error),
                "the stream reported an error",
            ));
        }
        if let Some(u) = chunk.usage {
            out.push(ModelEvent::Usage(Usage {
                input: u.prompt_tokens,
                output: u.completion_tokens,
            }));
        }
        let Some(choice) = chunk.choices.into_iter().find(|c| c.index == 0) else {
            return Ok(());
        };
        if let Some(delta) = choice.delta {
            self.add(delta);
        }
        if choice.finish_reason.is_some() {
            self.finished = true;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<ModelEvent>) -> Result<(), ProviderError> {
        // Some servers end the stream without `[DONE]` once a choice has finished.
        if self.finished {
            self.flush(out);
        }
        Ok(())
    }
}

impl ChatDecoder {
    /// Adds a delta: text, and pieces of tool calls by their index.
    fn add(&mut self, delta: ChatDelta) {
        if let Some(t) = delta.content {
            self.text.push_str(&t);
        }
        if let Some(t) = delta.refusal {
            self.text.push_str(&t);
        }
        for call in delta.tool_calls {
            let entry = self.calls.entry(call.index).or_default();
            if let Some(id) = call.id {
                entry.0 = id;
            }
            if let Some(f) = call.function {
                if let Some(name) = f.name {
                    entry.1.push_str(&name);
                }
                if let Some(args) = f.arguments {
                    entry.2.push_str(&args);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::Decoder;
    use super::*;

    fn decode(d: &mut dyn Decoder, events: &[&str]) -> Vec<ModelEvent> {
        let mut out = Vec::new();
        for e in events {
            d.event("message", e, &mut out).unwrap();
        }
        d.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn chat_deltas_become_one_message_and_its_calls() {
        let out = decode(
            &mut ChatDecoder::default(),
            &[
                r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":"Let me "},"finish_reason":null}]}"#,
                r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"look."},"finish_reason":null}]}"#,
                r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"shell","arguments":""}}]},"finish_reason":null}]}"#,
                r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"command\":"}}]},"finish_reason":null}]}"#,
                r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"ls\"}"}}]},"finish_reason":null}]}"#,
                r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
                r#"{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}"#,
                "[DONE]",
            ],
        );
        assert_eq!(
            out,
            [
                ModelEvent::Usage(Usage {
                    input: 10,
                    output: 5
                }),
                ModelEvent::Part(Part::Text("Let me look.".into())),
                ModelEvent::Part(Part::Call(ToolCall {
                    id: "call_1".into(),
                    name: "shell".into(),
                    arguments: r#"{"command":"ls"}"#.into(),
                })),
                ModelEvent::Done,
            ]
        );
    }

    #[test]
    fn responses_failure_carries_the_providers_words() {
        let mut d = ResponsesDecoder;
        let mut out = Vec::new();
        let e = d
            .event(
                "response.failed",
                r#"{"type":"response.failed","sequence_number":3,"response":{"id":"resp_1","status":"failed","error":{"code":"server_error","message":"The model crashed."}}}"#,
                &mut out,
            )
            .unwrap_err();
        assert_eq!(e.code.as_deref(), Some("server_error"));
        assert_eq!(e.message, "The model crashed.");
    }
}
