//! One client connection: the runtime session's event loop. The requests it runs are in
//! `request`, the messages their tasks send it in `mailbox`.

use std::sync::Arc;
use std::time::Duration;

use runtimeuse_proto::resume::Refusal;
use runtimeuse_proto::resume::SESSION_HEADER;
use runtimeuse_proto::runtime::{CANCELLED_ERROR, RuntimeEvent, RuntimeSession};
use runtimeuse_proto::{ArtifactUpload, RequestId};
use runtimeuse_tokio::server::{Admit, Backlog, RuntimeConnection, Step};
use runtimeuse_tokio::tokio_tungstenite::tungstenite::handshake::server::Request;
use serde_json::json;
use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::Shared;
use crate::admission::{Evicted, Handshake, Refusal as Refused, Session};
use crate::artifacts::Watcher;
use crate::mailbox::{Cmd, Mailbox, Outbox, Room, Terminal};
use crate::ops::{self, ConnectionOutcome, Drain, Outcome, RequestKind, RequestOutcome};
use crate::request::{Env, env, run_commands, run_query};
use crate::sessions::{Attach, Kind, Owner};
use crate::stream::BoxIo;

/// How long a closed connection's cancelled request may take to end on its own.
const WIND_DOWN: Duration = Duration::from_secs(2);

/// Serves one accepted TCP connection until it ends: a WebSocket session, or the answer to
/// a plain HTTP request for one of the runtime's endpoints (`ops`). Until its handshake is
/// done it holds a place in the handshake budget, and leaves when a newer one takes it.
pub(crate) async fn serve(
    stream: TcpStream,
    shared: Arc<Shared>,
    (handshake, evicted): (Handshake, Evicted),
) {
    let metrics = &shared.ops.metrics;
    tokio::select! {
        () = serve_admitted(stream, Arc::clone(&shared), handshake) => {}
        () = evicted.wait() => {
            tracing::debug!("handshake dropped for a newer one");
            metrics.connection(ConnectionOutcome::refused);
        }
    }
}

async fn serve_admitted(mut stream: TcpStream, shared: Arc<Shared>, handshake: Handshake) {
    let peer = stream.peer_addr().ok();
    let metrics = &shared.ops.metrics;
    let head = match tokio::time::timeout(
        shared.options.handshake_timeout,
        ops::read_head(&mut stream, || handshake.talking()),
    )
    .await
    {
        Ok(Ok(head)) => head,
        Ok(Err(no)) => {
            tracing::debug!(peer = %Peer(peer), error = %no.why, "no request; dropped");
            metrics.connection(ConnectionOutcome::refused);
            shared.admission.refused(Refused::Failed, &no.why);
            no.answer(stream).await;
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %Peer(peer), "no request in time; dropped");
            metrics.connection(ConnectionOutcome::refused);
            shared
                .admission
                .refused(Refused::Failed, "no request in time");
            return;
        }
    };
    if let Some(endpoint) = head.endpoint() {
        metrics.connection(ConnectionOutcome::http);
        let token = shared.options.token.as_deref();
        ops::answer(stream, endpoint, &head, &shared.ops, token).await;
        return;
    }
    if !shared.ops.is_ready() {
        tracing::info!(peer = %Peer(peer), "a session while the runtime shuts down; refused");
        metrics.connection(ConnectionOutcome::refused);
        ops::refuse_draining(stream).await;
        return;
    }
    serve_stream(Box::new(head.replay(stream)), peer, shared, handshake).await;
}

