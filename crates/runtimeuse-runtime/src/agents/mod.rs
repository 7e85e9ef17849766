//! Agents that answer queries: [`ModelAgent`] talks to a model provider (OpenAI Responses,
//! OpenAI-compatible Chat Completions, Anthropic Messages) and lets the model work in the
//! sandbox with tools; [`CommandAgent`] runs an external agent CLI.
//!
//! A [`ModelAgent`] runs the agent loop: the invocation's system prompt, user prompt and model
//! go to the provider; each tool call the model makes runs in the sandbox (`shell`,
//! `read_file`, `write_file`) and its result goes back; this repeats until the model answers
//! without calling a tool, or [`AgentOptions::max_turns`] is reached. Each completed assistant
//! message is streamed to the client as one `assistant_message`. The answer is the text
//! result, or, when the invocation asks for structured output, the answer parsed as JSON and
//! checked against the schema (which the provider is asked to follow, made strict).
//!
//! Result metadata: `provider`, `api`, `model`, `turns`, `tool_calls`, `duration_ms` and
//! `usage` (`inputTokens`, `outputTokens`, `totalTokens`, as the upstream runtime reports it).
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use runtimeuse_runtime::{AgentOptions, ModelAgent, ModelApi, ProviderConfig, Runtime};
//!
//! // OPENAI_API_KEY and OPENAI_BASE_URL from the environment.
//! let provider = ProviderConfig::openai_from_env(ModelApi::OpenAiResponses);
//! let agent = ModelAgent::new(provider, AgentOptions::default())?;
//! let runtime = Runtime::new(agent).bind("127.0.0.1:8080").await?;
//! runtime.serve(std::future::pending()).await
//! # }
//! ```

/// `impl AgentHandler` for an agent whose `async fn answer(&self, Invocation,
/// HandlerContext) -> Result<QueryResult, AgentError>` does the work.
macro_rules! handler_by_answer {
    ($agent:ty) => {
        impl $crate::handler::AgentHandler for $agent {
            fn run<'a>(
                &'a self,
                invocation: runtimeuse_proto::Invocation,
                ctx: $crate::handler::HandlerContext,
            ) -> $crate::handler::BoxFuture<
                'a,
                Result<runtimeuse_proto::QueryResult, $crate::handler::AgentError>,
            > {
                Box::pin(self.answer(invocation, ctx))
            }
        }
    };
}
pub(crate) use handler_by_answer;

mod acp;
mod anthropic;
mod claude;
mod command;
mod lines;
mod model;
mod openai;
mod provider;
mod schema;
mod tools;

use std::fmt;
use std::time::{Duration, Instant};

use runtimeuse_proto::{Invocation, QueryResult, ResultData};
use serde_json::{Value, json};

use crate::handler::{AgentError, HandlerContext};
use model::{Item, Part, ProviderError, ToolCall, ToolSpec, TurnRequest, Usage};

pub use acp::{AcpAgent, Permissions};
pub use claude::ClaudeAgent;
pub use command::{CommandAgent, PromptInput};
pub use model::ModelApi;

/// Where and how a [`ModelAgent`] reaches its provider. `Debug` does not show the key.
#[non_exhaustive]
#[derive(Clone)]
pub struct ProviderConfig {
    /// The API spoken.
    pub api: ModelApi,
    /// The base URL: `https://api.openai.com/v1` for OpenAI (it ends in `/v1`),
    /// `https://api.anthropic.com` for Anthropic (without `/v1`), as the official SDKs take it.
    pub base_url: String,
    /// The API key. When `None`, each query fails with an error saying which variable to set.
    pub api_key: Option<String>,
    /// The model used when an invocation's `model` is empty.
    pub default_model: Option<String>,
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("api", &self.api)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[REDACTED]"))
            .field("default_model", &self.default_model)
            .finish()
    }
}

impl ProviderConfig {
    /// A provider at `base_url` with no key.
    pub fn new(api: ModelApi, base_url: impl Into<String>) -> Self {
        Self {
            api,
            base_url: base_url.into(),
            api_key: None,
            default_model: None,
        }
    }

    /// OpenAI (either API) from `OPENAI_API_KEY` and `OPENAI_BASE_URL` (default
    /// `https://api.openai.com/v1`).
    pub fn openai_from_env(api: ModelApi) -> Self {
        let base = non_empty_var("OPENAI_BASE_URL")
            .unwrap_or_else(|| "https://api.openai.com/v1".to_owned());
        Self::new(api, base).with_key(non_empty_var("OPENAI_API_KEY"))
    }

