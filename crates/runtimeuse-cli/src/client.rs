//! `runtimeuse query` and `runtimeuse exec`: one request against a runtime, its events printed
//! for a person or, with `--json`, one JSON object per line for scripts.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use runtimeuse_proto::{
    CommandExecutionResult, Downloadable, OutputStream, QueryResult, RequestEvent, ResultData,
    SessionEnd,
};
use runtimeuse_tokio::{Client, Error, ExecuteCommandsOptions, QueryOptions};
use serde_json::{Value, json};

use crate::exit;

/// How to reach the runtime, and the request's limits (`query` and `exec`).
#[derive(Debug, Args)]
pub(crate) struct ClientArgs {
    /// The runtime's URL (`ws://` or `wss://`).
    #[arg(long, env = "RUNTIMEUSE_URL", default_value = "ws://127.0.0.1:8080")]
    url: String,
    /// Token for a runtime started with one (sent as `Authorization: Bearer <T>`).
    #[arg(long, env = "RUNTIMEUSE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// An extra header of the WebSocket handshake (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = key_value)]
    headers: Vec<(String, String)>,
    /// Fail if the request has not finished after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Fail if nothing arrives for this many seconds (heartbeats count; default 60).
    #[arg(long, value_name = "SECONDS")]
    idle_timeout: Option<f64>,
    /// How long connecting may take, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    connect_timeout: f64,
    /// A string the runtime replaces with `[REDACTED]` in everything it sends (repeatable; also
    /// RUNTIMEUSE_SECRETS, comma-separated).
    #[arg(long = "secret", value_name = "TEXT")]
    secrets: Vec<String>,
    /// A file for the runtime to download first, as URL=DIR (repeatable; a .zip is extracted).
    #[arg(long = "download", value_name = "URL=DIR", value_parser = url_dir)]
    downloads: Vec<(String, String)>,
    /// Print one JSON object per event per line on stdout (see `--help` of the command).
    #[arg(long)]
    json: bool,
}

/// `query`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct QueryArgs {
    /// The prompt: text, `@FILE` for a file's content, or `-` for standard input.
    prompt: String,
    /// The model the runtime's agent should use.
    #[arg(long, short, default_value = "default")]
    model: String,
    /// The system prompt (also `@FILE`).
    #[arg(long, short, default_value = "")]
    system_prompt: String,
    /// Ask for structured output following this JSON Schema (inline JSON or `@FILE`).
    #[arg(long, value_name = "SCHEMA")]
    output_schema: Option<String>,
    /// An environment variable for the agent, NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = key_value)]
    env: Vec<(String, String)>,
    /// A command the runtime runs before the agent (repeatable).
    #[arg(long = "pre", value_name = "COMMAND")]
    pre: Vec<String>,
    /// A command the runtime runs after the agent (repeatable).
    #[arg(long = "post", value_name = "COMMAND")]
    post: Vec<String>,
    #[command(flatten)]
    client: ClientArgs,
}

/// `exec`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    /// The commands, run in order through `sh -c`; the first that fails ends the batch.
    #[arg(required = true, value_name = "COMMAND")]
    commands: Vec<String>,
    /// The working directory of the commands (created when missing).
    #[arg(long)]
    cwd: Option<String>,
    /// An environment variable of the commands, NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = key_value)]
    env: Vec<(String, String)>,
    #[command(flatten)]
    client: ClientArgs,
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

/// A failure of the command, with its exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
    /// The runtime's error metadata, printed after the message.
    pub(crate) metadata: Option<Value>,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            code: exit::USAGE,
            message: message.into(),
            hint: None,
            metadata: None,
        }
    }
}

/// Reads `@FILE` and `-` (stdin) arguments.
fn text_arg(arg: &str) -> Result<String, Failure> {
    if arg == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| Failure::usage(format!("reading standard input: {e}")))?;
        return Ok(s);
    }
    match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Failure::usage(format!("reading {path}: {e}"))),
        None => Ok(arg.to_owned()),
    }
}

