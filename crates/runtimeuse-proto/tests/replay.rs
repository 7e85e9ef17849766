//! Replays every transcript recorded with the upstream Python client through the client
//! session: fed the runtime's frames, the session must send the frames the real client sent
//! (as JSON values) and reach the outcome the real client reached, except where the
//! transcripts' README documents a defect of the upstream client; there the correct behaviour
//! is asserted instead (see `Deviation`).
//!
//! The transcripts are a verbatim copy of `shared/transcripts/` (checked below when that
//! folder is beside the checkout).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Harness, ms};
use runtimeuse_proto::{
    ArtifactUpload, ArtifactUploadRequest, Command, CommandBatch, Config, Downloadable, Event,
    FailReason, Input, Invocation, Phase, RequestOptions, ResultData, RuntimeError, TimeoutKind,
};
use serde_json::{Value, json};

fn transcripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts")
}

/// One step of a recorded connection.
#[derive(Debug, Clone)]
enum Step {
    /// The runtime sent this frame (text or binary payload).
    Recv(u64, Vec<u8>),
    /// The client sent this JSON frame: an action for the harness.
    Send(u64, Value),
    /// The client closed the connection (it gave up or finished).
    ClientClose(u64),
    /// The runtime's side ended (close frame or TCP without one).
    RuntimeClose(u64),
}

struct Transcript {
    name: String,
    steps: Vec<Step>,
    observations: Vec<Value>,
}

fn load(path: &Path) -> Transcript {
    let text = std::fs::read_to_string(path).unwrap();
    let mut steps = Vec::new();
    let mut observations = Vec::new();
    for line in text.lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        let t = r["t_ms"].as_u64().unwrap_or(0);
        match (r["dir"].as_str().unwrap(), r["kind"].as_str().unwrap()) {
            ("r2c", "text") => steps.push(Step::Recv(t, payload(&r).into_bytes())),
            ("r2c", "binary") => unreachable!("the runtime never sends binary frames"),
            ("r2c", "close") => steps.push(Step::RuntimeClose(t)),
            ("c2r", "text") => {
                steps.push(Step::Send(t, serde_json::from_str(&payload(&r)).unwrap()))
            }
            ("c2r", "close") => steps.push(Step::ClientClose(t)),
            ("meta", "tcp_closed_without_close_frame") if r["side"] == "r2c" => {
                steps.push(Step::RuntimeClose(t))
            }
            ("meta", "client_observations") => {
                observations = r["observations"].as_array().unwrap().clone()
            }
            _ => {}
        }
    }
    Transcript {
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        steps,
        observations,
    }
}

/// The exact payload of a text frame, rebuilding truncated ones.
fn payload(r: &Value) -> String {
    let mut text = r["text"].as_str().unwrap().to_owned();
    if r["truncated"] == true {
        let fill = r["elided_fill"].as_str().unwrap();
        let n = r["elided_chars"].as_u64().unwrap() as usize;
        text.push_str(&fill.repeat(n));
        text.push_str(r["text_tail"].as_str().unwrap());
    }
    text
}

/// Recorded with the Python client (it offers permessage-deflate); the bare-client recordings
/// belong to the runtime role.
fn recorded_with_python_client(path: &Path) -> bool {
    let first = std::fs::read_to_string(path).unwrap();
    let open: Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    open["client_request_headers"]
        .get("Sec-WebSocket-Extensions")
        .is_some()
}

// ----- rebuilding the application's calls from the recorded frames -----

fn opt_str(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(opt_str).collect())
        .unwrap_or_default()
}

fn env(v: &Value) -> Option<BTreeMap<String, String>> {
    v.as_object().map(|o| {
        o.iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect()
    })
}

fn commands(v: &Value) -> Option<Vec<Command>> {
    v.as_array().map(|a| {
        a.iter()
            .map(|c| {
                let mut command = Command::new(opt_str(&c["command"]).unwrap());
                command.cwd = opt_str(&c["cwd"]);
                command.env = env(&c["env"]);
                command
            })
            .collect()
    })
}

