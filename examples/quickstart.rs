//! The Python client's Quick Start, in Rust: a text query with streamed assistant messages, a
//! structured query, a command batch, and a persistent session with two calls.
//!
//! With `RUNTIMEUSE_URL` set it talks to that runtime. Without, it starts this project's
//! runtime in-process on a free loopback port, with the deterministic `scripted` handler, so
//! it runs anywhere with no sandbox and no API key:
//!
//! ```text
//! cargo run --example quickstart
//! ```

#![allow(clippy::print_stdout)]

use runtimeuse_runtime::{Runtime, ScriptedHandler};
use runtimeuse_tokio::{Client, ExecuteCommandsOptions, QueryOptions};

#[derive(Debug, serde::Deserialize)]
struct Answer {
    answer: u32,
    unit: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    // A runtime to talk to: yours, or a local one.
    let (url, local) = match std::env::var("RUNTIMEUSE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let runtime = Runtime::new(ScriptedHandler)
                .bind("127.0.0.1:0")
                .await?
                .spawn();
            println!("started a local runtime at {}", runtime.url());
            (runtime.url(), Some(runtime))
        }
    };
    let client = Client::new(&url);

    // 1. A text query, with assistant messages streamed as they come.
    let options = QueryOptions::new("You are a helpful assistant.", "gpt-4o").on_assistant_message(
        |blocks| async move { println!("  assistant: {}", blocks.join(" ")) },
    );
    let result = client.query("STREAM:3", options).await?;
    println!("text result: {}", result.text().unwrap_or_default());

    // 2. A structured query, deserialized into our own type.
    let options = QueryOptions::new("Answer in JSON.", "gpt-4o")
        .output_schema(r#"{"type":"object","properties":{"answer":{"type":"integer"}}}"#);
    let result = client
        .query(r#"STRUCTURED:{"answer": 42, "unit": "towels"}"#, options)
        .await?;
    let answer: Answer = result.deserialize()?;
    println!("structured result: {} {}", answer.answer, answer.unit);

    // 3. Shell commands, with their output streamed.
    let options = ExecuteCommandsOptions::new()
        .on_command_output(|o| async move { print!("  {}: {}", o.stream.as_str(), o.text) });
    let result = client
        .execute_commands(["echo hello from the sandbox", "uname -s"], options)
        .await?;
    for r in &result.results {
        println!("command `{}` exited with {}", r.command, r.exit_code);
    }

    // 4. A persistent session: two calls over one connection, then a graceful end.
    let mut session = client.session().await?;
    let first = session
        .query("ECHO:first call", QueryOptions::new("", "gpt-4o"))
        .await?;
    let second = session
        .execute_commands(["echo second call"], ExecuteCommandsOptions::new())
        .await?;
    session.close().await?;
    println!(
        "session: {} / {}",
        first.text().unwrap_or_default(),
        second.results[0]
            .stdout
            .as_deref()
            .unwrap_or_default()
            .trim()
    );

    if let Some(runtime) = local {
        runtime.shutdown().await;
    }
    Ok(())
}
