//! The `runtimeuse` command line as a user meets it: `query` and `exec` against a spawned
//! `runtimeuse serve --agent scripted`, checked by exit code, stdout and stderr.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::Serve;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runtimeuse"));
    c.env_remove("RUNTIMEUSE_URL")
        .env_remove("RUNTIMEUSE_TOKEN")
        .env("NO_COLOR", "1");
    c
}

/// The binary with these arguments, pointed at `rt`.
fn against(rt: &Serve, args: &[&str]) -> Command {
    let mut c = bin();
    c.args(args)
        .env("RUNTIMEUSE_URL", format!("ws://127.0.0.1:{}", rt.port));
    c
}

fn run(rt: &Serve, args: &[&str]) -> Output {
    against(rt, args).stdin(Stdio::null()).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn scripted() -> Serve {
    Serve::start(&[], &[])
}

#[test]
fn version_help_and_completions() {
    let out = bin().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("runtimeuse {}", env!("CARGO_PKG_VERSION"))
    );
    let help = bin().args(["query", "--help"]).output().unwrap();
    let help = text(&help.stdout);
    assert!(help.contains("Usage: runtimeuse query"), "{help}");
    assert!(
        help.contains("--output-schema") && help.contains("Exit codes:"),
        "{help}"
    );
    let bash = bin().args(["completions", "bash"]).output().unwrap();
    assert!(bash.status.success() && text(&bash.stdout).contains("_runtimeuse"));
}

#[test]
fn a_query_streams_then_prints_the_result_once() {
    let rt = scripted();
    let out = run(&rt, &["query", "STREAM:2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "message 1 of 2\nmessage 2 of 2\nstreamed 2 messages\n"
    );
    // Piped: no escape sequences anywhere.
    assert!(!text(&out.stdout).contains('\x1b') && !text(&out.stderr).contains('\x1b'));
}

#[test]
fn json_lines_are_one_object_per_event() {
    let rt = scripted();
    let out = run(&rt, &["query", "--json", "STREAM:2"]);
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["assistant_message", "assistant_message", "result"]);
    assert_eq!(lines[0]["text"], "message 1 of 2");
    assert_eq!(lines[2]["text"], "streamed 2 messages");
    assert_eq!(lines[2]["metadata"], serde_json::json!({}));

    let out = run(&rt, &["exec", "--json", "echo out; echo err >&2", "exit 4"]);
    assert_eq!(out.status.code(), Some(4));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "command_result");
    assert_eq!(last["results"][1]["exit_code"], 4);
    assert!(
        lines.iter().any(|l| l["type"] == "command_output"
            && l["stream"] == "stderr"
            && l["text"] == "err\n")
    );

    let out = run(&rt, &["query", "--json", "ERROR:boom"]);
    assert_eq!(out.status.code(), Some(70));
    let last: Value = serde_json::from_str(text(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "error");
    assert_eq!(last["kind"], "runtime");
    assert_eq!(last["metadata"]["error_name"], "Error");
}