fn downloadables(v: &Value) -> Option<Vec<Downloadable>> {
    v.as_array().map(|a| {
        a.iter()
            .map(|d| {
                Downloadable::new(
                    d["download_url"].as_str().unwrap(),
                    d["working_dir"].as_str().unwrap(),
                )
            })
            .collect()
    })
}

fn invocation(f: &Value) -> Invocation {
    // Field by field: the struct is #[non_exhaustive], so no struct expression outside proto.
    let mut i = Invocation::new(
        opt_str(&f["user_prompt"]).unwrap(),
        opt_str(&f["model"]).unwrap(),
    );
    i.system_prompt = opt_str(&f["system_prompt"]).unwrap();
    i.output_format_json_schema = opt_str(&f["output_format_json_schema_str"]);
    i.source_id = opt_str(&f["source_id"]);
    i.agent_env = env(&f["agent_env"]);
    i.secrets_to_redact = strings(&f["secrets_to_redact"]);
    i.artifacts_dirs = strings(&f["artifacts_dirs"]);
    i.artifacts_ignore_content = opt_str(&f["artifacts_ignore_content"]);
    i.pre_agent_invocation_commands = commands(&f["pre_agent_invocation_commands"]);
    i.post_agent_invocation_commands = commands(&f["post_agent_invocation_commands"]);
    i.pre_agent_downloadables = downloadables(&f["pre_agent_downloadables"]);
    i
}

fn command_batch(f: &Value) -> CommandBatch {
    let mut b = CommandBatch::new(commands(&f["commands"]).unwrap());
    b.source_id = opt_str(&f["source_id"]);
    b.secrets_to_redact = strings(&f["secrets_to_redact"]);
    b.artifacts_dirs = strings(&f["artifacts_dirs"]);
    b.artifacts_ignore_content = opt_str(&f["artifacts_ignore_content"]);
    b.pre_execution_downloadables = downloadables(&f["pre_execution_downloadables"]);
    b
}

/// The calls the client made, with the timeouts it set.
fn calls(observations: &[Value]) -> Vec<&Value> {
    observations
        .iter()
        .filter(|o| o.get("outcome").is_some())
        .collect()
}