/// The WebSocket handshake of a connection (`peer` for the log): the connection, what the
/// runtime's sessions made of it, and the session slot it took (none for a resumption);
/// `None` when it was refused or failed (counted and logged).
async fn handshake(
    stream: BoxIo,
    peer: Option<SocketAddr>,
    shared: &Shared,
    handshake: Handshake,
) -> Option<(RuntimeConnection<BoxIo>, Kind, Option<Session>)> {
    let grace = shared.options.resume_grace;
    let window = shared.options.max_buffered;
    let mut kind = Kind::Plain;
    let mut handshake = Some(handshake);
    let mut slot = None;
    let mut full = false;
    let admit = |request: &Request| {
        // A resumption takes no slot: its session holds one.
        if !request.headers().contains_key(SESSION_HEADER) {
            match handshake.take().and_then(Handshake::session) {
                Some(s) => slot = Some(s),
                None => {
                    full = true;
                    return Admit::Refuse {
                        status: 503,
                        headers: vec![("retry-after", "1".to_owned())],
                        body: "the runtime serves as many sessions as it may".to_owned(),
                    };
                }
            }
        }
        shared.sessions.admit(request, grace, window, &mut kind)
    };
    let accepted = RuntimeConnection::accept_with(stream, shared.server.clone(), admit);
    let accepted = tokio::time::timeout(shared.options.handshake_timeout, accepted).await;
    drop(handshake);
    match accepted {
        Ok(Ok(conn)) => Some((conn, kind, slot)),
        Ok(Err(e)) => {
            let error = crate::with_causes(e.to_string(), &e);
            tracing::debug!(peer = %Peer(peer), %error, "handshake refused or failed");
            shared.ops.metrics.connection(ConnectionOutcome::refused);
            let why = if full {
                Refused::SessionsFull
            } else {
                Refused::Failed
            };
            shared.admission.refused(why, &error);
            None
        }
        Err(_) => {
            tracing::debug!(peer = %Peer(peer), "handshake not completed in time; dropped");
            shared.ops.metrics.connection(ConnectionOutcome::refused);
            shared
                .admission
                .refused(Refused::Failed, "handshake not completed in time");
            None
        }
    }
}

/// Serves one connection over any byte stream (`peer` for the log) until it ends.
async fn serve_stream(
    stream: BoxIo,
    peer: Option<SocketAddr>,
    shared: Arc<Shared>,
    handshake: Handshake,
) {
    let Some((mut conn, kind, _slot)) = self::handshake(stream, peer, &shared, handshake).await
    else {
        return;
    };
    let owner = match kind {
        Kind::Plain => None,
        Kind::New(owner) => {
            conn.enable_resume(Arc::clone(&owner.window), shared.options.max_replay);
            Some(owner)
        }
        Kind::Resume(attach, received) => {
            // The socket goes to the task that owns the session; this one is done.
            tracing::info!(peer = %Peer(peer), "connection resumes a session");
            shared.ops.metrics.connection(ConnectionOutcome::served);
            if attach.send(Attach { conn, received }).await.is_err() {
                tracing::debug!("the session ended while its client resumed it");
            }
            return;
        }
    };
    tracing::info!(peer = %Peer(peer), resumable = owner.is_some(), "connection accepted");
    let opened = tokio::time::Instant::now();
    shared.ops.metrics.connection_opened();
    let mut state = State::new(conn.backlog().clone(), shared);
    let why = match owner {
        Some(owner) => serve_resumable(&mut conn, &mut state, owner).await,
        None => {
            serve_plain(&mut conn, &mut state).await;
            Refusal::Ended
        }
    };
    if let Some(c) = &state.cancel {
        let _ = c.send(true);
    }
    state.wind_down().await;
    state.abandoned();
    state.shared.ops.metrics.connection_closed();
    tracing::debug!(why = why.token(), "session over");
    tracing::info!(
        peer = %Peer(peer),
        requests = state.requests,
        duration_ms = u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX),
        "connection closed"
    );
}

/// The loop of a connection that cannot be resumed: until it ends.
async fn serve_plain(conn: &mut RuntimeConnection<BoxIo>, state: &mut State) {
    loop {
        while state.tasks.try_join_next().is_some() {}
        tokio::select! {
            event = conn.next_event() => {
                let Some(event) = event else { break };
                if !state.on_event(conn.session(), event) {
                    break;
                }
            }
            Some((request, cmd)) = state.mailbox.recv() => {
                state.apply(conn.session(), request, cmd);
            }
            Ok(()) = state.drain.changed() => state.on_drain(),
        }
        if state.closing && conn.session().request_in_flight().is_none() {
            conn.go_away().await;
            break;
        }
    }
}

