//! `runtimeuse serve` as a hostile or broken client meets it: close handshakes and close
//! codes, a handshake that never completes, and secrets in logs (floods from clients that do
//! not read are in `backpressure.rs`). The runtime is the real binary, a child process on an
//! ephemeral loopback port; the client is a raw WebSocket written here frame by frame (std
//! only), so that it can send what no well-behaved library would.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

mod common;
use common::Serve;
use common::raw::{CLOSE, RawWs, TEXT};

#[test]
fn a_clients_close_frame_is_answered_with_1000() {
    let rt = Serve::start(&[], &[]);
    let mut ws = RawWs::connect(rt.port);
    ws.send(CLOSE, &1000u16.to_be_bytes(), None).unwrap();
    assert_eq!(ws.close_code(), 1000);
}

#[test]
fn text_that_is_not_utf8_gets_1007() {
    let rt = Serve::start(&[], &[]);
    let mut ws = RawWs::connect(rt.port);
    ws.send(TEXT, &[0x7b, 0xff, 0xfe, 0x7d], None).unwrap();
    assert_eq!(ws.close_code(), 1007);
}

#[test]
fn a_frame_over_the_limit_gets_1009() {
    let rt = Serve::start(&[], &[]);
    let mut ws = RawWs::connect(rt.port);
    // The header announces 100 MiB (over the 64 MiB limit); the runtime refuses it unread.
    ws.send(TEXT, b"{", Some(100 << 20)).unwrap();
    assert_eq!(ws.close_code(), 1009);
}

