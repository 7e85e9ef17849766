//! A script with the blocking client: one query and one command batch, results printed.
//!
//! With `RUNTIMEUSE_URL` set it talks to that runtime; without, it starts this project's
//! runtime (scripted handler) on a free loopback port in a background thread.
//!
//! ```text
//! cargo run --example blocking
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use runtimeuse_runtime::{Runtime, ScriptedHandler};
use runtimeuse_tungstenite::{Client, ExecuteCommandsOptions, QueryOptions};

fn main() -> std::process::ExitCode {
    match example() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => report(e.as_ref()),
    }
}

/// Prints an error for a person: its message and each cause on a line of its own (never the
/// `Debug` form), and exits 1.
fn report(e: &dyn std::error::Error) -> std::process::ExitCode {
    eprintln!("error: {e}");
    let mut source = e.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
    std::process::ExitCode::FAILURE
}

fn example() -> Result<(), Box<dyn std::error::Error>> {
    // The only async code here serves the local runtime; the client itself is blocking.
    let background = tokio::runtime::Runtime::new()?;
    let (url, local) = match std::env::var("RUNTIMEUSE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let runtime = background.block_on(async {
                Runtime::new(ScriptedHandler)
                    .bind("127.0.0.1:0")
                    .await
                    .map(|r| r.spawn())
            })?;
            (runtime.url(), Some(runtime))
        }
    };
    let client = Client::new(url);

    let options = QueryOptions::new("You are a helpful assistant.", "gpt-4o")
        .on_assistant_message(|blocks| println!("  assistant: {}", blocks.join(" ")));
    let result = client.query("STREAM_TEXT:thinking about it", options)?;
    println!("query result: {}", result.text().unwrap_or_default());

    let result = client.execute_commands(
        ["echo hello from a blocking client", "uname -s"],
        ExecuteCommandsOptions::new(),
    )?;
    for r in &result.results {
        println!(
            "`{}` -> exit {}, stdout {:?}",
            r.command,
            r.exit_code,
            r.stdout.as_deref().unwrap_or_default()
        );
    }

    if let Some(runtime) = local {
        background.block_on(runtime.shutdown());
    }
    Ok(())
}
