//! The artifact watcher: reports new and changed files of the watched directories once their
//! size and modification time are stable, skipping ignored paths.
//!
//! What a scan may cost is bounded: it stays on the watched directory's filesystem (as
//! `find -xdev`), refuses pseudo filesystems (`/proc`, `/sys`, …), reads at most
//! [`ScanLimits::entries`] entries, runs one at a time in the process, and the next scan of a
//! watcher waits at least three times as long as its last one took (a quarter of a core at
//! most, however large the tree).

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
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
    /// The device of its filesystem: the scan does not leave it.
    dev: u64,
}

/// Bounds of a watcher's scans.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanLimits {
    /// How often the directories are scanned, at most.
    pub(crate) interval: Duration,
    /// Most directory entries one scan reads, over all the watched directories.
    pub(crate) entries: usize,
}

/// Scans run one at a time in the process: many watchers cannot take every core.
static SCANS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Filesystems that hold no files of a request's making, and whose walk costs or hangs.
const PSEUDO: &[nix::sys::statfs::FsType] = &[
    nix::sys::statfs::PROC_SUPER_MAGIC,
    nix::sys::statfs::SYSFS_MAGIC,
    nix::sys::statfs::DEVPTS_SUPER_MAGIC,
    nix::sys::statfs::CGROUP_SUPER_MAGIC,
    nix::sys::statfs::CGROUP2_SUPER_MAGIC,
    nix::sys::statfs::DEBUGFS_MAGIC,
    nix::sys::statfs::TRACEFS_MAGIC,
    nix::sys::statfs::SECURITYFS_MAGIC,
    nix::sys::statfs::BPF_FS_MAGIC,
    nix::sys::statfs::NSFS_MAGIC,
];

/// A watched directory for `root`, or why it is not watched.
fn watched(root: PathBuf, ignore: Option<&str>) -> Result<Dir, String> {
    let shown = root.display().to_string();
    let meta = std::fs::metadata(&root).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_dir() {
        return Err(format!("{shown} is not a directory"));
    }
    match nix::sys::statfs::statfs(&root) {
        Ok(fs) if PSEUDO.contains(&fs.filesystem_type()) => {
            return Err(format!("{shown} is on a pseudo filesystem"));
        }
        _ => {}
    }
    let ignore = rules(&root, ignore);
    Ok(Dir {
        root,
        ignore,
        dev: meta.dev(),
    })
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
    limits: ScanLimits,
    reported: Reported,
}

impl Watcher {
    /// A watcher that scans within `limits` once started.
    pub(crate) fn new(limits: ScanLimits) -> Self {
        Self {
            task: Arc::new(OnceLock::new()),
            limits,
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
                self.limits,
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

async fn run(mut rx: mpsc::Receiver<Watch>, out: Outbox, asked: Reported, limits: ScanLimits) {
    let interval = limits.interval;
    let mut dirs: Vec<Arc<Dir>> = Vec::new();
    // Whether the last scan stopped at the entry limit (said once).
    let mut cut = false;
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
                        match watched(root, ignore.as_deref()) {
                            Ok(dir) => dirs.push(Arc::new(dir)),
                            Err(why) => tracing::warn!("artifacts not watched: {why}"),
                        }
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
                let Ok(_turn) = SCANS.acquire().await else { continue };
                let started = tokio::time::Instant::now();
                let (now_seen, stopped) =
                    tokio::task::spawn_blocking(move || scan(&scan_dirs, limits.entries))
                        .await
                        .unwrap_or_default();
                if stopped && !cut {
                    tracing::warn!(
                        limit = limits.entries,
                        "the artifact directories hold more entries than a scan reads; \
                         files past the limit are not reported"
                    );
                }
                cut = stopped;
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
                // A large tree is scanned less often: a quarter of a core at most.
                let took = started.elapsed();
                if took * 3 > interval {
                    tick.reset_after(took * 3);
                }
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

/// Every regular file under the directories, with its size and modification time, reading
/// at most `limit` entries and staying on each directory's filesystem; whether it stopped at
/// the limit.
fn scan(dirs: &[Arc<Dir>], limit: usize) -> (HashMap<PathBuf, Stamp>, bool) {
    let mut files = HashMap::new();
    let mut budget = limit;
    for dir in dirs {
        let mut stack = vec![dir.root.clone()];
        while let Some(path) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&path) else {
                continue;
            };
            for entry in entries.flatten() {
                if budget == 0 {
                    return (files, true);
                }
                budget -= 1;
                let path = entry.path();
                let Ok(meta) = entry.metadata() else { continue };
                if meta.dev() != dir.dev {
                    // A mount point: another filesystem (`/proc` under `/`, say).
                    continue;
                }
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
    (files, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(name: &str, files: usize) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("runtimeuse-scan-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("sub")).unwrap();
        for i in 0..files {
            std::fs::write(root.join("sub").join(format!("f{i}")), b"x").unwrap();
        }
        root
    }

    #[test]
    fn a_scan_reads_at_most_its_limit_of_entries() {
        let root = tree("limit", 30);
        let dirs = [Arc::new(watched(root.clone(), None).unwrap())];
        let (files, stopped) = scan(&dirs, 1000);
        assert_eq!((files.len(), stopped), (30, false));
        let (files, stopped) = scan(&dirs, 10);
        assert!(stopped);
        assert!(files.len() < 10, "{}", files.len());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_scan_stays_on_its_filesystem_and_pseudo_filesystems_are_not_watched() {
        let root = tree("xdev", 3);
        let mut dir = watched(root.clone(), None).unwrap();
        // As if every entry were on another filesystem (mount points, under `/`: `/proc`).
        dir.dev = dir.dev.wrapping_add(1);
        let (files, _) = scan(&[Arc::new(dir)], 1000);
        assert!(files.is_empty(), "{files:?}");
        for pseudo in ["/proc", "/sys"] {
            let err = watched(PathBuf::from(pseudo), None).err().unwrap();
            assert!(err.contains("pseudo filesystem"), "{err}");
        }
        assert!(watched(root.join("missing"), None).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