/// Writes to stdout or stderr; a closed pipe ends the program quietly (exit 141, as a shell
/// reports SIGPIPE), never a panic.
fn emit(to_stderr: bool, text: &str) {
    let result = if to_stderr {
        std::io::stderr().lock().write_all(text.as_bytes())
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes()).and_then(|()| out.flush())
    };
    if let Err(e) = result
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(i32::from(exit::BROKEN_PIPE));
    }
}

fn json_line(v: &Value) {
    emit(false, &format!("{v}\n"));
}

fn note(text: &str) {
    emit(true, &format!("runtimeuse: {text}\n"));
}

fn client(args: &ClientArgs) -> Result<Client, Failure> {
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
            hint: Some(format!("try ws://{url}")),
            metadata: None,
        });
    }
    let mut builder = Client::builder(url).connect_timeout(seconds(args.connect_timeout)?);
    if let Some(t) = &args.token {
        builder = builder.header("Authorization", format!("Bearer {t}"));
    }
    for (k, v) in &args.headers {
        builder = builder.header(k.clone(), v.clone());
    }
    Ok(builder.build())
}

fn seconds(s: f64) -> Result<Duration, Failure> {
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

/// Applies the client arguments both option types share (they are two types with the same
/// setters).
macro_rules! common_options {
    ($options:expr, $client:expr) => {{
        let mut options = $options;
        let client: &ClientArgs = $client;
        for s in secrets(client) {
            options = options.secret(s);
        }
        for (u, d) in &client.downloads {
            options = options.download(Downloadable::new(u.clone(), d.clone()));
        }
        if let Some(t) = client.timeout {
            options = options.timeout(seconds(t)?);
        }
        if let Some(t) = client.idle_timeout {
            options = options.idle_timeout(seconds(t)?);
        }
        options
    }};
}

/// Runs `query`.
pub(crate) async fn query(args: QueryArgs) -> Result<u8, Failure> {
    let prompt = text_arg(&args.prompt)?;
    if prompt.trim().is_empty() {
        return Err(Failure::usage("the prompt is empty"));
    }
    let mut options = QueryOptions::new(text_arg(&args.system_prompt)?, args.model.clone());
    if let Some(schema) = &args.output_schema {
        let text = text_arg(schema)?;
        let schema: Value = serde_json::from_str(&text)
            .map_err(|e| Failure::usage(format!("--output-schema is not JSON: {e}")))?;
        options = options.output_schema(schema);
    }
    for (k, v) in &args.env {
        options = options.agent_env(k.clone(), v.clone());
    }
    for c in &args.pre {
        options = options.pre_command(c.as_str());
    }
    for c in &args.post {
        options = options.post_command(c.as_str());
    }
    let options = common_options!(options, &args.client);
    run(&args.client, Request::Query(prompt, options)).await
}

/// Runs `exec`.
pub(crate) async fn exec(args: ExecArgs) -> Result<u8, Failure> {
    if args.commands.iter().any(|c| c.trim().is_empty()) {
        return Err(Failure::usage("a command is empty"));
    }
    let options = ExecuteCommandsOptions::new();
    let options = common_options!(options, &args.client);
    let commands = args
        .commands
        .iter()
        .map(|c| {
            let mut command = runtimeuse_proto::Command::new(c.as_str());
            command.cwd = args.cwd.clone();
            for (k, v) in &args.env {
                command = command.env(k.clone(), v.clone());
            }
            command
        })
        .collect();
    run(&args.client, Request::Commands(commands, options)).await
}

enum Request {
    Query(String, QueryOptions),
    Commands(Vec<runtimeuse_proto::Command>, ExecuteCommandsOptions),
}

/// Connects, runs the request with its events printed, ends the session, and returns the exit
/// code. Ctrl-C cancels the request (the runtime confirms, exit 130); a second Ctrl-C exits at
/// once.
async fn run(args: &ClientArgs, request: Request) -> Result<u8, Failure> {
    let (mut session, url) = connect(args).await?;
    let code = request_on(&mut session, &url, args.json, request).await;
    if matches!(code, Ok(exit::OK)) {
        let end = session.close().await;
        if let Ok(end) = end
            && end != SessionEnd::Confirmed
        {
            tracing::debug!(?end, "the session did not end with a confirmation");
        }
    } else {
        // After a failure nothing is owed, and a broken runtime may never confirm an end.
        session.disconnect().await;
    }
    code
}

/// Connects (saying so on a terminal when it takes more than a second); the session and the
/// URL to show.
pub(crate) async fn connect(
    args: &ClientArgs,
) -> Result<(runtimeuse_tokio::Session, String), Failure> {
    let client = client(args)?;
    let url = client.settings().display_url();
    let interactive = std::io::stderr().is_terminal() && !args.json;
    let connecting = client.session();
    tokio::pin!(connecting);
    let connected = tokio::select! {
        s = &mut connecting => s,
        () = tokio::time::sleep(Duration::from_secs(1)) => {
            if interactive {
                note(&format!("connecting to {url}…"));
            }
            connecting.await
        }
    };
    let session = connected.map_err(|e| failure(&e, &url))?;
    Ok((session, url))
}

/// Runs one request on `session` with its events printed; its exit code. Ctrl-C cancels it.
async fn request_on(
    session: &mut runtimeuse_tokio::Session,
    url: &str,
    json: bool,
    request: Request,
) -> Result<u8, Failure> {
    let cancelled = Arc::new(AtomicBool::new(false));
    let abort = session.abort_handle();
    let watcher = {
        let cancelled = Arc::clone(&cancelled);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            cancelled.store(true, Ordering::SeqCst);
            abort.abort();
            note("cancelling (Ctrl-C again to quit at once)");
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(i32::from(exit::CANCELLED));
            }
        })
    };
    let mut printer = Printer::new(json);
    if let Request::Commands(commands, _) = &request {
        printer.total = commands.len();
    }
    let outcome = {
        let events = match request {
            Request::Query(prompt, options) => session.query_events(prompt, options),
            Request::Commands(commands, options) => {
                session.execute_commands_events(commands, options)
            }
        };
        let mut progress = Progress::new(json);
        let mut tick = tokio::time::interval(Duration::from_millis(120));
        let outcome = match events {
            Err(e) => Err(e),
            Ok(mut events) => loop {
                let next = tokio::select! {
                    next = events.next() => next,
                    _ = tick.tick(), if progress.enabled => {
                        progress.draw();
                        continue;
                    }
                };
                progress.clear();
                progress.events += 1;
                if matches!(next, Some(Ok(RequestEvent::Heartbeat { .. }))) {
                    progress.heartbeats += 1;
                }
                match next {
                    None => break Err(Error::ConnectionClosed),
                    Some(Err(e)) => break Err(e),
                    Some(Ok(RequestEvent::ArtifactUploadRequest(req))) => {
                        // The command line has nowhere to upload to.
                        printer.artifact(req.filename(), req.filepath());
                        events.decline_artifact_upload(req);
                    }
                    Some(Ok(event)) if event.is_terminal() => break Ok(event),
                    Some(Ok(event)) => printer.event(event),
                }
            },
        };
        progress.clear();
        outcome
    };
    watcher.abort();
    match outcome {
        Ok(RequestEvent::Result(result)) => {
            printer.result(&result);
            Ok(exit::OK)
        }
        Ok(RequestEvent::CommandResult(result)) => Ok(printer.command_result(&result)),
        Ok(_) => Ok(exit::OK),
        Err(Error::Cancelled) if cancelled.load(Ordering::SeqCst) => {
            printer.error("cancelled", "cancelled by Ctrl-C", &Value::Null);
            if !json {
                note("cancelled");
            }
            Ok(exit::CANCELLED)
        }
        Err(e) => {
            let f = failure(&e, url);
            if json {
                let metadata = match &e {
                    Error::Runtime { metadata, .. } => metadata.clone(),
                    _ => Value::Null,
                };
                printer.error(kind(&e), &f.message, &metadata);
                return Ok(f.code);
            }
            Err(f)
        }
    }
}

