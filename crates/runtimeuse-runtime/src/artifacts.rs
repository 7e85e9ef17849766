//! The artifact watcher: reports new and changed files of the watched directories once their
//! size and modification time are stable, skipping ignored paths.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use tokio::sync::{mpsc, oneshot, watch};

use crate::mailbox::{Cmd, Outbox};
use crate::uploads::Uploads;

/// Ignored when neither `artifacts_ignore_content` nor a `.artifactignore` says otherwise.
pub const DEFAULT_IGNORE: &str =
    "node_modules/\n.venv/\nvenv/\nenv/\n.env/\ndist/\n__pycache__/\n.pytest_cache/\n";

/// The artifacts reported so far on a connection, and those the client answered, for handlers
/// that wait until a file they wrote is on its way.
#[derive(Debug, Clone)]
pub(crate) struct Reported {
    answered: Arc<Mutex<HashSet<PathBuf>>>,
    /// Upload requests sent and not answered yet.
    asked: Arc<Mutex<HashSet<PathBuf>>>,
    changed: watch::Receiver<u64>,
    notify: Arc<watch::Sender<u64>>,
}

impl Reported {
    fn new() -> Self {
        let (tx, rx) = watch::channel(0);
        Self {
            answered: Arc::new(Mutex::new(HashSet::new())),
            asked: Arc::new(Mutex::new(HashSet::new())),
            changed: rx,
            notify: Arc::new(tx),
        }
    }

    /// Records that the client was asked where to upload `path`.
    pub(crate) fn asked(&self, path: &Path) {
        if let Ok(mut a) = self.asked.lock() {
            a.insert(path.to_path_buf());
        }
    }

    /// Forgets a request that could not be sent.
    pub(crate) fn forget(&self, path: &Path) {
        if let Ok(mut a) = self.asked.lock() {
            a.remove(path);
        }
        self.notify.send_modify(|g| *g += 1);
    }

    /// Records the client's answer for `path`.
    pub(crate) fn answered(&self, path: &Path) {
        if let Ok(mut a) = self.answered.lock() {
            a.insert(path.to_path_buf());
        }
        if let Ok(mut a) = self.asked.lock() {
            a.remove(path);
        }
        self.notify.send_modify(|g| *g += 1);
    }

    /// Resolves once every upload request sent so far has its answer.
    pub(crate) async fn wait_all_answered(&self) {
        let mut changed = self.changed.clone();
        loop {
            if self.asked.lock().map(|a| a.is_empty()).unwrap_or(true) {
                return;
            }
            if changed.changed().await.is_err() {
                return;
            }
        }
    }

