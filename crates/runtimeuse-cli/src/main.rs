//! `runtimeuse`: serve an agent runtime, or talk to one.
//!
//! ```text
//! runtimeuse serve [--host H] [--port P] [--agent openai|anthropic|command|scripted] [agent options]
//!                  [--heartbeat-interval-ms N] [--token T]
//! runtimeuse query [--url URL] [--model M] [--system-prompt S] [--token T] PROMPT
//! runtimeuse exec  [--url URL] [--token T] COMMAND...
//! ```

// A command-line tool prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::time::Duration;

use lexopt::prelude::*;
use std::sync::Arc;

use runtimeuse_runtime::{
    AgentHandler, AgentOptions, CommandAgent, ModelAgent, ModelApi, PromptInput, ProviderConfig,
    Runtime, RuntimeOptions, ScriptedHandler,
};
use runtimeuse_tokio::{Client, ExecuteCommandsOptions, QueryOptions};

const USAGE: &str = "\
usage:
  runtimeuse serve [--host H] [--port P] [--agent A] [agent options] [--heartbeat-interval-ms N] [--token T]
      Serve an agent runtime. Defaults: host 0.0.0.0, port 8080, heartbeat 15000 ms.
      The token may also come from RUNTIMEUSE_TOKEN; clients then present it as
      'Authorization: Bearer <T>' or a 'token' query parameter.
      Agents (--agent, or RUNTIMEUSE_AGENT; --handler is the same flag):
        openai     (default) a model with shell and file tools over the OpenAI Responses API,
                   or Chat Completions with --openai-api chat (any OpenAI-compatible server);
                   OPENAI_API_KEY, OPENAI_BASE_URL (default https://api.openai.com/v1)
        anthropic  the same over the Anthropic Messages API;
                   ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL (default https://api.anthropic.com)
        command    runs --agent-command CMD (sh -c) per query: the prompt on stdin (or as the
                   last argument with --prompt-arg), stdout lines streamed, stdout the result
        scripted   deterministic directives (ECHO:, STREAM:, SLOW:, ...) for tests and demos
      Agent options: --model M (used when a query names none), --api-key K, --base-url URL,
        --openai-api responses|chat (or RUNTIMEUSE_OPENAI_API), --max-turns N (30),
        --tool-timeout-ms N (300000), --web-search (the provider's hosted web search).
  runtimeuse query [--url URL] [--model M] [--system-prompt S] [--token T] PROMPT
      Send one query and print the result (assistant messages go to stderr).
  runtimeuse exec [--url URL] [--token T] COMMAND...
      Run commands and print their output; exits with the first failing exit code.
      URL defaults to RUNTIMEUSE_URL, then ws://127.0.0.1:8080.
";

/// The agent `serve` runs, and its settings.
#[derive(Debug, Default)]
struct AgentArgs {
    agent: Option<String>,
    openai_api: Option<String>,
    model: Option<String>,
    api_key: Option<String>,
    base_url: Option<String>,
    max_turns: Option<u32>,
    tool_timeout_ms: Option<u64>,
    web_search: bool,
    command: Option<String>,
    prompt_arg: bool,
}

#[derive(Debug)]
enum Cmd {
    Serve {
        host: String,
        port: u16,
        heartbeat_ms: u64,
        token: Option<String>,
        agent: AgentArgs,
    },
    Query {
        url: String,
        token: Option<String>,
        model: String,
        system_prompt: String,
        prompt: String,
    },
    Exec {
        url: String,
        token: Option<String>,
        commands: Vec<String>,
    },
    Help,
}

fn parse() -> Result<Cmd, lexopt::Error> {
    let mut parser = lexopt::Parser::from_env();
    let sub = match parser.next()? {
        Some(Value(v)) => v.string()?,
        Some(Long("help") | Short('h')) | None => return Ok(Cmd::Help),
        Some(other) => return Err(other.unexpected()),
    };
    let mut host = "0.0.0.0".to_owned();
    let mut port = 8080;
    let mut heartbeat_ms = 15_000;
    let mut token = std::env::var("RUNTIMEUSE_TOKEN").ok();
    let mut url =
        std::env::var("RUNTIMEUSE_URL").unwrap_or_else(|_| "ws://127.0.0.1:8080".to_owned());
    let mut model = "default".to_owned();
    let mut system_prompt = String::new();
    let mut free = Vec::new();
    let mut agent = AgentArgs::default();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("help") | Short('h') => return Ok(Cmd::Help),
            Long("host") if sub == "serve" => host = parser.value()?.string()?,
            Long("port") if sub == "serve" => port = parser.value()?.parse()?,
            Long("heartbeat-interval-ms") if sub == "serve" => {
                heartbeat_ms = parser.value()?.parse()?
            }
            Long("handler" | "agent") if sub == "serve" => {
                agent.agent = Some(parser.value()?.string()?);
            }
            Long("openai-api") if sub == "serve" => {
                agent.openai_api = Some(parser.value()?.string()?);
            }
            Long("model") if sub == "serve" => agent.model = Some(parser.value()?.string()?),
            Long("api-key") if sub == "serve" => agent.api_key = Some(parser.value()?.string()?),
            Long("base-url") if sub == "serve" => {
                agent.base_url = Some(parser.value()?.string()?);
            }
            Long("max-turns") if sub == "serve" => agent.max_turns = Some(parser.value()?.parse()?),
            Long("tool-timeout-ms") if sub == "serve" => {
                agent.tool_timeout_ms = Some(parser.value()?.parse()?);
            }
            Long("web-search") if sub == "serve" => agent.web_search = true,
            Long("agent-command") if sub == "serve" => {
                agent.command = Some(parser.value()?.string()?);
            }
            Long("prompt-arg") if sub == "serve" => agent.prompt_arg = true,
            Long("token") => token = Some(parser.value()?.string()?),
            Long("url") if sub != "serve" => url = parser.value()?.string()?,
            Long("model") if sub == "query" => model = parser.value()?.string()?,
            Long("system-prompt") if sub == "query" => system_prompt = parser.value()?.string()?,
            Value(v) if sub != "serve" => free.push(v.string()?),
            other => return Err(other.unexpected()),
        }
    }
    Ok(match sub.as_str() {
        "serve" => Cmd::Serve {
            host,
            port,
            heartbeat_ms,
            token,
            agent,
        },
        "query" if !free.is_empty() => Cmd::Query {
            url,
            token,
            model,
            system_prompt,
            prompt: free.join(" "),
        },
        "exec" if !free.is_empty() => Cmd::Exec {
            url,
            token,
            commands: free,
        },
        "query" | "exec" => return Err(format!("{sub}: nothing to send").into()),
        other => return Err(format!("unknown command {other}").into()),
    })
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runtimeuse: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async_main());
    // Uploads still running get a moment to finish, not forever: a stalled PUT must not keep
    // a stopped runtime alive.
    runtime.shutdown_timeout(Duration::from_secs(5));
    code
}