/// `session`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct SessionArgs {
    /// The model the runtime's agent should use.
    #[arg(long, short, default_value = "default")]
    model: String,
    /// The system prompt (also `@FILE`).
    #[arg(long, short, default_value = "")]
    system_prompt: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// Runs `session`: one persistent session, one query per line of input (with line editing
/// and history on a terminal), Ctrl-C cancelling the query that runs, the end of input ending
/// the session gracefully. Exit code: 0, or that of a connection that failed.
pub(crate) async fn session(args: SessionArgs) -> Result<u8, Failure> {
    let system_prompt = text_arg(&args.system_prompt)?;
    let (mut session, url) = connect(&args.client).await?;
    let terminal = std::io::stdin().is_terminal();
    if terminal && !args.client.json {
        note(&format!(
            "connected to {url}; one query per line, Ctrl-C cancels a query, Ctrl-D ends"
        ));
    }
    // Lines come from a thread of their own: the editor blocks. It reads the next line only
    // when asked, so the terminal is in its normal mode while a query runs (and Ctrl-C is a
    // signal then, not a key).
    let (ask, asked) = std::sync::mpsc::channel::<()>();
    let (line_tx, mut lines) = tokio::sync::mpsc::channel::<String>(1);
    std::thread::spawn(move || read_lines(terminal, &asked, &line_tx));
    let mut code = exit::OK;
    loop {
        if ask.send(()).is_err() {
            break;
        }
        let Some(line) = lines.recv().await else {
            break;
        };
        let prompt = line.trim();
        if prompt.is_empty() {
            continue;
        }
        let options = QueryOptions::new(system_prompt.clone(), args.model.clone());
        let request = Request::Query(prompt.to_owned(), options);
        match request_on(&mut session, &url, args.client.json, request).await {
            Ok(_) => {}
            Err(f) if f.code == exit::CONNECTION || f.code == exit::PROTOCOL => {
                code = f.code;
                crate::report(&f);
                break;
            }
            // The runtime's errors and timeouts end a query, not the session.
            Err(f) => crate::report(&f),
        }
    }
    drop(ask);
    match session.close().await {
        Ok(SessionEnd::Confirmed) | Err(_) => {}
        Ok(end) => tracing::debug!(?end, "the session did not end with a confirmation"),
    }
    Ok(code)
}