/// The loop of a resumable session: it outlives a lost connection for the grace period,
/// while its request goes on and what it sends waits in the replay buffer, and takes the
/// socket of a client that resumes it. Returns why it is over.
async fn serve_resumable(
    conn: &mut RuntimeConnection<BoxIo>,
    state: &mut State,
    mut owner: Owner,
) -> Refusal {
    let grace = state.shared.options.resume_grace;
    let max_replay = state.shared.options.max_replay;
    let mut parked_until: Option<tokio::time::Instant> = None;
    // Set once the session was given up: it can no longer be resumed.
    let mut over: Option<Refusal> = None;
    loop {
        while state.tasks.try_join_next().is_some() {}
        let expiry = parked_until.unwrap_or_else(far_future);
        tokio::select! {
            step = conn.next() => match step {
                None => break,
                Some(Step::Event(event)) => {
                    if !state.on_event(conn.session(), event) {
                        break;
                    }
                }
                Some(Step::Detached) => {
                    tracing::info!(grace = ?grace, "connection lost; the session waits to be resumed");
                    parked_until = Some(tokio::time::Instant::now() + grace);
                }
            },
            Some((request, cmd)) = state.mailbox.recv() => {
                state.apply(conn.session(), request, cmd);
                if conn.is_detached() && conn.replay_bytes() > max_replay {
                    tracing::info!(limit = max_replay, "replay buffer full while no client was attached; request cancelled");
                    give_up(conn, state, &owner, Refusal::Overflowed, &mut over);
                    parked_until = None;
                }
            }
            Some(Attach { conn: socket, received }) = owner.attach.recv() => {
                if let Some(refusal) = over {
                    socket.refuse(refusal).await;
                    continue;
                }
                match conn.resume(socket, received).await {
                    Ok(()) => {
                        tracing::info!(received, "session resumed");
                        parked_until = None;
                    }
                    Err(refusal) => tracing::info!(why = refusal.token(), "resumption refused"),
                }
            }
            () = tokio::time::sleep_until(expiry), if parked_until.is_some() => {
                tracing::info!("session not resumed within the grace period; request cancelled");
                give_up(conn, state, &owner, Refusal::Expired, &mut over);
                parked_until = None;
            }
            Ok(()) = state.drain.changed() => {
                state.on_drain();
                if conn.is_detached() && over.is_none() {
                    tracing::info!("the runtime shuts down; the session waiting to be resumed is given up");
                    give_up(conn, state, &owner, Refusal::Ended, &mut over);
                    parked_until = None;
                }
            }
        }
        if state.closing && !conn.is_detached() && conn.session().request_in_flight().is_none() {
            conn.go_away().await;
            break;
        }
    }
    let why = over.unwrap_or(Refusal::Ended);
    state.shared.sessions.remove(&owner.id, why);
    why
}

/// Gives a detached session up: no client can resume it from now on (told `why`), and it
/// ends as if its connection had just closed.
fn give_up(
    conn: &mut RuntimeConnection<BoxIo>,
    state: &State,
    owner: &Owner,
    why: Refusal,
    over: &mut Option<Refusal>,
) {
    state.shared.sessions.remove(&owner.id, why);
    *over = Some(why);
    conn.abandon();
}

/// An instant no grace period reaches (a disabled branch of `select!` still needs one).
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

/// A peer's address for the log (`unknown` when the socket could not say).
struct Peer(Option<SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("unknown"),
        }
    }
}

/// A connection's state beside its socket: the tasks of its requests and what they share.
struct State {
    shared: Arc<Shared>,
    mailbox: Mailbox,
    watcher: Watcher,
    /// Cancels the request in flight.
    cancel: Option<watch::Sender<bool>>,
    tasks: JoinSet<()>,
    /// Requests served, for the log.
    requests: u64,
    /// The request in flight, its kind and its start, for the metrics.
    running: Option<(RequestId, RequestKind, tokio::time::Instant)>,
    /// The runtime's shutdown, as it goes on.
    drain: watch::Receiver<Drain>,
    /// The runtime drains: the connection closes (1001) once no request is in flight.
    closing: bool,
}

