//! The command line of the client commands (`query`, `exec`, `session`): their arguments,
//! and the client and request options made from them.

use std::time::Duration;

use clap::Args;
use runtimeuse_proto::Downloadable;
use runtimeuse_tokio::{AsyncCallbacks, CallOptions, Client, Wire};

use super::Failure;
use crate::exit;

/// How to reach the runtime, and the request's limits (`query` and `exec`).
#[derive(Debug, Args)]
pub(crate) struct ClientArgs {
    /// The runtime's URL (`ws://` or `wss://`).
    #[arg(
        long,
        env = "RUNTIMEUSE_URL",
        hide_env_values = true,
        default_value = "ws://127.0.0.1:8080"
    )]
    pub(super) url: String,
    /// Token for a runtime started with one (sent as `Authorization: Bearer <T>`) [default:
    /// none].
    #[arg(
        long,
        value_name = "TOKEN",
        env = "RUNTIMEUSE_TOKEN",
        hide_env_values = true
    )]
    pub(super) token: Option<String>,
    /// An extra header of the WebSocket handshake (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE|'NAME: VALUE'", value_parser = header)]
    pub(super) headers: Vec<(String, String)>,
    /// Fail if the request (connecting included) has not finished after this many seconds
    /// (0: no limit).
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub(super) timeout: f64,
    /// Fail if nothing arrives for this many seconds (heartbeats count; 0: no limit).
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub(super) idle_timeout: f64,
    /// How long connecting may take, in seconds (0: no limit).
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub(super) connect_timeout: f64,
    /// A string the runtime replaces with `[REDACTED]` in everything it sends (repeatable; also
    /// RUNTIMEUSE_SECRETS, comma-separated).
    #[arg(long = "secret", value_name = "TEXT")]
    pub(super) secrets: Vec<String>,
    /// A file for the runtime to download first, as URL=DIR (repeatable; a .zip is extracted).
    #[arg(long = "download", value_name = "URL=DIR", value_parser = url_dir)]
    pub(super) downloads: Vec<(String, String)>,
    /// Print one JSON object per event per line on stdout (the types are listed below).
    #[arg(long)]
    pub(super) json: bool,
    /// Do not ask the runtime for a resumable session. By default a lost connection is
    /// resumed within the runtime's grace period (60 s for `serve`) and the request goes on;
    /// with this flag it ends the request at once.
    #[arg(long)]
    pub(super) no_resume: bool,
}

/// The model and system prompt of queries (`query` and `session`).
#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    /// The model the runtime's agent should use [default: none named, so the runtime's own
    /// applies, `serve --model`].
    #[arg(
        long,
        short,
        value_name = "MODEL",
        default_value = "",
        hide_default_value = true
    )]
    pub(super) model: String,
    /// The system prompt (also `@FILE`) [default: none].
    #[arg(
        long,
        short,
        value_name = "TEXT",
        default_value = "",
        hide_default_value = true
    )]
    pub(super) system_prompt: String,
}

/// `query`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct QueryArgs {
    /// The prompt: text, `@FILE` for a file's content, or `-` for standard input.
    pub(super) prompt: String,
    #[command(flatten)]
    pub(super) agent: AgentArgs,
    /// Ask for structured output following this JSON Schema (inline JSON or `@FILE`)
    /// [default: none, a text answer].
    #[arg(long, value_name = "SCHEMA")]
    pub(super) output_schema: Option<String>,
    /// An environment variable for the agent, NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = key_value)]
    pub(super) env: Vec<(String, String)>,
    /// A command the runtime runs before the agent (repeatable).
    #[arg(long = "pre", value_name = "COMMAND")]
    pub(super) pre: Vec<String>,
    /// A command the runtime runs after the agent (repeatable).
    #[arg(long = "post", value_name = "COMMAND")]
    pub(super) post: Vec<String>,
    #[command(flatten)]
    pub(super) client: ClientArgs,
}

/// `exec`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    /// The commands, run in order through `sh -c`; the first that fails ends the batch.
    #[arg(required = true, value_name = "COMMAND")]
    pub(super) commands: Vec<String>,
    /// The working directory of the commands (created when missing) [default: the
    /// runtime's].
    #[arg(long, value_name = "DIR")]
    pub(super) cwd: Option<String>,
    /// An environment variable of the commands, NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = key_value)]
    pub(super) env: Vec<(String, String)>,
    #[command(flatten)]
    pub(super) client: ClientArgs,
}

/// A header as `NAME=VALUE` or, as curl takes it, `NAME: VALUE`.
fn header(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((name, value)) if !name.is_empty() && !name.contains('=') => {
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        }
        _ => key_value(s).map_err(|_| format!("expected NAME=VALUE or 'NAME: VALUE', got {s:?}")),
    }
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

fn url_dir(s: &str) -> Result<(String, String), String> {
    match s.rsplit_once('=') {
        Some((u, d)) if !u.is_empty() && !d.is_empty() => Ok((u.to_owned(), d.to_owned())),
        _ => Err(format!("expected URL=DIR, got {s:?}")),
    }
}

