//! A mock model provider: a real HTTP/1.1 server on 127.0.0.1 that answers each POST with the
//! next scripted [`Reply`] (a server-sent event stream in the provider's documented format,
//! sent with chunked transfer encoding as the providers do, or an error response), and
//! records every request it got.
//!
//! [`Api`] builds the streams of each API: OpenAI Responses, Chat Completions and Anthropic
//! Messages, event for event as their API references document them.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use runtimeuse_runtime::{ModelApi, ProviderConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One server-sent event: `event: <name>` (when set) and `data: <data>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field.
    pub event: Option<String>,
    /// The `data:` field (one line of JSON, or `[DONE]`).
    pub data: String,
}

impl SseEvent {
    fn named(name: &str, data: Value) -> Self {
        Self {
            event: Some(name.to_owned()),
            data: data.to_string(),
        }
    }

    fn data(data: impl Into<String>) -> Self {
        Self {
            event: None,
            data: data.into(),
        }
    }
}

/// What the mock answers to one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// `200 OK` with `text/event-stream`: these events, then the end of the stream; or, with
    /// `stall_after: Some(n)`, the first `n` events and then nothing, the connection held open
    /// until the client closes it (see [`MockProvider::wait_closed`]).
    Stream {
        /// The events.
        events: Vec<SseEvent>,
        /// Stop after this many events and hold the connection.
        stall_after: Option<usize>,
    },
    /// A response with this status (an error, or a plain `200`) and a JSON body.
    Error {
        /// The status code.
        status: u16,
        /// Extra headers (e.g. `retry-after`).
        headers: Vec<(String, String)>,
        /// The body.
        body: String,
    },
}

impl Reply {
    /// A complete stream of these events.
    pub fn stream(events: Vec<SseEvent>) -> Self {
        Self::Stream {
            events,
            stall_after: None,
        }
    }
}

/// A request the mock received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The request path, e.g. `/v1/responses`.
    pub path: String,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, parsed as JSON (`Null` when it is not JSON).
    pub body: Value,
}

impl Recorded {
    /// The first header of this name (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct State {
    replies: std::collections::VecDeque<Reply>,
    requests: Vec<Recorded>,
    stalled: usize,
    closed: usize,
    refused: usize,
}

/// The mock provider; it stops when dropped. Each `POST` of a turn gets the next reply;
/// other methods (reachability probes) get an empty `200`, and an Anthropic request that is
/// not a streamed turn (a token count, a side request such as a title, which Claude Code
/// makes) gets a small answer of the API's shape without using a reply.
#[derive(Debug)]
pub struct MockProvider {
    addr: std::net::SocketAddr,
    state: Arc<(Mutex<State>, Condvar)>,
    task: tokio::task::JoinHandle<()>,
}

impl MockProvider {
    /// Starts serving these replies, in order (on the current tokio runtime). Once they are
    /// used up, every request gets a 500 that says so.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    pub async fn start(replies: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new((
            Mutex::new(State {
                replies: replies.into(),
                ..State::default()
            }),
            Condvar::new(),
        ));
        let s = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let _ = serve(stream, &s).await;
                });
            }
        });
        Self { addr, state, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state
            .0
            .lock()
            .map(|s| s.requests.clone())
            .unwrap_or_default()
    }

    /// The requests refused so far: to a path the mock does not know, or with a body that
    /// is not JSON.
    pub fn refused(&self) -> usize {
        self.state.0.lock().map(|s| s.refused).unwrap_or(0)
    }

    /// Blocks (at most `limit`) until a stalled stream is reached; whether it was.
    pub fn wait_stalled(&self, limit: Duration) -> bool {
        self.wait(limit, |s| s.stalled > 0)
    }

    /// Blocks (at most `limit`) until the client closed a stalled stream's connection;
    /// whether it did.
    pub fn wait_closed(&self, limit: Duration) -> bool {
        self.wait(limit, |s| s.closed > 0)
    }

    fn wait(&self, limit: Duration, done: impl Fn(&State) -> bool) -> bool {
        let (lock, cv) = &*self.state;
        let Ok(guard) = lock.lock() else {
            return false;
        };
        cv.wait_timeout_while(guard, limit, |s| !done(s))
            .map(|(s, _)| done(&s))
            .unwrap_or(false)
    }
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn update(state: &(Mutex<State>, Condvar), f: impl FnOnce(&mut State)) {
    if let Ok(mut s) = state.0.lock() {
        f(&mut s);
    }
    state.1.notify_all();
}

