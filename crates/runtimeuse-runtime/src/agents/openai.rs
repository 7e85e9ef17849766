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

use serde_json::{Map, Value, json};

use super::model::{
    Item, ModelApi, ModelEvent, Part, ProviderError, ToolCall, TurnRequest, Usage, parse_event,
    str_of,
};

/// The name structured output is requested under.
const FORMAT_NAME: &str = "final_output";

/// The request body of one Responses API turn.
pub(crate) fn responses_body(r: &TurnRequest<'_>) -> Value {
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
pub(crate) fn chat_body(r: &TurnRequest<'_>) -> Value {
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

fn stream_error(api: ModelApi, error: Option<&Value>, fallback: &str) -> ProviderError {
    let mut e = ProviderError::stream(
        api,
        error.and_then(|e| str_of(e, "message")).unwrap_or(fallback),
    );
    e.code = error.and_then(|e| str_of(e, "code")).map(str::to_owned);
    e.kind = error.and_then(|e| str_of(e, "type")).map(str::to_owned);
    e
}

/// Decodes the Responses API's stream: whole output items from `response.output_item.done`,
/// usage and the end from `response.completed`.
#[derive(Debug, Default)]
pub(crate) struct ResponsesDecoder;

impl super::model::Decoder for ResponsesDecoder {
    fn event(
        &mut self,
        _name: &str,
        data: &str,
        out: &mut Vec<ModelEvent>,
    ) -> Result<(), ProviderError> {
        let api = ModelApi::OpenAiResponses;
        let v = parse_event(api, data)?;
        match str_of(&v, "type").unwrap_or_default() {
            "response.output_item.done" => {
                let Some(item) = v.get("item") else {
                    return Ok(());
                };
                match str_of(item, "type").unwrap_or_default() {
                    "message" => {
                        let text: String = item
                            .get("content")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(|c| str_of(c, "text").or_else(|| str_of(c, "refusal")))
                            .collect();
                        if !text.is_empty() {
                            out.push(ModelEvent::Part(Part::Text(text)));
                        }
                    }
                    "function_call" => out.push(ModelEvent::Part(Part::Call(ToolCall {
                        id: str_of(item, "call_id").unwrap_or_default().to_owned(),
                        name: str_of(item, "name").unwrap_or_default().to_owned(),
                        arguments: str_of(item, "arguments").unwrap_or("{}").to_owned(),
                    }))),
                    _ => out.push(ModelEvent::Part(Part::Opaque(item.clone()))),
                }
            }
            "response.completed" => {
                let usage = v.pointer("/response/usage");
                let n = |k: &str| usage.and_then(|u| u.get(k)).and_then(Value::as_u64);
                out.push(ModelEvent::Usage(Usage {
                    input: n("input_tokens").unwrap_or(0),
                    output: n("output_tokens").unwrap_or(0),
                }));
                out.push(ModelEvent::Done);
            }
            "response.incomplete" => {
                let reason = v
                    .pointer("/response/incomplete_details/reason")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown");
                return Err(ProviderError::stream(
                    api,
                    format!("the response is incomplete: {reason}"),
                ));
            }
            "response.failed" => {
                return Err(stream_error(
                    api,
                    v.pointer("/response/error"),
                    "the response failed",
                ));
            }
            "error" => return Err(stream_error(api, Some(&v), "the stream reported an error")),
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self, _out: &mut Vec<ModelEvent>) -> Result<(), ProviderError> {
        Ok(())
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

impl super::model::Decoder for ChatDecoder {
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
        let v = parse_event(api, data)?;
        if let Some(error) = v.get("error") {
            return Err(stream_error(
                api,
                Some(error),
                "the stream reported an error",
            ));
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
            out.push(ModelEvent::Usage(Usage {
                input: n("prompt_tokens"),
                output: n("completion_tokens"),
            }));
        }
        let choice = v.get("choices").and_then(Value::as_array).and_then(|c| {
            c.iter()
                .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        });
        let Some(choice) = choice else {
            return Ok(());
        };
        if let Some(delta) = choice.get("delta") {
            if let Some(t) = str_of(delta, "content") {
                self.text.push_str(t);
            }
            if let Some(t) = str_of(delta, "refusal") {
                self.text.push_str(t);
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                let entry = self.calls.entry(index).or_default();
                if let Some(id) = str_of(call, "id") {
                    id.clone_into(&mut entry.0);
                }
                if let Some(f) = call.get("function") {
                    if let Some(name) = str_of(f, "name") {
                        entry.1.push_str(name);
                    }
                    if let Some(args) = str_of(f, "arguments") {
                        entry.2.push_str(args);
                    }
                }
            }
        }
        if choice.get("finish_reason").is_some_and(|f| !f.is_null()) {
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
