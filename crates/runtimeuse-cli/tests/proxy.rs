//! `runtimeuse proxy --record`: a real client through the proxy to a real runtime; the
//! transcript has the golden transcripts' format, masks `--redact` strings, and replays through
//! the protocol core (fed the recorded runtime frames, a client session sends the recorded
//! client frame and reaches the recorded result).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use runtimeuse_proto::{
    Config, Event, Input, Invocation, Output, RequestOptions, Session, Transmit,
};
use serde_json::Value;

mod common;
use common::Serve;

/// The proxy as a child process, killed when dropped.
struct Proxy {
    child: Child,
    port: u16,
}

impl Proxy {
    fn start(to: u16, dir: &std::path::Path) -> Self {
        Self::start_showing(to, dir, false)
    }

    /// The proxy, its live view of the frames on stderr (piped) when `show`.
    fn start_showing(to: u16, dir: &std::path::Path, show: bool) -> Self {
        let record = [std::ffi::OsStr::new("--record"), dir.as_os_str()];
        Self::start_with(to, &record, show)
    }

    /// The proxy with these arguments besides its addresses.
    fn start_with(to: u16, args: &[&std::ffi::OsStr], show: bool) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runtimeuse"))
            .args(if show { None } else { Some("--quiet") })
            .args(["proxy", "--listen", "127.0.0.1:0", "--redact", "s3cr3t"])
            .arg("--to")
            .arg(format!("ws://127.0.0.1:{to}"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(if show {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .split("port ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Self { child, port }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_recorded_connection_has_the_transcript_format_and_replays() {
    let rt = Serve::start(&[], &[]);
    let dir = std::env::temp_dir().join(format!("runtimeuse-proxy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let proxy = Proxy::start(rt.port, &dir);
    let out = Command::new(env!("CARGO_BIN_EXE_runtimeuse"))
        .args(["query", "--secret", "s3cr3t", "ECHO:the s3cr3t word"])
        .arg("--url")
        .arg(format!("ws://127.0.0.1:{}", proxy.port))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "the [REDACTED] word\n"
    );

    // The file is written as frames pass; the connection's last frame is the client's close.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let lines: Vec<Value> = loop {
        let files: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if let [file] = &files[..] {
            let text = std::fs::read_to_string(file).unwrap();
            let lines: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if lines
                .iter()
                .any(|l| l["dir"] == "c2r" && l["kind"] == "close")
            {
                break lines;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no complete transcript in {}",
            dir.display()
        );
        std::thread::yield_now();
    };
    drop(proxy);
    std::fs::remove_dir_all(&dir).unwrap();

    // The format.
    assert_eq!(lines[0]["dir"], "meta");
    assert_eq!(lines[0]["kind"], "open");
    assert_eq!(lines[0]["path"], "/");
    let mut last_t = 0;
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["seq"], i as u64, "{l}");
        let t = l["t_ms"].as_u64().unwrap();
        assert!(t >= last_t, "{l}");
        last_t = t;
        if l["kind"] == "text" {
            assert_eq!(
                l["bytes"].as_u64().unwrap() as usize,
                l["text"].as_str().unwrap().len()
            );
        }
    }
    let all = lines.iter().map(Value::to_string).collect::<String>();
    assert!(
        !all.contains("s3cr3t"),
        "a --redact string in the transcript"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["dir"] == "r2c" && l["kind"] == "close" && l["code"] == 1000)
    );

    // The replay: the invocation the client sent, the runtime's frames fed back.
    let sent = |l: &Value| -> Value { serde_json::from_str(l["text"].as_str().unwrap()).unwrap() };
    let invocation_line = lines
        .iter()
        .find(|l| l["dir"] == "c2r" && l["kind"] == "text")
        .unwrap();
    let recorded = sent(invocation_line);
    assert_eq!(recorded["message_type"], "invocation_message");
    let mut invocation = Invocation::new(
        recorded["user_prompt"].as_str().unwrap(),
        recorded["model"].as_str().unwrap(),
    )
    .system_prompt(recorded["system_prompt"].as_str().unwrap());
    for s in recorded["secrets_to_redact"].as_array().unwrap() {
        invocation = invocation.secret(s.as_str().unwrap());
    }
    let now = Instant::now();
    let mut session = Session::new(Config::default(), now);
    session
        .invoke(invocation, RequestOptions::default(), now)
        .unwrap();
    let mut frames = Vec::new();
    let mut result = None;
    let drain = |session: &mut Session, frames: &mut Vec<Value>, result: &mut Option<String>| loop {
        match session.poll_output() {
            Output::Transmit(Transmit::Text(t)) => frames.push(serde_json::from_str(&t).unwrap()),
            Output::Event(Event::Result { result: r, .. }) => {
                *result = r.text().map(str::to_owned);
            }
            Output::Timeout(_) => break,
            _ => {}
        }
    };
    drain(&mut session, &mut frames, &mut result);
    assert_eq!(frames, [recorded]);
    for l in lines
        .iter()
        .filter(|l| l["dir"] == "r2c" && l["kind"] == "text")
    {
        session.handle_input(Input::ReceiveText(now, l["text"].as_str().unwrap()));
        drain(&mut session, &mut frames, &mut result);
    }
    assert_eq!(result.as_deref(), Some("the [REDACTED] word"));
}

/// The transcript of the only connection recorded in `dir`, once complete.
fn transcript(dir: &std::path::Path) -> String {
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let files: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if let [file] = &files[..] {
            let text = std::fs::read_to_string(file).unwrap();
            if text.contains("\"c2r\"") && text.contains("\"close\"") {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no transcript in {}",
            dir.display()
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_token_protected_runtime_works_through_the_proxy_and_the_token_is_not_recorded() {
    let rt = Serve::start(&["--token", "t0ken-xyz"], &[]);
    for (i, how) in ["--token", "?token="].into_iter().enumerate() {
        let dir =
            std::env::temp_dir().join(format!("runtimeuse-proxy-token-{}-{i}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let proxy = Proxy::start(rt.port, &dir);
        let mut query = Command::new(env!("CARGO_BIN_EXE_runtimeuse"));
        query.args(["query", "ECHO:through"]);
        match how {
            "--token" => query
                .args(["--token", "t0ken-xyz", "--header", "X-Extra=1"])
                .arg("--url")
                .arg(format!("ws://127.0.0.1:{}", proxy.port)),
            _ => query
                .arg("--url")
                .arg(format!("ws://127.0.0.1:{}/?token=t0ken-xyz", proxy.port)),
        };
        let out = query.env_remove("RUNTIMEUSE_TOKEN").output().unwrap();
        assert!(
            out.status.success(),
            "{how}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "through\n");
        let recorded = transcript(&dir);
        assert!(
            !recorded.contains("t0ken-xyz"),
            "{how}: the token was recorded: {recorded}"
        );
        drop(proxy);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// A live-view line without its timing and size: `#1 c2r text invocation_message`.
fn frame_of(line: &str) -> Option<String> {
    let line = line.trim();
    if !line.starts_with("#1 ") {
        return None;
    }
    let words: Vec<&str> = line
        .split_whitespace()
        .filter(|w| !w.starts_with('+') && !w.starts_with('(') && *w != "B)")
        .collect();
    Some(words.join(" "))
}

#[test]
fn the_readmes_proxy_sample_is_what_the_proxy_shows() {
    let readme = include_str!("../../../README.md");
    let sample: Vec<String> = readme
        .split("```text\n#1 ")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .map(|block| format!("#1 {block}").lines().filter_map(frame_of).collect())
        .expect("the README has the proxy sample");
    let rt = Serve::start(&[], &[]);
    let dir = std::env::temp_dir().join(format!("runtimeuse-proxy-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut proxy = Proxy::start_showing(rt.port, &dir, true);
    let out = Command::new(env!("CARGO_BIN_EXE_runtimeuse"))
        .args(["query", "ECHO:hi"])
        .arg("--url")
        .arg(format!("ws://127.0.0.1:{}", proxy.port))
        .output()
        .unwrap();
    assert!(out.status.success());
    transcript(&dir);
    let _ = proxy.child.kill();
    let mut shown = String::new();
    std::io::Read::read_to_string(&mut proxy.child.stderr.take().unwrap(), &mut shown).unwrap();
    let live: Vec<String> = shown.lines().filter_map(frame_of).collect();
    // The closes, and the acknowledgements of the resumable session with their pongs, may
    // pass in any order among the rest; the rest is the exchange itself.
    let sorted = |v: &[String]| {
        let (mut control, rest): (Vec<String>, Vec<String>) = v.iter().cloned().partition(|l| {
            [" close ", " ping ", " pong "]
                .iter()
                .any(|k| l.contains(k))
        });
        control.sort();
        (rest, control)
    };
    assert_eq!(
        sorted(&sample),
        sorted(&live),
        "README:\n{sample:#?}\nproxy:\n{shown}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `runtimeuse exec` through the proxy, with stdout piped.
fn exec_via(proxy: &Proxy, command: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_runtimeuse"))
        .args(["exec", command, "--url"])
        .arg(format!("ws://127.0.0.1:{}", proxy.port))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn the_proxy_cuts_every_connection_after_n_frames_and_the_session_resumes_through_it() {
    let rt = Serve::start(&[], &[]);
    let args = ["--cut-after", "7"].map(std::ffi::OsStr::new);
    let proxy = Proxy::start_with(rt.port, &args, false);
    let command = "for i in $(seq 1 30); do echo $i; sleep 0.003; done";
    let out = exec_via(&proxy, command).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let want: String = (1..=30).map(|i| format!("{i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    // Cut every 7 frames of about 30: several times, each resumed.
    let resumed = stderr.matches("connection lost; resumed").count();
    assert!(resumed >= 2, "{stderr}");
}

#[test]
fn sigusr1_cuts_every_open_connection_at_once() {
    let rt = Serve::start(&[], &[]);
    let dir = std::env::temp_dir().join(format!("runtimeuse-proxy-usr1-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let go = dir.join("go");
    let mut proxy = Proxy::start_with(rt.port, &[], true);
    let mut shown = BufReader::new(proxy.child.stderr.take().unwrap()).lines();
    let command = format!(
        "echo start; while [ ! -e {go} ]; do sleep 0.01; done; echo end",
        go = go.display()
    );
    let mut exec = exec_via(&proxy, &command);
    let mut stdout = BufReader::new(exec.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert_eq!(first, "start\n");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(proxy.child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).unwrap();
    // The live view says when it cut.
    shown
        .by_ref()
        .map(Result::unwrap)
        .find(|l| l.contains("meta cut"))
        .expect("the proxy cut");
    std::fs::write(&go, "").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let out = exec.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(rest, "end\n");
    assert!(stderr.contains("connection lost; resumed"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_runtimes_refusal_of_a_resumption_reaches_the_client_as_it_is() {
    use runtimeuse_tokio::tokio_tungstenite::tungstenite;
    use tungstenite::client::IntoClientRequest;
    let rt = Serve::start(&[], &[]);
    let proxy = Proxy::start_with(rt.port, &[], false);
    let mut request = format!("ws://127.0.0.1:{}", proxy.port)
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "runtimeuse-session",
        "0123456789abcdef0123456789abcdef".parse().unwrap(),
    );
    headers.insert("runtimeuse-received", "0".parse().unwrap());
    let Err(tungstenite::Error::Http(response)) = tungstenite::connect(request) else {
        panic!("a resumption of an unknown session must be refused");
    };
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(
        response.headers()["runtimeuse-resume-refused"],
        "unknown-session"
    );
}
