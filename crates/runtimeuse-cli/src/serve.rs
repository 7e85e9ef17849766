//! `runtimeuse serve`: the runtime and the agent it runs.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::client::Failure;
use runtimeuse_runtime::{
    AcpAgent, AgentHandler, AgentOptions, ClaudeAgent, CommandAgent, ModelAgent, ModelApi,
    Permissions, PromptInput, ProviderConfig, Runtime, RuntimeOptions, ScriptedHandler,
};

/// Which agent answers queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum AgentKind {
    /// A model with shell and file tools over the OpenAI Responses API (or Chat Completions
    /// with `--openai-api chat`, for any OpenAI-compatible server).
    Openai,
    /// The same over the Anthropic Messages API.
    Anthropic,
    /// Claude Code's CLI (`claude`, installed with `npm install -g @anthropic-ai/claude-code`)
    /// per query, as the upstream runtime's `claude` agent: its full tool preset, permissions
    /// bypassed inside the sandbox. `--agent-command PATH` names the CLI when it is not
    /// `claude` in PATH.
    Claude,
    /// An agent that speaks the Agent Client Protocol over its stdio, started per query with
    /// `--agent-command CMD` (sh -c): `gemini --experimental-acp`, `claude-code-acp`,
    /// `codex-acp`, … Its permission requests are allowed (`--deny-permissions` rejects them).
    Acp,
    /// Runs `--agent-command CMD` (sh -c) per query.
    Command,
    /// Deterministic, for tests and demos, driven by the prompt: `ECHO:text` (answers the
    /// text), `STRUCTURED:json` (a structured answer), `ECHO_FORMAT:` (the output schema it
    /// got), `SLOW:ms` (waits, then `done`), `STREAM:n` (n assistant messages), `STREAM_TEXT:text`
    /// (one assistant message), `ERROR:msg` (fails with msg), `WRITE_FILE:path content` (writes
    /// a file, for artifacts), `READ_FILE:path` (answers its content); anything else is
    /// answered as it is.
    Scripted,
}

/// The OpenAI API spoken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum OpenAiApi {
    /// `POST {base}/responses`.
    Responses,
    /// `POST {base}/chat/completions`.
    Chat,
}

/// `serve`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0")]
    host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Interval of heartbeats while a request runs, in milliseconds (0 turns them off).
    #[arg(long, value_name = "MS", default_value_t = 15_000)]
    heartbeat_interval_ms: u64,
    /// Clients must present this token (`Authorization: Bearer <T>` or `?token=<T>`)
    /// [default: none, no authentication]. Any process of the machine can read a command
    /// line (`ps`): prefer `--token-file` or the variable. Commands and agents do not get it.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "RUNTIMEUSE_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Read the token from this file (its final line break is not part of it), instead of
    /// `--token` [default: none].
    #[arg(long, value_name = "PATH", conflicts_with = "token")]
    token_file: Option<std::path::PathBuf>,
    /// Most sessions served at once; beyond it a new session is refused with 503. The file
    /// descriptor limit is raised to its hard limit at start, and 1024 descriptors (or half the
    /// limit) stay free for commands.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_connections: usize,
    /// Most connections whose handshake is in progress (not yet past the token check), apart
    /// from the sessions; when full, the oldest is dropped for the new one.
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_handshakes: usize,
    /// Bytes of output one connection may hold for a client that reads slowly; beyond it the
    /// request's commands and agent wait (nothing is dropped).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    max_buffered: usize,
    /// Bytes of output all connections together may hold; beyond it the connections holding
    /// the most wait first.
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20)]
    max_buffered_total: usize,
    /// Bytes of unfinished frames all clients together may have sent; beyond it the clients
    /// sending large frames are read one at a time.
    #[arg(long, value_name = "BYTES", default_value_t = 128 << 20)]
    max_inbound_total: usize,
    /// A client that takes no bytes for this long (in milliseconds) while output waits for it
    /// is dropped and its request cancelled (0: never).
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    write_stall_timeout_ms: u64,
    /// How long (in seconds) a session outlives a lost connection for a client that asked to
    /// resume it; its request goes on meanwhile (0: resumption off). See docs/resume.md.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    resume_grace: u64,
    /// How long (in seconds) requests in flight may finish after SIGTERM or SIGINT before
    /// they are cancelled; meanwhile `/readyz` answers 503 and nothing new is accepted. A
    /// second signal exits at once.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    shutdown_grace: u64,
    /// With `--agent acp`: reject the agent's permission requests instead of allowing them.
    #[arg(long)]
    deny_permissions: bool,
    /// The log is JSON (set from the global `--log-format`).
    #[arg(skip)]
    pub(crate) json_log: bool,
    /// Only errors on stderr (set from the global `--quiet`): no notes.
    #[arg(skip)]
    pub(crate) quiet: bool,
    /// The agent that answers queries.
    #[arg(
        long,
        alias = "handler",
        env = "RUNTIMEUSE_AGENT",
        hide_env_values = true,
        value_enum,
        default_value = "openai"
    )]
    agent: AgentKind,
    /// The OpenAI API to speak.
    #[arg(
        long,
        env = "RUNTIMEUSE_OPENAI_API",
        hide_env_values = true,
        value_enum,
        default_value = "responses"
    )]
    openai_api: OpenAiApi,
    /// The model used when a query names none [default: none, so a query must name one].
    #[arg(long, value_name = "MODEL")]
    model: Option<String>,
    /// The provider's API key [default: $OPENAI_API_KEY or $ANTHROPIC_API_KEY]. Shown to
    /// every process by `ps`: prefer `--api-key-file` or the variable. With `openai` and
    /// `anthropic`, commands and the model's shell do not get the variable, and the key is
    /// redacted from everything sent to clients.
    #[arg(long, value_name = "KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Read the provider's API key from this file (its final line break is not part of it),
    /// instead of `--api-key` [default: none].
    #[arg(long, value_name = "PATH", conflicts_with = "api_key")]
    api_key_file: Option<std::path::PathBuf>,
    /// The provider's base URL [default: $OPENAI_BASE_URL or $ANTHROPIC_BASE_URL, else the
    /// provider's public API].
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// Most model turns per query.
    #[arg(long, value_name = "N", default_value_t = 30)]
    max_turns: u32,
    /// Time limit of one tool call, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 300_000)]
    tool_timeout_ms: u64,
    /// Offer the provider's hosted web search.
    #[arg(long)]
    web_search: bool,
    /// The agent CLI `--agent command`, `acp` or `claude` runs (through `sh -c`; required by
    /// `command` and `acp`) [default for `claude`: `claude` in PATH].
    #[arg(
        long,
        value_name = "CMD",
        required_if_eq_any([("agent", "command"), ("agent", "acp")])
    )]
    agent_command: Option<String>,
    /// Pass the prompt to the agent command as its last argument instead of on stdin.
    #[arg(long)]
    prompt_arg: bool,
}