async fn serve(
    stream: tokio::net::TcpStream,
    state: &(Mutex<State>, Condvar),
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let crate::HttpRequest {
        method,
        path,
        headers,
        body,
    } = crate::read_request(&mut reader).await?;
    if method != "POST" {
        // A client's reachability probe (Claude Code sends one to the base URL before its
        // first turn): answered, neither recorded nor given a reply meant for a turn.
        let stream = reader.get_mut();
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await?;
        return stream.shutdown().await;
    }
    let parsed = serde_json::from_slice::<Value>(&body);
    let known = KNOWN_PATHS.contains(&path.split('?').next().unwrap_or_default());
    if !known || parsed.is_err() {
        // Refused, so that a request the mock does not know fails the test that made it.
        let why = if known {
            "a body that is not JSON"
        } else {
            "a path it does not know"
        };
        let text = format!(
            r#"{{"error":{{"type":"not_found_error","message":"the mock refuses {why}: {path}"}}}}"#
        );
        update(state, |s| s.refused += 1);
        let head = format!(
            "HTTP/1.1 404 Mock\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            text.len()
        );
        let stream = reader.get_mut();
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(text.as_bytes()).await?;
        return stream.shutdown().await;
    }
    let body = parsed.unwrap_or(Value::Null);
    let echo = last_tool_result(&body);
    let reply = match side_reply(&path, &body) {
        // Not a turn: answered, not recorded, and no reply of the queue is used.
        Some(side) => side,
        None => {
            let mut reply = None;
            update(state, |s| {
                s.requests.push(Recorded {
                    path,
                    headers,
                    body,
                });
                reply = s.replies.pop_front();
            });
            reply.unwrap_or_else(|| Reply::Error {
                status: 500,
                headers: Vec::new(),
                body:
                    r#"{"error":{"message":"the mock has no more replies","type":"server_error"}}"#
                        .to_owned(),
            })
        }
    };
    match reply {
        Reply::Error {
            status,
            headers,
            body,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} Mock\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (n, v) in headers {
                head.push_str(&format!("{n}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let stream = reader.get_mut();
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(body.as_bytes()).await?;
            stream.shutdown().await
        }
        Reply::Stream {
            events,
            stall_after,
        } => {
            let stream = reader.get_mut();
            stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
                )
                .await?;
            for (i, e) in events.iter().enumerate() {
                if stall_after == Some(i) {
                    break;
                }
                let mut text = String::new();
                if let Some(name) = &e.event {
                    text.push_str(&format!("event: {name}\n"));
                }
                let data = e.data.replace(TOOL_RESULT, &escaped(&echo));
                text.push_str(&format!("data: {data}\n\n"));
                let chunk = format!("{:x}\r\n{text}\r\n", text.len());
                stream.write_all(chunk.as_bytes()).await?;
                stream.flush().await?;
            }
            if stall_after.is_some() {
                update(state, |s| s.stalled += 1);
                // Hold the connection until the client goes away.
                let mut sink = [0u8; 256];
                while reader.read(&mut sink).await.unwrap_or(0) > 0 {}
                update(state, |s| s.closed += 1);
                return Ok(());
            }
            stream.write_all(b"0\r\n\r\n").await?;
            stream.shutdown().await
        }
    }
}

/// The three provider APIs, and the streams and error bodies each sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// OpenAI Responses (`/v1/responses`).
    Responses,
    /// Chat Completions (`/v1/chat/completions`).
    Chat,
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
}

impl Api {
    /// All three.
    pub const ALL: [Api; 3] = [Api::Responses, Api::Chat, Api::Anthropic];