#[test]
fn a_handshake_that_never_completes_is_dropped_after_the_default_10_s() {
    let rt = Serve::start(&[], &[]);
    let mut tcp = TcpStream::connect(("127.0.0.1", rt.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let started = Instant::now();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tcp.read(&mut buf).unwrap_or(0);
    let elapsed = started.elapsed();
    assert_eq!(n, 0, "the runtime answered a half handshake");
    assert!(
        elapsed >= Duration::from_secs(9) && elapsed < Duration::from_secs(25),
        "{elapsed:?}"
    );
}

#[test]
fn secrets_never_reach_the_logs_at_any_level() {
    let rt = Serve::start(&[], &[("RUST_LOG", "trace")]);
    let mut ws = RawWs::connect(rt.port);
    let invocation = r#"{"message_type":"invocation_message","source_id":null,"system_prompt":"s","user_prompt":"ECHO:the key is hunter2-xyz","model":"m","output_format_json_schema_str":null,"secrets_to_redact":["hunter2-xyz"],"agent_env":{"KEY":"hunter2-xyz"},"artifacts_dirs":null,"artifacts_ignore_content":null,"pre_agent_invocation_commands":[{"command":"echo hunter2-xyz","cwd":null,"env":null}],"post_agent_invocation_commands":null,"pre_agent_downloadables":null}"#;
    ws.send(TEXT, invocation.as_bytes(), None).unwrap();
    // Read to the result, then send malformed frames that quote the secret.
    loop {
        let (op, payload) = ws.read().unwrap();
        let text = String::from_utf8_lossy(&payload).into_owned();
        assert!(!text.contains("hunter2"), "sent: {text}");
        if op == TEXT && text.contains("result_message") {
            break;
        }
    }
    ws.send(
        TEXT,
        br#"{"message_type": "cancel_message", "bad": hunter2-xyz}"#,
        None,
    )
    .unwrap();
    ws.send(TEXT, br#"{"message_type": 7, "x": "hunter2-xyz"}"#, None)
        .unwrap();
    ws.send(
        TEXT,
        br#"{"message_type": "artifact_upload_response_message", "filename": "hunter2-xyz"}"#,
        None,
    )
    .unwrap();
    for _ in 0..3 {
        let (_, payload) = ws.read().unwrap();
        let text = String::from_utf8_lossy(&payload).into_owned();
        assert!(
            text.contains("error_message") && !text.contains("hunter2"),
            "{text}"
        );
    }
    ws.send(CLOSE, &1000u16.to_be_bytes(), None).unwrap();
    assert_eq!(ws.close_code(), 1000);
    let log = rt.stop();
    assert!(log.contains("malformed client frame"), "{log}");
    assert!(!log.contains("hunter2"), "a secret in the log:\n{log}");
}

#[test]
fn client_text_in_any_message_is_redacted_from_the_logs_while_its_request_runs() {
    let rt = Serve::start(&[], &[("RUST_LOG", "trace")]);
    let mut ws = RawWs::connect(rt.port);
    let secret = "s3cr3t-h0rse-battery";
    // The first request names the secret and stays in flight (its pre-command sleeps) while
    // every other message type arrives with the secret in each string field.
    let first = serde_json::json!({
        "message_type": "invocation_message", "source_id": secret, "system_prompt": secret,
        "user_prompt": format!("ECHO:{secret}"), "model": secret,
        "output_format_json_schema_str": null, "secrets_to_redact": [secret],
        "agent_env": {secret: secret}, "artifacts_dirs": null, "artifacts_ignore_content": null,
        "pre_agent_invocation_commands": [{"command": format!("sleep 30 # {secret}"), "cwd": null, "env": null}],
        "post_agent_invocation_commands": null, "pre_agent_downloadables": null
    });
    ws.text(&first.to_string());
    let everywhere = |message_type: &str| {
        let mut v = first.clone();
        v["message_type"] = message_type.into();
        v["filename"] = secret.into();
        v["filepath"] = secret.into();
        v["presigned_url"] = format!("http://127.0.0.1:1/{secret}").into();
        v["content_type"] = secret.into();
        v["commands"] =
            serde_json::json!([{"command": secret, "cwd": secret, "env": {secret: secret}}]);
        v[secret] = secret.into();
        v.to_string()
    };
    for t in [
        "invocation_message",
        "command_execution_message",
        "artifact_upload_response_message",
        "end_session_message",
        secret,
    ] {
        ws.text(&everywhere(t));
    }
    ws.text(&format!("{{\"message_type\": \"{secret}\", broken"));
    ws.text(&format!("not json {secret}"));
    ws.text(&everywhere("cancel_message"));
    loop {
        let (op, payload) = ws.read().unwrap();
        let text = String::from_utf8_lossy(&payload).into_owned();
        assert!(!text.contains(secret), "sent: {text}");
        if op == TEXT && text.contains("cancelled") {
            break;
        }
    }
    ws.send(CLOSE, &1000u16.to_be_bytes(), None).unwrap();
    let _ = ws.close_code();
    let log = rt.stop();
    assert!(
        log.contains("unsolicited artifact upload response"),
        "{log}"
    );
    assert!(
        log.contains("ignoring client message of unknown type"),
        "{log}"
    );
    assert!(!log.contains(secret), "a secret in the log:\n{log}");
}

#[test]
fn a_flood_of_half_open_connections_is_refused_at_the_limit_and_the_runtime_recovers() {
    // 128 descriptors: the runtime holds at most 64 connections at once, 16 of them
    // handshakes in progress (a quarter).
    let rt = Serve::start_limited(Some(128), &[], &[]);
    let started = Instant::now();
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..150 {
        let mut tcp = TcpStream::connect(("127.0.0.1", rt.port)).unwrap();
        let _ = tcp.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        held.push(tcp);
    }
    let mut waiting = 0;
    for tcp in &mut held {
        tcp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut buf = [0u8; 16];
        match tcp.read(&mut buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                waiting += 1;
            }
            _ => refused += 1,
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "the pass outlived the handshake timeout"
    );
    // At most the handshake budget is held; the rest were closed at once, each for a newer one
    // (whatever the kernel's accept queue held: the order of arrival decides).
    assert!(
        waiting <= 16,
        "{waiting} handshakes held under a budget of 16"
    );
    assert!(refused >= 130, "only {refused} of 150 were refused at once");
    // While the flood's sockets are still open, a well-behaved client gets in at once: its
    // handshake is the newest.
    let mut ws = match RawWs::try_connect(rt.port) {
        Ok(ws) => ws,
        Err(e) => panic!("a legitimate client got no session: {e}\n{}", rt.log()),
    };
    ws.send(CLOSE, &1000u16.to_be_bytes(), None).unwrap();
    assert_eq!(ws.close_code(), 1000);
    drop(held);
    let log = rt.stop();
    assert!(!log.contains("accept failed"), "{log}");
}

/// `runtimeuse exec --json` against `rt` with `token`; the JSON lines it printed.
fn exec_json(rt: &Serve, token: &str, command: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runtimeuse"))
        .args(["exec", "--json", "--no-resume", "--token", token])
        .args(["--url", &format!("ws://127.0.0.1:{}", rt.port), command])
        .env_remove("RUNTIMEUSE_TOKEN")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn commands_get_neither_the_runtimes_token_nor_its_provider_key_and_clients_never_see_them() {
    let dir = std::env::temp_dir().join(format!("runtimeuse-withheld-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (token, key) = ("tok-from-env-4821", "sk-from-env-9174");
    // From the environment: the token and the model agent's key.
    let rt = Serve::start(
        &["--agent", "openai", "--base-url", "http://127.0.0.1:9"],
        &[("RUNTIMEUSE_TOKEN", token), ("OPENAI_API_KEY", key)],
    );
    let env = exec_json(&rt, token, "env");
    assert!(!env.contains("RUNTIMEUSE_TOKEN"), "{env}");
    assert!(!env.contains("OPENAI_API_KEY"), "{env}");
    // Printed anyway (read from elsewhere), they are redacted in what the client gets.
    let printed = exec_json(&rt, token, &format!("echo {token} {key}"));
    assert!(printed.contains("[REDACTED] [REDACTED]"), "{printed}");
    assert!(
        !printed.contains(token) && !printed.contains(key),
        "{printed}"
    );
    drop(rt);
    // From files, which `ps` does not show; the final line break is not part of them.
    let (token_file, key_file) = (dir.join("token"), dir.join("key"));
    std::fs::write(&token_file, "tok-from-file-3310\n").unwrap();
    std::fs::write(&key_file, "sk-from-file-7702\n").unwrap();
    let rt = Serve::start(
        &[
            "--agent",
            "anthropic",
            "--base-url",
            "http://127.0.0.1:9",
            "--token-file",
            token_file.to_str().unwrap(),
            "--api-key-file",
            key_file.to_str().unwrap(),
        ],
        &[],
    );
    let shown = exec_json(
        &rt,
        "tok-from-file-3310",
        &format!("cat {} {}; env", token_file.display(), key_file.display()),
    );
    assert!(!shown.contains("from-file"), "{shown}");
    assert!(!shown.contains("ANTHROPIC_API_KEY"), "{shown}");
    assert!(shown.contains("[REDACTED]\\n[REDACTED]"), "{shown}");
    let ps = std::fs::read(format!("/proc/{}/cmdline", rt.child.id())).unwrap();
    assert!(!String::from_utf8_lossy(&ps).contains("from-file"));
    // An empty or unreadable file is refused at start, naming the file.
    std::fs::write(&token_file, "\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runtimeuse"))
        .args([
            "serve",
            "--agent",
            "scripted",
            "--port",
            "0",
            "--token-file",
        ])
        .arg(&token_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--token-file") && err.contains("is empty"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_pseudo_filesystem_is_not_watched_for_artifacts() {
    let rt = Serve::start(&[], &[]);
    let mut ws = RawWs::connect(rt.port);
    let invocation = r#"{"message_type":"invocation_message","source_id":null,"system_prompt":"","user_prompt":"ECHO:done","model":"m","output_format_json_schema_str":null,"secrets_to_redact":[],"agent_env":null,"artifacts_dirs":["/proc"],"artifacts_ignore_content":null,"pre_agent_invocation_commands":null,"post_agent_invocation_commands":null,"pre_agent_downloadables":null}"#;
    ws.send(TEXT, invocation.as_bytes(), None).unwrap();
    loop {
        let (_, payload) = ws.read().unwrap();
        let text = String::from_utf8_lossy(&payload).into_owned();
        assert!(!text.contains("artifact_upload_request"), "{text}");
        if text.contains("result_message") {
            break;
        }
    }
    ws.send(CLOSE, &1000u16.to_be_bytes(), None).unwrap();
    assert_eq!(ws.close_code(), 1000);
    let log = rt.stop();
    assert!(
        log.contains("artifacts not watched: /proc is on a pseudo filesystem"),
        "{log}"
    );
}

#[test]
fn environment_names_that_are_empty_or_hold_an_equals_sign_are_refused() {
    let rt = Serve::start(&[], &[]);
    for (env, field) in [
        (
            r#"{"OK":"1","PATH=/evil":"x"}"#,
            "commands[0].env: the name of variable 2",
        ),
        (r#"{"":"x"}"#, "commands[0].env: the name of variable 1"),
    ] {
        let mut ws = RawWs::connect(rt.port);
        let batch = format!(
            r#"{{"message_type":"command_execution_message","source_id":null,"commands":[{{"command":"echo ran","cwd":null,"env":{env}}}],"secrets_to_redact":[]}}"#
        );
        ws.send(TEXT, batch.as_bytes(), None).unwrap();
        let (_, payload) = ws.read().unwrap();
        let text = String::from_utf8_lossy(&payload).into_owned();
        assert!(
            text.contains("error_message") && text.contains(field),
            "{text}"
        );
        assert!(!text.contains("evil"), "a name is quoted: {text}");
    }
}

/// Keeps `n` idle TCP connections open to `port`, opening a new one for each that closes,
/// until `stop`; how many it opened.
fn idle_flood(
    port: u16,
    n: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let open = || {
            let tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
            tcp.set_nonblocking(true).ok()?;
            Some(tcp)
        };
        let mut socks: Vec<Option<TcpStream>> = (0..n).map(|_| open()).collect();
        let mut opened = n as u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for slot in &mut socks {
                let closed = match slot {
                    Some(tcp) => !matches!(
                        tcp.read(&mut [0u8; 64]),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
                    ),
                    None => true,
                };
                if closed {
                    *slot = open();
                    opened += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        opened
    })
}

#[test]
fn strangers_holding_idle_sockets_lock_out_neither_token_holders_nor_probes() {
    let token = "t0ken-of-the-flood-test";
    let rt = Serve::start(&["--token", token], &[]);
    // A session opened before the flood is served through it.
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let mut session = RawWs::try_connect_with(rt.port, &bearer).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // More idle sockets than the runtime's 1,024 sessions (the probe that found the lock-out
    // used 1,100), reopened as they are closed.
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    assert!(
        hard > 1200,
        "the test needs 1,200 descriptors; the hard limit is {hard}"
    );
    let flood = idle_flood(rt.port, 1100, stop.clone());
    let started = Instant::now();
    let mut served = 0;
    let mut failures = Vec::new();
    for i in 0..13 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_runtimeuse"))
            .args(["query", "--token", token, "--connect-timeout", "5"])
            .args(["--url", &format!("ws://127.0.0.1:{}", rt.port)])
            .arg(format!("ECHO:through {i}"))
            .env_remove("RUNTIMEUSE_TOKEN")
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains(&format!("through {i}")) {
            served += 1;
        } else {
            failures.push(format!("query: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let mut probe = TcpStream::connect(("127.0.0.1", rt.port)).unwrap();
        probe
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        probe
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        let _ = probe.read_to_string(&mut answer);
        if answer.starts_with("HTTP/1.1 200") {
            served += 1;
        } else {
            failures.push(format!("probe: {answer:?}"));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened = flood.join().unwrap();
    // What it measured, for the record.
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "26 queries and probes, {served} served in {:.1} s, while {opened} idle sockets were opened",
            started.elapsed().as_secs_f64()
        );
    }
    assert_eq!(
        served, 26,
        "token holders or probes were locked out: {failures:?}"
    );
    assert!(opened > 1100, "the flood was not refused: {opened} sockets");
    session.text(r#"{"message_type":"command_execution_message","source_id":null,"commands":[{"command":"echo alive","cwd":null,"env":null}],"secrets_to_redact":[]}"#);
    loop {
        let (_, payload) = session.read().expect("the session's result");
        let text = String::from_utf8_lossy(&payload).into_owned();
        if text.contains("command_execution_result") {
            assert!(text.contains("alive"), "{text}");
            break;
        }
    }
    let log = rt.stop();
    let refusals = log
        .matches("connections refused since the last such line")
        .count();
    assert!(
        refusals <= 2 + started.elapsed().as_secs() as usize,
        "{refusals} refusal lines"
    );
    assert!(
        log.lines().count() < 200,
        "{} log lines",
        log.lines().count()
    );
}