/// Serves until Ctrl-C or SIGTERM.
pub(crate) async fn serve(mut args: ServeArgs) -> Result<(), Failure> {
    if let Some(path) = &args.token_file {
        args.token = Some(secret_file(path, "--token-file")?);
    }
    if let Some(path) = &args.api_key_file {
        args.api_key = Some(secret_file(path, "--api-key-file")?);
    }
    if args.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        return Err(Failure::usage(
            "the token is empty (--token or RUNTIMEUSE_TOKEN): no client could present \
             it; give a token, or none for no authentication",
        ));
    }
    let mut options = RuntimeOptions::default();
    options.heartbeat_interval =
        (args.heartbeat_interval_ms > 0).then(|| Duration::from_millis(args.heartbeat_interval_ms));
    options.token = args.token.clone();
    options.max_connections = args.max_connections;
    options.max_handshakes = args.max_handshakes;
    options.max_buffered = args.max_buffered;
    options.max_buffered_total = args.max_buffered_total;
    options.max_inbound_total = args.max_inbound_total;
    options.write_stall_timeout = (args.write_stall_timeout_ms > 0)
        .then(|| Duration::from_millis(args.write_stall_timeout_ms));
    options.resume_grace = Duration::from_secs(args.resume_grace);
    options.shutdown_grace = Duration::from_secs(args.shutdown_grace);
    raise_file_limit();
    crate::trim::start();
    let handler =
        agent_handler(&args, &mut options).map_err(|e| Failure::usage(crate::chain(&*e)))?;
    let runtime = Runtime::from_arc(handler)
        .options(options)
        .bind((args.host.as_str(), args.port))
        .await
        .map_err(|e| Failure::cannot_listen(&format!("{}:{}", args.host, args.port), &e))?;
    let port = runtime
        .local_addr()
        .map_err(|e| Failure::system(format!("cannot read the listening address: {e}")))?
        .port();
    let shutdown = shutdown_signal();
    // Scripts read this line for the port: its form is stable (stdout; everything else goes to
    // stderr).
    #[allow(clippy::print_stdout)]
    {
        println!(
            "runtimeuse {} listening on port {port}",
            env!("CARGO_PKG_VERSION")
        );
    }
    note(
        &args,
        &format!(
            "clients connect to {} (runtimeuse query --url {0} ...)",
            runtime.url()
        ),
    );
    runtime
        .serve(shutdown)
        .await
        .map_err(|e| Failure::system(crate::chain(&e)))
}

/// The secret in the file at `path` (`flag` names where it was given), without its final
/// line break; an empty one is refused.
fn secret_file(path: &std::path::Path, flag: &str) -> Result<String, Failure> {
    let secret = crate::client::file_text(path)
        .map_err(|e| Failure::usage(format!("{flag}: cannot read {}: {e}", path.display())))?;
    if secret.trim().is_empty() {
        return Err(Failure::usage(format!(
            "{flag}: {} is empty",
            path.display()
        )));
    }
    Ok(secret)
}

