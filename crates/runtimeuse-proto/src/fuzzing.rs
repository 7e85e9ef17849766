//! Bodies of the fuzz targets, shared with the corpus replay and property tests.
//!
//! Not part of the API: hidden from the docs and free to change.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::wire::{
    self, ClientMessage, Decoded, Frame, RuntimeFrame, RuntimeMessage, WireResultData,
};
use crate::{
    ArtifactUpload, ArtifactUploadRequest, CommandBatch, Config, Event, Input, Invocation, Output,
    RequestId, RequestOptions, Session, Transmit,
};

const LIMIT: usize = 1 << 20;

/// Decodes `data` as a runtime frame and as a client frame. Neither may panic; whatever decodes
/// must survive an encode/decode round trip unchanged.
pub fn decode(data: &[u8]) {
    // The hand-written fast path for command output accepts only what serde decodes alike.
    if let Some(rest) = std::str::from_utf8(data)
        .ok()
        .and_then(|s| s.strip_prefix(r#"{"message_type":"command_output_message","#))
        && let Some(fast) = crate::fast::command_output(rest)
    {
        match wire::decode_command_output_serde(std::str::from_utf8(data).unwrap_or_default()) {
            Ok(slow) => assert_eq!(fast, slow, "fast path differs from serde"),
            Err(e) => panic!("fast path accepted what serde rejects ({e}): {rest}"),
        }
    }
    if let Ok(Decoded::Message(m)) = wire::decode_runtime(Frame::Bytes(data), LIMIT) {
        let again = encode_runtime(&m);
        match wire::decode_runtime(Frame::Text(&again), usize::MAX) {
            Ok(Decoded::Message(back)) => assert_eq!(
                format!("{m:?}"),
                format!("{back:?}"),
                "runtime message round trip"
            ),
            other => panic!("re-encoded runtime frame did not decode: {other:?} from {again}"),
        }
    }
    if let Ok(Decoded::Message(m)) = wire::decode_client(Frame::Bytes(data), LIMIT) {
        let again = encode_client(&m);
        match wire::decode_client(Frame::Text(&again), usize::MAX) {
            Ok(Decoded::Message(back)) => assert_eq!(m, back, "client message round trip"),
            other => panic!("re-encoded client frame did not decode: {other:?} from {again}"),
        }
    }
}

/// Whether the hand-written fast path decodes this frame on its own (without serde).
pub fn fast_path_accepts(data: &[u8]) -> bool {
    std::str::from_utf8(data)
        .ok()
        .and_then(|s| s.strip_prefix(r#"{"message_type":"command_output_message","#))
        .and_then(crate::fast::command_output)
        .is_some()
}

fn encode_runtime(m: &RuntimeMessage<'_>) -> String {
    let frame = match m {
        RuntimeMessage::Result { data, metadata } => RuntimeFrame::Result { metadata, data },
        RuntimeMessage::Assistant { text_blocks } => RuntimeFrame::Assistant { text_blocks },
        RuntimeMessage::CommandOutput {
            stream,
            text,
            command,
        } => RuntimeFrame::CommandOutput {
            stream,
            text,
            command,
        },
        RuntimeMessage::Heartbeat { phase, elapsed_ms } => {
            // Absent fields come back absent only if they are not written; a heartbeat with
            // both fields is the only shape the encoder writes.
            return match (phase, elapsed_ms) {
                (Some(phase), Some(elapsed_ms)) => RuntimeFrame::Heartbeat {
                    phase,
                    elapsed_ms: *elapsed_ms,
                }
                .encode(),
                _ => {
                    let mut v = serde_json::json!({"message_type": "heartbeat_message"});
                    if let Some(p) = phase {
                        v["phase"] = p.clone().into();
                    }
                    if let Some(e) = elapsed_ms {
                        v["elapsed_ms"] = (*e).into();
                    }
                    v.to_string()
                }
            };
        }
        RuntimeMessage::ArtifactUploadRequest { filename, filepath } => {
            RuntimeFrame::ArtifactUploadRequest { filename, filepath }
        }
        RuntimeMessage::Error { error, metadata } => RuntimeFrame::Error { error, metadata },
        RuntimeMessage::CommandExecutionResult { results } => {
            RuntimeFrame::CommandExecutionResult { results }
        }
        RuntimeMessage::EndSessionConfirm => RuntimeFrame::EndSessionConfirm,
    };
    frame.encode()
}

fn encode_client(m: &ClientMessage) -> String {
    match m {
        ClientMessage::Invocation(inv) => wire::encode_invocation(inv, false),
        ClientMessage::CommandExecution(batch) => wire::encode_command_batch(batch, false),
        ClientMessage::ArtifactUploadResponse {
            filename,
            filepath,
            upload,
        } => wire::encode_artifact_upload_response(filename, filepath, upload),
        ClientMessage::Cancel => wire::encode_cancel(),
        ClientMessage::EndSession => wire::encode_end_session(),
    }
}

/// Frames a runtime may send, for the session target to pick from.
const TEMPLATES: &[&str] = &[
    r#"{"message_type":"result_message","metadata":{},"data":{"type":"text","text":"ok"}}"#,
    r#"{"message_type":"result_message","data":{"type":"structured_output","structured_output":{"a":1}}}"#,
    r#"{"message_type":"error_message","error":"boom","metadata":{"source":"handler"}}"#,
    r#"{"message_type":"error_message","error":"Request cancelled","metadata":{}}"#,
    r#"{"message_type":"assistant_message","text_blocks":["hi"]}"#,
    r#"{"message_type":"command_output_message","stream":"stdout","text":"line\n","command":"ls"}"#,
    r#"{"message_type":"command_execution_result_message","results":[{"command":"ls","exit_code":0}]}"#,
    r#"{"message_type":"heartbeat_message","phase":"request_in_flight","elapsed_ms":15000}"#,
    r#"{"message_type":"artifact_upload_request_message","filename":"f","filepath":"/a/f"}"#,
    r#"{"message_type":"end_session_confirm_message"}"#,
    r#"{"message_type":"result_message","metadata":{}}"#,
    r#"{"message_type":"frobnicate_message"}"#,
    "not json",
];

/// Drives a client session with the operations encoded in `data` and checks its invariants:
/// (each operation is an opcode byte and an argument byte; opcode 0 is followed by a second
/// length byte and that many bytes of a frame)
/// every accepted request ends with exactly one terminal event (also across a hand-off of the
/// session to another process: `export`, JSON, `import`), no event follows `SessionEnded`, and
/// nothing is transmitted once the session has finished.
pub fn session(data: &[u8]) {
    // An arbitrary epoch for the run; the session under test never reads a clock.
    #[allow(clippy::disallowed_methods)]
    let t0 = Instant::now();
    let config = Config {
        max_frame_size: 4096,
        max_pending_artifact_requests: 4,
        ..Config::default()
    };
    let mut h = Checker {
        session: Session::new(config, t0),
        now: t0,
        terminals: HashMap::new(),
        tokens: Vec::new(),
        ended: false,
        finished_seen: false,
    };
    let mut bytes = data.iter().copied();
    while let Some(op) = bytes.next() {
        let arg = bytes.next().unwrap_or(0);
        match op % 13 {
            0 => {
                let len = usize::from(u16::from_le_bytes([arg, bytes.next().unwrap_or(0)]));
                let frame: Vec<u8> = bytes.by_ref().take(len).collect();
                let now = h.now;
                h.session.handle_input(Input::Receive(now, &frame));
            }
            1..=3 => {
                let frame = TEMPLATES[usize::from(arg) % TEMPLATES.len()];
                let now = h.now;
                h.session
                    .handle_input(Input::Receive(now, frame.as_bytes()));
            }
            4 => {
                h.now += Duration::from_millis(u64::from(arg) * 97);
                let now = h.now;
                h.session.handle_input(Input::Timeout(now));
            }
            5 => {
                let opts = options(arg);
                let mut inv = Invocation::new("p", "m");
                if opts.artifact_uploader {
                    inv = inv.artifacts_dir("/a");
                }
                if let Ok(id) = h.session.invoke(inv, opts, h.now) {
                    h.started(id);
                }
            }
            6 => {
                let opts = options(arg);
                let mut batch = CommandBatch::new(["ls"]);
                if arg & 0x40 != 0 {
                    batch.commands.clear();
                }
                if opts.artifact_uploader {
                    batch = batch.artifacts_dir("/a");
                }
                if let Ok(id) = h.session.execute_commands(batch, opts, h.now) {
                    h.started(id);
                }
            }
            7 => {
                let _ = h.session.cancel(h.now);
            }
            8 => {
                let _ = h.session.end_session(h.now);
            }
            9 => {
                if !h.tokens.is_empty() {
                    let token = h.tokens.remove(usize::from(arg) % h.tokens.len());
                    if arg & 1 == 0 {
                        let _ = h.session.respond_artifact_upload(
                            token,
                            ArtifactUpload::new("u", "t"),
                            h.now,
                        );
                    } else {
                        h.session.decline_artifact_upload(token);
                    }
                }
            }
            10 => {
                let now = h.now;
                h.session.handle_input(Input::Pong(now));
            }
            12 => {
                // Handed to another process: exported, through JSON, imported. Every request
                // still ends exactly once.
                if let Ok(state) = h.session.export(h.now) {
                    let json = serde_json::to_string(&state).expect("a state serializes");
                    let state = serde_json::from_str(&json).expect("and deserializes");
                    for token in h.tokens.drain(..) {
                        h.session.decline_artifact_upload(token);
                    }
                    let config = h.session.config().clone();
                    h.session = Session::import(config, state, h.now);
                }
            }
            _ => {
                if arg < 16 {
                    let now = h.now;
                    h.session.handle_input(Input::TransportClosed(now));
                }
            }
        }
        h.drain();
    }
    let now = h.now;
    h.session.handle_input(Input::TransportClosed(now));
    h.drain();
    assert!(h.ended, "SessionEnded after the transport closed");
    for (id, n) in &h.terminals {
        assert_eq!(*n, 1, "{id} ended {n} times");
    }
    for token in h.tokens.drain(..) {
        h.session.decline_artifact_upload(token);
    }
}

fn options(arg: u8) -> RequestOptions {
    let mut o = RequestOptions::default().artifact_uploader(arg & 0x80 != 0);
    if arg & 1 != 0 {
        o = o.timeout(Duration::from_millis(u64::from(arg) * 13));
    }
    if arg & 2 != 0 {
        o = o.idle_timeout(Duration::from_millis(u64::from(arg) * 7));
    }
    o
}

struct Checker {
    session: Session,
    now: Instant,
    terminals: HashMap<RequestId, u32>,
    tokens: Vec<ArtifactUploadRequest>,
    ended: bool,
    finished_seen: bool,
}

impl Checker {
    fn started(&mut self, id: RequestId) {
        assert!(
            self.terminals.insert(id, 0).is_none(),
            "request ids are unique"
        );
    }

    fn drain(&mut self) {
        loop {
            match self.session.poll_output() {
                Output::Transmit(t) => {
                    assert!(!self.finished_seen, "transmit after the session finished");
                    if let Transmit::Text(s) = t {
                        assert!(
                            matches!(
                                wire::decode_client(Frame::Text(&s), usize::MAX),
                                Ok(Decoded::Message(_))
                            ),
                            "the session sent a frame it cannot decode: {s}"
                        );
                    }
                }
                Output::Event(e) => {
                    assert!(!self.ended, "event after SessionEnded: {e:?}");
                    if e.is_terminal() {
                        let id = e.request().expect("terminals carry their request");
                        *self
                            .terminals
                            .get_mut(&id)
                            .expect("terminal of a started request") += 1;
                    }
                    match e {
                        Event::SessionEnded(_) => self.ended = true,
                        Event::ArtifactUploadRequest(r) => self.tokens.push(r),
                        _ => {}
                    }
                }
                Output::Timeout(t) => {
                    assert!(
                        t >= self.now || !self.ended,
                        "a deadline in the past while running"
                    );
                    if self.session.is_finished() {
                        self.finished_seen = true;
                    }
                    return;
                }
            }
        }
    }
}

/// A structurally valid result frame with the given text: the bench's and tests' helper.
pub fn result_frame(text: &str) -> String {
    RuntimeFrame::Result {
        metadata: &serde_json::Value::Object(Default::default()),
        data: &WireResultData::Text {
            text: text.to_owned(),
        },
    }
    .encode()
}

const SECRET: &str = "s3cr3t-Tok";

const CLIENT_TEMPLATES: &[&str] = &[
    r#"{"message_type":"invocation_message","user_prompt":"p","secrets_to_redact":["s3cr3t-Tok"]}"#,
    r#"{"message_type":"command_execution_message","commands":[{"command":"echo s3cr3t-Tok"}],"secrets_to_redact":["s3cr3t-Tok"]}"#,
    r#"{"message_type":"cancel_message"}"#,
    r#"{"message_type":"end_session_message"}"#,
    r#"{"message_type":"artifact_upload_response_message","filename":"f","filepath":"/a/f","presigned_url":"u","content_type":"t"}"#,
    r#"{"message_type":"invocation_message"}"#,
    r#"{"hello":1}"#,
    "not json",
];

/// Drives a runtime session with the operations encoded in `data` and checks that it never
/// panics, sends nothing after it finished, and never lets the secret out, not even split
/// across consecutive output chunks.
pub fn runtime_session(data: &[u8]) {
    use crate::OutputStream;
    use crate::runtime::{RuntimeOutput, RuntimeSession};
    // An arbitrary epoch for the run; the session under test never reads a clock.
    #[allow(clippy::disallowed_methods)]
    let mut now = Instant::now();
    let mut s = RuntimeSession::new(Default::default(), now);
    let mut finished_seen = false;
    let mut secret_known = false;
    let mut next_chunk = 0usize;
    let mut output_run: HashMap<String, (String, String)> = HashMap::new();
    let chunks = [
        "abc s3c",
        "r3t-T",
        "ok tail s",
        "3cr3t-Tok",
        "x",
        "s3cr3t-To",
    ];
    let mut bytes = data.iter().copied();
    while let Some(op) = bytes.next() {
        let arg = bytes.next().unwrap_or(0);
        let pick = usize::from(arg);
        match op % 12 {
            0 => {
                let len = usize::from(arg);
                let frame: Vec<u8> = bytes.by_ref().take(len).collect();
                s.handle_input(Input::Receive(now, &frame));
            }
            1 | 2 => {
                let frame = CLIENT_TEMPLATES[pick % CLIENT_TEMPLATES.len()];
                s.handle_input(Input::Receive(now, frame.as_bytes()));
            }
            3 => {
                now += Duration::from_millis(u64::from(arg) * 211);
                s.handle_input(Input::Timeout(now));
            }
            4 | 5 => {
                let stream = if arg & 1 == 0 {
                    OutputStream::Stdout
                } else {
                    OutputStream::Stderr
                };
                let command = if arg & 6 == 6 { "two" } else { "one" };
                // Consecutive chunks, so that secrets get split across them.
                next_chunk += 1;
                let _ = s.send_command_output(stream, command, chunks[next_chunk % chunks.len()]);
            }
            6 => {
                let _ = s.send_assistant(&[chunks[pick % chunks.len()].to_owned()]);
            }
            7 => {
                let _ = s.send_error(SECRET, &serde_json::json!({ "k": SECRET }));
            }
            8 => {
                let _ = s.request_artifact_upload("f", "/a/f");
            }
            9 => {
                let r = match arg % 3 {
                    0 => s.finish_query(&crate::QueryResult {
                        data: crate::ResultData::Text(SECRET.into()),
                        metadata: serde_json::Value::Null,
                    }),
                    1 => s.finish_commands(&crate::CommandExecutionResult { results: vec![] }),
                    _ => s.fail("x", &serde_json::Value::Null),
                };
                let _ = r;
            }
            10 => {
                let _ = s.confirm_end_session();
            }
            _ => {
                if arg < 8 {
                    s.handle_input(Input::TransportClosed(now));
                }
            }
        }
        loop {
            match s.poll_output() {
                RuntimeOutput::Transmit(t) => {
                    assert!(!finished_seen, "transmit after the session finished");
                    if let Transmit::Text(text) = t {
                        let v: serde_json::Value =
                            serde_json::from_str(&text).expect("the session sends JSON");
                        // The run of one command's output on one stream, until another
                        // command's output on that stream or the end of a request ends it.
                        match v["message_type"].as_str() {
                            Some("command_output_message") => {
                                let stream = v["stream"].as_str().unwrap_or_default().to_owned();
                                let command = v["command"].as_str().unwrap_or_default();
                                let run = output_run.entry(stream).or_default();
                                if run.0 != command {
                                    *run = (command.to_owned(), String::new());
                                }
                                run.1.push_str(v["text"].as_str().unwrap_or_default());
                                assert!(
                                    !(secret_known && run.1.contains(SECRET)),
                                    "secret leaked across chunks"
                                );
                            }
                            Some(
                                "result_message"
                                | "command_execution_result_message"
                                | "error_message",
                            ) => output_run.clear(),
                            _ => {}
                        }
                        assert!(
                            !(secret_known && text.contains(SECRET)),
                            "secret leaked: {text}"
                        );
                    }
                }
                RuntimeOutput::Event(e) => {
                    use crate::runtime::RuntimeEvent;
                    let secrets = match &e {
                        RuntimeEvent::Invocation { invocation, .. } => {
                            &invocation.secrets_to_redact
                        }
                        RuntimeEvent::Commands { batch, .. } => &batch.secrets_to_redact,
                        _ => continue,
                    };
                    if secrets.iter().any(|s| s == SECRET) {
                        secret_known = true;
                    }
                }
                RuntimeOutput::Timeout(_) => break,
            }
        }
        if s.is_finished() {
            finished_seen = true;
        }
    }
}