async fn async_main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cmd = match parse() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("runtimeuse: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(cmd).await {
        Ok(code) => code,
        Err(e) => {
            // The error and each of its causes, once.
            let mut text = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            eprintln!("runtimeuse: {text}");
            ExitCode::FAILURE
        }
    }
}

fn client(url: &str, token: Option<String>) -> Client {
    let builder = Client::builder(url);
    match token {
        Some(t) => builder
            .header("Authorization", format!("Bearer {t}"))
            .build(),
        None => builder.build(),
    }
}

async fn run(cmd: Cmd) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match cmd {
        Cmd::Help => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Serve {
            host,
            port,
            heartbeat_ms,
            token,
            agent,
        } => {
            let mut options = RuntimeOptions::default();
            options.heartbeat_interval =
                (heartbeat_ms > 0).then(|| Duration::from_millis(heartbeat_ms));
            options.token = token;
            let runtime = Runtime::from_arc(agent_handler(agent)?)
                .options(options)
                .bind((host.as_str(), port))
                .await?;
            let port = runtime.local_addr()?.port();
            println!(
                "runtimeuse {} listening on port {port}",
                env!("CARGO_PKG_VERSION")
            );
            runtime.serve(shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Query {
            url,
            token,
            model,
            system_prompt,
            prompt,
        } => {
            let options = QueryOptions::new(system_prompt, model)
                .on_assistant_message(|blocks| async move { eprintln!("{}", blocks.join("")) });
            let result = client(&url, token).query(prompt, options).await?;
            match result.text() {
                Some(t) => println!("{t}"),
                None => println!(
                    "{}",
                    serde_json::to_string_pretty(&result.structured_output())?
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Exec {
            url,
            token,
            commands,
        } => {
            let options = ExecuteCommandsOptions::new().on_command_output(|o| async move {
                match o.stream {
                    runtimeuse_tokio::OutputStream::Stderr => eprint!("{}", o.text),
                    _ => print!("{}", o.text),
                }
            });
            let result = client(&url, token)
                .execute_commands(commands, options)
                .await?;
            let failed = result.results.iter().find(|r| r.exit_code != 0);
            Ok(match failed {
                Some(r) => ExitCode::from(u8::try_from(r.exit_code).unwrap_or(1)),
                None => ExitCode::SUCCESS,
            })
        }
    }
}

/// Builds the agent `serve` runs; says which on stderr.
fn agent_handler(args: AgentArgs) -> Result<Arc<dyn AgentHandler>, Box<dyn std::error::Error>> {
    let name = args
        .agent
        .or_else(|| {
            std::env::var("RUNTIMEUSE_AGENT")
                .ok()
                .filter(|a| !a.is_empty())
        })
        .unwrap_or_else(|| "openai".to_owned());
    let provider = match name.as_str() {
        "scripted" => {
            eprintln!("runtimeuse: agent: scripted (deterministic directives)");
            return Ok(Arc::new(ScriptedHandler));
        }
        "command" => {
            let command = args
                .command
                .ok_or("--agent command needs --agent-command CMD (the agent CLI to run)")?;
            let how = if args.prompt_arg {
                PromptInput::Argument
            } else {
                PromptInput::Stdin
            };
            eprintln!("runtimeuse: agent: command `{command}`");
            return Ok(Arc::new(CommandAgent::new(command).prompt_input(how)));
        }
        "openai" => {
            let api = args
                .openai_api
                .or_else(|| std::env::var("RUNTIMEUSE_OPENAI_API").ok())
                .unwrap_or_else(|| "responses".to_owned());
            let api = match api.as_str() {
                "responses" => ModelApi::OpenAiResponses,
                "chat" => ModelApi::OpenAiChat,
                other => {
                    return Err(format!(
                        "unknown OpenAI API {other:?} (available: responses, chat)"
                    )
                    .into());
                }
            };
            ProviderConfig::openai_from_env(api)
        }
        "anthropic" | "claude" => ProviderConfig::anthropic_from_env(),
        other => {
            return Err(format!(
                "unknown agent {other:?} (available: openai, anthropic, command, scripted)"
            )
            .into());
        }
    };
    let mut provider = provider;
    if let Some(k) = args.api_key {
        provider = provider.api_key(k);
    }
    if let Some(m) = args.model {
        provider = provider.default_model(m);
    }
    if let Some(u) = args.base_url {
        provider.base_url = u;
    }
    let mut options = AgentOptions::default();
    if let Some(n) = args.max_turns {
        options.max_turns = n;
    }
    if let Some(ms) = args.tool_timeout_ms {
        options.tool_timeout = Duration::from_millis(ms);
    }
    options.web_search = args.web_search;
    let api = provider.api;
    eprintln!(
        "runtimeuse: agent: {} ({} API at {})",
        api.provider(),
        api.name(),
        provider.base_url
    );
    if provider.api_key.is_none() {
        eprintln!(
            "runtimeuse: warning: {} is not set; queries will fail until it is (or pass --api-key)",
            api.key_variable()
        );
    }
    Ok(Arc::new(ModelAgent::new(provider, options)?))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
