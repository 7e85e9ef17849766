//! One client connection: the runtime session's event loop, and the requests it runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use runtimeuse_proto::runtime::{CANCELLED_ERROR, RuntimeEvent, RuntimeSession};
use runtimeuse_proto::{
    CommandBatch, CommandExecutionResult, CommandResultItem, Invocation, OutputStream, QueryResult,
    RequestId,
};
use runtimeuse_tokio::server::{Backlog, RuntimeConnection};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::artifacts::Watcher;
use crate::commands::{self, Budget, Collect, RunError};
use crate::handler::{CancelSignal, HandlerContext};
use crate::{Shared, http};

/// What request tasks ask of the connection loop.
#[derive(Debug)]
pub(crate) enum Cmd {
    Assistant(Vec<String>),
    Output(OutputStream, Arc<str>, String),
    FlushOutput(OutputStream),
    Error(String, Value),
    Artifact { filename: String, filepath: String },
    Finish(Terminal),
    ConfirmEnd,
}

/// How a request ended.
#[derive(Debug)]
pub(crate) enum Terminal {
    Query(QueryResult),
    Commands(CommandExecutionResult),
    Fail(String, Value),
    Cancelled,
}

impl Cmd {
    /// The bytes of client-bound text it carries, as counted in the connection's backlog.
    fn bytes(&self) -> usize {
        match self {
            Cmd::Assistant(blocks) => blocks.iter().map(String::len).sum(),
            Cmd::Output(_, _, text) => text.len(),
            Cmd::Error(error, _) => error.len(),
            _ => 0,
        }
    }
}

type Message = (Option<RequestId>, Cmd);

/// When a connection's producers may hand it more output: while its backlog is under its
/// limit, and the server's total under its own; over the total, only connections that hold
/// little (under [`Room::floor`]) go on, so that the ones holding the most stall first and a
/// new, small request is still served.
#[derive(Debug, Clone)]
pub(crate) struct Room {
    backlog: Backlog,
    max: usize,
    max_total: usize,
}

impl Room {
    pub(crate) fn new(backlog: Backlog, max: usize, max_total: usize) -> Self {
        Self {
            backlog,
            max,
            max_total,
        }
    }

    /// What a connection may hold and still go on while the total is over its limit.
    fn floor(&self) -> usize {
        (self.max / 16).min(64 << 10)
    }

    fn has_room(&self, backlog: &Backlog) -> bool {
        let mine = backlog.bytes();
        mine < self.max
            && backlog
                .total()
                .is_none_or(|t| t.bytes() < self.max_total || mine < self.floor())
    }
}

/// A sender tagged with the request it speaks for (`None`: the session itself).
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Message>,
    request: Option<RequestId>,
    room: Room,
}

impl Outbox {
    /// Hands `cmd` to the connection, first waiting for room when it carries output: a client
    /// that reads slowly slows what produces its output (a command then blocks writing to its
    /// pipe), instead of filling memory.
    pub(crate) async fn send(&self, cmd: Cmd) -> Result<(), ()> {
        let bytes = cmd.bytes();
        if bytes > 0 {
            let room = &self.room;
            room.backlog.wait_until(|b| room.has_room(b)).await;
            room.backlog.add(bytes);
        }
        let sent = self.tx.send((self.request, cmd)).await;
        if let Err(mpsc::error::SendError((_, cmd))) = sent {
            self.room.backlog.sub(cmd.bytes());
            return Err(());
        }
        Ok(())
    }

    /// An outbox to the same connection that speaks for the session itself.
    pub(crate) fn of_session(&self) -> Outbox {
        Outbox {
            tx: self.tx.clone(),
            request: None,
            room: self.room.clone(),
        }
    }
}

/// The channel through which a connection's tasks speak to its loop, made when first needed:
/// tokio allocates a channel's first block of 32 slots up front (2.6 KB of `Message`s), which
/// an idle connection then does not pay.
struct Mailbox {
    channel: Option<(mpsc::Sender<Message>, mpsc::Receiver<Message>)>,
    room: Room,
}

impl Mailbox {
    fn new(room: Room) -> Self {
        Self {
            channel: None,
            room,
        }
    }

    fn outbox(&mut self, request: Option<RequestId>) -> Outbox {
        let (tx, _) = self.channel.get_or_insert_with(|| mpsc::channel(64));
        Outbox {
            tx: tx.clone(),
            request,
            room: self.room.clone(),
        }
    }

