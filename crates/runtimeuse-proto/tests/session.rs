//! One behaviour per case, with injected time.

mod common;

use std::time::Duration;

use common::{Harness, message_types, ms};
use runtimeuse_proto::{
    ArtifactUpload, Command, CommandBatch, Config, DecodeError, Event, FailReason, Invocation,
    MessageKind, OutputStream, Phase, RequestOptions, ResultData, RuntimeError, SessionEnd,
    TimeoutKind, Timer, UsageError,
};
use serde_json::json;

const RESULT_HI: &str =
    r#"{"message_type":"result_message","metadata":{},"data":{"type":"text","text":"hi"}}"#;
const ERROR_BOOM_HANDLER: &str =
    r#"{"message_type":"error_message","error":"boom","metadata":{"source":"echo_handler"}}"#;
const ERROR_BOOM_TERMINAL: &str =
    r#"{"message_type":"error_message","error":"boom","metadata":{"error_name":"Error"}}"#;

fn no_keepalive() -> Config {
    let mut c = Config::default();
    c.keepalive_interval = None;
    c
}

fn query(h: &mut Harness, prompt: &str) -> runtimeuse_proto::RequestId {
    query_with(h, prompt, RequestOptions::default())
}

fn query_with(h: &mut Harness, prompt: &str, opts: RequestOptions) -> runtimeuse_proto::RequestId {
    let now = h.now;
    let id = h
        .session
        .invoke(Invocation::new(prompt, "echo"), opts, now)
        .expect("invoke");
    h.drain();
    id
}

fn failed(e: &Event) -> Option<&FailReason> {
    match e {
        Event::Failed { reason, .. } => Some(reason),
        _ => None,
    }
}

#[test]
fn invocation_frame_matches_the_python_client() {
    let mut h = Harness::new(no_keepalive());
    query(&mut h, "ECHO:hello");
    assert_eq!(
        h.take_sent(),
        vec![json!({
            "message_type": "invocation_message", "source_id": null, "system_prompt": "",
            "user_prompt": "ECHO:hello", "agent_env": null, "output_format_json_schema_str": null,
            "secrets_to_redact": [], "artifacts_dirs": null, "artifacts_ignore_content": null,
            "pre_agent_invocation_commands": null, "post_agent_invocation_commands": null,
            "model": "echo", "pre_agent_downloadables": null
        })]
    );
}

#[test]
fn command_batch_frame_matches_the_python_client() {
    let mut h = Harness::new(no_keepalive());
    let batch = CommandBatch::new([Command::new("pwd").cwd("/tmp").env("A", "1")]).secret("s");
    h.session
        .execute_commands(batch, RequestOptions::default(), h.now)
        .unwrap();
    h.drain();
    assert_eq!(
        h.take_sent(),
        vec![json!({
            "message_type": "command_execution_message", "source_id": null,
            "secrets_to_redact": ["s"],
            "commands": [{"cwd": "/tmp", "command": "pwd", "env": {"A": "1"}}],
            "artifacts_dirs": null, "artifacts_ignore_content": null,
            "pre_execution_downloadables": null
        })]
    );
}

#[test]
fn text_result_ends_the_request() {
    let mut h = Harness::new(no_keepalive());
    let id = query(&mut h, "ECHO:hi");
    assert_eq!(h.session.request_in_flight(), Some(id));
    h.recv(5, RESULT_HI);
    let events = h.take_events();
    assert!(matches!(&events[..], [Event::Result { request, result }]
        if *request == id && result.text() == Some("hi") && result.metadata == json!({})));
    assert_eq!(h.session.request_in_flight(), None);
}

#[test]
fn structured_result_deserializes_into_the_callers_type() {
    #[derive(serde::Deserialize, PartialEq, Debug)]
    struct Answer {
        answer: u32,
    }
    let mut h = Harness::new(no_keepalive());
    query(&mut h, "STRUCTURED:{}");
    h.recv(
        5,
        r#"{"message_type":"result_message","data":{"type":"structured_output","structured_output":{"answer":42}}}"#,
    );
    let Event::Result { result, .. } = &h.events[0] else {
        panic!("{:?}", h.events)
    };
    assert_eq!(
        result.deserialize::<Answer>().unwrap(),
        Answer { answer: 42 }
    );
    assert_eq!(result.metadata, serde_json::Value::Null);
    assert!(result.text().is_none());
}