#[test]
fn exit_codes_of_every_class() {
    let rt = scripted();
    // exec: the failing command's code, and what was skipped.
    let out = run(&rt, &["exec", "echo a", "exit 7", "echo never"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(text(&out.stdout), "a\n");
    assert!(
        text(&out.stderr).contains(
            "command `exit 7` failed with exit code 7; the 1 command after it was skipped"
        ),
        "{}",
        text(&out.stderr)
    );
    // The runtime's error, with its metadata on lines of their own.
    let out = run(&rt, &["query", "ERROR:boom"]);
    assert_eq!(out.status.code(), Some(70));
    let err = text(&out.stderr);
    assert!(
        err.contains("runtime error: boom") && err.contains("  error_name: Error"),
        "{err}"
    );
    // Once, with its fields.
    assert_eq!(err.matches("boom").count(), 1, "{err}");
    // A time limit.
    let out = run(&rt, &["query", "--idle-timeout", "0.3", "SLOW:5000"]);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    // Usage: an empty prompt, an HTTP URL (with the hint).
    let out = run(&rt, &["query", "  "]);
    assert_eq!(out.status.code(), Some(64));
    let out = run(
        &rt,
        &[
            "query",
            "--url",
            &format!("http://127.0.0.1:{}", rt.port),
            "x",
        ],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains(&format!("did you mean ws://127.0.0.1:{}?", rt.port)));
    // Connection: nothing listens.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = run(
        &rt,
        &["query", "--url", &format!("ws://127.0.0.1:{port}"), "x"],
    );
    assert_eq!(out.status.code(), Some(69));
    assert!(
        text(&out.stderr).contains("is the runtime running"),
        "{}",
        text(&out.stderr)
    );
    // The remote code passes through, and the CLI's own codes are none a shell command
    // usually returns: a remote 4 is not the CLI's connection error.
    assert_eq!(run(&rt, &["exec", "exit 4"]).status.code(), Some(4));
    // A wrong command line is the table's usage code, clap's errors included.
    let out = bin()
        .args(["query", "--no-such-flag", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert_eq!(bin().arg("--help").output().unwrap().status.code(), Some(0));
    // The proxy that cannot listen: the same code as serve's.
    let out = bin()
        .args(["proxy", "--listen", &format!("127.0.0.1:{}", rt.port)])
        .args(["--to", &format!("ws://127.0.0.1:{}", rt.port)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(71), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("cannot listen on 127.0.0.1:{}", rt.port)),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("port 0 for a free one"),
        "{}",
        text(&out.stderr)
    );
    // A port that is no port is the usage code, not a connection to another port.
    let out = run(&rt, &["query", "--url", "ws://127.0.0.1:99999", "x"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not a number from 0 to 65535"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_prompt_can_come_from_stdin_or_a_file() {
    let rt = scripted();
    let mut child = against(&rt, &["query", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"ECHO:from stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    // The final line break of stdin or a file is not part of the prompt.
    assert_eq!(text(&out.stdout), "from stdin\n");
    let file = std::env::temp_dir().join(format!("runtimeuse-prompt-{}", std::process::id()));
    std::fs::write(&file, "ECHO:from a file\n").unwrap();
    let out = run(&rt, &["query", &format!("@{}", file.display())]);
    assert_eq!(text(&out.stdout), "from a file\n");
    std::fs::remove_file(file).unwrap();
}

#[test]
fn a_closed_stdout_ends_the_program_quietly() {
    let rt = scripted();
    let mut child = against(&rt, &["exec", "seq 1 200000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut first).unwrap();
    assert_eq!(first, "1\n");
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 141)),
        "{:?} {}",
        out.status,
        text(&out.stderr)
    );
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
}

/// A running `exec`: the CLI, its stdout, and the remote shell's pid file.
type Runner = (
    std::process::Child,
    BufReader<std::process::ChildStdout>,
    std::path::PathBuf,
);

/// A remote command that says `started`, writes its shell's pid, then runs until killed
/// (printing `tick` every 0.1 s when `ticking`): `exec` of it against `rt`, once it runs; the
/// CLI, its stdout, and the remote shell's pid file.
fn remote_runner(rt: &Serve, name: &str, ticking: bool) -> Runner {
    remote_runner_with(against(rt, &["exec"]), name, ticking)
}

/// [`remote_runner`] with `cli` (`exec` and its options so far) running it.
fn remote_runner_with(mut cli: Command, name: &str, ticking: bool) -> Runner {
    let dir = std::env::temp_dir().join(format!("runtimeuse-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pid_file = dir.join("pid");
    let body = if ticking {
        "while :; do echo tick; sleep 0.1; done"
    } else {
        "exec sleep 30"
    };
    let command = format!(
        "echo started; sh -c 'echo $$ > {}; {body}'",
        pid_file.display()
    );
    let mut child = cli
        .arg(&command)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "started\n");
    // The command runs: its pid file appears, written whole.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&pid_file).is_ok_and(|p| p.ends_with('\n')) {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, stdout, pid_file)
}

/// Waits (10 s at most) until the remote process of `pid_file` is gone: the runtime killed it.
fn assert_remote_killed(pid_file: &std::path::Path) {
    let pid = std::fs::read_to_string(pid_file).unwrap();
    let proc = format!("/proc/{}", pid.trim());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&proc).exists()
        && std::fs::read_to_string(format!("{proc}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "the remote command survived the CLI"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_dir_all(pid_file.parent().unwrap()).unwrap();
}

fn signal(child: &std::process::Child, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, signal).unwrap();
}

#[test]
fn ctrl_c_cancels_on_the_runtime_and_exits_130() {
    let rt = scripted();
    let (mut child, stdout, pid_file) = remote_runner(&rt, "sigint", false);
    child.stdout = None;
    drop(stdout);
    let started = Instant::now();
    signal(&child, nix::sys::signal::Signal::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = text(&out.stderr);
    let (cancelling, cancelled) = (err.find("cancelling"), err.rfind("cancelled"));
    assert!(cancelling.is_some() && cancelling < cancelled, "{err}");
    // The runtime killed the command's process group.
    assert_remote_killed(&pid_file);
}

#[test]
fn a_cancelled_command_leaves_no_zombie_and_its_end_is_logged() {
    let rt = scripted();
    // Cancelled by the client (Ctrl-C), then by the connection's end (the CLI killed).
    for (sig, resume) in [
        (nix::sys::signal::Signal::SIGINT, true),
        (nix::sys::signal::Signal::SIGKILL, false),
    ] {
        let ended = rt.log().matches("request ended").count();
        let mut cli = against(&rt, &["exec"]);
        if !resume {
            cli.arg("--no-resume");
        }
        let (mut child, stdout, pid_file) = remote_runner_with(cli, "zombie", false);
        signal(&child, sig);
        drop(stdout);
        let _ = child.wait().unwrap();
        assert_remote_killed(&pid_file);
        // The runtime reaps the command's shell, though nothing runs after it: tokio reaps
        // a dropped child only when another is spawned.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !rt.zombies().is_empty() {
            assert!(
                Instant::now() < deadline,
                "{sig}: zombies {:?}",
                rt.zombies()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The request's end is logged, whichever way it was cancelled (a connection that
        // ended dropped its request's task before it could say so).
        let deadline = Instant::now() + Duration::from_secs(5);
        while rt.log().matches("request ended").count() == ended {
            assert!(Instant::now() < deadline, "{sig}: {}", rt.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = rt.log();
        let last = log.lines().rfind(|l| l.contains("request ended")).unwrap();
        assert!(last.contains("cancelled"), "{sig}: {last}");
    }
}

#[test]
fn sigterm_and_sighup_cancel_the_remote_command_before_the_cli_exits() {
    let rt = scripted();
    for (sig, code) in [
        (nix::sys::signal::Signal::SIGTERM, 143),
        (nix::sys::signal::Signal::SIGHUP, 129),
    ] {
        let (mut child, stdout, pid_file) = remote_runner(&rt, "sigterm", false);
        let started = Instant::now();
        signal(&child, sig);
        drop(stdout);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "{sig}");
        // Within the CLI's bound on waiting for the cancel's confirmation (5 s).
        assert!(started.elapsed() < Duration::from_secs(8), "{sig}");
        // Before the fix the CLI died at once and the command ran on (the runtime keeps a
        // resumable session's request for its grace, 60 s).
        assert_remote_killed(&pid_file);
    }
}

#[test]
fn a_closed_stdout_cancels_the_remote_command_and_exits_141() {
    let rt = scripted();
    let (mut child, stdout, pid_file) = remote_runner(&rt, "stdout", true);
    let started = Instant::now();
    // The CLI's next write of a tick fails.
    drop(stdout);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(141));
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_remote_killed(&pid_file);
}

#[test]
fn a_terminal_gets_a_progress_line_and_a_pipe_does_not() {
    let rt = Serve::start(&["--heartbeat-interval-ms", "200"], &[]);
    let command = format!(
        "{} query --url ws://127.0.0.1:{} SLOW:800",
        env!("CARGO_BIN_EXE_runtimeuse"),
        rt.port
    );
    // `script` runs the command under a pseudo-terminal and copies what it printed.
    let out = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("\r\x1b[K"), "{shown:?}");
    assert!(
        shown.contains("waiting for the runtime") || shown.contains("running"),
        "{shown:?}"
    );
    assert!(shown.contains("heartbeat"), "{shown:?}");
    assert!(shown.trim_end().ends_with("done"), "{shown:?}");
    let piped = run(&rt, &["query", "SLOW:300"]);
    assert_eq!(text(&piped.stdout), "done\n");
    assert!(!text(&piped.stderr).contains('\x1b'));
    // stderr on the terminal, stdout to a file: no progress line either.
    let file = std::env::temp_dir().join(format!("runtimeuse-progress-{}", std::process::id()));
    let command = format!("{command} > {}", file.display());
    let out = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        !shown.contains("\r\x1b[K") && !shown.contains("running"),
        "{shown:?}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "done\n");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn a_session_runs_one_query_per_line_over_one_connection() {
    let rt = scripted();
    let mut child = against(&rt, &["session"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"ECHO:one\n\nERROR:bad\nECHO:two\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    // Piped input: the session goes on after a failed query, and exits with its code.
    assert_eq!(out.status.code(), Some(70), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "one\ntwo\n");
    assert!(text(&out.stderr).contains("runtime error: bad"));
    let log = rt.stop();
    assert_eq!(log.matches("connection accepted").count(), 1, "{log}");
    assert!(log.contains("requests=3"), "{log}");
}

#[test]
fn a_runtime_that_breaks_the_protocol_exits_6() {
    use futures_util::{SinkExt, StreamExt};
    use runtimeuse_tokio::tokio_tungstenite;
    use tokio_tungstenite::tungstenite::Message;

    // A fake runtime: it reads the invocation and answers with a result that has no data.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        rt.block_on(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let _invocation = ws.next().await;
            ws.send(Message::text(
                r#"{"message_type":"result_message","metadata":{}}"#,
            ))
            .await
            .unwrap();
            while let Some(Ok(_)) = ws.next().await {}
        });
    });
    let out = bin()
        .args(["query", "--url", &format!("ws://127.0.0.1:{port}"), "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(76), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("could not be decoded"),
        "{}",
        text(&out.stderr)
    );
    server.join().unwrap();
}

/// A port that completes TCP handshakes (the kernel's backlog) and never answers.
fn silent_port() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

#[test]
fn a_connect_timeout_is_a_time_limit_exit_5_and_timeout_bounds_connecting_too() {
    let (_listener, port) = silent_port();
    let url = format!("ws://127.0.0.1:{port}");
    let started = Instant::now();
    let out = bin()
        .args(["query", "--url", &url, "--connect-timeout", "0.5", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(10));
    // --timeout bounds the whole request, connecting included (the connect default is 30 s).
    let started = Instant::now();
    let out = bin()
        .args(["query", "--url", &url, "--timeout", "1", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_timeout_is_said_for_people_without_a_log_line() {
    let rt = scripted();
    let out = run(&rt, &["query", "--timeout", "0.3", "SLOW:5000"]);
    assert_eq!(out.status.code(), Some(75));
    let err = text(&out.stderr);
    assert!(
        err.contains("no result within 0.3 s (the --timeout limit)"),
        "{err}"
    );
    assert!(!err.contains("Overall(") && !err.contains("WARN"), "{err}");
}

#[test]
fn a_wrong_token_gets_a_hint_about_the_token_passed() {
    let rt = Serve::start(&["--token", "right"], &[]);
    let out = run(&rt, &["query", "--token", "wrong", "x"]);
    assert_eq!(out.status.code(), Some(77));
    let err = text(&out.stderr);
    assert!(err.contains("refused the token"), "{err}");
    assert!(!err.contains("pass --token"), "{err}");
    let out = run(&rt, &["query", "x"]);
    assert!(text(&out.stderr).contains("pass --token"));
}

#[test]
fn url_hints_fix_the_scheme_instead_of_prefixing_it() {
    for (url, hint) in [
        ("ws:/127.0.0.1:1", "did you mean ws://127.0.0.1:1?"),
        ("wss:host:1", "did you mean wss://host:1?"),
        ("ftp://x", "not ftp://; did you mean ws://x?"),
        ("127.0.0.1:8080", "did you mean ws://127.0.0.1:8080?"),
    ] {
        let out = bin().args(["query", "--url", url, "x"]).output().unwrap();
        assert_eq!(out.status.code(), Some(64));
        let err = text(&out.stderr);
        assert!(err.contains(hint), "{url}: {err}");
        assert!(
            !err.contains("ws://ws:") && !err.contains("ws://ftp:"),
            "{err}"
        );
    }
}

#[test]
fn a_limit_of_0_means_none() {
    let rt = scripted();
    for flag in ["--idle-timeout", "--timeout", "--connect-timeout"] {
        for none in ["0", "inf"] {
            let out = run(&rt, &["query", flag, none, "ECHO:unlimited"]);
            assert!(out.status.success(), "{flag} {none}: {}", text(&out.stderr));
            assert_eq!(text(&out.stdout).trim(), "unlimited");
        }
    }
}

#[test]
fn a_query_that_names_no_model_gets_the_runtimes_model() {
    use runtimeuse_scenarios::{Api, MockProvider, Reply};
    // The mock serves on this runtime's worker threads.
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let replies = vec![
        Reply::stream(Api::Responses.text("one")),
        Reply::stream(Api::Responses.text("two")),
    ];
    let mock = tokio.block_on(MockProvider::start(replies));
    let base = format!("{}/v1", mock.url());
    let rt = Serve::start(
        &[
            "--agent",
            "openai",
            "--base-url",
            &base,
            "--api-key",
            "k",
            "--model",
            "serve-model",
        ],
        &[],
    );
    let out = run(&rt, &["query", "hi"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&rt, &["query", "--model", "named", "hi"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let models: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| r.body["model"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(models, ["serve-model", "named"]);
}

#[test]
fn a_command_killed_by_a_signal_says_so_and_exits_128_plus_n() {
    let rt = scripted();
    let out = run(&rt, &["exec", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("was killed by signal 9"), "{err}");
    assert!(!err.contains("-1"), "{err}");
}

#[test]
fn serve_says_where_clients_connect_and_which_address_is_taken() {
    let rt = scripted();
    let port = rt.port.to_string();
    let taken = bin()
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--agent",
            "scripted",
        ])
        .output()
        .unwrap();
    assert_eq!(
        taken.status.code(),
        Some(71),
        "cannot listen: the table's code"
    );
    let err = text(&taken.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    let log = rt.stop();
    assert!(
        log.contains(&format!("clients connect to ws://127.0.0.1:{port}")),
        "{log}"
    );
}

#[test]
fn headers_in_curls_form_and_help_without_stray_equals() {
    let rt = scripted();
    let out = run(
        &rt,
        &[
            "query",
            "--header",
            "X-Foo: bar",
            "--header",
            "X-Bar=baz",
            "ECHO:ok",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let help = bin().args(["query", "--help"]).output().unwrap();
    let help = text(&help.stdout);
    assert!(help.contains("[env: RUNTIMEUSE_URL]"), "{help}");
    assert!(!help.contains("=]"), "{help}");
}

#[test]
fn the_command_line_is_well_formed_and_v_and_q_set_the_log() {
    // clap's own checks of the whole command line (names unique across global and local).
    let out = bin().args(["chat", "--help"]).output().unwrap();
    assert!(out.status.success());
    let rt = Serve::start(&["-q"], &[]);
    let out = run(&rt, &["query", "ECHO:x"]);
    assert!(out.status.success());
    let log = rt.stop();
    assert!(!log.contains("connection accepted"), "{log}");
    let rt = scripted();
    let out = run(&rt, &["-vv", "query", "ECHO:x"]);
    assert!(text(&out.stderr).contains("DEBUG"), "{}", text(&out.stderr));
    let log = rt.stop();
    assert!(log.contains("connection accepted"), "{log}");
}

#[test]
fn session_commands_and_a_history_that_survives() {
    let rt = scripted();
    let mut child = against(&rt, &["session"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"/exec echo from exec\n/help\nECHO:a query\n/quit\nECHO:never\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "from exec\na query\n");
    assert!(
        text(&out.stderr).contains("/exec COMMAND"),
        "{}",
        text(&out.stderr)
    );
    // On a terminal, the line editor keeps its history in the user's data directory.
    let data = std::env::temp_dir().join(format!("runtimeuse-history-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let command = format!(
        "{} session --url ws://127.0.0.1:{}",
        env!("CARGO_BIN_EXE_runtimeuse"),
        rt.port
    );
    let mut script = Command::new("script");
    script
        .args(["-qfec", &command, "/dev/null"])
        .env("XDG_DATA_HOME", &data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = script.spawn().unwrap();
    // The session's own stdin is the terminal: type a line, then end the input.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"ECHO:remember me\n\x04").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let history = std::fs::read_to_string(data.join("runtimeuse/history")).unwrap_or_default();
    assert!(
        history.contains("ECHO:remember me"),
        "history {history:?}; shown {:?}",
        text(&out.stdout)
    );
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_session_notices_a_runtime_that_goes_away_while_it_waits_for_input() {
    let rt = scripted();
    let mut child = against(&rt, &["session"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"ECHO:first\n").unwrap();
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "first\n");
    // No more input; the runtime goes away.
    let stopped = Instant::now();
    drop(rt);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(69));
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "{:?}",
        stopped.elapsed()
    );
    drop(stdin);
}

#[test]
fn exec_resumes_a_cut_connection_and_no_resume_does_not() {
    use runtimeuse_scenarios::cut::{Cut, CutProxy};
    let rt = scripted();
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let target = format!("ws://127.0.0.1:{}", rt.port);
    let command = "for i in $(seq 1 30); do echo $i; sleep 0.003; done";
    let want: String = (1..=30).map(|i| format!("{i}\n")).collect();
    let via = |proxy: &CutProxy, extra: &[&str]| {
        bin()
            .args(["exec", command, "--url", &proxy.url()])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let proxy = tokio.block_on(CutProxy::start(&target, 10, 1, Cut::Reset));
    let out = via(&proxy, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), want);
    assert!(
        text(&out.stderr).contains("connection lost; resumed"),
        "{}",
        text(&out.stderr)
    );

    let proxy = tokio.block_on(CutProxy::start(&target, 10, 1, Cut::Reset));
    let out = via(&proxy, &["--no-resume"]);
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
}

#[test]
fn a_sigterm_right_after_the_listening_line_is_a_graceful_stop() {
    // The signals are watched before the line is printed: a supervisor that stops the runtime
    // as soon as it is up gets exit status 0, not the default action's death by SIGTERM.
    for _ in 0..20 {
        let (status, _) = Serve::start(&["-q"], &[]).terminate();
        assert_eq!(status.code(), Some(0), "{status:?}");
    }
}

#[test]
fn a_session_applies_its_secrets_and_limits_to_queries_and_names_unknown_commands() {
    let rt = scripted();
    let mut child = against(&rt, &["session", "--secret", "hunter2", "--timeout", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"ECHO:pw=hunter2\n/qiut\nSLOW:20000\n /qiut\n")
        .unwrap();
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(stdout.contains("pw=[REDACTED]"), "{stdout}");
    assert!(stderr.contains("unknown command /qiut"), "{stderr}");
    // --timeout bounds the session's queries: SLOW:20000 fails after 1 s.
    assert!(started.elapsed() < Duration::from_secs(10), "{stderr}");
    assert!(stderr.contains("the --timeout limit"), "{stderr}");
    // A line that begins with a space is sent as it is.
    assert!(stdout.contains("/qiut"), "{stdout}");
    rt.stop();
}

#[test]
fn serve_quiet_prints_nothing_but_its_listening_line() {
    let (status, log) = Serve::start(&["-q"], &[]).terminate();
    assert!(status.success());
    assert_eq!(log, "", "-q: no notes");
}

#[test]
fn an_empty_token_is_refused_at_start() {
    let mut child = bin()
        .args(["serve", "--port", "0", "--agent", "scripted", "--token", ""])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve --token \"\" is still serving, locking every client out");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("the token is empty"), "{err}");
}

#[test]
fn a_url_with_a_query_and_no_path_connects() {
    let rt = scripted();
    let url = format!("ws://127.0.0.1:{}?token=unused", rt.port);
    let out = run(&rt, &["query", "--url", &url, "ECHO:ok"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ok\n");
    rt.stop();
}

#[test]
fn json_prints_an_error_line_when_the_connection_fails() {
    // A port nothing listens on: connecting is refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}");
    let out = bin()
        .args(["query", "--json", "--url", &url, "ECHO:ok"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
    let line: Value = serde_json::from_str(text(&out.stdout).trim()).expect("one JSON line");
    assert_eq!(line["type"], "error", "{line}");
    assert_eq!(line["kind"], "connection", "{line}");
    assert!(
        line["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{line}"
    );
}

#[test]
fn the_command_agents_output_is_printed_once() {
    // Its lines stream as assistant messages and its result is all of them: said once.
    let rt = Serve::start(
        &[
            "--agent",
            "command",
            "--agent-command",
            "printf 'line one\\n\\nline two\\n'",
        ],
        &[],
    );
    let out = run(&rt, &["query", "hi"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "line one\nline two\n");
    rt.stop();
}

#[test]
fn every_option_is_listed_once_with_its_default() {
    for command in ["query", "exec", "session", "serve", "proxy"] {
        let out = bin().args([command, "--help"]).output().unwrap();
        let help = text(&out.stdout);
        // An option's entry: its flags, then its text up to the next entry or heading.
        let mut entries: Vec<(String, String)> = Vec::new();
        for line in help.lines() {
            let flag = line
                .trim_start()
                .split([',', ' '])
                .find(|w| w.starts_with("--"))
                .filter(|_| line.starts_with("  -") || line.starts_with("      --"));
            match flag {
                Some(flag) => entries.push((flag.to_owned(), line.to_owned())),
                None if line.is_empty() => {}
                None if !line.starts_with(' ') => {
                    entries.push((String::new(), String::new()));
                }
                None => {
                    if let Some(last) = entries.last_mut() {
                        last.1.push(' ');
                        last.1.push_str(line.trim());
                    }
                }
            }
        }
        entries.retain(|(flag, _)| !flag.is_empty());
        let mut seen = std::collections::HashSet::new();
        for (flag, entry) in &entries {
            assert!(seen.insert(flag.clone()), "{command}: {flag} listed twice");
            // An option that takes a value says what it is when not given, or is repeatable
            // (none by default) or required.
            let takes_value = entry.contains(&format!("{flag} <"));
            let required = command == "proxy" && flag == "--to";
            if takes_value && !required {
                assert!(
                    entry.contains("[default") || entry.contains("repeatable"),
                    "{command}: {flag} shows no default: {entry}"
                );
            }
        }
        assert!(seen.len() > 5, "{command}: {help}");
    }
}

#[test]
fn wss_to_a_plain_port_fails_at_once_with_a_hint() {
    let rt = scripted();
    let url = format!("wss://127.0.0.1:{}", rt.port);
    let started = Instant::now();
    let out = run(&rt, &["exec", "--url", &url, "true"]);
    // The runtime closes a TLS handshake at once; it waited for an HTTP head for its 10 s
    // handshake timeout before.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("try ws://127.0.0.1:{}", rt.port)),
        "{err}"
    );
    let log = rt.stop();
    assert!(log.contains("a TLS handshake on this plain port"), "{log}");
}

#[test]
fn a_note_after_output_without_a_final_newline_starts_its_own_line() {
    let rt = scripted();
    // stdout and stderr to one pipe, as `2>&1` (or a terminal) has them.
    let script = format!(
        "exec \"$0\" exec --url ws://127.0.0.1:{} 'printf abc; exit 3' 2>&1",
        rt.port
    );
    let out = Command::new("/bin/sh")
        .args(["-c", &script, env!("CARGO_BIN_EXE_runtimeuse")])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        text(&out.stdout),
        "abc\nruntimeuse: command `printf abc; exit 3` failed with exit code 3\n"
    );
    // Apart, stdout keeps the output as it was.
    let out = run(&rt, &["exec", "printf abc; exit 3"]);
    assert_eq!(text(&out.stdout), "abc");
    assert!(text(&out.stderr).starts_with("runtimeuse: command"));
}

#[test]
fn errors_name_the_file_or_url_they_are_about() {
    let rt = scripted();
    let out = run(&rt, &["exec", "--cwd", "/proc/no-such-dir", "true"]);
    assert_eq!(out.status.code(), Some(70));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot create the working directory /proc/no-such-dir"),
        "{err}"
    );
    // A download's URL, without its query (a presigned URL's signature is a credential).
    let dir = std::env::temp_dir().join(format!("runtimeuse-dl-{}", std::process::id()));
    let url = format!("http://127.0.0.1:{}/missing.txt?sig=s3cr3t", rt.port);
    let download = format!("{url}={}", dir.display());
    let out = run(&rt, &["exec", "--download", &download, "true"]);
    assert_eq!(out.status.code(), Some(70));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("(GET http://127.0.0.1:{}/missing.txt)", rt.port)),
        "{err}"
    );
    assert!(!err.contains("s3cr3t"), "{err}");
    let out = run(&rt, &["query", "@/no/such/prompt.txt"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("/no/such/prompt.txt"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn binary_output_is_text_and_base64_carries_bytes_as_the_readme_says() {
    let rt = scripted();
    let out = run(&rt, &["exec", r"printf 'a\377b'"]);
    assert_eq!(text(&out.stdout), "a\u{FFFD}b");
    let out = run(&rt, &["exec", r"printf 'a\377b' | base64"]);
    let decoded = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(&out.stdout)?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(decoded.stdout, b"a\xffb");
    let readme = include_str!("../../../README.md");
    assert!(readme.contains("arrive as U+FFFD"));
}

/// The CLI with its stdout and stderr on a new terminal; what the terminal received, read
/// on another thread as it comes.
struct OnTerminal {
    child: std::process::Child,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: std::thread::JoinHandle<()>,
}

impl OnTerminal {
    fn spawn(mut cli: Command) -> Self {
        let pty = nix::pty::openpty(None, None).unwrap();
        let child = cli
            .stdin(Stdio::null())
            .stdout(pty.slave.try_clone().unwrap())
            .stderr(pty.slave)
            .spawn()
            .unwrap();
        drop(cli); // The last copies of the terminal's slave side: EOF once the child is gone.
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let mut master = std::fs::File::from(pty.master);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once every slave descriptor is closed.
            while let Ok(n @ 1..) = std::io::Read::read(&mut master, &mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self {
            child,
            seen,
            reader,
        }
    }

    fn until(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !String::from_utf8_lossy(&self.seen.lock().unwrap()).contains(text) {
            assert!(Instant::now() < deadline, "no {text:?} on the terminal");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn finish(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        self.reader.join().unwrap();
        let seen = String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned();
        (status.code(), seen)
    }
}

#[test]
fn on_a_terminal_the_progress_line_spares_open_output_and_leaves_before_a_note() {
    let rt = scripted();
    // A line left open (a prompt, say) stays on the screen while the request runs on.
    let mut cli = against(&rt, &["exec", "printf 'abc'; sleep 1; echo def"]);
    cli.env_remove("NO_COLOR");
    let term = OnTerminal::spawn(cli);
    let (code, seen) = term.finish();
    assert_eq!(code, Some(0), "{seen:?}");
    let between = &seen[seen.find("abc").expect("abc") + 3..seen.find("def").expect("def")];
    assert!(
        !between.contains('\r'),
        "the open line was erased: {seen:?}"
    );
    // A note while the progress line shows starts on a clean line.
    let term = OnTerminal::spawn(against(&rt, &["exec", "sleep 30"]));
    term.until("waiting for the runtime");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(term.child.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let (code, seen) = term.finish();
    assert_eq!(code, Some(130), "{seen:?}");
    let note = seen
        .find("runtimeuse: cancelling")
        .expect("the cancel note");
    assert!(
        seen[..note].ends_with("\r\x1b[K"),
        "the note runs into the progress line: {seen:?}"
    );
}

#[test]
fn the_command_agent_gets_the_runtimes_model_when_the_query_names_none() {
    let rt = Serve::start(
        &[
            "--agent",
            "command",
            "--agent-command",
            "echo \"model=$RUNTIMEUSE_MODEL\"",
            "--model",
            "house-model",
        ],
        &[],
    );
    let out = run(&rt, &["query", "hi"]);
    assert_eq!(text(&out.stdout).trim(), "model=house-model");
    let out = run(&rt, &["query", "--model", "asked-model", "hi"]);
    assert!(
        text(&out.stdout).contains("model=asked-model"),
        "{}",
        text(&out.stdout)
    );
}
