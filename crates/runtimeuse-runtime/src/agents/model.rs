//! The provider-neutral vocabulary of the agents: the APIs, the conversation ([`Item`],
//! [`Part`]), the tools offered and called, the events a turn's stream yields, the errors, and
//! the [`Decoder`] each wire API implements. A leaf: it imports nothing of the crate, so that
//! the loop, the providers and the tools all build on it.

use std::fmt;

use reqwest::StatusCode;
use serde_json::{Value, json};

/// The API a [`ModelAgent`](crate::ModelAgent) speaks.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelApi {
    /// OpenAI's Responses API: `POST {base}/responses` (the upstream runtime's default).
    OpenAiResponses,
    /// Chat Completions: `POST {base}/chat/completions`, which OpenAI and OpenAI-compatible
    /// servers (vLLM, Ollama, llama.cpp, OpenRouter, ...) speak.
    OpenAiChat,
    /// Anthropic's Messages API: `POST {base}/v1/messages`.
    AnthropicMessages,
}

impl ModelApi {
    /// The provider's name: `openai` or `anthropic`.
    pub fn provider(self) -> &'static str {
        match self {
            Self::OpenAiResponses | Self::OpenAiChat => "openai",
            Self::AnthropicMessages => "anthropic",
        }
    }

    /// The API's name: `responses`, `chat` or `messages`.
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenAiResponses => "responses",
            Self::OpenAiChat => "chat",
            Self::AnthropicMessages => "messages",
        }
    }

    /// The environment variable the API key is read from.
    pub fn key_variable(self) -> &'static str {
        match self {
            Self::OpenAiResponses | Self::OpenAiChat => "OPENAI_API_KEY",
            Self::AnthropicMessages => "ANTHROPIC_API_KEY",
        }
    }
}

/// A tool as offered to the model.
#[derive(Debug, Clone)]
pub(crate) struct ToolSpec {
    pub(crate) name: &'static str,
    pub(crate) description: &'static str,
    /// The JSON Schema of the arguments (strict: closed objects, every property required).
    pub(crate) parameters: Value,
}

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ToolCall {
    /// The provider's id of the call; its result must carry the same id.
    pub(crate) id: String,
    /// The tool's name.
    pub(crate) name: String,
    /// The arguments as JSON text.
    pub(crate) arguments: String,
}

/// One piece of a model turn's output, in the order the model produced them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Part {
    /// A completed assistant message.
    Text(String),
    /// A tool call.
    Call(ToolCall),
    /// A provider item the loop does not interpret but must send back unchanged on the next
    /// turn (OpenAI reasoning items and hosted tool calls, Anthropic thinking blocks).
    Opaque(Value),
}

/// One entry of the conversation sent on every turn.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item {
    /// The user's prompt.
    User(String),
    /// What the model produced in one turn.
    Assistant(Vec<Part>),
    /// The results of a turn's tool calls: `(call id, output text)`.
    Results(Vec<(String, String)>),
}

/// Token counts of a turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) input: u64,
    pub(crate) output: u64,
}

/// What a provider's stream decoder hands the loop.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ModelEvent {
    /// A completed piece of output.
    Part(Part),
    /// Token counts (added up over the turn).
    Usage(Usage),
    /// The turn is complete.
    Done,
}

/// What one turn asks of the provider.
#[derive(Debug)]
pub(crate) struct TurnRequest<'a> {
    pub(crate) model: &'a str,
    pub(crate) system: &'a str,
    pub(crate) items: &'a [Item],
    pub(crate) tools: &'a [ToolSpec],
    /// The strict JSON Schema of the answer, when structured output is asked for.
    pub(crate) schema: Option<&'a Value>,
    /// A tool the model must call this turn (Anthropic's structured output).
    pub(crate) force_tool: Option<&'a str>,
    pub(crate) web_search: bool,
    pub(crate) max_tokens: u32,
}

/// A provider failure: what the request fails with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProviderError {
    /// Which provider and API, e.g. `openai responses`.
    pub(crate) api: ModelApi,
    /// The HTTP status, when the provider answered with one.
    pub(crate) status: Option<u16>,
    /// The provider's error type (`invalid_request_error`, `overloaded_error`, ...).
    pub(crate) kind: Option<String>,
    /// The provider's error code (`invalid_api_key`, ...).
    pub(crate) code: Option<String>,
    /// The provider's own words, or what went wrong on the way.
    pub(crate) message: String,
    /// Attempts made.
    pub(crate) attempts: u32,
}

impl ProviderError {
    pub(crate) fn stream(api: ModelApi, message: impl Into<String>) -> Self {
        Self {
            api,
            status: None,
            kind: None,
            code: None,
            message: message.into(),
            attempts: 1,
        }
    }

    /// The error's metadata, for the `error_message` the request fails with.
    pub(crate) fn metadata(&self) -> Value {
        json!({
            "error_name": "ProviderError",
            "provider": self.api.provider(),
            "api": self.api.name(),
            "status": self.status,
            "type": self.kind,
            "code": self.code,
            "attempts": self.attempts,
        })
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} API error", self.api.provider(), self.api.name())?;
        if let Some(status) = self.status {
            let reason = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            write!(f, ": HTTP {status} {reason}")?;
        }
        match (&self.kind, &self.code) {
            (Some(k), Some(c)) => write!(f, " ({k}, {c})")?,
            (Some(k), None) | (None, Some(k)) => write!(f, " ({k})")?,
            (None, None) => {}
        }
        write!(f, ": {}", self.message)?;
        if self.attempts > 1 {
            write!(f, " (after {} attempts)", self.attempts)?;
        }
        Ok(())
    }
}

/// A provider's stream decoder: one server-sent event in, neutral events out.
pub(crate) trait Decoder: Send {
    /// Decodes one event (`name` is the SSE `event:` field, `message` when absent).
    ///
    /// # Errors
    ///
    /// When the stream reports a failure or breaks the format.
    fn event(
        &mut self,
        name: &str,
        data: &str,
        out: &mut Vec<ModelEvent>,
    ) -> Result<(), ProviderError>;

    /// The stream ended (EOF): whatever the decoder still holds, or an error when the turn
    /// is incomplete.
    ///
    /// # Errors
    ///
    /// When the stream ended before the turn was complete.
    fn finish(&mut self, out: &mut Vec<ModelEvent>) -> Result<(), ProviderError>;
}

/// One provider wire API, implemented once by each provider module: where a turn is posted,
/// its body, its authentication, the decoder of its stream, and how it is asked for a
/// structured answer. The HTTP turn (`provider`) and the agent loop see only this.
pub(crate) trait WireApi: Send + Sync {
    /// Which API this is.
    fn api(&self) -> ModelApi;
    /// The path of a turn under the provider's base URL.
    fn path(&self) -> &'static str;
    /// The request body of one turn.
    fn body(&self, request: &TurnRequest<'_>) -> Value;
    /// The headers that authenticate with `key` (and any the API requires).
    fn auth(&self, key: &str, headers: &mut reqwest::header::HeaderMap);
    /// A fresh decoder of one turn's stream.
    fn decoder(&self) -> Box<dyn Decoder>;
    /// Whether a structured answer comes through the `final_output` tool (the API has no
    /// response format of its own); otherwise the schema goes in the request.
    fn structured_via_tool(&self) -> bool {
        false
    }
}

/// A header value not to be logged.
pub(crate) fn secret_header(v: &str) -> Option<reqwest::header::HeaderValue> {
    reqwest::header::HeaderValue::from_str(v).ok().map(|mut v| {
        v.set_sensitive(true);
        v
    })
}