    /// The next message, no longer counted in the backlog (the session's frames count from
    /// now on); pending forever while there is no channel. Never `None`: the mailbox keeps a
    /// sender.
    async fn recv(&mut self) -> Option<Message> {
        let message = match &mut self.channel {
            Some((_, rx)) => rx.recv().await,
            None => std::future::pending().await,
        };
        if let Some((_, cmd)) = &message {
            self.room.backlog.sub(cmd.bytes());
        }
        message
    }
}

/// Serves one accepted TCP connection until it ends.
pub(crate) async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let peer = stream.peer_addr().ok();
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
                        watcher.reported().answered(std::path::Path::new(&filepath));
                        // Detached: an upload outlives the connection that asked for it.
                        tokio::spawn(http::upload(filepath, upload, redactor));
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

struct Env {
    outbox: Outbox,
    cancel: CancelSignal,
    watcher: Watcher,
    shared: Arc<Shared>,
}

fn env(
    mailbox: &mut Mailbox,
    request: RequestId,
    watcher: &Watcher,
    shared: &Arc<Shared>,
    cancel: &mut Option<watch::Sender<bool>>,
) -> Env {
    let (cancel_tx, signal) = CancelSignal::new();
    *cancel = Some(cancel_tx);
    Env {
        outbox: mailbox.outbox(Some(request)),
        cancel: signal,
        watcher: watcher.clone(),
        shared: Arc::clone(shared),
    }
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

fn failure(message: String) -> Terminal {
    Terminal::Fail(message, json!({ "error_name": "Error" }))
}

/// Downloads and starts watching artifacts: what every request does first.
async fn prepare(
    env: &Env,
    downloads: Option<&Vec<runtimeuse_proto::Downloadable>>,
    dirs: &[String],
    ignore: Option<&String>,
) -> Result<(), Terminal> {
    for d in downloads.into_iter().flatten() {
        let download = http::download(d);
        tokio::select! {
            r = download => r.map_err(failure)?,
            () = env.cancel.clone().cancelled() => return Err(Terminal::Cancelled),
        }
    }
    let dirs: Vec<PathBuf> = dirs.iter().map(PathBuf::from).collect();
    for d in &dirs {
        if let Err(e) = tokio::fs::create_dir_all(d).await {
            tracing::warn!(dir = %d.display(), error = %e, "cannot create artifacts directory");
        }
    }
    env.watcher.add(&env.outbox, dirs, ignore.cloned()).await;
    Ok(())
}

/// Runs pre- or post-commands; the first failure fails the request.
async fn hooks(
    env: &Env,
    list: Option<&Vec<runtimeuse_proto::Command>>,
    when: &str,
) -> Result<(), Terminal> {
    for c in list.into_iter().flatten() {
        match commands::run(c, Some(&env.outbox), &env.cancel, Collect::default()).await {
            Ok(exit) if exit.code == 0 => {}
            Ok(exit) => {
                return Err(failure(format!(
                    "{when}-agent command failed with exit code: {}",
                    exit.code
                )));
            }
            Err(RunError::Cancelled) => return Err(Terminal::Cancelled),
            Err(RunError::Spawn(e)) => {
                return Err(failure(format!("{when}-agent command could not run: {e}")));
            }
        }
    }
    Ok(())
}

async fn run_query(invocation: Invocation, env: Env) {
    let terminal = query_terminal(invocation, &env).await;
    let _ = env.outbox.send(Cmd::Finish(terminal)).await;
}

async fn query_terminal(invocation: Invocation, env: &Env) -> Terminal {
    let steps = async {
        prepare(
            env,
            invocation.pre_agent_downloadables.as_ref(),
            &invocation.artifacts_dirs,
            invocation.artifacts_ignore_content.as_ref(),
        )
        .await?;
        hooks(
            env,
            invocation.pre_agent_invocation_commands.as_ref(),
            "pre",
        )
        .await?;
        let ctx = HandlerContext {
            outbox: env.outbox.clone(),
            cancel: env.cancel.clone(),
            reported: env.watcher.reported(),
            artifacts_dirs: invocation
                .artifacts_dirs
                .iter()
                .map(PathBuf::from)
                .collect(),
        };
        let post = invocation.post_agent_invocation_commands.clone();
        let handler = Arc::clone(&env.shared.handler);
        let result = tokio::select! {
            r = handler.run(invocation, ctx) => r,
            () = env.cancel.clone().cancelled() => return Err(Terminal::Cancelled),
        };
        if env.cancel.is_cancelled() {
            return Err(Terminal::Cancelled);
        }
        let result = result.map_err(|e| Terminal::Fail(e.message, e.metadata))?;
        hooks(env, post.as_ref(), "post").await?;
        Ok(Terminal::Query(result))
    };
    steps.await.unwrap_or_else(|t| t)
}

async fn run_commands(batch: CommandBatch, env: Env) {
    let terminal = commands_terminal(batch, &env).await;
    let _ = env.outbox.send(Cmd::Finish(terminal)).await;
}

async fn commands_terminal(batch: CommandBatch, env: &Env) -> Terminal {
    if let Err(t) = prepare(
        env,
        batch.pre_execution_downloadables.as_ref(),
        &batch.artifacts_dirs,
        batch.artifacts_ignore_content.as_ref(),
    )
    .await
    {
        return t;
    }
    // One budget for the whole result frame: each command keeps the end of its stdout (where
    // errors are) within what the earlier ones left.
    let mut remaining = env.shared.options.max_collected_stdout;
    let mut results = Vec::new();
    for c in &batch.commands {
        let collect = Collect {
            stdout: Budget {
                head: 0,
                tail: remaining,
            },
            stderr: Budget::default(),
        };
        match commands::run(c, Some(&env.outbox), &env.cancel, collect).await {
            Ok(exit) => {
                let failed = exit.code != 0;
                let cut = exit.stdout.cut();
                let stdout = fit_stdout(exit.stdout.into_text(|_| String::new()), cut, remaining);
                remaining = remaining.saturating_sub(json_len(&stdout));
                let stdout = (!stdout.is_empty()).then_some(stdout);
                results.push(CommandResultItem::new(c.command.clone(), exit.code, stdout));
                if failed {
                    break;
                }
            }
            Err(RunError::Cancelled) => return Terminal::Cancelled,
            Err(RunError::Spawn(e)) => return failure(format!("command could not run: {e}")),
        }
    }
    Terminal::Commands(CommandExecutionResult::new(results))
}

/// The end of `tail` that fits `budget` bytes once escaped as a JSON string, behind a line
/// saying how much was cut (`cut` bytes were cut already) when anything was.
fn fit_stdout(tail: String, cut: usize, budget: usize) -> String {
    const RESERVE: usize = 160;
    if cut == 0 && json_len(&tail) <= budget {
        return tail;
    }
    let room = budget.saturating_sub(RESERVE);
    let mut size = 0;
    let mut start = tail.len();
    for (i, c) in tail.char_indices().rev() {
        size += escaped_len(c);
        if size > room {
            break;
        }
        start = i;
    }
    let cut = cut + start;
    tracing::debug!(
        cut,
        "collected stdout over the result budget; its end is kept"
    );
    format!(
        "[runtimeuse: the first {cut} bytes of this stdout are cut to fit the result; \
         they were streamed in full]\n{}",
        &tail[start..]
    )
}

/// The length of `s` as a JSON string's contents (serde_json's escaping).
fn json_len(s: &str) -> usize {
    s.chars().map(escaped_len).sum()
}

fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if u32::from(c) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// How long the end-of-session drain may wait for artifacts, by default.
pub(crate) const DEFAULT_DRAIN: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::{fit_stdout, json_len};

    #[test]
    fn stdout_within_the_budget_is_kept_whole() {
        assert_eq!(fit_stdout("a\nb".into(), 0, 10), "a\nb");
    }

    #[test]
    fn stdout_over_the_budget_keeps_its_end_and_says_so() {
        let text: String = (1..=2000).map(|i| format!("{i}\n")).collect();
        let fitted = fit_stdout(text.clone(), 0, 1000);
        assert!(json_len(&fitted) <= 1000, "{}", json_len(&fitted));
        assert!(fitted.ends_with("1999\n2000\n"));
        let kept = fitted.split_once("]\n").unwrap().1;
        let cut = text.len() - kept.len();
        assert!(
            fitted.starts_with(&format!("[runtimeuse: the first {cut} bytes")),
            "{fitted}"
        );
        // Control characters count as escaped.
        assert_eq!(json_len("\u{1}\"é"), 6 + 2 + 2);
    }
}
