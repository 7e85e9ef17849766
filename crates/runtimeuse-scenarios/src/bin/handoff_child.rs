//! The first owner of a resumable session, for the hand-off test (`tests/handoff.rs`): a
//! process that starts a command batch, hands out a resume token, reads on, and waits to be
//! killed.
//!
//! `handoff_child URL COMMAND TOKEN_FILE`, after the first output, writes the resume token
//! (JSON) to `TOKEN_FILE` and prints `seen <json string>` (the output read before the token);
//! prints `ready` once the output holds a line `half`; then waits until it is killed (or its
//! stdin closes).

// Its lines are its interface with the test.
#![allow(clippy::print_stdout)]

use std::io::Write;

use runtimeuse_tokio::{Client, ExecuteCommandsOptions, RequestEvent};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(command), Some(token_file)) = (args.next(), args.next(), args.next())
    else {
        return Err("usage: handoff_child URL COMMAND TOKEN_FILE".into());
    };
    let client = Client::builder(url).resume(true).build();
    let mut session = client.session().await?;
    let mut events = session.execute_commands_events([command], ExecuteCommandsOptions::new())?;
    let mut out = std::io::stdout().lock();
    let (mut seen, mut tokened) = (String::new(), false);
    while let Some(item) = events.next().await {
        if let RequestEvent::CommandOutput(o) = item? {
            seen.push_str(&o.text);
            if !tokened {
                let token = events.resume_token()?;
                std::fs::write(&token_file, serde_json::to_vec(&token)?)?;
                writeln!(out, "seen {}", serde_json::to_string(&seen)?)?;
                out.flush()?;
                tokened = true;
            }
            if seen.lines().any(|l| l == "half") {
                writeln!(out, "ready")?;
                out.flush()?;
                break;
            }
        }
    }
    // Killed here: the session is never closed.
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    Ok(())
}
