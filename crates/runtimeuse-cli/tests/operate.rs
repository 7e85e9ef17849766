//! The runtime in production, tested on the real binary: `/healthz` and `/readyz` by a plain
//! HTTP client, `/metrics` parsed by a Prometheus text-format parser after a known workload,
//! the graceful shutdown on SIGTERM (a request that finishes within the grace, one that is
//! cancelled after it), and `--log-format json`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::Serve;
use common::raw::{self, CLOSE, RawWs, TEXT};
use serde_json::Value;

/// A plain HTTP GET: status and body.
fn get(port: u16, path: &str, extra: &str) -> (u16, String) {
    let (status, _, body) = request(port, "GET", path, extra);
    (status, body)
}

/// A plain HTTP request; the status, the head and the body of the answer.
fn request(port: u16, method: &str, path: &str, extra: &str) -> (u16, String, String) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        tcp,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n"
    )
    .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

#[test]
fn head_probes_methods_and_paths_get_their_http_answers() {
    let rt = Serve::start(&[], &[]);
    // Load balancers probe with HEAD: the GET's head, no body.
    let (status, head, body) = request(rt.port, "HEAD", "/healthz", "");
    assert_eq!(status, 200, "{head}");
    assert!(body.is_empty(), "{body}");
    assert!(!head.contains("Content-Length: 0"), "{head}");
    let (status, head, _) = request(rt.port, "POST", "/healthz", "Content-Length: 0\r\n");
    assert_eq!(status, 405, "{head}");
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    assert_eq!(get(rt.port, "/no-such-page", "").0, 404);
    assert_eq!(get(rt.port, "/", "").0, 426);
}

/// What the runtime answers to `bytes`, as text: the response up to the close, or the head
/// of a `101` (the connection then stays open).
fn answer_to(port: u16, bytes: &[u8]) -> String {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(bytes).unwrap();
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tcp.read(&mut chunk).unwrap();
        response.extend_from_slice(&chunk[..n]);
        let upgraded =
            response.starts_with(b"HTTP/1.1 101") && response.windows(4).any(|w| w == b"\r\n\r\n");
        if n == 0 || upgraded {
            return String::from_utf8_lossy(&response).into_owned();
        }
    }
}

#[test]
fn malformed_heads_and_upgrades_get_an_http_answer_not_a_bare_close() {
    let rt = Serve::start(&[], &[]);
    let upgrade = |method: &str, version: &str, extra: &str| {
        format!(
            "{method} / {version}\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n"
        )
    };
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let cases = [
        ("GARBAGE\r\n\r\n".to_owned(), "400 Bad Request"),
        (
            "GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n".to_owned(),
            "400",
        ),
        (
            upgrade("GET", "HTTP/1.1", "Sec-WebSocket-Version: 13\r\n"),
            "400",
        ),
        (
            upgrade(
                "POST",
                "HTTP/1.1",
                &format!("{key}Sec-WebSocket-Version: 13\r\n"),
            ),
            "400",
        ),
        (
            upgrade(
                "GET",
                "HTTP/1.0",
                &format!("{key}Sec-WebSocket-Version: 13\r\n"),
            ),
            "400",
        ),
        (
            upgrade(
                "GET",
                "HTTP/1.1",
                &format!("{key}Sec-WebSocket-Version: 8\r\n"),
            ),
            "426 Upgrade Required",
        ),
        (
            format!(
                "GET / HTTP/1.1\r\n{}\r\n",
                (0..70).map(|i| format!("X-{i}: y\r\n")).collect::<String>()
            ),
            "431",
        ),
    ];
    for (request, status) in cases {
        let response = answer_to(rt.port, request.as_bytes());
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status}")),
            "{request:?}: {response:?}"
        );
        if status.starts_with("426") {
            // RFC 6455, 4.4: the versions the server speaks.
            assert!(
                response.contains("Sec-WebSocket-Version: 13\r\n"),
                "{response}"
            );
        }
    }
    // A well-formed upgrade still is one.
    let response = answer_to(
        rt.port,
        upgrade(
            "GET",
            "HTTP/1.1",
            &format!("{key}Sec-WebSocket-Version: 13\r\n"),
        )
        .as_bytes(),
    );
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
}

