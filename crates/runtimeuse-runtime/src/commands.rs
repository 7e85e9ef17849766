//! Running shell commands: output streamed in chunks, stdout collected, the whole process
//! group killed on cancel.

use std::process::Stdio;
use std::sync::Arc;

use runtimeuse_proto::{Command, OutputStream};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::handler::CancelSignal;
use crate::mailbox::{Cmd, Outbox};

/// Size of one read from a command's pipe, and so the largest output chunk.
const CHUNK: usize = 64 * 1024;

/// How a command ended.
#[derive(Debug)]
pub(crate) struct Exit {
    /// The exit code; `128 + N` when signal N ended the shell, as shells report it (`-1` when
    /// the status says neither).
    pub(crate) code: i64,
    /// The collected stdout (within its [`Collect`] budget).
    pub(crate) stdout: Capture,
    /// The collected stderr (within its [`Collect`] budget).
    pub(crate) stderr: Capture,
}

/// How much of each stream [`run`] keeps: `head` bytes from the start and `tail` bytes from
/// the end; what lies between is counted, not kept.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Collect {
    pub(crate) stdout: Budget,
    pub(crate) stderr: Budget,
}

/// The bytes kept of one stream.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Budget {
    pub(crate) head: usize,
    pub(crate) tail: usize,
}

/// What was kept of one stream: its start, its end, and how many bytes between them were cut.
///
/// The end is a ring of bytes (`VecDeque`): what falls out of the budget leaves its front
/// without moving the rest, so each byte is copied once however long the stream (a compacted
/// `String` moved the whole budget again and again). The ring may start inside a character;
/// that part is counted as cut when the text is taken.
#[derive(Debug, Default)]
pub(crate) struct Capture {
    head: String,
    tail: std::collections::VecDeque<u8>,
    cut: usize,
    budget: Budget,
}

impl Capture {
    pub(crate) fn new(budget: Budget) -> Self {
        Self {
            budget,
            ..Self::default()
        }
    }

    pub(crate) fn push(&mut self, mut text: &str) {
        if self.head.len() < self.budget.head {
            let room = floor_char_boundary(text, self.budget.head - self.head.len());
            self.head.push_str(&text[..room]);
            text = &text[room..];
        }
        if text.is_empty() {
            return;
        }
        if self.budget.tail == 0 {
            self.cut += text.len();
            return;
        }
        let mut bytes = text.as_bytes();
        if bytes.len() > self.budget.tail {
            // Only the end of this text can stay.
            let skip = bytes.len() - self.budget.tail;
            self.cut += self.tail.len() + skip;
            self.tail.clear();
            bytes = &bytes[skip..];
        }
        let over = (self.tail.len() + bytes.len()).saturating_sub(self.budget.tail);
        if over > 0 {
            self.tail.drain(..over);
            self.cut += over;
        }
        self.tail.extend(bytes);
    }

    /// Bytes of the ring's front that belong to a character cut in two.
    fn partial(&self) -> usize {
        self.tail
            .iter()
            .take_while(|b| (**b & 0b1100_0000) == 0b1000_0000)
            .count()
    }

    /// Bytes of the stream that were not kept.
    pub(crate) fn cut(&self) -> usize {
        self.cut + self.partial()
    }

    /// The kept text, with `marker(cut)` between the start and the end when bytes were cut.
    pub(crate) fn into_text(mut self, marker: impl FnOnce(usize) -> String) -> String {
        let partial = self.partial();
        self.cut += partial;
        self.tail.drain(..partial);
        let tail = String::from_utf8(Vec::from(self.tail))
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        if self.cut == 0 {
            self.head.push_str(&tail);
            return self.head;
        }
        let mut out = self.head;
        out.push_str(&marker(self.cut));
        out.push_str(&tail);
        out
    }
}

/// The largest char boundary of `s` at or below `i`.
fn floor_char_boundary(s: &str, i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    (0..=i).rev().find(|&b| s.is_char_boundary(b)).unwrap_or(0)
}

/// The command was cancelled (and killed), or could not start.
#[derive(Debug)]
pub(crate) enum RunError {
    Cancelled,
    Spawn(std::io::Error),
}