    /// Anthropic from `ANTHROPIC_API_KEY` and `ANTHROPIC_BASE_URL` (default
    /// `https://api.anthropic.com`).
    pub fn anthropic_from_env() -> Self {
        let base = non_empty_var("ANTHROPIC_BASE_URL")
            .unwrap_or_else(|| "https://api.anthropic.com".to_owned());
        Self::new(ModelApi::AnthropicMessages, base).with_key(non_empty_var("ANTHROPIC_API_KEY"))
    }

    /// Sets the API key.
    #[must_use]
    pub fn api_key(self, key: impl Into<String>) -> Self {
        self.with_key(Some(key.into()))
    }

    /// Sets the model used when an invocation names none.
    #[must_use]
    pub fn default_model(mut self, model: impl Into<String>) -> Self {
        self.default_model = Some(model.into());
        self
    }

    fn with_key(mut self, key: Option<String>) -> Self {
        self.api_key = key;
        self
    }
}

fn non_empty_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Limits and switches of the agent loop.
///
/// `#[non_exhaustive]`: start from [`AgentOptions::default`] and change fields.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// Most model turns per query. Default 30.
    pub max_turns: u32,
    /// Time limit of one tool call; the command's process group is killed after it.
    /// Default 300 s.
    pub tool_timeout: Duration,
    /// Most bytes of a tool's output given back to the model; longer output is cut in the
    /// middle, and the cut is said in the text. Default 32 KiB.
    pub max_tool_output: usize,
    /// Attempts per model request, the first included, when the provider answers 408, 409,
    /// 429 or 5xx or cannot be reached. Default 3.
    pub max_attempts: u32,
    /// Delay before the second attempt; it doubles for each further one, unless the provider
    /// says how long to wait (`Retry-After`). Default 500 ms.
    pub retry_base_delay: Duration,
    /// The longest wait between attempts, `Retry-After` included. Default 60 s.
    pub max_retry_delay: Duration,
    /// A model stream that sends nothing for this long fails. Default 300 s.
    pub stream_idle_timeout: Duration,
    /// Time limit for connecting to the provider. Default 30 s.
    pub connect_timeout: Duration,
    /// Most bytes of one streamed model response. Default 64 MiB.
    pub max_response_bytes: usize,
    /// `max_tokens` of each Anthropic request (the API requires one). Default 16384.
    pub max_tokens: u32,
    /// Offer the provider's hosted web search (`web_search` on the Responses API,
    /// `web_search_20250305` on Anthropic; Chat Completions has none). Default off.
    pub web_search: bool,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            max_turns: 30,
            tool_timeout: Duration::from_secs(300),
            max_tool_output: 32 * 1024,
            max_attempts: 3,
            retry_base_delay: Duration::from_millis(500),
            max_retry_delay: Duration::from_secs(60),
            stream_idle_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(30),
            max_response_bytes: 64 << 20,
            max_tokens: 16384,
            web_search: false,
        }
    }
}

/// An agent that answers with a language model and works in the sandbox with tools.
pub struct ModelAgent {
    provider: ProviderConfig,
    options: AgentOptions,
    http: reqwest::Client,
}