fn exec(port: u16, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_runtimeuse"))
        .arg("exec")
        .args(args)
        .arg("--url")
        .arg(format!("ws://127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn health_and_readiness_answer_plain_http_without_the_token() {
    let before_start = Instant::now();
    let rt = Serve::start(&["--token", "s3cr3t"], &[]);
    let mut last_uptime = 0.0;
    for path in ["/healthz", "/readyz"] {
        let (status, body) = get(rt.port, path, "");
        assert_eq!(status, 200, "{path}: {body}");
        let health: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(health["status"], "ok");
        assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
        // The process's uptime: since it started (not since an epoch), and it goes on.
        let uptime = health["uptime_seconds"].as_f64().unwrap();
        assert!(
            uptime <= before_start.elapsed().as_secs_f64(),
            "{uptime} s, but the runtime started {:?} ago",
            before_start.elapsed()
        );
        assert!(uptime >= last_uptime, "{uptime} after {last_uptime}");
        last_uptime = uptime;
        assert_eq!(health["connections"], 0);
        assert_eq!(health["requests_in_flight"], 0);
    }
    // The WebSocket path is undisturbed, and still needs the token.
    let out = exec(rt.port, &["echo hi", "--token", "s3cr3t"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert!(RawWs::try_connect(rt.port).is_err(), "no token, no session");
    // Metrics are behind the token.
    assert_eq!(get(rt.port, "/metrics", "").0, 401);
    let (status, _) = get(rt.port, "/metrics", "Authorization: Bearer s3cr3t\r\n");
    assert_eq!(status, 200);
}

/// The value of the sample `name` whose labels include `labels`.
fn sample(samples: &[prometheus_parse::Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    match found.as_slice() {
        [s] => match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{name}: not a number"),
        },
        other => panic!("{name} {labels:?}: {} samples", other.len()),
    }
}

#[test]
fn metrics_count_a_known_workload() {
    let rt = Serve::start(&[], &[]);
    // Two command batches (one command fails), one query, one refused handshake, two probes.
    assert!(exec(rt.port, &["echo one"]).status.success());
    assert_eq!(exec(rt.port, &["exit 3"]).status.code(), Some(3));
    let out = Command::new(env!("CARGO_BIN_EXE_runtimeuse"))
        .args(["query", "ECHO:hi", "--url"])
        .arg(format!("ws://127.0.0.1:{}", rt.port))
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut junk = TcpStream::connect(("127.0.0.1", rt.port)).unwrap();
    junk.write_all(b"not http at all\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = junk.read_to_end(&mut rest);
    assert_eq!(get(rt.port, "/healthz", "").0, 200);
    assert_eq!(get(rt.port, "/readyz", "").0, 200);
    // Plain HTTP elsewhere is told what the port serves (was an empty reply).
    let (status, body) = get(rt.port, "/", "");
    assert_eq!(status, 426);
    assert!(body.contains("WebSocket"), "{body}");

    let (status, text) = get(rt.port, "/metrics", "");
    assert_eq!(status, 200);
    assert!(text.ends_with("# EOF\n"), "OpenMetrics by default");
    // A scraper that asks for the Prometheus text format gets it: no `# EOF`, counters typed
    // by their `_total` names.
    let (status, plain) = get(rt.port, "/metrics", "Accept: text/plain;version=0.0.4\r\n");
    assert_eq!(status, 200);
    assert!(
        !plain.contains("# EOF") && !plain.contains("# UNIT"),
        "{plain}"
    );
    assert!(
        plain.contains("# TYPE runtimeuse_requests_total counter"),
        "{plain}"
    );
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the Prometheus text format");
    let s = &scrape.samples;
    let requests = "runtimeuse_requests_total";
    assert_eq!(
        sample(s, requests, &[("kind", "commands"), ("outcome", "ok")]),
        2.0
    );
    assert_eq!(
        sample(s, requests, &[("kind", "query"), ("outcome", "ok")]),
        1.0
    );
    assert_eq!(
        sample(s, "runtimeuse_commands_total", &[("status", "ok")]),
        1.0
    );
    assert_eq!(
        sample(s, "runtimeuse_commands_total", &[("status", "failed")]),
        1.0
    );
    let connections = "runtimeuse_connections_total";
    assert_eq!(sample(s, connections, &[("outcome", "served")]), 3.0);
    assert_eq!(sample(s, connections, &[("outcome", "refused")]), 1.0);
    // The two probes and the plain GET; this scrape counts once its answer is made.
    assert_eq!(sample(s, connections, &[("outcome", "http")]), 4.0);
    assert_eq!(sample(s, "runtimeuse_connections_open", &[]), 0.0);
    assert_eq!(sample(s, "runtimeuse_requests_in_flight", &[]), 0.0);
    let durations = "runtimeuse_request_duration_seconds_count";
    assert_eq!(sample(s, durations, &[("kind", "commands")]), 2.0);
    // Per exec: output, result, confirm of the end; per query: result, confirm. At least.
    assert!(sample(s, "runtimeuse_sent_frames_total", &[]) >= 6.0);
    assert!(sample(s, "runtimeuse_sent_bytes_total", &[]) > 100.0);
    assert_eq!(sample(s, "runtimeuse_queued_bytes", &[]), 0.0);
    for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
        assert!(line.starts_with("# TYPE runtimeuse_"), "{line}");
    }
}

#[test]
fn sigterm_lets_a_request_finish_within_the_grace_and_exits_0() {
    let mut rt = Serve::start(&["--shutdown-grace", "20"], &[]);
    let mut exec = Command::new(env!("CARGO_BIN_EXE_runtimeuse"))
        .args(["exec", "echo started; sleep 3; echo done", "--url"])
        .arg(format!("ws://127.0.0.1:{}", rt.port))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(exec.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "started\n");
    let signalled = Instant::now();
    rt.sigterm();
    // Readiness goes false once the signal is handled, while the port still answers.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = get(rt.port, "/readyz", "");
        if status == 503 {
            assert!(body.contains("draining"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still ready 5 s after SIGTERM: {body}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(get(rt.port, "/healthz", "").0, 200, "alive while it drains");
    assert!(
        RawWs::try_connect(rt.port).is_err(),
        "no new session while it drains"
    );
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "done\n");
    assert!(exec.wait().unwrap().success());
    let status = rt.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(signalled.elapsed() < Duration::from_secs(20));
}

#[test]
fn sigterm_cancels_what_outlives_the_grace_confirms_it_and_goes_away() {
    let mut rt = Serve::start(&["--shutdown-grace", "1"], &[]);
    let dir = std::env::temp_dir().join(format!("runtimeuse-operate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pid_file = dir.join("pid");
    let mut ws = RawWs::connect(rt.port);
    let marker = format!("sleep 61{}", std::process::id() % 1000);
    ws.text(&raw::commands(&format!(
        "{marker} & echo $! > {pid}; echo started; wait",
        pid = pid_file.display()
    )));
    // The command runs once its first output arrives.
    loop {
        let (op, payload) = ws.read().unwrap();
        if op == TEXT && String::from_utf8_lossy(&payload).contains("started") {
            break;
        }
    }
    let signalled = Instant::now();
    rt.sigterm();
    let (mut cancelled, mut code) = (None, None);
    while code.is_none() {
        let (op, payload) = ws.read().unwrap();
        match op {
            TEXT => {
                let m: Value = serde_json::from_slice(&payload).unwrap();
                if m["message_type"] == "error_message" {
                    cancelled = Some(m["error"].as_str().unwrap().to_owned());
                }
            }
            CLOSE => code = Some(u16::from_be_bytes([payload[0], payload[1]])),
            _ => {}
        }
    }
    assert!(
        cancelled.as_deref().is_some_and(|e| e.contains("cancel")),
        "{cancelled:?}"
    );
    assert_eq!(code, Some(1001), "going away");
    assert_eq!(rt.child.wait().unwrap().code(), Some(0));
    assert!(signalled.elapsed() < Duration::from_secs(10));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Gone, or a zombie waiting for a parent that reaps (its own parent died with it).
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let alive = state
        .rsplit(')')
        .next()
        .is_some_and(|rest| !rest.trim_start().starts_with('Z'));
    assert!(!alive, "the command's process group is gone: {state}");
    assert_eq!(raw::processes_with(&marker), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn json_logs_parse_carry_the_ids_and_keep_secrets_out() {
    let rt = Serve::start(&["--log-format", "json", "-vv"], &[]);
    let out = exec(
        rt.port,
        &[
            "echo the password is hunter2-xyz",
            "--secret",
            "hunter2-xyz",
        ],
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("[REDACTED]"));
    let log = rt.stop();
    let mut with_request = 0;
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for key in ["timestamp", "level", "target"] {
            assert!(v.get(key).is_some(), "{key} in {line}");
        }
        assert!(!line.contains("hunter2-xyz"), "a secret in the log: {line}");
        let spans = v["spans"].as_array().cloned().unwrap_or_default();
        let named = |name: &str| {
            spans
                .iter()
                .any(|s| s["name"] == name && s.get("id").is_some())
        };
        if named("request") {
            assert!(named("connection"), "{line}");
            with_request += 1;
        }
    }
    assert!(
        with_request > 0,
        "lines of the request carry its id:\n{log}"
    );
}

#[test]
fn metrics_count_the_agents_turns_tools_retries_tokens_and_uploads() {
    use runtimeuse_scenarios::{Api, MockProvider, Reply};
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let shell = serde_json::json!({"command": "echo from-the-tool"});
    let replies = vec![
        Api::Responses.rate_limited(0),
        Reply::stream(Api::Responses.tool_call("call_1", "shell", &shell)),
        Reply::stream(Api::Responses.text("done")),
    ];
    let mock = tokio.block_on(MockProvider::start(replies));
    let base = format!("{}/v1", mock.url());
    let rt = Serve::start(
        &["--agent", "openai", "--base-url", &base, "--api-key", "k"],
        &[],
    );
    let out = Command::new(env!("CARGO_BIN_EXE_runtimeuse"))
        .args(["query", "use the shell", "--model", "gpt-test", "--url"])
        .arg(format!("ws://127.0.0.1:{}", rt.port))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An artifact upload: to a server that takes it, with the runtime's scripted agent.
    let files = tokio.block_on(runtimeuse_scenarios::HttpServer::start(
        std::collections::HashMap::new(),
        Duration::ZERO,
    ));
    let dir = std::env::temp_dir().join(format!("runtimeuse-operate-up-{}", std::process::id()));
    let scripted = Serve::start(&[], &[]);
    let base = files.url("/up/");
    let options = runtimeuse_tokio::ExecuteCommandsOptions::new()
        .artifacts_dir(dir.display().to_string())
        .on_artifact_upload_request(move |req| {
            let url = format!("{base}{}", req.filename);
            async move { runtimeuse_tokio::ArtifactUpload::new(url, "text/plain") }
        });
    let client = runtimeuse_tokio::Client::new(format!("ws://127.0.0.1:{}", scripted.port));
    let command = format!("echo x > {}/a.txt", dir.display());
    tokio
        .block_on(client.execute_commands([command], options))
        .expect("the batch");
    assert_eq!(files.uploads_to("/up/a.txt"), 1);

    let scrape = |port| {
        let (_, text) = get(port, "/metrics", "");
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
    };
    let s = &scrape(rt.port).samples;
    let openai = ("provider", "openai");
    assert_eq!(sample(s, "runtimeuse_agent_turns_total", &[openai]), 2.0);
    assert_eq!(sample(s, "runtimeuse_tool_calls_total", &[openai]), 1.0);
    assert_eq!(
        sample(s, "runtimeuse_provider_retries_total", &[openai]),
        1.0
    );
    let errors = "runtimeuse_provider_errors_total";
    assert_eq!(sample(s, errors, &[openai, ("status", "429")]), 1.0);
    let tokens = "runtimeuse_tokens_total";
    // The mock counts 20 in and 7 out per turn.
    let model = ("model", "gpt-test");
    assert_eq!(
        sample(s, tokens, &[openai, model, ("direction", "in")]),
        40.0
    );
    assert_eq!(
        sample(s, tokens, &[openai, model, ("direction", "out")]),
        14.0
    );
    let s = &scrape(scripted.port).samples;
    let uploads = "runtimeuse_artifact_uploads_total";
    assert_eq!(sample(s, uploads, &[("outcome", "ok")]), 1.0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The image binary of the README (CI builds it and names it in `RUNTIMEUSE_STATIC_BIN`): it
/// serves with nothing around it (an empty environment, the root as its directory), answers
/// `/healthz`, runs a command batch, and stops on SIGTERM with 0. Without the variable, the
/// debug binary stands in.
#[test]
fn the_static_binary_serves_with_nothing_around_it() {
    let bin = std::env::var("RUNTIMEUSE_STATIC_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_runtimeuse").to_owned());
    use runtimeuse_scenarios::bench::{ServerChild, scripted_serve};
    let mut serve = scripted_serve(&bin);
    serve.env_clear().current_dir("/");
    let mut server = ServerChild::start_serve(serve);
    let port = server.port();
    assert_eq!(get(port, "/healthz", "").0, 200);
    let out = exec(port, &["echo from the image"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from the image\n");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(server.pid()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(server.wait(), Some(0));
}

#[test]
fn a_second_sigterm_exits_at_once_and_leaves_no_command_behind() {
    let mut rt = Serve::start(&["--shutdown-grace", "30"], &[]);
    let mut ws = RawWs::connect(rt.port);
    let marker = format!("sleep 62{}", std::process::id() % 1000);
    ws.text(&raw::commands(&format!("echo started; {marker}")));
    loop {
        let (op, payload) = ws.read().unwrap();
        if op == TEXT && String::from_utf8_lossy(&payload).contains("started") {
            break;
        }
    }
    rt.sigterm();
    // The first signal is handled once readiness turns false.
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(rt.port, "/readyz", "").0 != 503 {
        assert!(Instant::now() < deadline, "still ready after SIGTERM");
        std::thread::sleep(Duration::from_millis(5));
    }
    let signalled = Instant::now();
    rt.sigterm();
    assert_eq!(rt.child.wait().unwrap().code(), Some(128 + 15));
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "at once, not after the grace"
    );
    // Killed with the process: the command's group is gone once the kernel tore it down.
    raw::wait_gone(
        || raw::processes_with(&marker),
        Duration::from_secs(5),
        "the command outlived the runtime",
    );
}