/// Runs `command` through `sh -c`, streaming its output to `tx` (when given) and keeping what
/// `collect` says of each stream; the `withheld` variables of the runtime's environment are
/// not passed on (the command's own `env` may set them).
pub(crate) async fn run(
    command: &Command,
    tx: Option<&Outbox>,
    cancel: &CancelSignal,
    collect: Collect,
    withheld: &[String],
) -> Result<Exit, RunError> {
    if let Some(cwd) = &command.cwd {
        tokio::fs::create_dir_all(cwd).await.map_err(|e| {
            RunError::Spawn(std::io::Error::new(
                e.kind(),
                format!("cannot create the working directory {cwd}: {e}"),
            ))
        })?;
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
    for name in withheld {
        child.env_remove(name);
    }
    if let Some(env) = &command.env {
        child.envs(env);
    }
    let mut child = Reaped::new(child.spawn().map_err(RunError::Spawn)?);
    let pid = child.id();
    // Kills the whole group if this future is dropped (connection gone, runtime stopping).
    let mut guard = GroupGuard::new(pid);
    let name: Arc<str> = Arc::from(command.command.as_str());
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(RunError::Spawn(std::io::Error::other("no pipes")));
    };
    let work = async {
        let (out, err) = tokio::join!(
            pump(stdout, OutputStream::Stdout, &name, tx, collect.stdout),
            pump(stderr, OutputStream::Stderr, &name, tx, collect.stderr),
        );
        let status = child.wait().await;
        (out, err, status)
    };
    tokio::select! {
        (stdout, stderr, status) = work => {
            let code = match status {
                Ok(s) => exit_code(s),
                Err(e) => {
                    tracing::warn!(error = %e, "waiting for a command failed");
                    -1
                }
            };
            // The command ended; what it left running in its group may go on.
            guard.disarm();
            Ok(Exit { code, stdout, stderr })
        }
        () = cancel.clone().cancelled() => Err(RunError::Cancelled),
    }
}

/// A command's exit code: its own, or `128 + N` when signal N killed it (the shell's
/// convention: what `sh -c` reports when it is the command's child that was killed).
fn exit_code(status: std::process::ExitStatus) -> i64 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => i64::from(code),
        (None, Some(signal)) => 128 + i64::from(signal),
        (None, None) => -1,
    }
}

/// The process groups of the commands and agents running now, by their leaders' ids: what
/// [`kill_process_groups`] kills.
static LIVE: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Kills the process groups of every command and agent the runtimes of this process run now
/// (SIGKILL): for a process about to exit at once (a second SIGTERM), which would otherwise
/// leave them running, since an exit runs no destructors.
pub fn kill_process_groups() {
    let live = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
    for pid in live {
        kill_group(Some(pid));
    }
}

/// Kills the command's process group when dropped, unless disarmed. Registered (for
/// [`kill_process_groups`]) from its making to its drop or disarming.
pub(crate) struct GroupGuard(Option<u32>);

impl GroupGuard {
    /// The guard of the group that `pid` leads.
    pub(crate) fn new(pid: Option<u32>) -> Self {
        if let (Some(pid), Ok(mut live)) = (pid, LIVE.lock()) {
            live.push(pid);
        }
        Self(pid)
    }

    /// The command ended: what it left running in its group may go on.
    pub(crate) fn disarm(&mut self) {
        self.forget();
        self.0 = None;
    }

    fn forget(&self) {
        if let (Some(pid), Ok(mut live)) = (self.0, LIVE.lock())
            && let Some(i) = live.iter().position(|p| *p == pid)
        {
            live.swap_remove(i);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0);
        self.forget();
    }
}

/// A child process that is reaped however its owner ends: dropped before it was waited for
/// (a cancel, a connection gone, a timeout), it is killed and waited for on a task of its
/// own. Tokio reaps a dropped child only when another child is spawned or polled, so an idle
/// runtime kept the `sh` of a cancelled command as a zombie.
pub(crate) struct Reaped(Option<tokio::process::Child>);

impl Reaped {
    pub(crate) fn new(child: tokio::process::Child) -> Self {
        Self(Some(child))
    }
}