/// Reads one line each time `asked` says so, until the end of input.
fn read_lines(
    terminal: bool,
    asked: &std::sync::mpsc::Receiver<()>,
    lines: &tokio::sync::mpsc::Sender<String>,
) {
    let mut editor = if terminal {
        rustyline::DefaultEditor::new().ok()
    } else {
        None
    };
    let stdin = std::io::stdin();
    while asked.recv().is_ok() {
        let line = match &mut editor {
            Some(ed) => loop {
                match ed.readline("> ") {
                    Ok(l) => {
                        let _ = ed.add_history_entry(l.as_str());
                        break Some(l);
                    }
                    // Ctrl-C at the prompt clears the line.
                    Err(rustyline::error::ReadlineError::Interrupted) => {}
                    Err(_) => break None,
                }
            },
            None => {
                let mut l = String::new();
                match std::io::BufRead::read_line(&mut stdin.lock(), &mut l) {
                    Ok(0) | Err(_) => None,
                    Ok(_) => Some(l),
                }
            }
        };
        let Some(line) = line else { return };
        if lines.blocking_send(line).is_err() {
            return;
        }
    }
}

/// What a person reads about a runtime error's metadata: each field on its own line, a stack
/// trace with its own line breaks.
pub(crate) fn print_metadata(metadata: &Value) {
    let Some(fields) = metadata.as_object().filter(|o| !o.is_empty()) else {
        return;
    };
    for (k, v) in fields {
        match v {
            Value::String(s) if s.contains('\n') => {
                emit(true, &format!("  {k}:\n"));
                for line in s.lines() {
                    emit(true, &format!("    {line}\n"));
                }
            }
            Value::String(s) => emit(true, &format!("  {k}: {s}\n")),
            v => emit(true, &format!("  {k}: {v}\n")),
        }
    }
}

fn kind(e: &Error) -> &'static str {
    match e {
        Error::Runtime { .. } => "runtime",
        Error::Cancelled => "cancelled",
        Error::Timeout { .. } | Error::CallbackTimeout { .. } => "timeout",
        Error::Usage(_) | Error::Config(_) => "usage",
        Error::Protocol(_) | Error::UnexpectedTerminal(_) | Error::Desynchronized => "protocol",
        _ => "connection",
    }
}

