//! `runtimeuse query`, `exec` and `session`: requests against a runtime, their events printed
//! for a person or, with `--json`, one JSON object per line for scripts. The arguments are in
//! `args`, the exit codes of failures in `failure`, the printing in `render`.

use std::io::IsTerminal;
use std::time::Duration;

use runtimeuse_proto::{RequestEvent, SessionEnd};
use runtimeuse_tokio::{Error, ExecuteCommandsOptions, QueryOptions};
use serde_json::Value;

use crate::exit;

mod args;
mod failure;
mod render;
mod stop;

pub(crate) use args::{ClientArgs, ExecArgs, QueryArgs, SessionArgs, file_text};
use args::{client, text_arg};
pub(crate) use failure::Failure;
use failure::{failure, kind};
use render::{Progress, Renderer, note};
pub(crate) use render::{print_metadata, start_line};

/// Runs `query`.
pub(crate) async fn query(args: QueryArgs) -> Result<u8, Failure> {
    let prompt = text_arg(&args.prompt)?;
    if prompt.trim().is_empty() {
        return Err(Failure::usage("the prompt is empty"));
    }
    let mut options = QueryOptions::new(
        text_arg(&args.agent.system_prompt)?,
        args.agent.model.clone(),
    );
    if let Some(schema) = &args.output_schema {
        let text = text_arg(schema)?;
        let schema: Value = serde_json::from_str(&text)
            .map_err(|e| Failure::usage(format!("--output-schema is not JSON: {e}")))?;
        if !schema.is_object() {
            return Err(Failure::usage("--output-schema must be a JSON object"));
        }
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
    let options = args::with_client_args(options, &args.client)?;
    run(&args.client, Request::Query(prompt, options)).await
}

/// Runs `exec`.
pub(crate) async fn exec(args: ExecArgs) -> Result<u8, Failure> {
    if args.commands.iter().any(|c| c.trim().is_empty()) {
        return Err(Failure::usage("a command is empty"));
    }
    let options = ExecuteCommandsOptions::new();
    let options = args::with_client_args(options, &args.client)?;
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
/// once; SIGTERM, SIGHUP and a closed output cancel it too before the CLI leaves (`stop`).
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
    let connected = connect_quietly(args).await;
    if let (Err(f), true) = (&connected, args.json) {
        // A script reading --json gets its error line for a connection that failed too.
        let kind = match f.code {
            exit::USAGE => "usage",
            exit::AUTH => "auth",
            exit::TIMEOUT => "timeout",
            exit::PROTOCOL => "protocol",
            _ => "connection",
        };
        render::renderer(true).error(kind, &f.message, &Value::Null);
    }
    connected
}

async fn connect_quietly(
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
    let session = connected.map_err(|e| failure(&e, &url, args.token.is_some()))?;
    Ok((session, url))
}

/// Runs one request on `session` with its events printed; its exit code. Ctrl-C cancels it.
async fn request_on(
    session: &mut runtimeuse_tokio::Session,
    url: &str,
    json: bool,
    request: Request,
) -> Result<u8, Failure> {
    stop::watch(note);
    let running = stop::Running::new(session.abort_handle());
    let total = match &request {
        Request::Commands(commands, _) => commands.len(),
        Request::Query(..) => 0,
    };
    let mut renderer = render::renderer(json);
    let outcome = stream(session, request, renderer.as_mut(), json).await;
    drop(running);
    match (outcome, stop::reason()) {
        // SIGTERM, SIGHUP or a closed output: the request was cancelled for it, or ended
        // meanwhile; either way the CLI leaves with the reason's code.
        (_, Some(reason)) if reason.leaves() => Ok(reason.code()),
        (outcome, _) => finish(outcome, &mut *renderer, url, json, total),
    }
}

/// The exit code of a request's outcome, with the outcome printed.
fn finish(
    outcome: Result<RequestEvent, Error>,
    renderer: &mut (dyn Renderer + Send),
    url: &str,
    json: bool,
    total: usize,
) -> Result<u8, Failure> {
    match outcome {
        Ok(RequestEvent::Result(result)) => {
            renderer.result(&result);
            Ok(exit::OK)
        }
        Ok(RequestEvent::CommandResult(result)) => {
            renderer.command_result(&result, total);
            Ok(render::batch_outcome(&result).0)
        }
        Ok(_) => Ok(exit::OK),
        Err(Error::Cancelled) if stop::reason() == Some(stop::Reason::Interrupt) => {
            renderer.error("cancelled", "cancelled by Ctrl-C", &Value::Null);
            if !json {
                note("cancelled");
            }
            Ok(exit::CANCELLED)
        }
        Err(e) => {
            let f = failure(&e, url, false);
            if !json {
                return Err(f);
            }
            let metadata = match &e {
                Error::Runtime(r) => r.metadata.clone(),
                _ => Value::Null,
            };
            renderer.error(kind(&e), &f.message, &metadata);
            Ok(f.code)
        }
    }
}

/// Starts the request and renders its events (with the progress line) up to its terminal.
async fn stream(
    session: &mut runtimeuse_tokio::Session,
    request: Request,
    renderer: &mut (dyn Renderer + Send),
    json: bool,
) -> Result<RequestEvent, Error> {
    let mut events = match request {
        Request::Query(prompt, options) => session.query_events(prompt, options)?,
        Request::Commands(commands, options) => {
            session.execute_commands_events(commands, options)?
        }
    };
    let mut progress = Progress::new(json);
    let mut tick = tokio::time::interval(Duration::from_millis(120));
    let outcome = loop {
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
                renderer.artifact(req.filename(), req.filepath());
                events.decline_artifact_upload(req);
            }
            Some(Ok(event)) if event.is_terminal() => break Ok(event),
            Some(Ok(event)) => renderer.event(event),
        }
    };
    progress.clear();
    outcome
}

