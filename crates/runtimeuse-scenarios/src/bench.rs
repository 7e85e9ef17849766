//! What the benches share: servers run as child processes of the bench binary itself (so
//! that each side's memory and CPU are its own), and argument parsing.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;

use runtimeuse_runtime::{Runtime, RuntimeOptions, ScriptedHandler};

/// Serves the project's runtime (scripted handler) with `options` on an ephemeral loopback
/// port, prints its URL on stdout, and serves until the process is killed: the body of a
/// bench's server child.
pub fn serve_runtime(options: RuntimeOptions) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    rt.block_on(async {
        let bound = Runtime::new(ScriptedHandler)
            .options(options)
            .bind("127.0.0.1:0")
            .await
            .expect("bind");
        // The parent reads the URL from this line.
        #[allow(clippy::print_stdout)]
        {
            println!("{}", bound.url());
        }
        bound.serve(std::future::pending()).await.expect("serve");
    });
}

/// A server child: this executable run with `args`, whose first line of output is its URL.
/// Dropping it kills the child.
#[derive(Debug)]
pub struct ServerChild {
    child: Child,
    /// The URL the child printed.
    pub url: String,
}

impl ServerChild {
    /// Starts the current executable with `args` and reads the URL it prints.
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("server child");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("url");
        Self {
            child,
            url: line.trim().to_owned(),
        }
    }

    /// Starts `bin serve --agent scripted` (a `runtimeuse` binary) on an ephemeral loopback
    /// port, and reads the port from the line it prints.
    pub fn start_cli(bin: &str) -> Self {
        Self::start_serve(scripted_serve(bin))
    }

    /// Starts `serve`, a `runtimeuse serve` command line, and reads the port from the line
    /// it prints.
    pub fn start_serve(mut serve: Command) -> Self {
        let mut child = serve
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("runtimeuse serve");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("port line");
        let port = line.trim().rsplit(' ').next().unwrap_or_default();
        Self {
            child,
            url: format!("ws://127.0.0.1:{port}"),
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port of the child's URL.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// Waits for the child to exit (after a signal sent with [`pid`](Self::pid), say); its
    /// exit code.
    pub fn wait(&mut self) -> Option<i32> {
        self.child.wait().ok().and_then(|s| s.code())
    }
}

/// `bin serve --agent scripted` on an ephemeral loopback port: the command line of
/// [`ServerChild::start_cli`], to change before [`ServerChild::start_serve`].
pub fn scripted_serve(bin: &str) -> Command {
    let mut serve = Command::new(bin);
    serve.args([
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--agent",
        "scripted",
    ]);
    serve
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value after `--name` on the command line, or `default`.
pub fn arg<T: FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A memory figure of process `pid` (`"self"` for this one) from `/proc/PID/status`, in KiB:
/// `field` is `"VmRSS"` (resident now) or `"VmHWM"` (peak). NaN when it cannot be read.
pub fn status_kib(pid: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(f64::NAN)
}

/// The median of `v` (NaN when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A shell command that writes `bytes` bytes of 64-byte lines, quickly.
pub fn producer(bytes: u64) -> String {
    format!("yes 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde | head -c {bytes}")
}

/// Options of a query whose pre-command writes `bytes` bytes (see [`producer`]), with the
/// count of the command-output bytes received so far.
pub fn output_query(
    bytes: u64,
) -> (
    runtimeuse_tokio::QueryOptions,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let received = std::sync::Arc::new(AtomicU64::new(0));
    let r = std::sync::Arc::clone(&received);
    let options = runtimeuse_tokio::QueryOptions::new("", "echo")
        .pre_command(producer(bytes))
        .on_command_output(move |o| {
            r.fetch_add(o.text.len() as u64, Ordering::Relaxed);
            std::future::ready(())
        });
    (options, received)
}