#[test]
fn second_request_while_one_is_in_flight_is_a_usage_error() {
    let mut h = Harness::new(no_keepalive());
    query(&mut h, "SLOW:100");
    h.take_sent();
    let err = h
        .session
        .invoke(Invocation::new("x", "m"), RequestOptions::default(), h.now)
        .unwrap_err();
    assert_eq!(err, UsageError::RequestInFlight);
    let err = h
        .session
        .execute_commands(CommandBatch::new(["ls"]), RequestOptions::default(), h.now)
        .unwrap_err();
    assert_eq!(err, UsageError::RequestInFlight);
    h.drain();
    assert!(h.sent.is_empty());
}

#[test]
fn artifact_options_are_validated_before_anything_is_sent() {
    let mut h = Harness::new(no_keepalive());
    let inv = Invocation::new("x", "m").artifacts_dir("/a");
    let err = h
        .session
        .invoke(inv.clone(), RequestOptions::default(), h.now)
        .unwrap_err();
    assert_eq!(err, UsageError::ArtifactDirsWithoutUploader);
    let err = h
        .session
        .invoke(
            Invocation::new("x", "m"),
            RequestOptions::default().artifact_uploader(true),
            h.now,
        )
        .unwrap_err();
    assert_eq!(err, UsageError::UploaderWithoutArtifactDirs);
    let err = h
        .session
        .execute_commands(CommandBatch::default(), RequestOptions::default(), h.now)
        .unwrap_err();
    assert_eq!(err, UsageError::NoCommands);
    h.drain();
    assert!(h.sent.is_empty());
    h.session
        .invoke(
            inv,
            RequestOptions::default().artifact_uploader(true),
            h.now,
        )
        .unwrap();
    h.drain();
    assert_eq!(h.sent[0]["artifacts_dirs"], json!(["/a"]));
}

#[test]
fn command_output_is_streamed_and_shares_the_command_string() {
    let mut h = Harness::new(no_keepalive());
    h.session
        .execute_commands(
            CommandBatch::new(["seq 2"]),
            RequestOptions::default(),
            h.now,
        )
        .unwrap();
    h.drain();
    for (i, stream) in ["stdout", "stderr"].iter().enumerate() {
        h.recv(
            i as u64,
            &format!(
                r#"{{"message_type":"command_output_message","stream":"{stream}","text":"{i}\n","command":"seq 2"}}"#
            ),
        );
    }
    h.recv(
        3,
        r#"{"message_type":"command_execution_result_message","results":[{"command":"seq 2","exit_code":0,"stdout":"0\n"}]}"#,
    );
    let events = h.take_events();
    let (Event::CommandOutput(a), Event::CommandOutput(b)) = (&events[0], &events[1]) else {
        panic!("{events:?}")
    };
    assert_eq!((a.stream, a.text.as_str()), (OutputStream::Stdout, "0\n"));
    assert_eq!((b.stream, b.text.as_str()), (OutputStream::Stderr, "1\n"));
    assert!(std::sync::Arc::ptr_eq(&a.command, &b.command));
    let Event::CommandResult { result, .. } = &events[2] else {
        panic!("{events:?}")
    };
    assert!(result.success());
    assert_eq!(result.results[0].stdout.as_deref(), Some("0\n"));
}

#[test]
fn handler_error_then_terminal_error_do_not_leak_into_the_next_request() {
    let mut h = Harness::new(no_keepalive());
    let first = query(&mut h, "ERROR:boom");
    h.recv(5, ERROR_BOOM_HANDLER);
    h.recv(6, ERROR_BOOM_TERMINAL);
    assert_eq!(
        h.terminals(),
        0,
        "an error_message waits for the settle time"
    );
    assert_eq!(h.session.next_timer(), Some(Timer::ErrorSettle));
    h.fire_next_timeout();
    let events = h.take_events();
    assert!(matches!(&events[0], Event::RuntimeError { request, error }
        if *request == first && error.metadata["source"] == "echo_handler" && error.earlier.is_empty()));
    assert!(
        matches!(&events[1], Event::Failed { request, reason: FailReason::Runtime(e) }
        if *request == first && e.error == "boom" && e.metadata["error_name"] == "Error")
    );
    // The failure keeps the handler's own error and its metadata too.
    let Event::Failed {
        reason: FailReason::Runtime(RuntimeError { earlier, .. }),
        ..
    } = &events[1]
    else {
        unreachable!()
    };
    assert_eq!(earlier.len(), 1);
    assert_eq!(earlier[0].error, "boom");
    assert_eq!(earlier[0].metadata["source"], "echo_handler");
    let second = query(&mut h, "ECHO:after");
    h.recv(300, RESULT_HI);
    let events = h.take_events();
    assert!(matches!(&events[..], [Event::Result { request, .. }] if *request == second));
}

