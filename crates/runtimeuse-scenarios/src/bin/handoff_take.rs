//! The taker of a resumable session, for the Python package's hand-off tests
//! (`crates/runtimeuse-python/tests/test_resume.py`): a token written by another client (the
//! Python one) followed to its result by the tokio client.
//!
//! `handoff_take TOKEN_FILE` prints one JSON line, `{"rest": <the output after the token's
//! count>, "exit_code": <the batch's first exit code>}`.

// Its line is its interface with the test.
#![allow(clippy::print_stdout)]

use runtimeuse_tokio::{Client, RequestEvent, ResumeToken};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(token_file) = std::env::args().nth(1) else {
        return Err("usage: handoff_take TOKEN_FILE".into());
    };
    let token: ResumeToken = serde_json::from_slice(&std::fs::read(token_file)?)?;
    let client = Client::builder(token.url()).resume(true).build();
    let mut session = client.resume(token).await?;
    let mut events = session
        .request_events()
        .ok_or("no request in flight in the token")?;
    let (mut rest, mut exit_code) = (String::new(), None);
    while let Some(item) = events.next().await {
        match item? {
            RequestEvent::CommandOutput(o) => rest.push_str(&o.text),
            RequestEvent::CommandResult(r) => exit_code = r.results.first().map(|r| r.exit_code),
            _ => {}
        }
    }
    drop(events);
    let _ = session.close().await?;
    let line = serde_json::json!({ "rest": rest, "exit_code": exit_code });
    println!("{line}");
    Ok(())
}