fn seconds_in_call(call: &str, key: &str) -> Option<Duration> {
    let at = call.find(&format!("{key}="))? + key.len() + 1;
    let num: String = call[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    num.parse::<f64>().ok().map(Duration::from_secs_f64)
}

fn options_for(call: Option<&Value>, artifact_uploader: bool) -> RequestOptions {
    let mut opts = RequestOptions::default().artifact_uploader(artifact_uploader);
    let Some(call) = call else { return opts };
    let text = call["call"].as_str().unwrap_or("");
    let timeout = call["options"]["timeout"]
        .as_f64()
        .map(Duration::from_secs_f64)
        .or_else(|| seconds_in_call(text, "(timeout").or(seconds_in_call(text, " timeout")));
    if let Some(t) = timeout {
        opts = opts.timeout(t);
    }
    let idle = call["options"]["idle_timeout"]
        .as_f64()
        .map(Duration::from_secs_f64)
        .or_else(|| seconds_in_call(text, "idle_timeout"));
    if let Some(t) = idle {
        opts = opts.idle_timeout(t);
    }
    opts
}

// ----- outcomes -----

/// What the application got for one request.
#[derive(Debug)]
struct Outcome {
    terminal: Event,
    /// Non-terminal errors reported before the terminal.
    runtime_errors: Vec<Value>,
}

/// Where this project asserts the correct behaviour instead of the upstream client's.
fn deviation(name: &str) -> Option<Vec<Value>> {
    let boom = json!({"raised": "AgentRuntimeError", "message": "boom"});
    let text = |t: &str| json!({"returned": {"metadata": {}, "data": {"type": "text", "text": t}}});
    match name {
        // The upstream client reads the handler's error as the terminal, and the runtime's own
        // terminal leaks into the next query (README, "Upstream client and ERROR:").
        "extra__session_error_then_echo.jsonl" => Some(vec![boom, text("after")]),
        "extra__session_error_then_echo_twice_desync.jsonl" => {
            Some(vec![boom, text("after"), text("third")])
        }
        // The upstream client refuses frames over 1 MiB; results carry collected stdout.
        "extra__client_result_over_1mib.jsonl" => Some(vec![text(&"y".repeat(1_100_000))]),
        // Not a deviation: this record notes the failing test, not the call, which returned its
        // result (the test then failed on the upload that never happened).
        "extra__e2e_flaky_run_artifact_never_requested.jsonl" => Some(vec![text(
            "wrote /sandbox/test-art-multi-b-f2983aed-4a17-4cd7-86d3-7bf45db3ab5b/from-agent.txt",
        )]),
        _ => None,
    }
}

fn expected_outcomes(t: &Transcript) -> Vec<Value> {
    if let Some(d) = deviation(&t.name) {
        return d;
    }
    calls(&t.observations)
        .into_iter()
        .map(|c| match c["outcome"].as_str().unwrap() {
            "returned" => json!({"returned": c["value"]}),
            _ => {
                let mut v = json!({"raised": c["exception"], "message": c["message"]});
                if let Some(m) = c.get("metadata") {
                    v["metadata"] = m.clone();
                }
                v
            }
        })
        .collect()
}

fn check_outcome(name: &str, i: usize, got: &Outcome, want: &Value) {
    let ctx: String = format!("{name}: request {i}: got {got:?}, want {want}")
        .chars()
        .take(600)
        .collect();
    match &got.terminal {
        Event::Result { result, .. } => {
            let data = match &result.data {
                ResultData::Text(t) => json!({"type": "text", "text": t}),
                ResultData::StructuredOutput(v) => {
                    json!({"type": "structured_output", "structured_output": v})
                }
                other => panic!("{ctx}: {other:?}"),
            };
            let value = json!({"metadata": result.metadata, "data": data});
            assert_eq!(want["returned"], value, "{ctx}");
        }
        Event::CommandResult { result, .. } => {
            let want_items = want["returned"]["results"]
                .as_array()
                .unwrap_or_else(|| panic!("{ctx}"));
            assert_eq!(want_items.len(), result.results.len(), "{ctx}");
            for (w, r) in want_items.iter().zip(&result.results) {
                assert_eq!(w["command"], json!(r.command), "{ctx}");
                assert_eq!(w["exit_code"], json!(r.exit_code), "{ctx}");
                check_stdout(&w["stdout"], r.stdout.as_deref(), &ctx);
            }
        }
        Event::Failed { reason, .. } => {
            let raised = want["raised"].as_str().unwrap_or_else(|| panic!("{ctx}"));
            match (raised, reason) {
                ("CancelledException", FailReason::Cancelled) => {}
                ("TimeoutError", FailReason::Timeout { kind, .. }) => {
                    assert!(matches!(kind, TimeoutKind::Overall(_)), "{ctx}")
                }
                ("AgentRuntimeError", FailReason::TransportClosed) => {
                    assert_eq!(want["message"], "No result message received", "{ctx}")
                }
                ("AgentRuntimeError", FailReason::Timeout { kind, diagnostics }) => {
                    let meta = &want["metadata"];
                    assert_eq!(meta["timeout_type"], "idle_timeout", "{ctx}");
                    let secs = meta["idle_timeout"].as_f64().unwrap();
                    assert_eq!(
                        *kind,
                        TimeoutKind::Idle(Duration::from_secs_f64(secs)),
                        "{ctx}"
                    );
                    assert_eq!(diagnostics.message_count, meta["message_count"], "{ctx}");
                    assert!(
                        meta["last_message_type"].is_null() == diagnostics.last_message.is_none()
                    );
                    assert_eq!(meta["phase"], "waiting_for_message", "{ctx}");
                    assert_eq!(diagnostics.phase, Phase::WaitingForFirstMessage, "{ctx}");
                }
                (
                    "AgentRuntimeError",
                    FailReason::Runtime(RuntimeError {
                        error, metadata, ..
                    }),
                ) => {
                    assert_eq!(want["message"], json!(error), "{ctx}");
                    if let Some(python_meta) = want.get("metadata") {
                        // The Python client reports the first error_message; this session
                        // reports it as non-terminal and ends with the runtime's terminal.
                        let first = got.runtime_errors.first().unwrap_or(metadata);
                        assert_eq!(python_meta, first, "{ctx}");
                    }
                }
                _ => panic!("{ctx}"),
            }
        }
        other => panic!("{ctx}: not a terminal: {other:?}"),
    }
}

/// The Python client's result item has `stdout: None` for an absent field; the record
/// abbreviates long output as `<N chars, see transcript>` or `<N chars ending '...', see
/// transcript>`.
fn check_stdout(want: &Value, got: Option<&str>, ctx: &str) {
    let Some(w) = want.as_str() else {
        assert!(want.is_null() && got.is_none(), "{ctx}: stdout");
        return;
    };
    let got = got.unwrap_or_else(|| panic!("{ctx}: no stdout"));
    let Some(abbrev) = w
        .strip_prefix('<')
        .and_then(|w| w.strip_suffix(", see transcript>"))
    else {
        assert_eq!(w, got, "{ctx}: stdout");
        return;
    };
    let (count, rest) = abbrev.split_once(" chars").unwrap();
    assert_eq!(
        got.chars().count(),
        count.parse::<usize>().unwrap(),
        "{ctx}: stdout length"
    );
    if let Some(tail) = rest
        .strip_prefix(" ending '")
        .and_then(|r| r.strip_suffix('\''))
    {
        let tail = tail.replace("\\n", "\n");
        assert!(got.ends_with(&tail), "{ctx}: stdout ends with {tail:?}");
    }
}

// ----- the replay -----

struct Replay {
    h: Harness,
    name: String,
    /// Frames the session sent that the Python client did not, by design: the cancel that
    /// follows a client-side timeout (the upstream client only closes, leaving the handler
    /// running).
    extra_cancels: usize,
    outcomes: Vec<Outcome>,
    runtime_errors: Vec<Value>,
    tokens: Vec<ArtifactUploadRequest>,
    requests: usize,
    /// Per stream: how many output chunks and characters were delivered.
    output_totals: BTreeMap<&'static str, (u64, u64)>,
}

impl Replay {
    fn new(name: &str) -> Self {
        Self {
            h: Harness::new(Config::default()),
            name: name.to_owned(),
            extra_cancels: 0,
            outcomes: Vec::new(),
            runtime_errors: Vec::new(),
            tokens: Vec::new(),
            requests: 0,
            output_totals: BTreeMap::new(),
        }
    }

    /// Moves the harness's events into outcomes and tokens, answering pings.
    fn collect(&mut self) {
        if self.h.pings > 0 {
            self.h.pings = 0;
            let now = self.h.now;
            self.h.session.handle_input(Input::Pong(now));
            self.h.drain();
        }
        for e in self.h.take_events() {
            match e {
                Event::ArtifactUploadRequest(r) => self.tokens.push(r),
                Event::RuntimeError { error, .. } => self.runtime_errors.push(error.metadata),
                Event::CommandOutput(o) => {
                    let total = self.output_totals.entry(o.stream.as_str()).or_default();
                    total.0 += 1;
                    total.1 += o.text.chars().count() as u64;
                }
                e if e.is_terminal() => {
                    if matches!(
                        &e,
                        Event::Failed {
                            reason: FailReason::Timeout { .. },
                            ..
                        }
                    ) {
                        self.extra_cancels += 1;
                    }
                    self.outcomes.push(Outcome {
                        terminal: e,
                        runtime_errors: std::mem::take(&mut self.runtime_errors),
                    });
                }
                _ => {}
            }
        }
    }

    fn feed(&mut self, step: &Step) {
        match step {
            Step::Recv(t, bytes) => {
                let now = self.h.at(*t);
                self.h.session.handle_input(Input::Receive(now, bytes));
            }
            Step::ClientClose(t) => {
                // The client gave up or finished here. Its timers ran on its own clock, and
                // the record's milliseconds are rounded down: allow a few of them.
                let mut now = self.h.at(*t);
                let due = self.h.session.poll_timeout();
                if self.h.session.request_in_flight().is_some() && due <= now + ms(5) {
                    now = self.h.at((due - self.h.t0).as_millis() as u64 + 1);
                }
                self.h.session.handle_input(Input::Timeout(now));
            }
            Step::RuntimeClose(t) => {
                let now = self.h.at(*t);
                self.h.session.handle_input(Input::TransportClosed(now));
            }
            Step::Send(..) => unreachable!(),
        }
        self.h.drain();
        self.collect();
    }

    /// Lets time pass until the session has nothing in flight, reading the recorded frames that
    /// come before the next action of the client as they are needed.
    fn wait_idle(&mut self, steps: &mut std::iter::Peekable<std::vec::IntoIter<Step>>) {
        for _ in 0..1000 {
            if self.h.session.request_in_flight().is_none() {
                return;
            }
            match steps.peek() {
                Some(Step::Recv(..) | Step::RuntimeClose(..)) => {
                    let step = steps.next().unwrap();
                    self.feed(&step);
                }
                _ => {
                    self.h.fire_next_timeout();
                    self.collect();
                }
            }
        }
        panic!("{}: the request never finished", self.name);
    }

    fn act(
        &mut self,
        t: u64,
        frame: &Value,
        calls: &[&Value],
        steps: &mut std::iter::Peekable<std::vec::IntoIter<Step>>,
    ) {
        match frame["message_type"].as_str().unwrap() {
            kind @ ("invocation_message" | "command_execution_message") => {
                self.wait_idle(steps);
                let now = self.h.at(t);
                let uploader = frame["artifacts_dirs"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty());
                let opts = options_for(calls.get(self.requests).copied(), uploader);
                let before = self.h.sent.len();
                self.requests += 1;
                let result = if kind == "invocation_message" {
                    self.h.session.invoke(invocation(frame), opts, now)
                } else {
                    self.h
                        .session
                        .execute_commands(command_batch(frame), opts, now)
                };
                result.unwrap_or_else(|e| panic!("{}: {e}", self.name));
                // A request started while a cancelled one drains is held back until that one's
                // terminal has settled; the recorded replies come only after it went out.
                self.h.drain();
                for _ in 0..100 {
                    if self.h.sent[before..]
                        .iter()
                        .any(|f| f["message_type"] == kind)
                    {
                        break;
                    }
                    self.h.fire_next_timeout();
                    self.collect();
                }
            }
            "artifact_upload_response_message" => {
                let matches = |r: &ArtifactUploadRequest| {
                    r.filename() == frame["filename"] && r.filepath() == frame["filepath"]
                };
                while !self.tokens.iter().any(matches) {
                    let step = steps
                        .next()
                        .unwrap_or_else(|| panic!("{}: artifact never requested", self.name));
                    self.feed(&step);
                }
                let at = self.tokens.iter().position(matches).unwrap();
                let token = self.tokens.remove(at);
                let upload = ArtifactUpload::new(
                    frame["presigned_url"].as_str().unwrap(),
                    frame["content_type"].as_str().unwrap(),
                );
                let now = self.h.at(t);
                self.h
                    .session
                    .respond_artifact_upload(token, upload, now)
                    .unwrap_or_else(|e| panic!("{}: {e}", self.name));
            }
            "cancel_message" => {
                let now = self.h.at(t);
                self.h
                    .session
                    .cancel(now)
                    .unwrap_or_else(|e| panic!("{}: {e}", self.name));
            }
            "end_session_message" => {
                self.wait_idle(steps);
                let now = self.h.at(t);
                self.h
                    .session
                    .end_session(now)
                    .unwrap_or_else(|e| panic!("{}: {e}", self.name));
            }
            other => panic!("{}: unexpected client frame {other}", self.name),
        }
        self.h.drain();
        self.collect();
    }
}

/// The client cancelled in reaction to the first frame of a request (a callback); the record
/// shows the cancel after frames that arrived before the client read them. Put each cancel
/// right after the first runtime frame of its request.
fn cancel_in_reaction(steps: Vec<Step>) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::with_capacity(steps.len());
    let mut request_start = 0;
    for step in steps {
        match &step {
            Step::Send(_, f) if f["message_type"] == "cancel_message" => {
                let first_recv =
                    (request_start..out.len()).find(|&i| matches!(out[i], Step::Recv(..)));
                match first_recv {
                    Some(i) => out.insert(i + 1, step),
                    None => out.push(step),
                }
            }
            Step::Send(_, f)
                if f["message_type"] == "invocation_message"
                    || f["message_type"] == "command_execution_message" =>
            {
                request_start = out.len() + 1;
                out.push(step);
            }
            _ => out.push(step),
        }
    }
    out
}

