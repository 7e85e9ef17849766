//! The async-std/smol client: a query whose events arrive as a `Stream`, a command batch with
//! the output callback, and a persistent session with a cancelled request.
//!
//! The client runs under `async_io::block_on`, the executor-free driver that async-std and smol
//! are built on; the same code runs inside `async_std::task::block_on` or `smol::block_on`.
//! With `RUNTIMEUSE_URL` set it talks to that runtime; without, it starts this project's
//! runtime (scripted handler) on a free loopback port in a background thread.
//!
//! ```text
//! cargo run --example async_std
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::Duration;

use runtimeuse_async_std::{Client, Error, ExecuteCommandsOptions, QueryOptions, RequestEvent};
use runtimeuse_runtime::{Runtime, ScriptedHandler};

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
    // The only tokio here serves the local runtime; the client uses none.
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

    async_io::block_on(run(url))?;

    if let Some(runtime) = local {
        background.block_on(runtime.shutdown());
    }
    Ok(())
}

async fn run(url: String) -> Result<(), Error> {
    let client = Client::new(url);
    let mut session = client.session().await?;

    // A query's events, one by one.
    let options = QueryOptions::new("You are a helpful assistant.", "gpt-4o");
    let mut events = session.query_events("STREAM:3", options)?;
    while let Some(item) = events.next().await {
        match item? {
            RequestEvent::AssistantMessage(blocks) => println!("  assistant: {}", blocks.join("")),
            RequestEvent::Result(result) => {
                println!("query result: {}", result.text().unwrap_or_default());
            }
            other => println!("  {other:?}"),
        }
    }

    // A command batch with the output callback.
    let options = ExecuteCommandsOptions::new().on_command_output(|chunk| async move {
        print!("  {}: {}", chunk.stream.as_str(), chunk.text);
    });
    let result = session
        .execute_commands(["echo hello from async-io", "uname -s"], options)
        .await?;
    let codes: Vec<i64> = result.results.iter().map(|r| r.exit_code).collect();
    println!("exit codes: {codes:?}");

    // Cancelling from another thread; the session stays usable.
    let abort = session.abort_handle();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        abort.abort();
    });
    let options = QueryOptions::new("You are a helpful assistant.", "gpt-4o");
    match session.query("SLOW:60000", options.clone()).await {
        Err(Error::Cancelled) => println!("the slow query was cancelled"),
        other => println!("unexpected: {other:?}"),
    }
    let after = session.query("ECHO:still here", options).await?;
    println!("after the cancel: {}", after.text().unwrap_or_default());

    let end = session.close().await?;
    println!("session ended: {end:?}");
    Ok(())
}
