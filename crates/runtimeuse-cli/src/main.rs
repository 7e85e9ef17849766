//! `runtimeuse`: serve an agent runtime, or talk to one.
//!
//! ```text
//! runtimeuse serve [--agent openai|anthropic|command|scripted] [--port P] [--token T] ...
//! runtimeuse query [--url URL] [--model M] [--json] PROMPT|@FILE|-
//! runtimeuse exec  [--url URL] [--json] COMMAND...
//! runtimeuse proxy --listen ADDR --to URL [--record DIR] [--redact TEXT] [--cut-after N]
//! runtimeuse completions bash|zsh|fish|...
//! ```
//!
//! Exit codes are listed in `runtimeuse --help` (see [`exit`]).

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

mod client;
mod proxy;
mod serve;
mod trim;

/// The exit codes, documented in `--help` and the README. The CLI's own failures use the
/// codes of BSD's `sysexits.h` (64-78), which shell commands rarely return, so that `exec` can
/// pass the remote command's exit code through as `ssh` does; a signal is the shell's 128 + N.
pub(crate) mod exit {
    /// Success.
    pub(crate) const OK: u8 = 0;
    /// The command line was wrong (`EX_USAGE`), clap's parse errors included.
    pub(crate) const USAGE: u8 = 64;
    /// The runtime could not be reached, or the connection failed (`EX_UNAVAILABLE`).
    pub(crate) const CONNECTION: u8 = 69;
    /// The runtime reported an error (`EX_SOFTWARE`).
    pub(crate) const RUNTIME: u8 = 70;
    /// `serve` or `proxy` could not listen, or the system failed them (`EX_OSERR`).
    pub(crate) const SYSTEM: u8 = 71;
    /// A time limit passed (`EX_TEMPFAIL`).
    pub(crate) const TIMEOUT: u8 = 75;
    /// The runtime said something that could not be understood (`EX_PROTOCOL`).
    pub(crate) const PROTOCOL: u8 = 76;
    /// The runtime refused the token, or wants one (`EX_NOPERM`).
    pub(crate) const AUTH: u8 = 77;
    /// SIGHUP: the terminal went away (the request was cancelled first).
    pub(crate) const HANGUP: u8 = 129;
    /// Cancelled with Ctrl-C.
    pub(crate) const CANCELLED: u8 = 130;
    /// Standard output or error was closed (`| head`).
    pub(crate) const BROKEN_PIPE: u8 = 141;
    /// SIGTERM (the request was cancelled first).
    pub(crate) const TERMINATED: u8 = 143;
}

