//! The real coding agents the `claude` and `acp` agents drive, from npm: a pinned version
//! installed once under `target/agents` (or named by `RUNTIMEUSE_CLAUDE` /
//! `RUNTIMEUSE_CLAUDE_ACP`), pointed at the project's mock provider.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use runtimeuse_scenarios::{MockProvider, Reply};
use serde_json::Value;

use super::Serve;

/// The packages and the versions the tests were written against.
pub(crate) const CLAUDE_CODE: &str = "@anthropic-ai/claude-code@2.1.197";
pub(crate) const CLAUDE_CODE_ACP: &str = "@zed-industries/claude-code-acp@0.16.2";

fn agents_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    target.join("agents")
}

/// The executable `bin` of the npm packages under `target/agents`, installed first when
/// missing (one install at a time across the test binaries: a lock file serializes them).
fn npm_bin(bin: &str, packages: &[&str]) -> PathBuf {
    let dir = agents_dir();
    let path = dir.join("node_modules/.bin").join(bin);
    if path.is_file() {
        return path;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join(".lock")).unwrap();
    nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map(|held| {
            if !path.is_file() {
                let status = Command::new("npm")
                    .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
                    .arg(&dir)
                    .args(packages)
                    .status()
                    .unwrap_or_else(|e| {
                        panic!("the agent tests need npm to install {packages:?}: {e}")
                    });
                assert!(status.success(), "npm install {packages:?} failed");
            }
            drop(held);
        })
        .unwrap_or_else(|(_, e)| panic!("locking {}: {e}", dir.display()));
    assert!(path.is_file(), "{} after npm install", path.display());
    path
}

/// Claude Code's CLI.
pub(crate) fn claude() -> PathBuf {
    std::env::var_os("RUNTIMEUSE_CLAUDE").map_or_else(
        || npm_bin("claude", &[CLAUDE_CODE, CLAUDE_CODE_ACP]),
        PathBuf::from,
    )
}

/// The Claude Code ACP adapter.
pub(crate) fn claude_acp() -> PathBuf {
    std::env::var_os("RUNTIMEUSE_CLAUDE_ACP").map_or_else(
        || npm_bin("claude-code-acp", &[CLAUDE_CODE, CLAUDE_CODE_ACP]),
        PathBuf::from,
    )
}

/// The environment that points Claude Code (directly or through the ACP adapter) at the mock
/// provider at `base`, with a configuration directory of its own and nothing sent elsewhere.
pub(crate) fn claude_env(base: &str, config: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("ANTHROPIC_BASE_URL", base.to_owned()),
        ("ANTHROPIC_API_KEY", "sk-test".to_owned()),
        ("CLAUDE_CONFIG_DIR", config.display().to_string()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_owned()),
        // A provider's error is not retried ten times with backoff.
        ("CLAUDE_CODE_MAX_RETRIES", "0".to_owned()),
        ("DISABLE_AUTOUPDATER", "1".to_owned()),
        // Side requests (titles, summaries) go to a model the mock answers on its own.
        (
            "ANTHROPIC_DEFAULT_HAIKU_MODEL",
            runtimeuse_scenarios::SIDE_MODEL.to_owned(),
        ),
        (
            "ANTHROPIC_SMALL_FAST_MODEL",
            runtimeuse_scenarios::SIDE_MODEL.to_owned(),
        ),
    ]
}

/// The mock provider, and a runtime whose agent (`agent_args`: `--agent …`) talks to it.
pub(crate) struct AgentRuntime {
    pub(crate) mock: MockProvider,
    pub(crate) rt: Serve,
    _config: PathBuf,
    // Last: the mock serves on it.
    _tokio: tokio::runtime::Runtime,
}

/// Starts the mock with `replies` and `runtimeuse serve` with `agent_args` and the
/// environment of [`claude_env`] (a configuration directory of its own, named after `name`).
pub(crate) fn agent_runtime(name: &str, replies: Vec<Reply>, agent_args: &[&str]) -> AgentRuntime {
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let mock = tokio.block_on(MockProvider::start(replies));
    let config =
        std::env::temp_dir().join(format!("runtimeuse-agent-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&config);
    std::fs::create_dir_all(&config).unwrap();
    let env = claude_env(&mock.url(), &config);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let rt = Serve::start(agent_args, &env);
    AgentRuntime {
        mock,
        rt,
        _config: config,
        _tokio: tokio,
    }
}

impl AgentRuntime {
    /// The runtime's URL.
    pub(crate) fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.rt.port)
    }

    /// `runtimeuse query --json` against the runtime: the JSON lines it printed and its exit
    /// code.
    pub(crate) fn query(&self, args: &[&str]) -> (Vec<Value>, Option<i32>) {
        let out = Command::new(env!("CARGO_BIN_EXE_runtimeuse"))
            .args(["query", "--json", "--url", &self.url()])
            .args(args)
            .output()
            .unwrap();
        let lines = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        (lines, out.status.code())
    }
}

impl AgentRuntime {
    /// The text answers of one query `prompt` through the tokio, async-std and blocking
    /// clients, in that order.
    pub(crate) fn three_clients_answer(&self, prompt: &str, model: &str) -> [Option<String>; 3] {
        let url = self.url();
        let tokio = tokio::runtime::Runtime::new().unwrap();
        let r = tokio
            .block_on(
                runtimeuse_tokio::Client::new(&url)
                    .query(prompt, runtimeuse_tokio::QueryOptions::new("", model)),
            )
            .unwrap();
        let a = async_io::block_on(
            runtimeuse_async_std::Client::new(&url)
                .query(prompt, runtimeuse_async_std::QueryOptions::new("", model)),
        )
        .unwrap();
        let b = runtimeuse_tungstenite::Client::new(&url)
            .query(prompt, runtimeuse_tungstenite::QueryOptions::new("", model))
            .unwrap();
        [r, a, b].map(|r| r.text().map(str::to_owned))
    }
}

/// The lines of `--json` output of this `type`.
pub(crate) fn of_type<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["type"] == kind).collect()
}