/// Runs `session`: one persistent session, one query per line of input (with line editing
/// and history on a terminal), Ctrl-C cancelling the query that runs, the end of input ending
/// the session gracefully. Exit code: 0, or that of a connection that failed.
pub(crate) async fn session(args: SessionArgs) -> Result<u8, Failure> {
    let system_prompt = text_arg(&args.agent.system_prompt)?;
    let (mut session, url) = connect(&args.client).await?;
    let terminal = std::io::stdin().is_terminal();
    if terminal && !args.client.json {
        note(&format!(
            "connected to {url}; one query per line, /help for commands, Ctrl-C cancels a \
             query, Ctrl-D or /quit ends"
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
        // While waiting for a line, the connection is watched: a runtime that goes away is
        // said at once, not when the next line is sent.
        let line = tokio::select! {
            line = lines.recv() => line,
            e = session.closed() => {
                crate::report(&failure(&e, &url, false));
                code = exit::CONNECTION;
                break;
            }
        };
        let Some(line) = line else {
            break;
        };
        let request = match next_request(&line, &args, &system_prompt)? {
            Next::Skip => continue,
            Next::Quit => break,
            Next::Run(request) => *request,
        };
        match request_on(&mut session, &url, args.client.json, request).await {
            Ok(c) if c == exit::OK => {}
            // SIGTERM, SIGHUP or a closed output: the query was cancelled; leave.
            Ok(c) if stop::reason().is_some_and(stop::Reason::leaves) => {
                session.disconnect().await;
                return Ok(c);
            }
            // Piped input is a script: its first failure is the exit code (a person at a
            // terminal sees each failure and goes on).
            Ok(c) if !terminal && code == exit::OK => code = c,
            Ok(_) => {}
            Err(f) if f.code == exit::CONNECTION || f.code == exit::PROTOCOL => {
                code = f.code;
                crate::report(&f);
                break;
            }
            // The runtime's errors and timeouts end a query, not the session.
            Err(f) => {
                if !terminal && code == exit::OK {
                    code = f.code;
                }
                crate::report(&f);
            }
        }
    }
    drop(ask);
    match session.close().await {
        Ok(SessionEnd::Confirmed) | Err(_) => {}
        Ok(end) => tracing::debug!(?end, "the session did not end with a confirmation"),
    }
    Ok(code)
}

/// What a line of `session`'s input asks for.
enum Next {
    Skip,
    Quit,
    Run(Box<Request>),
}

/// What `line` asks for: a request with the session's options (its secrets, downloads and
/// limits apply to each query as to `query` and to `/exec`), or nothing (help and unknown
/// commands are said here).
fn next_request(line: &str, args: &SessionArgs, system_prompt: &str) -> Result<Next, Failure> {
    Ok(Next::Run(Box::new(match SessionLine::parse(line) {
        SessionLine::Empty => return Ok(Next::Skip),
        SessionLine::Quit => return Ok(Next::Quit),
        SessionLine::Help => {
            note(SESSION_HELP);
            return Ok(Next::Skip);
        }
        SessionLine::Unknown(word) => {
            note(&format!(
                "unknown command {word} (/help lists them; begin the line with a space to send \
                 it as a query)"
            ));
            return Ok(Next::Skip);
        }
        SessionLine::Exec(command) => Request::Commands(
            vec![runtimeuse_proto::Command::new(command)],
            args::with_client_args(ExecuteCommandsOptions::new(), &args.client)?,
        ),
        SessionLine::Query(prompt) => {
            let options = QueryOptions::new(system_prompt.to_owned(), args.agent.model.clone());
            Request::Query(
                prompt.to_owned(),
                args::with_client_args(options, &args.client)?,
            )
        }
    })))
}

/// What the session's commands are, for `/help`.
const SESSION_HELP: &str = "one line, one query; or /exec COMMAND (run a shell command in the \
     runtime), /help, /quit (end the session; so does Ctrl-D). Ctrl-C cancels what runs.";

/// A line of `session`'s input.
#[derive(Debug, PartialEq, Eq)]
enum SessionLine<'a> {
    Empty,
    Quit,
    Help,
    Exec(&'a str),
    /// A single word like a command that is none (`/qiut`): said, not sent.
    Unknown(&'a str),
    Query(&'a str),
}

impl<'a> SessionLine<'a> {
    /// A line as typed (a line that begins with a space is a query, whatever it looks like).
    fn parse(raw: &'a str) -> Self {
        let line = raw.trim();
        if raw.starts_with(' ') && !line.is_empty() {
            return Self::Query(line);
        }
        match line.split_once(char::is_whitespace).unwrap_or((line, "")) {
            ("", _) => Self::Empty,
            ("/quit" | "/exit", _) => Self::Quit,
            ("/help" | "/?", _) => Self::Help,
            ("/exec", command) if !command.trim().is_empty() => Self::Exec(command.trim()),
            ("/exec", _) => Self::Help,
            (word, "") if is_command_like(word) => Self::Unknown(word),
            _ => Self::Query(line),
        }
    }
}

/// A lone `/word` of letters: what a mistyped command looks like (a path such as `/tmp/x`
/// or a sentence is a query).
fn is_command_like(word: &str) -> bool {
    word.strip_prefix('/')
        .is_some_and(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphabetic()))
}

/// Where the line editor keeps its history: `$XDG_DATA_HOME/runtimeuse/history`, else
/// `~/.local/share/runtimeuse/history`.
fn history_file() -> Option<std::path::PathBuf> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/share"))
        })?;
    Some(data.join("runtimeuse").join("history"))
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
    let history = history_file();
    if let (Some(ed), Some(file)) = (&mut editor, &history) {
        // None yet is fine.
        let _ = ed.load_history(file);
    }
    let save = |ed: &mut rustyline::DefaultEditor| {
        if let Some(file) = &history {
            if let Some(dir) = file.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            if let Err(e) = ed.save_history(file) {
                tracing::debug!(error = %e, "history not saved");
            }
        }
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
        if let Some(ed) = &mut editor {
            // After each line: the history survives however the session ends.
            save(ed);
        }
        let Some(line) = line else { return };
        if lines.blocking_send(line).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SessionLine;

    #[test]
    fn session_lines() {
        assert_eq!(SessionLine::parse(""), SessionLine::Empty);
        assert_eq!(SessionLine::parse("/quit"), SessionLine::Quit);
        assert_eq!(SessionLine::parse("/help"), SessionLine::Help);
        assert_eq!(
            SessionLine::parse("/exec ls -l"),
            SessionLine::Exec("ls -l")
        );
        assert_eq!(SessionLine::parse("/exec"), SessionLine::Help);
        assert_eq!(
            SessionLine::parse("what is /exec?"),
            SessionLine::Query("what is /exec?")
        );
        assert_eq!(SessionLine::parse("/qiut"), SessionLine::Unknown("/qiut"));
        assert_eq!(SessionLine::parse(" /qiut"), SessionLine::Query("/qiut"));
        assert_eq!(SessionLine::parse("/tmp/x"), SessionLine::Query("/tmp/x"));
        assert_eq!(
            SessionLine::parse("/tmp is full"),
            SessionLine::Query("/tmp is full")
        );
    }
}
