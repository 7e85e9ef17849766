//! One client connection: the runtime session's event loop. The requests it runs are in
//! `request`, the messages their tasks send it in `mailbox`.

use std::sync::Arc;
use std::time::Duration;

use runtimeuse_proto::RequestId;
use runtimeuse_proto::runtime::{CANCELLED_ERROR, RuntimeEvent, RuntimeSession};
use runtimeuse_tokio::server::RuntimeConnection;
use serde_json::json;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Shared;
use crate::artifacts::Watcher;
use crate::mailbox::{Cmd, Mailbox, Room, Terminal};
use crate::request::{env, run_commands, run_query};

/// Serves one accepted TCP connection until it ends.
pub(crate) async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let peer = stream.peer_addr().ok();
    serve_stream(stream, peer, shared).await;
}

/// Serves one connection over any byte stream (`peer` for the log) until it ends.
async fn serve_stream<S>(stream: S, peer: Option<SocketAddr>, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshake = RuntimeConnection::accept(stream, shared.server.clone());
    let mut conn = match tokio::time::timeout(shared.options.handshake_timeout, handshake).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::info!(?peer, error = %e, "handshake refused or failed");
            return;
        }
        Err(_) => {
            tracing::info!(?peer, "handshake not completed in time; dropped");
            return;
        }
    };
    tracing::info!(?peer, "connection accepted");
    let opened = tokio::time::Instant::now();
    let mut requests = 0u64;
    let options = &shared.options;
    let room = Room::new(
        conn.backlog().clone(),
        options.max_buffered,
        options.max_buffered_total,
    );
    let mut mailbox = Mailbox::new(room);
    let watcher = Watcher::new(shared.options.artifact_scan_interval);
    let mut cancel: Option<watch::Sender<bool>> = None;
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            event = conn.next_event() => {
                let Some(event) = event else { break };
                match event {
                    RuntimeEvent::Invocation { request, invocation } => {
                        requests += 1;
                        let env = env(&mut mailbox, request, &watcher, &shared, &mut cancel);
                        tasks.spawn(run_query(invocation, env));
                    }
                    RuntimeEvent::Commands { request, batch } => {
                        requests += 1;
                        let env = env(&mut mailbox, request, &watcher, &shared, &mut cancel);
                        tasks.spawn(run_commands(batch, env));
                    }
                    RuntimeEvent::Cancel { .. } => {
                        if let Some(c) = &cancel {
                            let _ = c.send(true);
                        }
                    }
                    RuntimeEvent::ArtifactUploadResponse { filepath, upload, .. } => {
                        let redactor = conn.session().redactor();
                        tracing::debug!(filepath = %redactor.redact(&filepath), "artifact upload answered");
                        let path = std::path::PathBuf::from(&filepath);
                        // Counted as running before it counts as answered: a request that
                        // waits for its uploads sees it either way.
                        match watcher.uploads() {
                            Some(uploads) => uploads.start(filepath, upload, redactor),
                            None => tracing::debug!("upload answer without a watcher; ignored"),
                        }
                        watcher.reported().answered(&path);
                    }
                    RuntimeEvent::EndSession => {
                        tracing::debug!("end of session asked");
                        let watcher = watcher.clone();
                        let outbox = mailbox.outbox(None);
                        let drain = shared.options.end_session_drain;
                        tasks.spawn(async move {
                            if watcher.ever_watched() {
                                // Files still being written get reported, and every upload
                                // request gets its answer, before the end is confirmed: the
                                // client may answer after it asked to end (within the drain).
                                let started = tokio::time::Instant::now();
                                watcher.settle(drain).await;
                                let left = drain.saturating_sub(started.elapsed());
                                let reported = watcher.reported();
                                let answered = reported.wait_all_answered();
                                if tokio::time::timeout(left, answered).await.is_err() {
                                    tracing::warn!("artifact upload requests left unanswered at the end of the session");
                                }
                            }
                            let _ = outbox.send(Cmd::ConfirmEnd).await;
                        });
                    }
                    RuntimeEvent::Closed => break,
                    other => tracing::debug!(?other, "ignored event"),
                }
            }
            Some((request, cmd)) = mailbox.recv() => apply(conn.session(), &watcher, request, cmd),
        }
    }
    if let Some(c) = &cancel {
        let _ = c.send(true);
    }
    tracing::info!(
        ?peer,
        requests,
        duration_ms = u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX),
        "connection closed"
    );
}

