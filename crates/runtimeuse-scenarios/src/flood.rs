//! A flood server for the benches: on loopback, each connection gets `n`
//! `command_output_message` frames of about 185 bytes after its first message, then the
//! terminal of a command batch.

use futures_util::{SinkExt, StreamExt};
use runtimeuse_tokio::tokio_tungstenite::tungstenite::Message;
use tokio::net::TcpListener;

/// One flood frame: a `command_output_message` with 100 bytes of text, as the runtime writes
/// it.
pub fn frame() -> String {
    let text = "x".repeat(100);
    format!(
        r#"{{"message_type":"command_output_message","stream":"stdout","text":"{text}","command":"make"}}"#
    )
}

/// The terminal sent after the flood.
pub const TERMINAL: &str = r#"{"message_type":"command_execution_result_message","results":[{"command":"make","exit_code":0}]}"#;

/// Serves floods forever: each connection gets `n` frames after its first message, then
/// [`TERMINAL`], then is read until the client closes.
pub async fn serve(listener: TcpListener, n: usize) {
    let frame = frame();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let frame = frame.clone();
        tokio::spawn(async move {
            let Ok(mut ws) = runtimeuse_tokio::tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            // Wait for the request.
            if ws.next().await.is_none() {
                return;
            }
            for _ in 0..n {
                if ws.feed(Message::text(frame.clone())).await.is_err() {
                    return;
                }
            }
            let _ = ws.send(Message::text(TERMINAL)).await;
            // Drain until the client closes.
            while let Some(Ok(_)) = ws.next().await {}
        });
    }
}

/// Starts a flood server of `n` frames per connection on an ephemeral loopback port, in a
/// task of the current tokio runtime; returns its `ws://` URL.
pub async fn start(n: usize) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}", listener.local_addr()?);
    tokio::spawn(serve(listener, n));
    Ok(url)
}