/// Raises the soft limit of open files to the hard one, as servers of many connections do
/// (the soft limit is often 1024 while the hard one is far higher).
fn raise_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "file descriptor limit raised"),
            Err(e) => tracing::debug!(error = %e, "file descriptor limit not raised"),
        }
    }
}

/// A note for the person who started the runtime, on stderr: a line of its own in the text
/// log, a log record in the JSON one (where every line must be JSON).
fn note(args: &ServeArgs, text: &str) {
    if args.quiet {
        return;
    }
    if args.json_log {
        tracing::info!(target: "runtimeuse", "{text}");
    } else {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("runtimeuse: {text}");
        }
    }
}

/// Builds the agent; says which on stderr. A model agent's key is withheld from children
/// and redacted (in `options`).
fn agent_handler(
    args: &ServeArgs,
    runtime: &mut RuntimeOptions,
) -> Result<Arc<dyn AgentHandler>, Box<dyn std::error::Error>> {
    let mut provider = match args.agent {
        AgentKind::Scripted => {
            note(args, "agent: scripted (deterministic directives)");
            return Ok(Arc::new(ScriptedHandler));
        }
        AgentKind::Command => {
            let command = args
                .agent_command
                .clone()
                .ok_or("--agent command needs --agent-command CMD (the agent CLI to run)")?;
            let how = if args.prompt_arg {
                PromptInput::Argument
            } else {
                PromptInput::Stdin
            };
            note(args, &format!("agent: command `{command}`"));
            let mut agent = CommandAgent::new(command).prompt_input(how);
            if let Some(m) = &args.model {
                agent = agent.default_model(m.clone());
            }
            return Ok(Arc::new(agent));
        }
        AgentKind::Claude => {
            let mut agent = ClaudeAgent::new();
            if let Some(program) = &args.agent_command {
                agent = agent.program(program);
            }
            let found = agent.check()?;
            note(args, &format!("agent: Claude Code ({})", found.display()));
            return Ok(Arc::new(agent));
        }
        AgentKind::Acp => {
            let command = args
                .agent_command
                .clone()
                .ok_or("--agent acp needs --agent-command CMD (the ACP agent to start)")?;
            let policy = if args.deny_permissions {
                Permissions::Deny
            } else {
                Permissions::Allow
            };
            note(
                args,
                &format!("agent: ACP `{command}` (permissions: {policy:?})"),
            );
            return Ok(Arc::new(AcpAgent::new(command).permissions(policy)));
        }
        AgentKind::Openai => ProviderConfig::openai_from_env(match args.openai_api {
            OpenAiApi::Responses => ModelApi::OpenAiResponses,
            OpenAiApi::Chat => ModelApi::OpenAiChat,
        }),
        AgentKind::Anthropic => ProviderConfig::anthropic_from_env(),
    };
    if let Some(k) = &args.api_key {
        provider = provider.api_key(k.clone());
    }
    if let Some(m) = &args.model {
        provider = provider.default_model(m.clone());
    }
    if let Some(u) = &args.base_url {
        provider.base_url = u.clone();
    }
    let mut options = AgentOptions::default();
    options.max_turns = args.max_turns;
    options.tool_timeout = Duration::from_millis(args.tool_timeout_ms);
    options.web_search = args.web_search;
    let api = provider.api;
    note(
        args,
        &format!(
            "agent: {} ({} API at {})",
            api.provider(),
            api.name(),
            provider.base_url
        ),
    );
    // The key is the runtime's, not the sandbox's: the model's shell and the commands do
    // not see the variable, and the key never reaches a client.
    runtime.withheld_env.push(api.key_variable().to_owned());
    runtime.secrets.extend(provider.api_key.clone());
    if provider.api_key.is_none() {
        note(
            args,
            &format!(
                "warning: {} is not set; queries will fail until it is (or pass --api-key)",
                api.key_variable()
            ),
        );
    }
    Ok(Arc::new(ModelAgent::new(provider, options)?))
}

/// Resolves at the first SIGTERM or SIGINT; a second one exits at once (the graceful
/// shutdown the first began is cut short), with 128 + the signal's number. The signals are
/// watched from this call on (before the runtime says it listens: a SIGTERM right after that
/// line is a graceful stop, not the default action's death).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = signals else {
            tracing::warn!("cannot watch for signals; stop the runtime with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down gracefully (again: at once)"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down gracefully (again: at once)"),
        }
        tokio::spawn(async move {
            let code = tokio::select! {
                _ = term.recv() => 128 + 15,
                _ = int.recv() => 128 + 2,
            };
            tracing::warn!("a second signal: exiting at once, killing what still runs");
            runtimeuse_runtime::kill_process_groups();
            std::process::exit(code);
        });
    }
}