/// Applies a request task's message to the session, unless it speaks for a request that has
/// already ended.
fn apply(session: &mut RuntimeSession, watcher: &Watcher, request: Option<RequestId>, cmd: Cmd) {
    if let Some(id) = request
        && session.request_in_flight() != Some(id)
    {
        tracing::debug!(request = id.as_u64(), "message of an ended request dropped");
        return;
    }
    let result = match cmd {
        Cmd::Assistant(blocks) => session.send_assistant(&blocks),
        Cmd::Output(stream, command, text) => session.send_command_output(stream, &command, &text),
        Cmd::FlushOutput(stream) => {
            session.flush_command_output(stream);
            Ok(())
        }
        Cmd::Error(error, metadata) => session.send_error(&error, &metadata),
        Cmd::Artifact { filename, filepath } => {
            let asked = session.request_artifact_upload(&filename, &filepath);
            if asked.is_err() {
                watcher.reported().forget(std::path::Path::new(&filepath));
            }
            asked
        }
        Cmd::Finish(Terminal::Query(result)) => session.finish_query(&result),
        Cmd::Finish(Terminal::Commands(result)) => session.finish_commands(&result),
        Cmd::Finish(Terminal::Fail(error, metadata)) => session.fail(&error, &metadata),
        Cmd::Finish(Terminal::Cancelled) => session.fail(CANCELLED_ERROR, &json!({})),
        Cmd::ConfirmEnd => session.confirm_end_session(),
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "runtime session refused a message");
    }
}

/// How long the end-of-session drain may wait for artifacts, by default.
pub(crate) const DEFAULT_DRAIN: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    //! The connection loop over an in-memory duplex, with tokio's clock paused: heartbeats,
    //! the write-stall limit and the end of the session, in no real time.

    use std::sync::Arc;
    use std::time::Duration;

    use futures_util::{SinkExt, StreamExt};
    use runtimeuse_tokio::tokio_tungstenite::tungstenite::Message;
    use runtimeuse_tokio::tokio_tungstenite::{self, WebSocketStream};
    use serde_json::{Value, json};
    use tokio::io::DuplexStream;

    use super::serve_stream;
    use crate::{RuntimeOptions, ScriptedHandler, Shared};

    type Client = WebSocketStream<DuplexStream>;

    /// A connection served over a duplex of `buffer` bytes; the client's end.
    async fn connect(
        options: RuntimeOptions,
        buffer: usize,
    ) -> (Client, tokio::task::JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(buffer);
        let shared = Arc::new(Shared::new(Arc::new(ScriptedHandler), options));
        let served = tokio::spawn(serve_stream(server, None, shared));
        let (ws, _) = tokio_tungstenite::client_async("ws://localhost/", client)
            .await
            .expect("handshake");
        (ws, served)
    }

    async fn send(ws: &mut Client, v: Value) {
        ws.send(Message::Text(v.to_string().into())).await.unwrap();
    }

    async fn recv(ws: &mut Client) -> Value {
        loop {
            match ws.next().await.expect("a frame").expect("read") {
                Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                Message::Close(_) => panic!("closed"),
                _ => {}
            }
        }
    }

    fn query(prompt: &str) -> Value {
        json!({
            "message_type": "invocation_message", "source_id": null, "system_prompt": "",
            "user_prompt": prompt, "model": "m", "output_format_json_schema_str": null,
            "secrets_to_redact": [], "agent_env": null, "artifacts_dirs": null,
            "artifacts_ignore_content": null, "pre_agent_invocation_commands": null,
            "post_agent_invocation_commands": null, "pre_agent_downloadables": null
        })
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_come_every_interval_while_a_request_runs() {
        let (mut ws, _served) = connect(RuntimeOptions::default(), 64 << 10).await;
        let started = tokio::time::Instant::now();
        send(&mut ws, query("SLOW:40000")).await;
        for n in 1..=2u64 {
            let beat = recv(&mut ws).await;
            assert_eq!(beat["message_type"], "heartbeat_message", "{beat}");
            assert_eq!(started.elapsed(), Duration::from_secs(15 * n));
        }
        let result = recv(&mut ws).await;
        assert_eq!(result["message_type"], "result_message", "{result}");
        assert_eq!(started.elapsed(), Duration::from_secs(40));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_nothing_is_dropped_at_the_default_stall_limit() {
        // A small duplex: the runtime's writes block once 4 KiB wait unread.
        let (mut ws, served) = connect(RuntimeOptions::default(), 4 << 10).await;
        let started = tokio::time::Instant::now();
        send(&mut ws, query("STREAM:100000")).await;
        // The client reads nothing from here on; the connection ends by itself.
        served.await.unwrap();
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(60) && waited < Duration::from_secs(61),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_end_of_a_session_is_confirmed_and_the_connection_closed() {
        let (mut ws, served) = connect(RuntimeOptions::default(), 64 << 10).await;
        send(&mut ws, query("ECHO:x")).await;
        assert_eq!(recv(&mut ws).await["message_type"], "result_message");
        send(&mut ws, json!({"message_type": "end_session_message"})).await;
        assert_eq!(
            recv(&mut ws).await["message_type"],
            "end_session_confirm_message"
        );
        served.await.unwrap();
    }
}
