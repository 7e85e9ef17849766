//! `runtimeuse`: serve an agent runtime, or talk to one.
//!
//! ```text
//! runtimeuse serve [--host H] [--port P] [--handler scripted] [--heartbeat-interval-ms N] [--token T]
//! runtimeuse query [--url URL] [--model M] [--system-prompt S] [--token T] PROMPT
//! runtimeuse exec  [--url URL] [--token T] COMMAND...
//! ```

// A command-line tool prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::time::Duration;

use lexopt::prelude::*;
use runtimeuse_runtime::{Runtime, RuntimeOptions, ScriptedHandler};
use runtimeuse_tokio::{Client, ExecuteCommandsOptions, QueryOptions};

const USAGE: &str = "\
usage:
  runtimeuse serve [--host H] [--port P] [--handler scripted] [--heartbeat-interval-ms N] [--token T]
      Serve an agent runtime. Defaults: host 0.0.0.0, port 8080, heartbeat 15000 ms.
      The token may also come from RUNTIMEUSE_TOKEN; clients then present it as
      'Authorization: Bearer <T>' or a 'token' query parameter.
  runtimeuse query [--url URL] [--model M] [--system-prompt S] [--token T] PROMPT
      Send one query and print the result (assistant messages go to stderr).
  runtimeuse exec [--url URL] [--token T] COMMAND...
      Run commands and print their output; exits with the first failing exit code.
      URL defaults to RUNTIMEUSE_URL, then ws://127.0.0.1:8080.
";

#[derive(Debug)]
enum Cmd {
    Serve {
        host: String,
        port: u16,
        heartbeat_ms: u64,
        token: Option<String>,
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
    while let Some(arg) = parser.next()? {
        match arg {
            Long("help") | Short('h') => return Ok(Cmd::Help),
            Long("host") if sub == "serve" => host = parser.value()?.string()?,
            Long("port") if sub == "serve" => port = parser.value()?.parse()?,
            Long("heartbeat-interval-ms") if sub == "serve" => {
                heartbeat_ms = parser.value()?.parse()?
            }
            Long("handler") if sub == "serve" => {
                let h = parser.value()?.string()?;
                if h != "scripted" {
                    return Err(format!("unknown handler {h} (available: scripted)").into());
                }
            }
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
            eprintln!("runtimeuse: {e}");
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
        } => {
            let mut options = RuntimeOptions::default();
            options.heartbeat_interval =
                (heartbeat_ms > 0).then(|| Duration::from_millis(heartbeat_ms));
            options.token = token;
            let runtime = Runtime::new(ScriptedHandler)
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