/// The exit code, message and hint of a client error.
fn failure(e: &Error, url: &str) -> Failure {
    let code = match kind(e) {
        "runtime" => exit::RUNTIME,
        "cancelled" => exit::CANCELLED,
        "timeout" => exit::TIMEOUT,
        "usage" => exit::USAGE,
        "protocol" => exit::PROTOCOL,
        _ => exit::CONNECTION,
    };
    let message = crate::chain(e);
    let tls = url.starts_with("wss://");
    let hint = match e {
        Error::Connect(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => Some(format!(
            "nothing listens at {url}: is the runtime running (`runtimeuse serve`)?"
        )),
        Error::Connect(_) => Some(format!("check the host and port of {url}")),
        Error::ConnectTimeout(d) => Some(format!(
            "{url} accepted nothing within {} s: a firewall, or not a runtime?",
            d.as_secs_f64()
        )),
        Error::WebSocket(runtimeuse_tokio::tokio_tungstenite::tungstenite::Error::Http(r)) => {
            Some(match r.status().as_u16() {
                401 | 403 => {
                    "the runtime wants a token: pass --token (or RUNTIMEUSE_TOKEN)".to_owned()
                }
                s => format!(
                    "{url} answered HTTP {s} instead of a WebSocket upgrade: is this port a runtimeuse runtime?"
                ),
            })
        }
        Error::WebSocket(runtimeuse_tokio::tokio_tungstenite::tungstenite::Error::Protocol(_)) => {
            Some(format!(
                "{url} did not answer as a WebSocket server: is this port a runtimeuse runtime?"
            ))
        }
        Error::WebSocket(runtimeuse_tokio::tokio_tungstenite::tungstenite::Error::Tls(_))
            if tls =>
        {
            Some(format!(
                "the TLS handshake failed: if the runtime listens without TLS, use {}",
                url.replacen("wss://", "ws://", 1)
            ))
        }
        Error::WebSocket(runtimeuse_tokio::tokio_tungstenite::tungstenite::Error::Io(io))
            if tls && io.kind() == std::io::ErrorKind::InvalidData =>
        {
            Some(format!(
                "the TLS handshake failed: if the runtime listens without TLS, use {}",
                url.replacen("wss://", "ws://", 1)
            ))
        }
        Error::WebSocket(_) | Error::ConnectionClosed if tls => Some(format!(
            "the connection ended during setup or the request; TLS to a plain port? try {}",
            url.replacen("wss://", "ws://", 1)
        )),
        Error::Timeout { .. } => {
            Some("raise --timeout or --idle-timeout if the work takes longer".to_owned())
        }
        _ => None,
    };
    let metadata = match e {
        Error::Runtime { metadata, .. } => Some(metadata.clone()),
        _ => None,
    };
    Failure {
        code,
        message,
        hint,
        metadata,
    }
}

/// A progress line on stderr while a request runs (only when stderr is a terminal and the
/// output is for a person): elapsed time, phase, heartbeats. It is cleared before any output
/// and redrawn on the next tick.
struct Progress {
    enabled: bool,
    started: std::time::Instant,
    events: u64,
    heartbeats: u64,
    frame: usize,
    shown: bool,
}

impl Progress {
    fn new(json: bool) -> Self {
        Self {
            enabled: !json && std::io::stderr().is_terminal(),
            started: std::time::Instant::now(),
            events: 0,
            heartbeats: 0,
            frame: 0,
            shown: false,
        }
    }

    fn draw(&mut self) {
        if !self.enabled {
            return;
        }
        const SPIN: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
        self.frame += 1;
        let phase = if self.events == 0 {
            "waiting for the runtime"
        } else {
            "running"
        };
        let beats = match self.heartbeats {
            0 => String::new(),
            1 => " · 1 heartbeat".to_owned(),
            n => format!(" · {n} heartbeats"),
        };
        emit(
            true,
            &format!(
                "\r\x1b[K{} {:.1}s {phase}{beats}",
                SPIN[self.frame % SPIN.len()],
                self.started.elapsed().as_secs_f64()
            ),
        );
        self.shown = true;
    }

    fn clear(&mut self) {
        if self.shown {
            emit(true, "\r\x1b[K");
            self.shown = false;
        }
    }
}

/// Prints events for a person or as JSON lines.
struct Printer {
    json: bool,
    last_assistant: Option<String>,
    /// The number of commands sent (exec).
    total: usize,
}

impl Printer {
    fn new(json: bool) -> Self {
        Self {
            json,
            last_assistant: None,
            total: 0,
        }
    }

    fn event(&mut self, event: RequestEvent) {
        match event {
            RequestEvent::AssistantMessage(blocks) => {
                let text = blocks.join("");
                if self.json {
                    json_line(
                        &json!({"type": "assistant_message", "text": text, "blocks": blocks}),
                    );
                } else {
                    emit(false, &format!("{text}\n"));
                }
                self.last_assistant = Some(text);
            }
            RequestEvent::CommandOutput(o) => {
                if self.json {
                    json_line(&json!({
                        "type": "command_output",
                        "stream": o.stream.as_str(),
                        "command": &*o.command,
                        "text": o.text,
                    }));
                } else {
                    emit(o.stream == OutputStream::Stderr, &o.text);
                }
            }
            RequestEvent::Heartbeat { phase, elapsed_ms } if self.json => {
                json_line(&json!({"type": "heartbeat", "phase": phase, "elapsed_ms": elapsed_ms}));
            }
            RequestEvent::RuntimeError { error, metadata } => {
                if self.json {
                    json_line(
                        &json!({"type": "runtime_error", "error": error, "metadata": metadata}),
                    );
                } else {
                    note(&format!("the runtime reported: {error}"));
                }
            }
            _ => {}
        }
    }

    fn artifact(&self, filename: &str, filepath: &str) {
        if self.json {
            json_line(
                &json!({"type": "artifact_upload_request", "filename": filename, "filepath": filepath, "declined": true}),
            );
        } else {
            note(&format!(
                "artifact {filepath} not uploaded (the command line has no uploader)"
            ));
        }
    }

    fn result(&self, result: &QueryResult) {
        if self.json {
            let line = match &result.data {
                ResultData::Text(t) => {
                    json!({"type": "result", "text": t, "metadata": result.metadata})
                }
                ResultData::StructuredOutput(v) => {
                    json!({"type": "result", "structured_output": v, "metadata": result.metadata})
                }
                _ => json!({"type": "result", "metadata": result.metadata}),
            };
            json_line(&line);
            return;
        }
        match &result.data {
            // The final answer is often the last assistant message: do not print it twice.
            ResultData::Text(t) if self.last_assistant.as_deref() == Some(t.as_str()) => {}
            ResultData::Text(t) => emit(false, &format!("{t}\n")),
            ResultData::StructuredOutput(v) => emit(
                false,
                &format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default()),
            ),
            _ => {}
        }
        if result.metadata.as_object().is_some_and(|o| !o.is_empty()) {
            note(&format!("metadata: {}", result.metadata));
        }
    }

    /// Prints a batch's outcome; its exit code is the failing command's.
    fn command_result(&self, result: &CommandExecutionResult) -> u8 {
        let failed = result.results.iter().find(|r| r.exit_code != 0);
        if self.json {
            let results: Vec<Value> = result
                .results
                .iter()
                .map(
                    |r| json!({"command": r.command, "exit_code": r.exit_code, "stdout": r.stdout}),
                )
                .collect();
            json_line(&json!({"type": "command_result", "results": results}));
        }
        let Some(failed) = failed else {
            return exit::OK;
        };
        if !self.json {
            let skipped = self.total.saturating_sub(result.results.len());
            let rest = match skipped {
                0 => String::new(),
                1 => "; the 1 command after it was skipped".to_owned(),
                n => format!("; the {n} commands after it were skipped"),
            };
            note(&format!(
                "command `{}` failed with exit code {}{rest}",
                failed.command, failed.exit_code
            ));
        }
        u8::try_from(failed.exit_code)
            .ok()
            .filter(|c| *c != 0)
            .unwrap_or(1)
    }

    fn error(&self, kind: &str, message: &str, metadata: &Value) {
        if self.json {
            json_line(
                &json!({"type": "error", "kind": kind, "message": message, "metadata": metadata}),
            );
        }
    }
}