#[test]
fn a_single_error_fails_the_request_after_the_settle_time_not_before() {
    let mut h = Harness::new(no_keepalive());
    query(&mut h, "x");
    h.recv(
        10,
        r#"{"message_type":"error_message","error":"Download failed: 404"}"#,
    );
    h.tick(209);
    assert_eq!(h.terminals(), 0);
    h.tick(210);
    let events = h.take_events();
    assert!(
        matches!(&events[..], [Event::Failed { reason: FailReason::Runtime(e), .. }]
        if e.error == "Download failed: 404" && e.metadata.is_null())
    );
}

#[test]
fn an_error_followed_by_more_of_the_request_is_not_terminal() {
    let mut h = Harness::new(no_keepalive());
    query(&mut h, "x");
    h.recv(1, r#"{"message_type":"error_message","error":"warn"}"#);
    h.recv(
        2,
        r#"{"message_type":"assistant_message","text_blocks":["still here"]}"#,
    );
    h.recv(500, RESULT_HI);
    let events = h.take_events();
    assert!(matches!(&events[0], Event::RuntimeError { error, .. } if error.error == "warn"));
    assert!(
        matches!(&events[1], Event::AssistantMessage { text_blocks, .. } if text_blocks[0] == "still here")
    );
    assert!(matches!(&events[2], Event::Result { .. }));
    assert_eq!(events.len(), 3);
}

#[test]
fn cancel_fails_at_once_drains_to_the_terminal_and_holds_back_the_next_request() {
    let mut h = Harness::new(no_keepalive());
    let first = query(&mut h, "STREAM:5");
    h.take_sent();
    h.recv(
        1,
        r#"{"message_type":"assistant_message","text_blocks":["message 1 of 5"]}"#,
    );
    h.session.cancel(h.now).unwrap();
    h.drain();
    assert_eq!(message_types(&h.take_sent()), ["cancel_message"]);
    let events = h.take_events();
    assert!(
        matches!(&events[1], Event::Failed { request, reason: FailReason::Cancelled } if *request == first)
    );
    // The next request waits until the cancelled one's terminal has been read.
    let second = query(&mut h, "ECHO:next");
    assert!(h.sent.is_empty(), "held back while draining");
    assert_eq!(h.session.request_in_flight(), Some(second));
    h.recv(
        2,
        r#"{"message_type":"assistant_message","text_blocks":["message 2 of 5"]}"#,
    );
    h.recv(
        3,
        r#"{"message_type":"error_message","error":"Request cancelled","metadata":{}}"#,
    );
    assert!(
        h.events.is_empty(),
        "nothing of a cancelled request is delivered"
    );
    assert!(
        h.sent.is_empty(),
        "an error may be followed by another: still settling"
    );
    h.fire_next_timeout();
    assert_eq!(message_types(&h.take_sent()), ["invocation_message"]);
    h.recv(400, RESULT_HI);
    let events = h.take_events();
    assert!(matches!(&events[..], [Event::Result { request, .. }] if *request == second));
}

#[test]
fn cancel_without_a_request_is_a_usage_error() {
    let mut h = Harness::new(no_keepalive());
    assert_eq!(h.session.cancel(h.now), Err(UsageError::NoRequestInFlight));
    query(&mut h, "ECHO:hi");
    h.recv(1, RESULT_HI);
    assert_eq!(h.session.cancel(h.now), Err(UsageError::NoRequestInFlight));
}

#[test]
fn cancelling_a_held_back_request_sends_nothing_for_it() {
    let mut h = Harness::new(no_keepalive());
    query(&mut h, "SLOW:1000");
    h.session.cancel(h.now).unwrap();
    let held = query(&mut h, "ECHO:x");
    h.take_sent();
    h.session.cancel(h.now).unwrap();
    h.drain();
    assert!(h.take_sent().is_empty());
    assert!(
        matches!(h.events.last(), Some(Event::Failed { request, reason: FailReason::Cancelled }) if *request == held)
    );
    assert_eq!(h.session.request_in_flight(), None);
}

#[test]
fn overall_timeout_fails_with_diagnostics_and_cancels_on_the_wire() {
    let mut h = Harness::new(no_keepalive());
    query_with(
        &mut h,
        "SLOW:30000",
        RequestOptions::default().timeout(ms(500)),
    );
    h.take_sent();
    h.recv(
        100,
        r#"{"message_type":"heartbeat_message","phase":"request_in_flight","elapsed_ms":100}"#,
    );
    h.tick(499);
    assert_eq!(h.terminals(), 0);
    // Fired late: the kind still carries the configured limit, the diagnostics the time.
    h.tick(650);
    assert_eq!(message_types(&h.take_sent()), ["cancel_message"]);
    let reason = h.events.iter().find_map(failed).expect("failed");
    let FailReason::Timeout { kind, diagnostics } = reason else {
        panic!("{reason:?}")
    };
    assert_eq!(*kind, TimeoutKind::Overall(ms(500)));
    assert_eq!(diagnostics.elapsed, ms(650));
    assert_eq!(diagnostics.last_message, Some(MessageKind::Heartbeat));
    assert_eq!(diagnostics.message_count, 1);
    assert_eq!(diagnostics.phase, Phase::ReceivingMessages);
}

#[test]
fn idle_timeout_is_refreshed_by_every_message() {
    let mut h = Harness::new(no_keepalive());
    query_with(
        &mut h,
        "SLOW:3000",
        RequestOptions::default().idle_timeout(ms(1000)),
    );
    h.recv(
        900,
        r#"{"message_type":"heartbeat_message","phase":"request_in_flight","elapsed_ms":900}"#,
    );
    h.tick(1500);
    assert_eq!(h.terminals(), 0);
    h.tick(1900);
    let reason = h.events.iter().find_map(failed).expect("failed");
    assert!(
        matches!(reason, FailReason::Timeout { kind: TimeoutKind::Idle(d), diagnostics }
        if *d == ms(1000) && diagnostics.message_count == 1)
    );
}

#[test]
fn a_silent_runtime_fails_a_request_by_default_after_the_configured_idle_limit() {
    // A runtime that keeps its connection alive (pings answered) but sends nothing: with no
    // limit of the request's own, the session's default ends it.
    let mut h = Harness::new(no_keepalive());
    assert_eq!(Config::default().request_idle_timeout, Some(ms(60_000)));
    query(&mut h, "SLOW");
    h.tick(59_999);
    assert_eq!(h.terminals(), 0);
    h.tick(60_000);
    let reason = h.events.iter().find_map(failed).expect("failed");
    assert!(
        matches!(reason, FailReason::Timeout { kind: TimeoutKind::Idle(d), .. } if *d == ms(60_000))
    );
}

#[test]
fn the_default_idle_limit_can_be_turned_off() {
    let mut config = no_keepalive();
    config.request_idle_timeout = None;
    let mut h = Harness::new(config);
    query(&mut h, "SLOW");
    h.tick(3_600_000);
    assert_eq!(h.terminals(), 0);
    let mut h = Harness::new(no_keepalive());
    query_with(
        &mut h,
        "SLOW",
        RequestOptions::default().idle_timeout(Duration::MAX),
    );
    h.tick(3_600_000);
    assert_eq!(h.terminals(), 0);
}

#[test]
fn idle_timeout_without_any_message_reports_waiting_for_first_message() {
    let mut h = Harness::new(no_keepalive());
    query_with(
        &mut h,
        "SLOW",
        RequestOptions::default().idle_timeout(ms(1000)),
    );
    h.fire_next_timeout();
    let reason = h.events.iter().find_map(failed).expect("failed");
    assert!(matches!(reason, FailReason::Timeout { diagnostics, .. }
        if diagnostics.phase == Phase::WaitingForFirstMessage && diagnostics.last_message.is_none()));
}

#[test]
fn connection_closed_mid_request_is_a_clear_outcome() {
    let mut h = Harness::new(no_keepalive());
    let id = query(&mut h, "SLOW:5000");
    h.take_sent();
    h.close(500);
    let events = h.take_events();
    assert!(matches!(&events[..], [
        Event::Failed { request, reason: FailReason::TransportClosed },
        Event::SessionEnded(SessionEnd::TransportClosed),
    ] if *request == id));
    assert!(h.session.is_finished());
    assert_eq!(
        h.session
            .invoke(Invocation::new("x", "m"), RequestOptions::default(), h.now),
        Err(UsageError::SessionFinished)
    );
    h.recv(600, RESULT_HI);
    h.drain();
    assert!(h.events.is_empty() && h.sent.is_empty());
}

#[test]
fn end_session_answers_late_artifacts_and_finishes_on_confirm() {
    let mut h = Harness::new(no_keepalive());
    h.session.end_session(h.now).unwrap();
    h.drain();
    assert_eq!(message_types(&h.take_sent()), ["end_session_message"]);
    assert_eq!(h.session.end_session(h.now), Err(UsageError::SessionEnding));
    h.recv(
        2000,
        r#"{"message_type":"artifact_upload_request_message","filename":"late.txt","filepath":"/a/late.txt"}"#,
    );
    let Some(Event::ArtifactUploadRequest(req)) = h.events.pop() else {
        panic!("{:?}", h.events)
    };
    assert_eq!(
        (req.filename(), req.filepath()),
        ("late.txt", "/a/late.txt")
    );
    assert_eq!(req.request(), None);
    h.session
        .respond_artifact_upload(
            req,
            ArtifactUpload::new("http://u/late", "text/plain"),
            h.now,
        )
        .unwrap();
    h.drain();
    assert_eq!(
        h.take_sent(),
        vec![
            json!({"message_type": "artifact_upload_response_message", "filename": "late.txt",
            "filepath": "/a/late.txt", "presigned_url": "http://u/late", "content_type": "text/plain"})
        ]
    );
    h.recv(3000, r#"{"message_type":"end_session_confirm_message"}"#);
    assert!(matches!(
        h.take_events()[..],
        [Event::SessionEnded(SessionEnd::Confirmed)]
    ));
    assert!(h.session.is_finished());
}

#[test]
fn end_session_has_a_deadline() {
    let mut config = no_keepalive();
    config.end_session_timeout = Duration::from_secs(5);
    let mut h = Harness::new(config);
    h.session.end_session(h.now).unwrap();
    h.drain();
    h.tick(4999);
    assert!(!h.session.is_finished());
    h.tick(5000);
    assert!(matches!(
        h.take_events()[..],
        [Event::SessionEnded(SessionEnd::EndSessionTimeout)]
    ));
}

#[test]
fn end_session_with_a_request_in_flight_is_a_usage_error() {
    let mut h = Harness::new(no_keepalive());
    query(&mut h, "SLOW");
    assert_eq!(
        h.session.end_session(h.now),
        Err(UsageError::RequestInFlight)
    );
}

#[test]
fn keepalive_pings_when_quiet_and_declares_a_silent_peer_dead() {
    let mut h = Harness::new(Config::default());
    let id = query(&mut h, "SLOW:60000");
    h.tick(19_999);
    assert_eq!(h.pings, 0);
    h.tick(20_000);
    assert_eq!(h.pings, 1);
    // A pong (or any frame) proves the peer alive.
    let now = h.at(20_010);
    h.session.handle_input(runtimeuse_proto::Input::Pong(now));
    h.drain();
    h.tick(40_009);
    assert_eq!(h.pings, 1);
    h.tick(40_010);
    assert_eq!(h.pings, 2);
    h.tick(60_010);
    let events = h.take_events();
    assert!(matches!(&events[..], [
        Event::Failed { request, reason: FailReason::KeepAliveTimeout },
        Event::SessionEnded(SessionEnd::KeepAliveTimeout),
    ] if *request == id));
}

#[test]
fn unknown_types_and_non_json_are_skipped() {
    let mut h = Harness::new(no_keepalive());
    query(&mut h, "ECHO:hi");
    h.recv(1, r#"{"message_type":"frobnicate_message","x":1}"#);
    h.recv(2, "this is not json {");
    h.recv(3, r#"{"hello":"world"}"#);
    h.recv(
        4,
        r#"{"message_type":"command_output_message","stream":"stdout"}"#,
    );
    assert!(h.events.is_empty());
    h.recv(5, RESULT_HI);
    assert!(matches!(h.take_events()[..], [Event::Result { .. }]));
}

#[test]
fn a_malformed_terminal_fails_the_request() {
    let mut h = Harness::new(no_keepalive());
    query(&mut h, "ECHO:hi");
    h.recv(1, r#"{"message_type":"result_message","metadata":{}}"#);
    assert!(matches!(
        h.events.iter().find_map(failed),
        Some(FailReason::Protocol(DecodeError::MissingField {
            field: "data",
            ..
        }))
    ));
}

#[test]
fn an_oversized_frame_fails_the_request_and_its_terminal_does_not_leak() {
    let mut config = no_keepalive();
    config.max_frame_size = 100;
    let mut h = Harness::new(config);
    query(&mut h, "ECHO:big");
    h.recv(1, &format!(r#"{{"message_type":"command_output_message","stream":"stdout","text":"{}","command":"x"}}"#, "a".repeat(200)));
    assert!(matches!(
        h.events.iter().find_map(failed),
        Some(FailReason::Protocol(DecodeError::TooLarge {
            limit: 100,
            ..
        }))
    ));
    h.take_events();
    let next = query(&mut h, "ECHO:next");
    h.recv(2, RESULT_HI);
    h.recv(3, RESULT_HI);
    let events = h.take_events();
    assert!(
        matches!(&events[..], [Event::Result { request, .. }] if *request == next),
        "{events:?}"
    );
}

#[test]
fn the_wrong_kind_of_terminal_fails_the_request() {
    let mut h = Harness::new(no_keepalive());
    h.session
        .execute_commands(CommandBatch::new(["ls"]), RequestOptions::default(), h.now)
        .unwrap();
    h.drain();
    h.recv(1, RESULT_HI);
    assert!(matches!(
        h.events.iter().find_map(failed),
        Some(FailReason::UnexpectedTerminal(MessageKind::Result))
    ));
}

#[test]
fn artifact_requests_are_bounded_and_answered_once() {
    let mut config = no_keepalive();
    config.max_pending_artifact_requests = 2;
    let mut h = Harness::new(config);
    for i in 0..3 {
        h.recv(
            i,
            &format!(r#"{{"message_type":"artifact_upload_request_message","filename":"f{i}","filepath":"/a/f{i}"}}"#),
        );
    }
    let mut requests: Vec<_> = h
        .take_events()
        .into_iter()
        .map(|e| match e {
            Event::ArtifactUploadRequest(r) => r,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(requests.len(), 2, "the third is over the limit");
    let second = requests.pop().unwrap();
    h.session.decline_artifact_upload(second);
    // A token from another session is refused.
    let mut other = Harness::new(no_keepalive());
    other.recv(
        0,
        r#"{"message_type":"artifact_upload_request_message","filename":"x","filepath":"/x"}"#,
    );
    let Some(Event::ArtifactUploadRequest(foreign)) = other.events.pop() else {
        panic!()
    };
    h.session
        .respond_artifact_upload(
            requests.pop().unwrap(),
            ArtifactUpload::new("u", "t"),
            h.now,
        )
        .unwrap();
    assert_eq!(
        h.session
            .respond_artifact_upload(foreign, ArtifactUpload::new("u", "t"), h.now),
        Err(UsageError::UnknownArtifactRequest)
    );
    h.drain();
    assert_eq!(message_types(&h.sent), ["artifact_upload_response_message"]);
}

#[test]
fn an_abandoned_request_that_never_finishes_ends_the_session() {
    let mut config = no_keepalive();
    config.drain_timeout = Duration::from_secs(10);
    let mut h = Harness::new(config);
    query(&mut h, "SLOW:999999");
    h.session.cancel(h.now).unwrap();
    let held = query(&mut h, "ECHO:x");
    h.tick(9_999);
    assert!(!h.session.is_finished());
    h.tick(10_000);
    let events = h.take_events();
    assert!(matches!(&events[1..], [
        Event::Failed { request, reason: FailReason::Desynchronized },
        Event::SessionEnded(SessionEnd::Desynchronized),
    ] if *request == held));
}

#[test]
fn early_and_repeated_timeouts_do_nothing() {
    let mut h = Harness::new(no_keepalive());
    query_with(&mut h, "SLOW", RequestOptions::default().timeout(ms(1000)));
    h.take_sent();
    for t in [0, 1, 500, 500, 999] {
        h.tick(t);
    }
    assert!(h.events.is_empty() && h.sent.is_empty());
    h.tick(1000);
    h.tick(1000);
    h.tick(5000);
    assert_eq!(h.terminals(), 1);
}

#[test]
fn messages_between_requests_are_ignored() {
    let mut h = Harness::new(no_keepalive());
    h.recv(1, RESULT_HI);
    h.recv(
        2,
        r#"{"message_type":"assistant_message","text_blocks":["stray"]}"#,
    );
    h.recv(3, r#"{"message_type":"end_session_confirm_message"}"#);
    assert!(h.events.is_empty());
    assert!(!h.session.is_finished());
    let id = query(&mut h, "ECHO:hi");
    h.recv(4, RESULT_HI);
    assert!(
        matches!(&h.take_events()[..], [Event::Result { request, result }]
        if *request == id && result.data == ResultData::Text("hi".into()))
    );
}

#[test]
fn legacy_artifacts_dir_is_sent_only_when_asked() {
    let mut config = no_keepalive();
    config.legacy_artifacts_dir = true;
    let mut h = Harness::new(config);
    h.session
        .invoke(
            Invocation::new("x", "m")
                .artifacts_dir("/a")
                .artifacts_dir("/b"),
            RequestOptions::default().artifact_uploader(true),
            h.now,
        )
        .unwrap();
    h.drain();
    assert_eq!(h.sent[0]["artifacts_dir"], json!("/a"));
    assert_eq!(h.sent[0]["artifacts_dirs"], json!(["/a", "/b"]));
}

#[test]
fn events_route_to_the_request_that_waits_for_them() {
    use runtimeuse_proto::{RequestEvent, Routed};
    let mut h = Harness::new(no_keepalive());
    let first = query(&mut h, "ECHO:a");
    h.recv(1, RESULT_HI);
    let second = query(&mut h, "ERROR:x");
    h.recv(
        2,
        r#"{"message_type":"artifact_upload_request_message","filename":"f","filepath":"/f"}"#,
    );
    h.recv(3, r#"{"message_type":"error_message","error":"x"}"#);
    h.fire_next_timeout();
    let mut events = h.take_events().into_iter();
    let result = events.next().unwrap();
    assert!(matches!(result.route(second), Routed::Unrelated));
    let artifact = events.next().unwrap();
    let Routed::Item(RequestEvent::ArtifactUploadRequest(req)) = artifact.route(first) else {
        panic!("artifact requests reach whoever waits")
    };
    h.session.decline_artifact_upload(req);
    let failed = events.next().unwrap();
    assert!(matches!(
        failed.route(second),
        Routed::Failed(FailReason::Runtime(_))
    ));
    h.close(4);
    let ended = h.take_events().pop().unwrap();
    assert!(matches!(
        ended.route(second),
        Routed::SessionEnded(SessionEnd::TransportClosed)
    ));
}

#[test]
fn keepalive_pauses_while_the_adapter_reconnects_a_resumable_session() {
    let mut config = Config::default();
    config.keepalive_interval = Some(ms(100));
    config.keepalive_timeout = ms(100);
    config.request_idle_timeout = None;
    let mut h = Harness::new(config);
    let now = h.at(0);
    h.session
        .execute_commands(
            CommandBatch::new(["sleep 60"]),
            RequestOptions::default(),
            now,
        )
        .unwrap();
    h.drain();
    // The ping goes out; its pong would be due 100 ms later, but the connection is lost.
    h.tick(100);
    assert_eq!(h.pings, 1);
    let now = h.at(150);
    h.session.pause_keepalive(now);
    h.drain();
    // Long past the pong's deadline and several intervals: no ping, no end.
    for t in [200, 400, 1000, 5000] {
        h.tick(t);
    }
    assert_eq!(h.pings, 1);
    assert!(!h.session.is_finished());
    assert_eq!(h.terminals(), 0);
    // A new connection carries the session: keepalive resumes an interval later.
    let now = h.at(5000);
    h.session.resume_keepalive(now);
    h.drain();
    h.tick(5099);
    assert_eq!(h.pings, 1);
    h.tick(5100);
    assert_eq!(h.pings, 2);
    // And a dead connection is still noticed.
    h.tick(5200);
    assert!(h.session.is_finished());
}