impl fmt::Debug for ModelAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelAgent")
            .field("provider", &self.provider)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ModelAgent {
    /// An agent for this provider. A missing key is not an error here: each query then fails
    /// with a message naming the variable to set.
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be built (its TLS configuration).
    pub fn new(provider: ProviderConfig, options: AgentOptions) -> std::io::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .user_agent(concat!("runtimeuse-rs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Self {
            provider,
            options,
            http,
        })
    }

    /// The provider's settings.
    pub fn provider(&self) -> &ProviderConfig {
        &self.provider
    }

    fn fail(&self, e: &ProviderError) -> AgentError {
        let mut message = e.to_string();
        if let Some(key) = self.provider.api_key.as_deref().filter(|k| k.len() >= 4) {
            message = message.replace(key, "[REDACTED]");
        }
        AgentError {
            message,
            metadata: e.metadata(),
        }
    }

    fn config_error(&self, message: String) -> AgentError {
        AgentError {
            message,
            metadata: json!({
                "error_name": "ConfigurationError",
                "provider": self.provider.api.provider(),
                "api": self.provider.api.name(),
            }),
        }
    }

    async fn answer(
        &self,
        invocation: Invocation,
        ctx: HandlerContext,
    ) -> Result<QueryResult, AgentError> {
        let started = Instant::now();
        let plan = self.plan(&invocation)?;
        let env = tools::ToolEnv {
            cancel: &ctx.cancel,
            env: invocation.agent_env.as_ref(),
            options: &self.options,
            secrets: &invocation.secrets_to_redact,
            withheld_env: &ctx.withheld_env,
        };
        let (answer, run) = self
            .converse(&plan, invocation.user_prompt.clone(), &ctx, &env)
            .await?;
        let api = self.provider.api;
        let metadata = json!({
            "provider": api.provider(),
            "api": api.name(),
            "model": plan.model,
            "turns": run.turns,
            "tool_calls": run.tool_calls,
            "duration_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "usage": {
                "inputTokens": run.usage.input,
                "outputTokens": run.usage.output,
                "totalTokens": run.usage.input + run.usage.output,
            },
        });
        Ok(QueryResult::new(plan.result_data(answer)?, metadata))
    }

    /// What a query needs before its first turn: the key, the model, the answer's schema and
    /// how it is asked for, the tools and the system prompt.
    fn plan(&self, invocation: &Invocation) -> Result<Plan, AgentError> {
        let api = self.provider.api;
        if self.provider.api_key.is_none() {
            let var = api.key_variable();
            return Err(self.config_error(format!(
                "{var} is not set: the {} agent needs an API key; set {var} in the runtime's \
                 environment (or pass --api-key to `runtimeuse serve`)",
                api.provider()
            )));
        }
        let model = Some(invocation.model.as_str())
            .filter(|m| !m.is_empty())
            .or(self.provider.default_model.as_deref())
            .ok_or_else(|| {
                self.config_error(
                    "no model: the invocation names none and the agent has no default model"
                        .to_owned(),
                )
            })?
            .to_owned();
        let schema = match &invocation.output_format_json_schema {
            Some(format) => Some(schema::strict(
                &schema::answer_schema(format).map_err(|e| self.config_error(e))?,
            )),
            None => None,
        };
        // Some APIs (Anthropic's) give a structured answer through a tool, whose input must be
        // an object.
        let via_tool = provider::wire(api).structured_via_tool() && schema.is_some();
        let wrapped = via_tool
            && schema
                .as_ref()
                .is_some_and(|s| s.get("type").and_then(Value::as_str) != Some("object"));
        let mut tools = tools::builtin();
        let mut system = invocation.system_prompt.clone();
        if let Some(s) = schema.as_ref().filter(|_| via_tool) {
            let input = if wrapped {
                json!({"type": "object", "properties": {"value": s}, "required": ["value"], "additionalProperties": false})
            } else {
                s.clone()
            };
            tools.push(tools::final_output(input));
            if !system.is_empty() {
                system.push_str("\n\n");
            }
            system.push_str(
                "When you have the final answer, give it by calling the final_output tool.",
            );
        }
        Ok(Plan {
            model,
            schema,
            via_tool,
            wrapped,
            tools,
            system,
        })
    }

    /// The agent loop: model turns, their tool calls run in the sandbox, until the model
    /// answers (or the turn limit).
    async fn converse(
        &self,
        plan: &Plan,
        prompt: String,
        ctx: &HandlerContext,
        env: &tools::ToolEnv<'_>,
    ) -> Result<(Answer, Run), AgentError> {
        let mut items = vec![Item::User(prompt)];
        let mut run = Run::default();
        let mut force = false;
        loop {
            if run.turns >= self.options.max_turns {
                return Err(AgentError {
                    message: format!(
                        "the model did not finish within {} turns (max turns)",
                        self.options.max_turns
                    ),
                    metadata: json!({
                        "error_name": "MaxTurnsExceeded",
                        "turns": run.turns,
                        "tool_calls": run.tool_calls,
                    }),
                });
            }
            run.turns += 1;
            let request = TurnRequest {
                model: &plan.model,
                system: &plan.system,
                items: &items,
                tools: &plan.tools,
                schema: plan.schema.as_ref().filter(|_| !plan.via_tool),
                force_tool: force.then_some(tools::FINAL_OUTPUT),
                web_search: self.options.web_search,
                max_tokens: self.options.max_tokens,
            };
            let parts = self.turn(&request, ctx, &mut run.usage).await?;
            let calls: Vec<ToolCall> = parts
                .iter()
                .filter_map(|p| match p {
                    Part::Call(c) => Some(c.clone()),
                    _ => None,
                })
                .collect();
            if let Some(c) = calls
                .iter()
                .find(|c| plan.via_tool && c.name == tools::FINAL_OUTPUT)
            {
                return Ok((Answer::Json(c.arguments.clone()), run));
            }
            if calls.is_empty() {
                if plan.via_tool && !force {
                    // Answered in text: one more turn, with the answer tool forced.
                    force = true;
                    items.push(Item::Assistant(parts));
                    items.push(Item::User(
                        "Now give that answer by calling the final_output tool.".to_owned(),
                    ));
                    continue;
                }
                return Ok((plan.text_answer(&parts), run));
            }
            items.push(Item::Assistant(parts));
            let mut results = Vec::with_capacity(calls.len());
            for c in &calls {
                run.tool_calls += 1;
                ctx.metrics.tool_call(self.provider.api.provider());
                tracing::debug!(tool = %c.name, "tool call");
                results.push((c.id.clone(), tools::call(c, env).await));
            }
            items.push(Item::Results(results));
        }
    }

    /// One model turn: its parts, each text streamed to the client as it arrives.
    async fn turn(
        &self,
        request: &TurnRequest<'_>,
        ctx: &HandlerContext,
        usage: &mut Usage,
    ) -> Result<Vec<Part>, AgentError> {
        let metrics = &ctx.metrics;
        let mut stream =
            provider::start(&self.http, &self.provider, &self.options, request, metrics)
                .await
                .map_err(|e| self.fail(&e))?;
        let mut parts = Vec::new();
        while let Some(part) = stream.next().await.map_err(|e| self.fail(&e))? {
            if let Part::Text(t) = &part {
                ctx.send_assistant(vec![t.clone()]).await;
            }
            parts.push(part);
        }
        let turn = stream.usage();
        usage.input += turn.input;
        usage.output += turn.output;
        let provider = self.provider.api.provider();
        metrics.turn(provider, request.model, turn.input, turn.output);
        Ok(parts)
    }
}

