//! A session handed to another process: `Session::export`, serde, `Session::import`.

mod common;

use common::{Harness, message_types, ms};
use runtimeuse_proto::{
    ArtifactUpload, Config, Event, FailReason, Invocation, RequestOptions, ResultData, Session,
    SessionState, TimeoutKind, UsageError,
};

const ASSISTANT: &str = r#"{"message_type":"assistant_message","text_blocks":["working"]}"#;
const RESULT: &str =
    r#"{"message_type":"result_message","metadata":{},"data":{"type":"text","text":"done"}}"#;
const ERROR: &str = r#"{"message_type":"error_message","error":"boom","metadata":{"k":1}}"#;
const ARTIFACT: &str = r#"{"message_type":"artifact_upload_request_message","filename":"a.txt","filepath":"/w/a.txt"}"#;

fn no_keepalive() -> Config {
    let mut c = Config::default();
    c.keepalive_interval = None;
    c
}

/// A harness whose session is `state` imported at `offset_ms`, after a trip through JSON.
fn imported(state: &SessionState, h: &Harness, offset_ms: u64) -> Harness {
    let json = serde_json::to_string(state).expect("serialize");
    let state: SessionState = serde_json::from_str(&json).expect("deserialize");
    let mut other = Harness::new(no_keepalive());
    other.t0 = h.t0;
    let now = other.at(offset_ms);
    other.session = Session::import(no_keepalive(), state, now);
    other.drain();
    other
}

fn query(h: &mut Harness, options: RequestOptions) -> runtimeuse_proto::RequestId {
    let id = h
        .session
        .invoke(Invocation::new("go", "echo"), options, h.now)
        .expect("invoke");
    h.drain();
    id
}

#[test]
fn the_request_in_flight_ends_in_the_importing_session() {
    let mut h = Harness::new(no_keepalive());
    let id = query(&mut h, RequestOptions::default());
    h.recv(10, ASSISTANT);
    let state = h.session.export(h.now).expect("export");
    assert_eq!(state.request(), Some(id));
    assert!(state.is_query());

    let mut other = imported(&state, &h, 20);
    assert!(other.take_sent().is_empty(), "the import sends nothing");
    assert_eq!(other.session.request_in_flight(), Some(id));
    other.recv(30, RESULT);
    let events = other.take_events();
    assert!(
        matches!(&events[..], [Event::Result { request, result }] if *request == id
            && matches!(&result.data, ResultData::Text(t) if t == "done")),
        "{events:?}"
    );
    // The next request gets a new id.
    let next = query(&mut other, RequestOptions::default());
    assert!(next > id);
    // The exporting session went on unchanged.
    assert_eq!(h.session.request_in_flight(), Some(id));
}

#[test]
fn the_overall_limit_counts_from_the_request_start() {
    let mut h = Harness::new(no_keepalive());
    let limit = ms(1_000);
    query(&mut h, RequestOptions::default().timeout(limit));
    h.recv(600, ASSISTANT);
    let state = h.session.export(h.now).expect("export");
    let mut other = imported(&state, &h, 600);
    other.tick(999);
    assert!(other.take_events().is_empty());
    other.tick(1_000);
    let events = other.take_events();
    assert!(
        matches!(&events[..], [Event::Failed { reason: FailReason::Timeout { kind: TimeoutKind::Overall(l), .. }, .. }] if *l == limit),
        "{events:?}"
    );
    assert_eq!(message_types(&other.take_sent()), ["cancel_message"]);
}

#[test]
fn an_error_waiting_to_settle_still_ends_the_request() {
    let mut h = Harness::new(no_keepalive());
    query(&mut h, RequestOptions::default());
    h.recv(10, ERROR);
    let state = h.session.export(h.now).expect("export");
    let mut other = imported(&state, &h, 10);
    other.fire_next_timeout();
    let events = other.take_events();
    assert!(
        matches!(&events[..], [Event::Failed { reason: FailReason::Runtime(e), .. }] if e.error == "boom" && e.metadata["k"] == 1),
        "{events:?}"
    );
}

#[test]
fn an_unanswered_artifact_request_is_asked_again() {
    let mut h = Harness::new(no_keepalive());
    let id = query(&mut h, RequestOptions::default());
    h.recv(10, ARTIFACT);
    assert_eq!(h.take_events().len(), 1);
    let state = h.session.export(h.now).expect("export");
    let mut other = imported(&state, &h, 10);
    let mut events = other.take_events();
    let Some(Event::ArtifactUploadRequest(req)) = events.pop() else {
        panic!("{events:?}");
    };
    assert_eq!((req.filename(), req.filepath()), ("a.txt", "/w/a.txt"));
    assert_eq!(req.request(), Some(id));
    let upload = ArtifactUpload::new("https://example.test/put", "text/plain");
    other
        .session
        .respond_artifact_upload(req, upload, other.now)
        .expect("pending in the imported session");
    other.drain();
    assert_eq!(
        message_types(&other.take_sent()),
        ["artifact_upload_response_message"]
    );
}

#[test]
fn a_cancelled_request_drains_and_the_one_behind_it_goes_out() {
    let mut h = Harness::new(no_keepalive());
    query(&mut h, RequestOptions::default());
    h.session.cancel(h.now).expect("cancel");
    h.drain();
    h.take_events();
    h.take_sent();
    let next = query(&mut h, RequestOptions::default());
    assert!(h.take_sent().is_empty(), "held back");
    let state = h.session.export(h.now).expect("export");
    assert_eq!(state.request(), Some(next));

    let mut other = imported(&state, &h, 10);
    assert!(other.take_sent().is_empty());
    other.recv(20, RESULT);
    assert!(
        other.take_events().is_empty(),
        "the cancelled one's terminal"
    );
    assert_eq!(message_types(&other.take_sent()), ["invocation_message"]);
    other.recv(30, RESULT);
    assert!(
        matches!(&other.take_events()[..], [Event::Result { request, .. }] if *request == next)
    );
}

#[test]
fn an_ending_or_finished_session_is_not_exported() {
    let mut h = Harness::new(no_keepalive());
    h.session.end_session(h.now).expect("end");
    assert_eq!(h.session.export(h.now), Err(UsageError::SessionEnding));
    h.close(1);
    assert_eq!(h.session.export(h.now), Err(UsageError::SessionFinished));
}

#[test]
fn any_state_imports_into_a_working_session() {
    let states = [
        r#"{"next_request":0,"next_artifact":0,"request":{"id":18446744073709551615,"kind":"commands","elapsed_ms":18446744073709551615,"timeout_ms":1}}"#,
        r#"{"next_request":5,"next_artifact":0,"draining":true,"request":{"id":2,"kind":"query","elapsed_ms":0}}"#,
        r#"{"next_request":1,"next_artifact":0,"request":{"id":0,"kind":"query","elapsed_ms":0,"unsent":"not json"}}"#,
        r#"{"next_request":0,"next_artifact":0,"artifacts":[{"id":18446744073709551615,"filename":"","filepath":""},{"id":3,"filename":"","filepath":""}]}"#,
    ];
    for json in states {
        let state: SessionState = serde_json::from_str(json).expect(json);
        let mut h = Harness::new(no_keepalive());
        h.session = Session::import(no_keepalive(), state, h.now);
        h.drain();
        for frame in [ASSISTANT, ARTIFACT, ERROR, RESULT] {
            h.recv(10, frame);
        }
        h.tick(100_000);
        h.close(100_001);
        assert!(h.session.is_finished(), "{json}");
    }
}
