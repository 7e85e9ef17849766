//! The request pipeline: downloads, artifact watching and pre-commands first, then the
//! handler or the command batch, then post-commands; its terminal goes to the connection loop.

use std::path::PathBuf;
use std::sync::Arc;

use runtimeuse_proto::{
    CommandBatch, CommandExecutionResult, CommandResultItem, Invocation, RequestId,
};
use serde_json::json;
use tokio::sync::watch;

use crate::artifacts::Watcher;
use crate::commands::{self, Budget, Collect, RunError};
use crate::handler::{CancelSignal, HandlerContext};
use crate::mailbox::{Cmd, Mailbox, Outbox, Terminal};
use crate::ops::CommandStatus;
use crate::{Shared, http};

/// What a request's task works with.
pub(crate) struct Env {
    outbox: Outbox,
    cancel: CancelSignal,
    watcher: Watcher,
    shared: Arc<Shared>,
}

/// A request's environment: its outbox, a fresh cancel signal (whose sender replaces the
/// connection's), the connection's watcher.
pub(crate) fn env(
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

/// Runs one command of the request, counting how it ended.
async fn run_command(
    env: &Env,
    command: &runtimeuse_proto::Command,
    collect: Collect,
) -> Result<commands::Exit, RunError> {
    let ran = commands::run(
        command,
        Some(&env.outbox),
        &env.cancel,
        collect,
        &env.shared.withheld_env,
    )
    .await;
    let status = match &ran {
        Ok(exit) if exit.code == 0 => CommandStatus::ok,
        Ok(_) => CommandStatus::failed,
        Err(RunError::Cancelled) => CommandStatus::cancelled,
        Err(RunError::Spawn(_)) => CommandStatus::not_started,
    };
    env.shared.ops.metrics.command(status);
    ran
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
        match run_command(env, c, Collect::default()).await {
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

pub(crate) async fn run_query(invocation: Invocation, env: Env) {
    tracing::debug!("request started");
    let watched = !invocation.artifacts_dirs.is_empty();
    let terminal = query_terminal(invocation, &env).await;
    finish(&env, terminal, watched).await;
}

/// Why the environment variables a request names cannot be set, if they cannot: a name that
/// is empty or holds `=` or NUL would make another variable, or none (refused, as Kubernetes
/// does). Says where, never a name or a value (either may be a secret).
fn env_fault<'a>(
    envs: impl IntoIterator<
        Item = (
            String,
            Option<&'a std::collections::BTreeMap<String, String>>,
        ),
    >,
) -> Option<Terminal> {
    for (field, env) in envs {
        let bad = env
            .into_iter()
            .flatten()
            .position(|(name, _)| name.is_empty() || name.contains(['=', '\0']));
        if let Some(position) = bad {
            return Some(failure(format!(
                "{field}: the name of variable {} (in name order) is empty or holds '=' or NUL",
                position + 1
            )));
        }
    }
    None
}

/// [`env_fault`] of every command of `commands`, named `field[i].env`.
fn commands_env<'a>(
    field: &'a str,
    commands: Option<&'a Vec<runtimeuse_proto::Command>>,
) -> impl Iterator<
    Item = (
        String,
        Option<&'a std::collections::BTreeMap<String, String>>,
    ),
> + 'a {
    commands
        .into_iter()
        .flatten()
        .enumerate()
        .map(move |(i, c)| (format!("{field}[{i}].env"), c.env.as_ref()))
}

async fn query_terminal(invocation: Invocation, env: &Env) -> Terminal {
    let envs = std::iter::once(("agent_env".to_owned(), invocation.agent_env.as_ref()))
        .chain(commands_env(
            "pre_agent_invocation_commands",
            invocation.pre_agent_invocation_commands.as_ref(),
        ))
        .chain(commands_env(
            "post_agent_invocation_commands",
            invocation.post_agent_invocation_commands.as_ref(),
        ));
    if let Some(fault) = env_fault(envs) {
        return fault;
    }
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
            metrics: Arc::clone(&env.shared.ops.metrics),
            withheld_env: Arc::clone(&env.shared.withheld_env),
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

pub(crate) async fn run_commands(batch: CommandBatch, env: Env) {
    tracing::debug!(commands = batch.commands.len(), "request started");
    let watched = !batch.artifacts_dirs.is_empty();
    let terminal = commands_terminal(batch, &env).await;
    finish(&env, terminal, watched).await;
}

/// Sends the request's terminal once the artifacts it made are uploaded, as the upstream
/// runtime does, so that a client that looks in its storage when the result arrives finds
/// them: the watched directories settle (new files reported), the client answers their upload
/// requests, and the uploads end, each within its limit. A failed or late upload is said in a
/// query result's metadata (`artifact_upload_errors`); a command result has no metadata, so
/// there it is only logged (a warning).
async fn finish(env: &Env, terminal: Terminal, watched: bool) {
    let terminal = match terminal {
        Terminal::Cancelled => Terminal::Cancelled,
        t if !watched => t,
        t => {
            let failures = uploads_done(env).await;
            match t {
                Terminal::Query(mut result) if !failures.is_empty() => {
                    let errors = serde_json::Value::from(failures);
                    match &mut result.metadata {
                        serde_json::Value::Object(m) => {
                            m.insert("artifact_upload_errors".into(), errors);
                        }
                        other => *other = json!({ "artifact_upload_errors": errors }),
                    }
                    Terminal::Query(result)
                }
                t => t,
            }
        }
    };
    let how = match &terminal {
        Terminal::Query(_) | Terminal::Commands(_) => "ok",
        Terminal::Fail(..) => "failed",
        Terminal::Cancelled => "cancelled",
    };
    tracing::info!(outcome = how, "request ended");
    let _ = env.outbox.send(Cmd::Finish(terminal)).await;
}

/// Waits for the request's artifacts to be uploaded; what failed.
async fn uploads_done(env: &Env) -> Vec<String> {
    let options = &env.shared.options;
    let started = tokio::time::Instant::now();
    env.watcher.settle(options.end_session_drain).await;
    let left = options.end_session_drain.saturating_sub(started.elapsed());
    let reported = env.watcher.reported();
    if tokio::time::timeout(left, reported.wait_all_answered())
        .await
        .is_err()
    {
        tracing::debug!("artifact upload requests unanswered when the request ended");
    }
    match env.watcher.uploads() {
        Some(uploads) => uploads.finish(options.artifact_upload_timeout).await,
        None => Vec::new(),
    }
}

async fn commands_terminal(batch: CommandBatch, env: &Env) -> Terminal {
    if let Some(fault) = env_fault(commands_env("commands", Some(&batch.commands))) {
        return fault;
    }
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
        match run_command(env, c, collect).await {
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