impl std::ops::Deref for Reaped {
    type Target = tokio::process::Child;
    fn deref(&self) -> &Self::Target {
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0
            .as_mut()
            .unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let Some(mut child) = self.0.take() else {
            return;
        };
        // Waited for already (or not ours to wait for any more): nothing to reap.
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        let _ = child.start_kill();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = child.wait().await;
                });
            }
            // Outside the runtime (it is shutting down): tokio's own reaper is all there is.
            Err(_) => drop(child),
        }
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

/// Reads a pipe to its end, sending each read as an output chunk when `tx` is given (UTF-8
/// sequences split between reads are kept whole), and returns what `budget` keeps of it.
async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    stream: OutputStream,
    command: &Arc<str>,
    tx: Option<&Outbox>,
    budget: Budget,
) -> Capture {
    let mut collected = Capture::new(budget);
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
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text.to_owned(),
            Err(e) if e.error_len().is_none() => {
                // An incomplete sequence at the end waits for the next read.
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                carry.extend_from_slice(rest);
                // Valid by construction: the fast check (the lossy one goes byte by byte).
                std::str::from_utf8(valid).map_or_else(
                    |_| String::from_utf8_lossy(valid).into_owned(),
                    str::to_owned,
                )
            }
            Err(_) => String::from_utf8_lossy(bytes).into_owned(),
        };
        collected.push(&text);
        if let Some(tx) = tx
            && tx
                .send(Cmd::Output(stream, Arc::clone(command), text))
                .await
                .is_err()
        {
            break;
        }
    }
    if !carry.is_empty() {
        let text = String::from_utf8_lossy(&carry).into_owned();
        collected.push(&text);
        if let Some(tx) = tx {
            let _ = tx
                .send(Cmd::Output(stream, Arc::clone(command), text))
                .await;
        }
    }
    if let Some(tx) = tx {
        let _ = tx.send(Cmd::FlushOutput(stream)).await;
    }
    collected
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use runtimeuse_proto::OutputStream;

    use super::{Budget, Capture, pump};

    fn captured(budget: Budget, chunks: &[&str]) -> (String, usize) {
        let mut c = Capture::new(budget);
        for chunk in chunks {
            c.push(chunk);
        }
        let cut = c.cut();
        (c.into_text(|n| format!("[{n} cut]")), cut)
    }

    #[tokio::test]
    async fn a_character_split_between_reads_arrives_whole() {
        use tokio::io::AsyncReadExt;
        // "é" is C3 A9: the first read ends in the middle of it; an invalid byte after.
        let pipe = (&b"a\xc3"[..]).chain(&b"\xa9b\xff"[..]);
        let budget = Budget { head: 64, tail: 64 };
        let command: Arc<str> = Arc::from("cmd");
        let kept = pump(pipe, OutputStream::Stdout, &command, None, budget).await;
        assert_eq!(kept.into_text(|_| String::new()), "a\u{e9}b\u{fffd}");
    }

    #[test]
    fn keeps_everything_within_budget() {
        let b = Budget { head: 4, tail: 4 };
        assert_eq!(captured(b, &["ab", "cd", "ef"]), ("abcdef".to_owned(), 0));
    }

    #[test]
    fn keeps_head_and_tail_and_counts_the_cut() {
        let b = Budget { head: 3, tail: 3 };
        let chunks: Vec<String> = (0..100).map(|i| format!("{}", i % 10)).collect();
        let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
        assert_eq!(captured(b, &refs), ("012[94 cut]789".to_owned(), 94));
    }

    #[test]
    fn head_only_counts_the_rest() {
        let b = Budget { head: 2, tail: 0 };
        assert_eq!(captured(b, &["abcdef"]), ("ab[4 cut]".to_owned(), 4));
    }

    #[test]
    fn never_splits_a_character() {
        let b = Budget { head: 3, tail: 3 };
        assert_eq!(captured(b, &["éééé"]), ("é[4 cut]é".to_owned(), 4));
        let b = Budget { head: 1, tail: 1 };
        assert_eq!(captured(b, &["éé"]), ("[4 cut]".to_owned(), 4));
    }
}
