//! The Python client's Quick Start, in Rust: a text query with streamed assistant messages, a
//! structured query, a command batch, and a persistent session with two calls.
//!
//! With `RUNTIMEUSE_URL` set it talks to that runtime. Without, it starts this project's
//! runtime in-process on a free loopback port. Its agent is a real model when a provider key
//! is in the environment (`OPENAI_API_KEY`, then `ANTHROPIC_API_KEY`; the model from
//! `RUNTIMEUSE_MODEL`), and the deterministic `scripted` handler otherwise, so it runs
//! anywhere with no sandbox, no key and no network:
//!
//! ```text
//! cargo run --example quickstart
//! OPENAI_API_KEY=sk-... cargo run --example quickstart
//! ```
//!
//! Copied into a project of your own, its structured query (`output_type::<Answer>()`) needs
//! the `schemars` feature and two dependencies of yours:
//!
//! ```toml
//! runtimeuse-tokio = { version = "0.1", features = ["schemars"] }
//! schemars = "1"
//! serde = { version = "1", features = ["derive"] }
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;

use runtimeuse_runtime::{
    AgentHandler, AgentOptions, ModelAgent, ModelApi, ProviderConfig, Runtime, ScriptedHandler,
};
use runtimeuse_tokio::{Client, ExecuteCommandsOptions, QueryOptions};

/// The structured answer; its JSON Schema is derived from it (`schemars`), so the schema sent
/// and the type read back cannot disagree.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct Answer {
    answer: u32,
    unit: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
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

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    // A runtime to talk to: yours, or a local one, with a real agent when a key is set.
    let (agent, model) = local_agent()?;
    let real = agent.is_some();
    let (url, local) = match std::env::var("RUNTIMEUSE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let handler = agent.unwrap_or_else(|| Arc::new(ScriptedHandler));
            let runtime = Runtime::from_arc(handler)
                .bind("127.0.0.1:0")
                .await?
                .spawn();
            println!("started a local runtime at {}", runtime.url());
            (runtime.url(), Some(runtime))
        }
    };
    let client = Client::new(&url);
    // The scripted handler follows directives; a model follows words.
    let prompt =
        |directive: &'static str, words: &'static str| if real { words } else { directive };

    // 1. A text query, with assistant messages streamed as they come.
    let options = QueryOptions::new("You are a helpful assistant.", &model).on_assistant_message(
        |blocks| async move { println!("  assistant: {}", blocks.join(" ")) },
    );
    let text = prompt(
        "STREAM:3",
        "Use the shell to find this machine's kernel name, then greet it in one sentence.",
    );
    let result = client.query(text, options).await?;
    println!("text result: {}", result.text().unwrap_or_default());

    // 2. A structured query, deserialized into our own type.
    let options = QueryOptions::new("Answer in JSON.", &model).output_type::<Answer>();
    let text = prompt(
        r#"STRUCTURED:{"answer": 42, "unit": "towels"}"#,
        "How many towels is six times seven towels? Give the number and the unit.",
    );
    let result = client.query(text, options).await?;
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
        .query(
            prompt("ECHO:first call", "Reply with exactly: first call"),
            QueryOptions::new("", &model),
        )
        .await?;
    let second = session
        .execute_commands(["echo second call"], ExecuteCommandsOptions::new())
        .await?;
    let end = session.close().await?;
    println!(
        "session ({end:?}): {} / {}",
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

/// A model agent when a provider key is in the environment, and the model to ask for.
fn local_agent() -> std::io::Result<(Option<Arc<dyn AgentHandler>>, String)> {
    let set = |v: &str| std::env::var(v).is_ok_and(|k| !k.is_empty());
    let model =
        |default: &str| std::env::var("RUNTIMEUSE_MODEL").unwrap_or_else(|_| default.into());
    let (provider, model) = if set("OPENAI_API_KEY") {
        let provider = ProviderConfig::openai_from_env(ModelApi::OpenAiResponses);
        (provider, model("gpt-4.1-mini"))
    } else if set("ANTHROPIC_API_KEY") {
        (
            ProviderConfig::anthropic_from_env(),
            model("claude-sonnet-4-5"),
        )
    } else {
        return Ok((None, "scripted".to_owned()));
    };
    println!("agent: {} ({model})", provider.api.provider());
    let agent = ModelAgent::new(provider, AgentOptions::default())?;
    Ok((Some(Arc::new(agent)), model))
}