/// `session`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct SessionArgs {
    #[command(flatten)]
    pub(super) agent: AgentArgs,
    #[command(flatten)]
    pub(super) client: ClientArgs,
}

/// Reads `@FILE` and `-` (stdin) arguments; a file's or stdin's final line break is not
/// part of the text.
pub(super) fn text_arg(arg: &str) -> Result<String, Failure> {
    if arg == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| Failure::usage(format!("reading standard input: {e}")))?;
        return Ok(without_final_break(s));
    }
    match arg.strip_prefix('@') {
        Some(path) => {
            file_text(path.as_ref()).map_err(|e| Failure::usage(format!("reading {path}: {e}")))
        }
        None => Ok(arg.to_owned()),
    }
}

/// The text of the file at `path`, without its final line break.
pub(crate) fn file_text(path: &std::path::Path) -> std::io::Result<String> {
    std::fs::read_to_string(path).map(without_final_break)
}

fn without_final_break(mut text: String) -> String {
    let kept = text.trim_end_matches(['\n', '\r']).len();
    text.truncate(kept);
    text
}

pub(super) fn client(args: &ClientArgs) -> Result<Client, Failure> {
    let url = &args.url;
    if let Some(rest) = url
        .strip_prefix("http://")
        .map(|r| ("ws://", r))
        .or_else(|| url.strip_prefix("https://").map(|r| ("wss://", r)))
    {
        return Err(Failure {
            code: exit::USAGE,
            message: format!("{url} is an HTTP URL; runtimes speak WebSocket"),
            hint: Some(format!("did you mean {}{}?", rest.0, rest.1)),
            metadata: None,
        });
    }
    if !url.starts_with("ws://") && !url.starts_with("wss://") {
        return Err(Failure {
            code: exit::USAGE,
            message: format!("{url} is not a ws:// or wss:// URL"),
            hint: Some(url_hint(url)),
            metadata: None,
        });
    }
    // Connecting is part of the request: --timeout bounds it too.
    let connect = match (limit(args.connect_timeout)?, limit(args.timeout)?) {
        (Some(c), Some(t)) => Some(c.min(t)),
        (c, t) => c.or(t),
    };
    // No limit: a duration too long to be an instant is none.
    let mut builder = Client::builder(url)
        .connect_timeout(connect.unwrap_or(Duration::MAX))
        .resume(!args.no_resume);
    if let Some(t) = &args.token {
        builder = builder.header("Authorization", format!("Bearer {t}"));
    }
    for (k, v) in &args.headers {
        builder = builder.header(k.clone(), v.clone());
    }
    Ok(builder.build())
}

/// A time limit in seconds: `None` for 0 or infinity (no limit), the one rule of every
/// `--*-timeout`.
fn limit(s: f64) -> Result<Option<Duration>, Failure> {
    if s == 0.0 || s == f64::INFINITY {
        return Ok(None);
    }
    seconds(s).map(Some)
}

/// What to suggest for a URL that is not `ws://` or `wss://`.
fn url_hint(url: &str) -> String {
    let fixed = |scheme: &str, rest: &str| {
        format!("did you mean {scheme}://{}?", rest.trim_start_matches('/'))
    };
    for scheme in ["wss", "ws"] {
        if let Some(rest) = url.strip_prefix(scheme).and_then(|r| r.strip_prefix(':')) {
            // `ws:/host`, `ws:host`: a slash short.
            return fixed(scheme, rest);
        }
    }
    match url.split_once("://") {
        Some((scheme, rest)) => {
            format!("runtimes speak ws:// or wss://, not {scheme}://; did you mean ws://{rest}?")
        }
        None => format!("did you mean ws://{url}?"),
    }
}

pub(super) fn seconds(s: f64) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| Failure::usage(format!("{s} is not a number of seconds")))
}

fn secrets(args: &ClientArgs) -> Vec<String> {
    let mut all = args.secrets.clone();
    if let Ok(list) = std::env::var("RUNTIMEUSE_SECRETS") {
        all.extend(list.split(',').filter(|s| !s.is_empty()).map(str::to_owned));
    }
    all
}

/// Applies the client arguments both kinds of request share: secrets, downloads, limits.
pub(super) fn with_client_args<W: Wire>(
    mut options: CallOptions<W, AsyncCallbacks>,
    client: &ClientArgs,
) -> Result<CallOptions<W, AsyncCallbacks>, Failure> {
    for s in secrets(client) {
        options = options.secret(s);
    }
    for (u, d) in &client.downloads {
        options = options.download(Downloadable::new(u.clone(), d.clone()));
    }
    if let Some(t) = limit(client.timeout)? {
        options = options.timeout(t);
    }
    // 0 (or inf) turns the idle limit off.
    Ok(options.idle_timeout(limit(client.idle_timeout)?.unwrap_or(Duration::MAX)))
}