fn replay(t: Transcript) {
    let mut r = Replay::new(&t.name);
    let calls = calls(&t.observations);
    let expected_sent: Vec<Value> = t
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Send(_, f) => Some(f.clone()),
            _ => None,
        })
        .collect();
    let mut steps = cancel_in_reaction(t.steps).into_iter().peekable();
    while let Some(step) = steps.next() {
        match step {
            Step::Send(time, frame) => r.act(time, &frame, &calls, &mut steps),
            other => r.feed(&other),
        }
    }
    // The client is done: let pending timers (an error's settle time) run out.
    r.wait_idle(&mut steps);

    // Frames: what the Python client sent, plus a cancel after each client-side timeout.
    let mut sent = r.h.take_sent();
    for _ in 0..r.extra_cancels {
        let at = sent
            .iter()
            .rposition(|f| f["message_type"] == "cancel_message")
            .expect("a timeout sends a cancel");
        sent.remove(at);
    }
    assert_eq!(sent, expected_sent, "{}: frames sent", t.name);

    let want = expected_outcomes(&Transcript {
        name: t.name.clone(),
        steps: Vec::new(),
        observations: t.observations.clone(),
    });
    assert_eq!(
        r.outcomes.len(),
        want.len(),
        "{}: outcomes {:?}",
        t.name,
        r.outcomes
    );
    for (i, (got, want)) in r.outcomes.iter().zip(&want).enumerate() {
        check_outcome(&t.name, i, got, want);
    }
    for token in r.tokens.drain(..) {
        r.h.session.decline_artifact_upload(token);
    }
    if let Some(totals) = t
        .observations
        .iter()
        .find_map(|o| o.get("on_command_output_totals"))
    {
        for stream in ["stdout", "stderr"] {
            let (n, chars) = r.output_totals.get(stream).copied().unwrap_or_default();
            assert_eq!(
                totals[stream]["callbacks"], n,
                "{}: {stream} chunks",
                t.name
            );
            assert_eq!(totals[stream]["chars"], chars, "{}: {stream} chars", t.name);
        }
    }
}

#[test]
fn every_python_client_transcript_replays() {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(transcripts_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    paths.sort();
    let mut replayed = 0;
    for path in paths.iter().filter(|p| recorded_with_python_client(p)) {
        replay(load(path));
        replayed += 1;
    }
    assert_eq!(replayed, 53, "python-client transcripts replayed");
}

#[test]
fn the_transcripts_are_a_verbatim_copy_of_shared() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/transcripts");
    let Ok(entries) = std::fs::read_dir(&shared) else {
        // Not beside a checkout of the project's shared folder: nothing to compare.
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let ours = transcripts_dir().join(path.file_name().unwrap());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(&ours).unwrap_or_default(),
            "{} differs from shared/transcripts",
            ours.display()
        );
    }
}