/// What a query needs before its first turn ([`ModelAgent::plan`]).
struct Plan {
    model: String,
    /// The answer's JSON schema (strict), for structured output.
    schema: Option<Value>,
    /// The answer comes through the `final_output` tool (Anthropic).
    via_tool: bool,
    /// The tool's input wraps an answer that is not an object in `{"value": …}`.
    wrapped: bool,
    tools: Vec<ToolSpec>,
    system: String,
}

impl Plan {
    /// The answer of a turn that called no tool: its text.
    fn text_answer(&self, parts: &[Part]) -> Answer {
        let text: String = parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n");
        if self.schema.is_some() {
            Answer::Json(text)
        } else {
            Answer::Text(text)
        }
    }

    /// The result's data: the text, or the structured answer parsed and checked.
    fn result_data(&self, answer: Answer) -> Result<ResultData, AgentError> {
        let (t, s) = match (answer, &self.schema) {
            (Answer::Text(t), _) | (Answer::Json(t), None) => return Ok(ResultData::Text(t)),
            (Answer::Json(t), Some(s)) => (t, s),
        };
        let mut value: Value = serde_json::from_str(t.trim()).map_err(|e| AgentError {
            message: format!("the model's answer is not valid JSON: {e}"),
            metadata: json!({ "error_name": "StructuredOutputError" }),
        })?;
        if self.wrapped {
            value = value.get_mut("value").map(Value::take).unwrap_or_default();
        }
        schema::check(&value, s).map_err(|e| AgentError {
            message: format!("the model's answer does not follow the schema: {e}"),
            metadata: json!({ "error_name": "StructuredOutputError" }),
        })?;
        Ok(ResultData::StructuredOutput(value))
    }
}

/// What a conversation counted.
#[derive(Default)]
struct Run {
    turns: u32,
    tool_calls: u64,
    usage: Usage,
}

/// The model's final answer before it becomes a result.
enum Answer {
    Text(String),
    /// JSON text to parse (structured output).
    Json(String),
}

handler_by_answer!(ModelAgent);