const EXIT_CODES: &str = "\
Exit codes:
  0    success
  N    exec: the exit code of the command that failed, passed through (the rest of the batch
       is skipped; --json has every command's exact exit_code)
  64   usage error (bad arguments, empty prompt, bad URL, unreadable @FILE)
  69   connection error (refused, closed, TLS, handshake)
  70   the runtime reported an error
  71   serve, proxy: cannot listen (address in use, not ours) or a system error
  75   a time limit passed (--timeout, --idle-timeout, --connect-timeout)
  76   protocol error (the runtime's answer could not be understood)
  77   the runtime refused the token, or wants one
  129  SIGHUP, 143 SIGTERM: the request was cancelled on the runtime first (5 s at most)
  130  cancelled with Ctrl-C (the runtime is told to cancel first)
  141  standard output or error was closed (the request is cancelled first)
The CLI's own failures use the codes of sysexits.h (64-78), which shell commands rarely return.

--json prints one JSON object per line on stdout, with a \"type\" of: assistant_message {text,
blocks}, command_output {stream, command, text}, heartbeat {phase, elapsed_ms}, runtime_error
{error, metadata}, artifact_upload_request {filename, filepath, declined}, and last either
result {text | structured_output, metadata}, command_result {results: [{command, exit_code,
stdout}]} or error {kind, message, metadata}.";

/// Serve an agent runtime, or talk to one.
#[derive(Debug, Parser)]
#[command(name = "runtimeuse", version, about, after_help = EXIT_CODES)]
struct Cli {
    /// More log lines on stderr: -v info, -vv debug, -vvv trace (RUST_LOG, when set, decides).
    #[arg(short, long, global = true, help_heading = "Global options", action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors in the log (RUST_LOG, when set, decides); `proxy` shows no frames.
    #[arg(
        short,
        long,
        global = true,
        help_heading = "Global options",
        conflicts_with = "verbose"
    )]
    quiet: bool,
    /// The log's form on stderr: `text` for people, `json` for machines (one object per
    /// line: timestamp, level, target, message, fields, and the spans' fields, e.g. a
    /// connection's id).
    #[arg(long, global = true, help_heading = "Global options", value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve an agent runtime (by default the OpenAI agent, as `npx runtimeuse`).
    Serve(serve::ServeArgs),
    /// Send one query and print the assistant's messages and the result.
    #[command(after_help = EXIT_CODES)]
    Query(client::QueryArgs),
    /// Run shell commands in the runtime and print their output.
    #[command(after_help = EXIT_CODES)]
    Exec(client::ExecArgs),
    /// A recording proxy between any client and any runtime: every frame on stderr, and with
    /// `--record DIR` one JSON Lines transcript per connection.
    Proxy(proxy::ProxyArgs),
    /// An interactive persistent session (also `chat`): one query per line, ended gracefully
    /// at the end of input (Ctrl-D).
    #[command(visible_alias = "chat")]
    Session(client::SessionArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are no failure; a wrong command line is the table's usage code.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            report(&client::Failure::usage(format!(
                "cannot start the async runtime: {e}"
            )));
            return ExitCode::from(exit::SYSTEM);
        }
    };
    let code = runtime.block_on(run(cli));
    // Uploads still running get a moment to finish, not forever: a stalled PUT must not keep
    // a stopped runtime alive.
    runtime.shutdown_timeout(Duration::from_secs(5));
    ExitCode::from(code)
}

async fn run(cli: Cli) -> u8 {
    let stderr_tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // `serve` logs each connection (info); the client commands only what goes wrong; -v and
    // -q move from there.
    let levels = ["error", "warn", "info", "debug", "trace"];
    let base: usize = match cli.command {
        Command::Serve(_) | Command::Proxy(_) => 2,
        _ => 1,
    };
    let quiet = cli.quiet;
    let level = if quiet {
        0
    } else {
        (base + usize::from(cli.verbose)).min(levels.len() - 1)
    };
    let default = levels[level];
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        log.json()
            .with_current_span(false)
            .with_span_list(true)
            .flatten_event(true)
            .init();
    } else {
        log.with_ansi(stderr_tty && std::env::var_os("NO_COLOR").is_none())
            .init();
    }
    let outcome = match cli.command {
        Command::Serve(mut args) => {
            args.json_log = cli.log_format == "json";
            args.quiet = quiet;
            serve::serve(args).await.map(|()| exit::OK)
        }
        Command::Proxy(mut args) => {
            args.quiet = quiet;
            proxy::proxy(args).await.map(|()| exit::OK)
        }
        Command::Query(args) => client::query(args).await,
        Command::Exec(args) => client::exec(args).await,
        Command::Session(args) => client::session(args).await,
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "runtimeuse",
                &mut std::io::stdout(),
            );
            Ok(exit::OK)
        }
    };
    match outcome {
        Ok(code) => code,
        Err(f) => {
            report(&f);
            f.code
        }
    }
}

/// An error and each of its causes, once (a cause whose text the chain already says, as some
/// libraries repeat their source in their own message, is left out).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Says a failure on stderr (a closed stderr is no panic: the exit code still tells).
pub(crate) fn report(f: &client::Failure) {
    use std::io::Write;
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let label = if colour {
        "\x1b[1;31merror\x1b[0m"
    } else {
        "error"
    };
    client::start_line();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "runtimeuse: {label}: {}", f.message);
    drop(err);
    if let Some(m) = &f.metadata {
        client::print_metadata(m);
    }
    if let Some(h) = &f.hint {
        let _ = writeln!(std::io::stderr(), "  hint: {h}");
    }
}