    /// Resolves once the client answered the upload request for `path`.
    pub(crate) async fn wait_for(&self, path: &Path) {
        let mut changed = self.changed.clone();
        loop {
            if self
                .answered
                .lock()
                .map(|p| p.contains(path))
                .unwrap_or(true)
            {
                return;
            }
            if changed.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Messages to the watcher task.
#[derive(Debug)]
pub(crate) enum Watch {
    /// Watch these directories (with these ignore rules, if given).
    Add(Vec<PathBuf>, Option<String>),
    /// Answer once every watched file is reported and stable (or at the deadline).
    Settle(Duration, oneshot::Sender<()>),
}

struct Dir {
    root: PathBuf,
    ignore: Gitignore,
}

type Stamp = (u64, Option<SystemTime>);

/// What a watcher makes when it starts: its task's inbox and the uploads of what it reports.
#[derive(Debug)]
struct Started {
    tx: mpsc::Sender<Watch>,
    uploads: Uploads,
}

/// Handle of a connection's watcher. Its task starts with the first directory to watch, so
/// that a connection that never watches one (most) costs no task nor channel.
#[derive(Debug, Clone)]
pub(crate) struct Watcher {
    task: Arc<OnceLock<Started>>,
    interval: Duration,
    reported: Reported,
}

impl Watcher {
    /// A watcher that scans every `interval` once started.
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            task: Arc::new(OnceLock::new()),
            interval,
            reported: Reported::new(),
        }
    }

    pub(crate) fn reported(&self) -> Reported {
        self.reported.clone()
    }

    /// Watches `dirs` too. The first call starts the task, which reports to the session
    /// `via` speaks to, as [`Cmd::Artifact`] messages of the session itself (of no request).
    pub(crate) async fn add(&self, via: &Outbox, dirs: Vec<PathBuf>, ignore: Option<String>) {
        if dirs.is_empty() {
            return;
        }
        let started = self.task.get_or_init(|| {
            let (tx, rx) = mpsc::channel(16);
            tokio::spawn(run(
                rx,
                via.of_session(),
                self.reported.clone(),
                self.interval,
            ));
            Started {
                tx,
                uploads: Uploads::default(),
            }
        });
        let _ = started.tx.send(Watch::Add(dirs, ignore)).await;
    }

    /// The uploads of what this watcher reported (none before it started).
    pub(crate) fn uploads(&self) -> Option<&Uploads> {
        self.task.get().map(|s| &s.uploads)
    }

    /// Whether any directory was ever watched on this connection.
    pub(crate) fn ever_watched(&self) -> bool {
        self.task.get().is_some()
    }

    /// Waits until every watched file is reported and stable, at most `limit`.
    pub(crate) async fn settle(&self, limit: Duration) {
        let Some(started) = self.task.get() else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        if started.tx.send(Watch::Settle(limit, tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(mut rx: mpsc::Receiver<Watch>, out: Outbox, asked: Reported, interval: Duration) {
    let mut dirs: Vec<Arc<Dir>> = Vec::new();
    // Last report per file, and the stamp seen at the previous scan.
    let mut reported: HashMap<PathBuf, Stamp> = HashMap::new();
    let mut seen: HashMap<PathBuf, Stamp> = HashMap::new();
    let mut settling: Vec<(tokio::time::Instant, oneshot::Sender<()>)> = Vec::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = rx.recv() => match message {
                None => return,
                Some(Watch::Add(new, ignore)) => {
                    for root in new {
                        if dirs.iter().any(|d| d.root == root) {
                            continue;
                        }
                        let ignore = rules(&root, ignore.as_deref());
                        dirs.push(Arc::new(Dir { root, ignore }));
                    }
                    tick.reset_immediately();
                }
                Some(Watch::Settle(limit, done)) => {
                    settling.push((tokio::time::Instant::now() + limit, done));
                    tick.reset_immediately();
                }
            },
            _ = tick.tick() => {
                if dirs.is_empty() {
                    for (_, done) in settling.drain(..) {
                        let _ = done.send(());
                    }
                    continue;
                }
                let scan_dirs = dirs.clone();
                let now_seen = tokio::task::spawn_blocking(move || scan(&scan_dirs))
                    .await
                    .unwrap_or_default();
                let mut unsettled = false;
                for (path, stamp) in &now_seen {
                    let stable = seen.get(path) == Some(stamp);
                    let new = reported.get(path) != Some(stamp);
                    if new && stable {
                        reported.insert(path.clone(), *stamp);
                        // Recorded before the request leaves, so that a settled watcher
                        // never hides a request still on its way.
                        asked.asked(path);
                        report(&out, path).await;
                    } else if new {
                        unsettled = true;
                    }
                }
                seen = now_seen;
                let now = tokio::time::Instant::now();
                settling.retain_mut(|(deadline, _)| unsettled && *deadline > now);
                // Dropping the sender of a settled waiter wakes it (retain_mut keeps only the
                // ones still waiting).
            }
        }
    }
}

async fn report(out: &Outbox, path: &Path) {
    let filename = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let filepath = path.to_string_lossy().into_owned();
    tracing::debug!(%filepath, "artifact ready");
    let _ = out.send(Cmd::Artifact { filename, filepath }).await;
}

fn rules(root: &Path, content: Option<&str>) -> Gitignore {
    let from_file = std::fs::read_to_string(root.join(".artifactignore")).ok();
    let text = content
        .map(str::to_owned)
        .or(from_file)
        .unwrap_or_else(|| DEFAULT_IGNORE.to_owned());
    let mut builder = GitignoreBuilder::new(root);
    for line in text.lines() {
        if let Err(e) = builder.add_line(None, line) {
            tracing::warn!(error = %e, line, "bad artifact ignore rule");
        }
    }
    builder.build().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "artifact ignore rules unusable; ignoring nothing");
        Gitignore::empty()
    })
}

/// Every regular file under the directories, with its size and modification time.
fn scan(dirs: &[Arc<Dir>]) -> HashMap<PathBuf, Stamp> {
    let mut files = HashMap::new();
    for dir in dirs {
        let mut stack = vec![dir.root.clone()];
        while let Some(path) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&path) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(meta) = entry.metadata() else { continue };
                let is_dir = meta.is_dir();
                if dir
                    .ignore
                    .matched_path_or_any_parents(&path, is_dir)
                    .is_ignore()
                    || path.file_name().is_some_and(|n| n == ".artifactignore")
                {
                    continue;
                }
                if is_dir {
                    stack.push(path);
                } else if meta.is_file() {
                    files.insert(path, (meta.len(), meta.modified().ok()));
                }
            }
        }
    }
    files
}