impl State {
    fn new(backlog: Backlog, shared: Arc<Shared>) -> Self {
        let options = &shared.options;
        let room = Room::new(backlog, options.max_buffered, options.max_buffered_total);
        Self {
            mailbox: Mailbox::new(room),
            watcher: Watcher::new(crate::artifacts::ScanLimits {
                interval: options.artifact_scan_interval,
                entries: options.artifact_scan_entries,
            }),
            cancel: None,
            tasks: JoinSet::new(),
            requests: 0,
            running: None,
            drain: shared.ops.watch_drain(),
            closing: false,
            shared,
        }
    }

    /// The runtime's shutdown moved on: from now on the connection closes once no request is
    /// in flight; once the grace is over, the request in flight is cancelled.
    fn on_drain(&mut self) {
        match *self.drain.borrow_and_update() {
            Drain::Serving => {}
            Drain::Draining => self.closing = true,
            Drain::Cancelling => {
                self.closing = true;
                if let Some(c) = &self.cancel {
                    tracing::info!("the runtime shuts down; the request in flight is cancelled");
                    let _ = c.send(true);
                }
            }
        }
    }

    /// Applies a request task's message to the session, noting a request's end.
    fn apply(&mut self, session: &mut RuntimeSession, request: Option<RequestId>, cmd: Cmd) {
        if let (Cmd::Finish(terminal), Some(id)) = (&cmd, request)
            && let Some((running, kind, started)) = self.running
            && running == id
        {
            let outcome = match terminal {
                Terminal::Query(_) | Terminal::Commands(_) => RequestOutcome::ok,
                Terminal::Cancelled => RequestOutcome::cancelled,
                Terminal::Fail(_, metadata) if is_timeout(metadata) => RequestOutcome::timeout,
                Terminal::Fail(..) => RequestOutcome::error,
            };
            self.running = None;
            (self.shared.ops.metrics).request_ended(kind, outcome, started.elapsed());
        }
        apply(session, &self.watcher, request, cmd);
    }

    /// The connection is over and its request cancelled: the request's task gets a moment
    /// ([`WIND_DOWN`]) to end on its own, as a cancel from the client would end it (its
    /// processes killed and reaped, its end logged), before it is dropped. Nothing it sends
    /// waits any more: the mailbox is closed.
    async fn wind_down(&mut self) {
        self.mailbox.close();
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(WIND_DOWN, all).await.is_err() {
            tracing::debug!("a request task did not end within the wind-down; dropped");
        }
    }

    /// The connection ended: a request still running is counted as cancelled.
    fn abandoned(&mut self) {
        if let Some((_, kind, started)) = self.running.take() {
            (self.shared.ops.metrics).request_ended(
                kind,
                RequestOutcome::cancelled,
                started.elapsed(),
            );
        }
    }

    /// Handles one event of the client; `false` once the connection ends.
    fn on_event(&mut self, session: &mut RuntimeSession, event: RuntimeEvent) -> bool {
        match event {
            RuntimeEvent::Invocation { request, .. } | RuntimeEvent::Commands { request, .. }
                if self.closing =>
            {
                tracing::info!("a request while the runtime shuts down; refused");
                let metadata = json!({ "error_name": "ShuttingDown" });
                if let Err(e) = session.fail("the runtime is shutting down", &metadata) {
                    tracing::debug!(error = %e, request = request.as_u64(), "could not refuse");
                }
            }
            RuntimeEvent::Invocation {
                request,
                invocation,
            } => {
                let env = self.env(request, RequestKind::query);
                let span = request_span(request, RequestKind::query);
                self.tasks
                    .spawn(run_query(invocation, env).instrument(span));
            }
            RuntimeEvent::Commands { request, batch } => {
                let env = self.env(request, RequestKind::commands);
                let span = request_span(request, RequestKind::commands);
                self.tasks.spawn(run_commands(batch, env).instrument(span));
            }
            RuntimeEvent::Cancel { .. } => {
                if let Some(c) = &self.cancel {
                    let _ = c.send(true);
                }
            }
            RuntimeEvent::ArtifactUploadResponse {
                filepath, upload, ..
            } => self.upload_answered(session, filepath, upload),
            RuntimeEvent::EndSession => {
                tracing::debug!("end of session asked");
                let outbox = self.mailbox.outbox(None);
                let drain = self.shared.options.end_session_drain;
                self.tasks
                    .spawn(confirm_end(self.watcher.clone(), outbox, drain));
            }
            RuntimeEvent::Closed => return false,
            other => tracing::debug!(?other, "ignored event"),
        }
        true
    }

