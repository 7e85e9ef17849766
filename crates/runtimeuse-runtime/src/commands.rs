//! Running shell commands: output streamed in chunks, stdout collected, the whole process
//! group killed on cancel.

use std::process::Stdio;
use std::sync::Arc;

use runtimeuse_proto::{Command, OutputStream};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::connection::{Cmd, Outbox};
use crate::handler::CancelSignal;

/// Size of one read from a command's pipe, and so the largest output chunk.
const CHUNK: usize = 64 * 1024;

/// How a command ended.
#[derive(Debug)]
pub(crate) struct Exit {
    /// The exit code, `-1` when a signal ended it.
    pub(crate) code: i64,
    /// The collected stdout (up to the limit).
    pub(crate) stdout: String,
}

/// The command was cancelled (and killed), or could not start.
#[derive(Debug)]
pub(crate) enum RunError {
    Cancelled,
    Spawn(std::io::Error),
}

/// Runs `command` through `sh -c`, streaming its output to `tx` and collecting up to
/// `collect_limit` bytes of stdout.
pub(crate) async fn run(
    command: &Command,
    tx: &Outbox,
    cancel: &CancelSignal,
    collect_limit: usize,
) -> Result<Exit, RunError> {
    if let Some(cwd) = &command.cwd {
        tokio::fs::create_dir_all(cwd)
            .await
            .map_err(RunError::Spawn)?;
    }
    let mut child = tokio::process::Command::new("/bin/sh");
    child
        .arg("-c")
        .arg(&command.command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &command.cwd {
        child.current_dir(cwd);
    }
    if let Some(env) = &command.env {
        child.envs(env);
    }
    let mut child = child.spawn().map_err(RunError::Spawn)?;
    let pid = child.id();
    // Kills the whole group if this future is dropped (connection gone, runtime stopping).
    let mut guard = GroupGuard(pid);
    let name: Arc<str> = Arc::from(command.command.as_str());
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(RunError::Spawn(std::io::Error::other("no pipes")));
    };
    let work = async {
        let (collected, ()) = tokio::join!(
            pump(stdout, OutputStream::Stdout, &name, tx, collect_limit),
            async {
                pump(stderr, OutputStream::Stderr, &name, tx, 0).await;
            }
        );
        let status = child.wait().await;
        (collected, status)
    };
    tokio::select! {
        (stdout, status) = work => {
            let code = match status {
                Ok(s) => s.code().map_or(-1, i64::from),
                Err(e) => {
                    tracing::warn!(error = %e, "waiting for a command failed");
                    -1
                }
            };
            // The command ended; what it left running in its group may go on.
            guard.0 = None;
            Ok(Exit { code, stdout })
        }
        () = cancel.clone().cancelled() => Err(RunError::Cancelled),
    }
}

/// Kills the command's process group when dropped, unless disarmed.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

/// Kills the command's whole process group (it leads a group of its own).
fn kill_group(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    let group = nix::unistd::Pid::from_raw(pid);
    if let Err(e) = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL) {
        tracing::debug!(error = %e, pid, "killing the process group failed");
    }
}

/// Reads a pipe to its end, sending each read as an output chunk (UTF-8 sequences split
/// between reads are kept whole), and returns up to `limit` bytes of it.
async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    stream: OutputStream,
    command: &Arc<str>,
    tx: &Outbox,
    limit: usize,
) -> String {
    let mut collected = String::new();
    let mut truncated = false;
    let mut buf = vec![0; CHUNK];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = match pipe.read(&mut buf[carry.len()..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let end = carry.len() + n;
        buf[..carry.len()].copy_from_slice(&carry);
        carry.clear();
        let bytes = &buf[..end];
        let valid = match std::str::from_utf8(bytes) {
            Ok(_) => end,
            // An incomplete sequence at the end waits for the next read.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => end,
        };
        carry.extend_from_slice(&bytes[valid..]);
        let text = String::from_utf8_lossy(&bytes[..valid]).into_owned();
        if collected.len() + text.len() <= limit {
            collected.push_str(&text);
        } else if !truncated && limit > 0 {
            truncated = true;
            tracing::warn!(
                limit,
                "collected stdout over the limit; the rest is streamed only"
            );
        }
        if tx
            .send(Cmd::Output(stream, Arc::clone(command), text))
            .await
            .is_err()
        {
            break;
        }
    }
    if !carry.is_empty() {
        let text = String::from_utf8_lossy(&carry).into_owned();
        if collected.len() + text.len() <= limit {
            collected.push_str(&text);
        }
        let _ = tx
            .send(Cmd::Output(stream, Arc::clone(command), text))
            .await;
    }
    let _ = tx.send(Cmd::FlushOutput(stream)).await;
    collected
}
