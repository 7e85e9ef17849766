//! The runtime binary as a child process, for the tests that drive the real `runtimeuse`.

#![allow(dead_code)]

pub(crate) mod agents;
pub(crate) mod raw;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The runtime as a child process, killed when dropped.
pub(crate) struct Serve {
    pub(crate) child: Child,
    pub(crate) port: u16,
    log: std::path::PathBuf,
}

impl Serve {
    pub(crate) fn start(extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_limited(None, extra, env)
    }

    /// Starts the runtime, under a file descriptor limit when given.
    pub(crate) fn start_limited(nofile: Option<u32>, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_bin(env!("CARGO_BIN_EXE_runtimeuse"), nofile, extra, env)
    }

    /// Starts `bin` (a `runtimeuse` binary) as the runtime.
    pub(crate) fn start_bin(
        bin: &str,
        nofile: Option<u32>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let log = std::env::temp_dir().join(format!(
            "runtimeuse-hardening-{}-{}.log",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let mut cmd = match nofile {
            None => Command::new(bin),
            Some(n) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(bin);
                c
            }
        };
        cmd.args(["serve", "--host", "127.0.0.1", "--port", "0"]);
        // The scripted agent unless the caller names one.
        if !extra.contains(&"--agent") {
            cmd.args(["--agent", "scripted"]);
        }
        cmd.args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("listening on port"), "{line}");
        let port = line.trim().rsplit(' ').next().unwrap().parse().unwrap();
        Self { child, port, log }
    }

    pub(crate) fn rss_kb(&self) -> u64 {
        self.status_kb("VmRSS:")
    }

    /// The runtime's peak RSS so far (`VmHWM`), in KiB.
    pub(crate) fn peak_rss_kb(&self) -> u64 {
        self.status_kb("VmHWM:")
    }

    /// A field of `/proc/PID/status` counted in kB.
    fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// What the runtime logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The runtime's children that are zombies (exited, not reaped).
    pub(crate) fn zombies(&self) -> Vec<String> {
        let me = self.child.id().to_string();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid ...`: the fields after the last `)`.
            let Some((head, rest)) = stat.rsplit_once(") ") else {
                continue;
            };
            let mut fields = rest.split(' ');
            if let (Some("Z"), Some(ppid)) = (fields.next(), fields.next())
                && ppid == me
            {
                found.push(head.to_owned());
            }
        }
        found
    }

    /// Sends the runtime SIGTERM.
    pub(crate) fn sigterm(&self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    }

    /// Stops the runtime with SIGTERM (a graceful stop) and returns how it exited and what it
    /// logged.
    pub(crate) fn terminate(mut self) -> (std::process::ExitStatus, String) {
        self.sigterm();
        let status = self.child.wait().unwrap();
        (status, std::fs::read_to_string(&self.log).unwrap())
    }

    /// Stops the runtime and returns what it logged.
    pub(crate) fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