    fn env(&mut self, request: RequestId, kind: RequestKind) -> Env {
        self.requests += 1;
        self.abandoned();
        self.running = Some((request, kind, tokio::time::Instant::now()));
        self.shared.ops.metrics.request_started();
        env(
            &mut self.mailbox,
            request,
            &self.watcher,
            &self.shared,
            &mut self.cancel,
        )
    }

    /// The client gave the URL for an artifact: the upload starts.
    fn upload_answered(&self, session: &RuntimeSession, filepath: String, upload: ArtifactUpload) {
        let redactor = session.redactor();
        tracing::debug!(filepath = %redactor.redact(&filepath), "artifact upload answered");
        let path = std::path::PathBuf::from(&filepath);
        // Counted as running before it counts as answered: a request that waits for its
        // uploads sees it either way.
        match self.watcher.uploads() {
            Some(uploads) => {
                let shared = Arc::clone(&self.shared);
                uploads.start(filepath, upload, redactor, move |ok| {
                    let outcome = if ok { Outcome::ok } else { Outcome::failed };
                    shared.ops.metrics.artifact_upload(outcome);
                });
            }
            None => tracing::debug!("upload answer without a watcher; ignored"),
        }
        self.watcher.reported().answered(&path);
    }
}

/// Confirms the end of the session once the artifacts are in: files still being written get
/// reported, and every upload request gets its answer (the client may answer after it asked
/// to end), within `drain`.
async fn confirm_end(watcher: Watcher, outbox: Outbox, drain: Duration) {
    if watcher.ever_watched() {
        let started = tokio::time::Instant::now();
        watcher.settle(drain).await;
        let left = drain.saturating_sub(started.elapsed());
        let reported = watcher.reported();
        if tokio::time::timeout(left, reported.wait_all_answered())
            .await
            .is_err()
        {
            tracing::warn!("artifact upload requests left unanswered at the end of the session");
        }
    }
    let _ = outbox.send(Cmd::ConfirmEnd).await;
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

/// The span of a request's task: its id and kind on every line it logs (inside the
/// connection's span).
fn request_span(request: RequestId, kind: RequestKind) -> tracing::Span {
    tracing::info_span!("request", id = request.as_u64(), kind = ?kind)
}

/// Whether a failure's metadata names a timeout (`TimeoutError`, `ProviderTimeout`, …).
fn is_timeout(metadata: &serde_json::Value) -> bool {
    metadata
        .get("error_name")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|name| name.to_ascii_lowercase().contains("timeout"))
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
        let shared = Arc::new(Shared::new(Arc::new(ScriptedHandler), options));
        connect_to(shared, buffer).await
    }

    async fn connect_to(
        shared: Arc<Shared>,
        buffer: usize,
    ) -> (Client, tokio::task::JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(buffer);
        let (handshake, _) = shared.admission.handshake(false, false).expect("room");
        let served = tokio::spawn(serve_stream(Box::new(server), None, shared, handshake));
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
    async fn agent_output_waits_for_a_client_that_does_not_read() {
        let shared = Arc::new(Shared::new(
            Arc::new(ScriptedHandler),
            RuntimeOptions::default(),
        ));
        let total = shared.server.total_backlog.clone().expect("a total");
        let (mut ws, _served) = connect_to(Arc::clone(&shared), 4 << 10).await;
        // A million assistant messages for a client that reads none of them.
        send(&mut ws, query("STREAM:1000000")).await;
        // The paused clock moves only once every task waits: the agent then waits for room.
        tokio::time::sleep(Duration::from_secs(30)).await;
        let held = total.bytes();
        assert!(held > 0, "the agent produced nothing");
        // The default limit is 1 MiB. Producers count a message's text; it becomes a frame
        // with its JSON envelope once the loop takes it, so a few KiB may go past the limit.
        assert!(held <= (1 << 20) + (8 << 10), "{held} bytes held");
        // Reading lets it go on.
        assert_eq!(recv(&mut ws).await["message_type"], "assistant_message");
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