    /// The agent's provider settings for this API at `mock` (no key).
    pub fn provider(self, mock: &MockProvider) -> ProviderConfig {
        match self {
            Api::Responses => {
                ProviderConfig::new(ModelApi::OpenAiResponses, format!("{}/v1", mock.url()))
            }
            Api::Chat => ProviderConfig::new(ModelApi::OpenAiChat, format!("{}/v1", mock.url())),
            Api::Anthropic => ProviderConfig::new(ModelApi::AnthropicMessages, mock.url()),
        }
    }

    /// The path the agent must POST to.
    pub fn path(self) -> &'static str {
        match self {
            Api::Responses => "/v1/responses",
            Api::Chat => "/v1/chat/completions",
            Api::Anthropic => "/v1/messages",
        }
    }

    /// A streamed answer that says what the last tool returned: "the tool said: " and its
    /// output (Anthropic requests; see [`TOOL_RESULT`]).
    pub fn text_echoing_tool_result(self) -> Vec<SseEvent> {
        self.text(&format!("the tool said: {TOOL_RESULT}"))
    }

    /// A streamed answer: one assistant message of `text` (in two deltas), then the end.
    pub fn text(self, text: &str) -> Vec<SseEvent> {
        // Two deltas, never splitting a [`TOOL_RESULT`] marker.
        let (a, b) = text.split_at(text.find(TOOL_RESULT).unwrap_or(text.len() / 2));
        match self {
            Api::Responses => {
                let msg = |status: &str, content: Value| json!({"id": "msg_1", "type": "message", "status": status, "content": content, "role": "assistant"});
                let part =
                    json!({"type": "output_text", "annotations": [], "logprobs": [], "text": text});
                let mut events = responses_start();
                events.extend([
                    SseEvent::named("response.output_item.added", json!({"type": "response.output_item.added", "sequence_number": 2, "output_index": 0, "item": msg("in_progress", json!([]))})),
                    SseEvent::named("response.content_part.added", json!({"type": "response.content_part.added", "sequence_number": 3, "item_id": "msg_1", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}})),
                    SseEvent::named("response.output_text.delta", json!({"type": "response.output_text.delta", "sequence_number": 4, "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": a, "logprobs": []})),
                    SseEvent::named("response.output_text.delta", json!({"type": "response.output_text.delta", "sequence_number": 5, "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": b, "logprobs": []})),
                    SseEvent::named("response.output_text.done", json!({"type": "response.output_text.done", "sequence_number": 6, "item_id": "msg_1", "output_index": 0, "content_index": 0, "text": text, "logprobs": []})),
                    SseEvent::named("response.content_part.done", json!({"type": "response.content_part.done", "sequence_number": 7, "item_id": "msg_1", "output_index": 0, "content_index": 0, "part": part})),
                    SseEvent::named("response.output_item.done", json!({"type": "response.output_item.done", "sequence_number": 8, "output_index": 0, "item": msg("completed", json!([part]))})),
                ]);
                events.push(responses_completed(
                    9,
                    json!([msg("completed", json!([part]))]),
                ));
                events
            }
            Api::Chat => {
                let mut events = vec![
                    chat_chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                    chat_chunk(json!({"content": a}), Value::Null),
                    chat_chunk(json!({"content": b}), Value::Null),
                    chat_chunk(json!({}), json!("stop")),
                ];
                events.extend(chat_end());
                events
            }
            Api::Anthropic => {
                let mut events = vec![anthropic_start()];
                events.extend([
                    SseEvent::named("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
                    SseEvent::named("ping", json!({"type": "ping"})),
                    SseEvent::named("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": a}})),
                    SseEvent::named("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": b}})),
                    SseEvent::named("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
                ]);
                events.extend(anthropic_end("end_turn"));
                events
            }
        }
    }

    /// A streamed turn that calls tool `name` with `arguments` (a JSON object), id `id`.
    pub fn tool_call(self, id: &str, name: &str, arguments: &Value) -> Vec<SseEvent> {
        let args = arguments.to_string();
        let (a, b) = args.split_at(args.len() / 2);
        match self {
            Api::Responses => {
                let item = |status: &str, args: &str| json!({"id": "fc_1", "type": "function_call", "status": status, "arguments": args, "call_id": id, "name": name});
                let mut events = responses_start();
                events.extend([
                    SseEvent::named("response.output_item.added", json!({"type": "response.output_item.added", "sequence_number": 2, "output_index": 0, "item": item("in_progress", "")})),
                    SseEvent::named("response.function_call_arguments.delta", json!({"type": "response.function_call_arguments.delta", "sequence_number": 3, "item_id": "fc_1", "output_index": 0, "delta": a})),
                    SseEvent::named("response.function_call_arguments.delta", json!({"type": "response.function_call_arguments.delta", "sequence_number": 4, "item_id": "fc_1", "output_index": 0, "delta": b})),
                    SseEvent::named("response.function_call_arguments.done", json!({"type": "response.function_call_arguments.done", "sequence_number": 5, "item_id": "fc_1", "output_index": 0, "arguments": args})),
                    SseEvent::named("response.output_item.done", json!({"type": "response.output_item.done", "sequence_number": 6, "output_index": 0, "item": item("completed", &args)})),
                ]);
                events.push(responses_completed(7, json!([item("completed", &args)])));
                events
            }
            Api::Chat => {
                let mut events = vec![
                    chat_chunk(
                        json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
                        Value::Null,
                    ),
                    chat_chunk(
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": a}}]}),
                        Value::Null,
                    ),
                    chat_chunk(
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": b}}]}),
                        Value::Null,
                    ),
                    chat_chunk(json!({}), json!("tool_calls")),
                ];
                events.extend(chat_end());
                events
            }
            Api::Anthropic => {
                let mut events = vec![anthropic_start()];
                events.extend([
                    SseEvent::named("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}})),
                    SseEvent::named("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": a}})),
                    SseEvent::named("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": b}})),
                    SseEvent::named("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
                ]);
                events.extend(anthropic_end("tool_use"));
                events
            }
        }
    }

    /// A structured answer `value`: the JSON as text (OpenAI), or a call of the
    /// `final_output` tool (Anthropic).
    pub fn structured(self, value: &Value) -> Vec<SseEvent> {
        match self {
            Api::Anthropic => self.tool_call("toolu_final", "final_output", value),
            _ => self.text(&value.to_string()),
        }
    }

    /// The provider's error body for an invalid key (status 401).
    pub fn unauthorized(self) -> Reply {
        let body = match self {
            Api::Anthropic => {
                json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}, "request_id": "req_1"})
            }
            _ => {
                json!({"error": {"message": "Incorrect API key provided: sk-test-***********cret. You can find your API key at https://platform.openai.com/account/api-keys.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})
            }
        };
        Reply::Error {
            status: 401,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    /// A rate limit (429) asking to retry after `seconds`.
    pub fn rate_limited(self, seconds: u32) -> Reply {
        let body = match self {
            Api::Anthropic => {
                json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"}})
            }
            _ => {
                json!({"error": {"message": "Rate limit reached for requests", "type": "requests", "param": null, "code": "rate_limit_exceeded"}})
            }
        };
        Reply::Error {
            status: 429,
            headers: vec![("retry-after".to_owned(), seconds.to_string())],
            body: body.to_string(),
        }
    }

    /// A server error (500).
    pub fn server_error(self) -> Reply {
        let body = match self {
            Api::Anthropic => {
                json!({"type": "error", "error": {"type": "api_error", "message": "Internal server error"}})
            }
            _ => {
                json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error", "param": null, "code": null}})
            }
        };
        Reply::Error {
            status: 500,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    /// The tool results the request `body` carries: `(call id, output)`.
    pub fn tool_results(self, body: &Value) -> Vec<(String, String)> {
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        match self {
            Api::Responses => list(body, "input")
                .filter(|i| i.get("type").and_then(Value::as_str) == Some("function_call_output"))
                .map(|i| (s(i, "call_id"), s(i, "output")))
                .collect(),
            Api::Chat => list(body, "messages")
                .filter(|m| m.get("role").and_then(Value::as_str) == Some("tool"))
                .map(|m| (s(m, "tool_call_id"), s(m, "content")))
                .collect(),
            Api::Anthropic => list(body, "messages")
                .flat_map(|m| list(m, "content"))
                .filter(|c| c.get("type").and_then(Value::as_str) == Some("tool_result"))
                .map(|c| (s(c, "tool_use_id"), s(c, "content")))
                .collect(),
        }
    }
}

fn list<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

fn responses_object(status: &str, output: Value, usage: Value) -> Value {
    json!({"id": "resp_1", "object": "response", "created_at": 1_764_000_000, "status": status, "model": "gpt-test", "output": output, "parallel_tool_calls": true, "tool_choice": "auto", "tools": [], "usage": usage})
}

fn responses_start() -> Vec<SseEvent> {
    vec![
        SseEvent::named(
            "response.created",
            json!({"type": "response.created", "sequence_number": 0, "response": responses_object("in_progress", json!([]), Value::Null)}),
        ),
        SseEvent::named(
            "response.in_progress",
            json!({"type": "response.in_progress", "sequence_number": 1, "response": responses_object("in_progress", json!([]), Value::Null)}),
        ),
    ]
}

fn responses_completed(seq: u64, output: Value) -> SseEvent {
    let usage = json!({"input_tokens": 20, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 27});
    SseEvent::named(
        "response.completed",
        json!({"type": "response.completed", "sequence_number": seq, "response": responses_object("completed", output, usage)}),
    )
}

fn chat_chunk(delta: Value, finish: Value) -> SseEvent {
    SseEvent::data(
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_764_000_000, "model": "gpt-test", "system_fingerprint": "fp_1", "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}], "usage": null})
            .to_string(),
    )
}

fn chat_end() -> Vec<SseEvent> {
    vec![
        SseEvent::data(
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_764_000_000, "model": "gpt-test", "system_fingerprint": "fp_1", "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27}})
                .to_string(),
        ),
        SseEvent::data("[DONE]"),
    ]
}

fn anthropic_start() -> SseEvent {
    SseEvent::named(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-test", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 20, "output_tokens": 1}}}),
    )
}

fn anthropic_end(stop: &str) -> Vec<SseEvent> {
    vec![
        SseEvent::named(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 7}}),
        ),
        SseEvent::named("message_stop", json!({"type": "message_stop"})),
    ]
}

/// The model of an agent's side requests (titles, summaries): point its small model at this
/// one (Claude Code: `ANTHROPIC_DEFAULT_HAIKU_MODEL`), and they are answered without using the
/// replies meant for the turns.
pub const SIDE_MODEL: &str = "claude-side";

/// The reply to an Anthropic request that is not a turn, if this is one: a token count, or a
/// short message (for a request that is not streamed, or one of [`SIDE_MODEL`]).
fn side_reply(path: &str, body: &Value) -> Option<Reply> {
    let json = |v: Value| Reply::Error {
        status: 200,
        headers: Vec::new(),
        body: v.to_string(),
    };
    if !path.starts_with("/v1/messages") {
        return None;
    }
    if path.starts_with("/v1/messages/count_tokens") {
        return Some(json(json!({"input_tokens": 20})));
    }
    let streamed = body.get("stream") == Some(&Value::Bool(true));
    if streamed && body["model"] == SIDE_MODEL {
        return Some(Reply::stream(Api::Anthropic.text("ok")));
    }
    if streamed {
        return None;
    }
    Some(json(json!({
        "id": "msg_side", "type": "message", "role": "assistant", "model": body["model"],
        "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
        "stop_sequence": null, "usage": {"input_tokens": 20, "output_tokens": 1}
    })))
}

/// The paths the mock answers (the turns of each API, and Anthropic's token count); a request
/// to another is refused with `404`.
const KNOWN_PATHS: [&str; 4] = [
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/messages/count_tokens",
];

/// In a reply's text, stands for the text of the last tool result the request carries: an
/// answer that says what the tool returned ([`Api::text_echoing_tool_result`]).
pub const TOOL_RESULT: &str = "{{tool_result}}";

/// The text of the last tool result in an Anthropic request (a string, or text blocks).
fn last_tool_result(body: &Value) -> String {
    let mut blocks = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .filter(|b| b["type"] == "tool_result");
    let Some(last) = blocks.next_back() else {
        return String::new();
    };
    match &last["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// `text` as it goes inside a JSON string.
fn escaped(text: &str) -> String {
    let quoted = Value::String(text.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}
