//! The connection in virtual time, with no socket: a runtime's frames are written by hand,
//! what the connection writes is read off `poll_transmit`, and time is `t0 + ms(n)`.

use std::time::{Duration, Instant};

use runtimeuse_proto::resume::{self, GRACE_HEADER, SESSION_HEADER, WINDOW_HEADER};
use runtimeuse_proto::{
    Config, FailReason, Invocation, RequestEvent, RequestId, RequestOptions, TimeoutKind,
};
use serde_json::{Value, json};
use tungstenite::http::{HeaderMap, HeaderValue};

use super::{Connection, Frame, Outgoing};
use crate::Error;
use crate::requests::Step;
use crate::resume::{ACK_DELAY, FIRST_BACKOFF, ResumeToken, Resumption};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What the runtime granted: a grace of `grace_ms` and a replay window of 4000 bytes.
fn granted(grace_ms: u64) -> Resumption {
    let mut headers = HeaderMap::new();
    headers.insert(
        SESSION_HEADER,
        HeaderValue::from_static("0123456789abcdef0123456789abcdef"),
    );
    headers.insert(GRACE_HEADER, grace_ms.to_string().parse().expect("value"));
    headers.insert(WINDOW_HEADER, HeaderValue::from_static("4000"));
    Resumption::granted(&headers).expect("granted")
}

/// A connection at `t0` with keepalive off (one test turns it on).
fn connection(t0: Instant, grace_ms: Option<u64>) -> Connection<()> {
    let mut config = Config::default();
    config.keepalive_interval = None;
    let mut conn = Connection::new(config, t0);
    if let Some(grace) = grace_ms {
        conn.make_resumable(granted(grace));
    }
    conn
}

fn query(conn: &mut Connection<()>, options: RequestOptions, now: Instant) -> RequestId {
    let invocation = Invocation::new("hello", "model");
    (conn.requests().start_query(invocation, options, None, now)).expect("start")
}

/// Everything the connection wants written now.
fn written(conn: &mut Connection<()>) -> Vec<Outgoing> {
    std::iter::from_fn(|| conn.poll_transmit()).collect()
}

/// The message types of the text frames written now (pings aside).
fn texts(conn: &mut Connection<()>) -> Vec<String> {
    written(conn)
        .into_iter()
        .filter_map(|o| match o {
            Outgoing::Text(t) => {
                let v: Value = serde_json::from_str(&t).expect("JSON");
                Some(v["message_type"].as_str().expect("type").to_owned())
            }
            Outgoing::Ping(_) => None,
        })
        .collect()
}

fn pings(conn: &mut Connection<()>) -> Vec<Vec<u8>> {
    written(conn)
        .into_iter()
        .filter_map(|o| match o {
            Outgoing::Ping(p) => Some(p),
            Outgoing::Text(_) => None,
        })
        .collect()
}

/// What a call of request `id` got so far, as a call reads it: items, up to its terminal or
/// its error.
fn items(conn: &mut Connection<()>, id: RequestId) -> Vec<Result<RequestEvent, Error>> {
    let mut out = Vec::new();
    while let Some(event) = conn.poll_event() {
        match conn.requests().route(event, id, None) {
            Step::Item(item) => {
                let end = item.is_terminal();
                out.push(Ok(item));
                if end {
                    break;
                }
            }
            Step::Failed(e) => {
                out.push(Err(e));
                break;
            }
            Step::Upload(..) | Step::Skip => {}
        }
    }
    out
}

fn assistant(text: &str) -> String {
    json!({"message_type": "assistant_message", "text_blocks": [text]}).to_string()
}

fn result(text: &str) -> String {
    json!({
        "message_type": "result_message",
        "metadata": {},
        "data": {"type": "text", "text": text}
    })
    .to_string()
}

fn feed(conn: &mut Connection<()>, now: Instant, text: &str) {
    conn.handle_frame(now, Frame::Text(text));
}

fn texts_of(items: &[Result<RequestEvent, Error>]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| match i {
            Ok(RequestEvent::AssistantMessage(blocks)) => Some(blocks.concat()),
            Ok(RequestEvent::Result(r)) => r.text().map(|t| format!("result:{t}")),
            _ => None,
        })
        .collect()
}

#[test]
fn a_quarter_of_the_window_is_acknowledged_at_once() {
    let t0 = Instant::now();
    let mut conn = connection(t0, Some(60_000));
    let id = query(&mut conn, RequestOptions::default(), t0);
    assert_eq!(texts(&mut conn), ["invocation_message"]);
    // 1,000 bytes (a quarter of 4,000) in one frame: acknowledged with it.
    feed(&mut conn, t0, &assistant(&"x".repeat(1000)));
    assert_eq!(items(&mut conn, id).len(), 1);
    assert_eq!(pings(&mut conn), [resume::ack_payload(1)]);
    assert_eq!(
        conn.poll_timeout(),
        t0 + Duration::from_secs(60),
        "idle only"
    );
}

#[test]
fn a_frame_is_acknowledged_by_the_timer_when_the_runtime_goes_quiet() {
    let t0 = Instant::now();
    let mut conn = connection(t0, Some(60_000));
    let id = query(&mut conn, RequestOptions::default(), t0);
    written(&mut conn);
    feed(&mut conn, t0 + ms(5), &assistant("small"));
    feed(&mut conn, t0 + ms(10), &assistant("small"));
    assert_eq!(items(&mut conn, id).len(), 2);
    assert!(pings(&mut conn).is_empty(), "not due yet");
    // Nothing more arrives: the deadline is the connection's own, not the next frame.
    assert_eq!(conn.poll_timeout(), t0 + ms(5) + ACK_DELAY);
    conn.handle_timeout(t0 + ms(5) + ACK_DELAY);
    assert_eq!(pings(&mut conn), [resume::ack_payload(2)]);
    assert!(
        conn.poll_timeout() >= t0 + Duration::from_secs(60),
        "nothing owed: the idle limit is next"
    );
}

#[test]
fn a_plain_session_sends_no_acknowledgement() {
    let t0 = Instant::now();
    let mut conn = connection(t0, None);
    let id = query(&mut conn, RequestOptions::default(), t0);
    written(&mut conn);
    feed(&mut conn, t0, &assistant(&"x".repeat(10_000)));
    items(&mut conn, id);
    conn.handle_timeout(t0 + Duration::from_secs(1));
    assert!(written(&mut conn).is_empty());
}

#[test]
fn reconnections_back_off_and_give_up_past_the_grace() {
    let t0 = Instant::now();
    let mut conn = connection(t0, Some(1_000));
    let id = query(&mut conn, RequestOptions::default(), t0);
    written(&mut conn);
    feed(&mut conn, t0, &assistant("a"));
    items(&mut conn, id);
    conn.connection_lost(t0 + ms(10), None);
    assert!(!conn.is_connected());
    // The first reconnection at once, naming the frames processed.
    let headers = conn.poll_reconnect().expect("reconnect now");
    assert_eq!(headers[1].1, "1");
    assert_eq!(conn.poll_reconnect(), None, "asked once");
    let mut now = t0 + ms(10);
    let mut waits = Vec::new();
    loop {
        conn.reconnect_failed(now, &Error::ConnectionClosed);
        if conn.is_finished() || !conn.is_resumable() {
            break;
        }
        let next = conn.poll_timeout();
        waits.push(next - now);
        assert_eq!(conn.poll_reconnect(), None, "not before its time");
        conn.handle_timeout(next);
        now = next;
        assert!(conn.poll_reconnect().is_some(), "due at {next:?}");
    }
    assert_eq!(&waits[..4], [1, 2, 4, 8].map(|n| FIRST_BACKOFF * n));
    assert!(now <= t0 + ms(1_010), "within the grace");
    let out = items(&mut conn, id);
    assert!(
        matches!(out.as_slice(), [Err(Error::ConnectionClosed)]),
        "{out:?}"
    );
}

#[test]
fn a_refusal_ends_the_session() {
    let t0 = Instant::now();
    let mut conn = connection(t0, Some(60_000));
    let id = query(&mut conn, RequestOptions::default(), t0);
    conn.connection_lost(t0, None);
    assert!(conn.poll_reconnect().is_some());
    conn.reconnect_refused(t0, runtimeuse_proto::resume::Refusal::Expired);
    assert!(matches!(
        items(&mut conn, id).as_slice(),
        [Err(Error::ConnectionClosed)]
    ));
}

#[test]
fn a_close_the_runtime_meant_is_not_resumed() {
    let t0 = Instant::now();
    let mut conn = connection(t0, Some(60_000));
    let id = query(&mut conn, RequestOptions::default(), t0);
    conn.connection_lost(t0, Some(resume::CLOSE_SUPERSEDED));
    assert_eq!(conn.poll_reconnect(), None);
    assert!(matches!(
        items(&mut conn, id).as_slice(),
        [Err(Error::ConnectionClosed)]
    ));
}

#[test]
fn the_idle_limit_counts_the_time_spent_reconnecting() {
    let t0 = Instant::now();
    let mut conn = connection(t0, Some(60_000));
    let options = RequestOptions::default().idle_timeout(ms(300));
    let id = query(&mut conn, options, t0);
    written(&mut conn);
    feed(&mut conn, t0 + ms(100), &assistant("a"));
    items(&mut conn, id);
    conn.connection_lost(t0 + ms(150), None);
    let mut now = t0 + ms(150);
    while conn.poll_reconnect().is_some() {
        conn.reconnect_failed(now, &Error::ConnectionClosed);
        now = conn.poll_timeout();
        conn.handle_timeout(now);
    }
    assert_eq!(now, t0 + ms(400), "idle since the last frame");
    let out = items(&mut conn, id);
    assert!(
        matches!(
            out.as_slice(),
            [Err(Error::Timeout {
                kind: TimeoutKind::Idle(_),
                ..
            })]
        ),
        "{out:?}"
    );
}

#[test]
fn the_overall_limit_runs_from_the_request_start_across_a_reconnection() {
    let t0 = Instant::now();
    let mut conn = connection(t0, Some(60_000));
    let options = RequestOptions::default().timeout(ms(1_000));
    let id = query(&mut conn, options, t0);
    written(&mut conn);
    conn.connection_lost(t0 + ms(400), None);
    assert!(conn.poll_reconnect().is_some());
    conn.connected(t0 + ms(600), 1);
    assert!(conn.is_connected());
    feed(&mut conn, t0 + ms(900), &assistant("still going"));
    conn.handle_timeout(t0 + ms(900) + ACK_DELAY);
    assert_eq!(pings(&mut conn), [resume::ack_payload(1)]);
    assert_eq!(conn.poll_timeout(), t0 + ms(1_000));
    conn.handle_timeout(t0 + ms(1_000));
    let out = items(&mut conn, id);
    assert!(
        matches!(
            out.last(),
            Some(Err(Error::Timeout {
                kind: TimeoutKind::Overall(_),
                ..
            }))
        ),
        "{out:?}"
    );
}

#[test]
fn a_cancel_is_drained_to_one_terminal() {
    let t0 = Instant::now();
    let mut conn = connection(t0, Some(60_000));
    let id = query(&mut conn, RequestOptions::default(), t0);
    written(&mut conn);
    conn.abort(t0 + ms(1));
    assert_eq!(texts(&mut conn), ["cancel_message"]);
    feed(&mut conn, t0 + ms(2), &assistant("late"));
    let cancelled = json!({"message_type": "error_message", "error": "cancelled", "metadata": {}});
    feed(&mut conn, t0 + ms(3), &cancelled.to_string());
    let mut out = items(&mut conn, id);
    conn.handle_timeout(t0 + ms(1_000));
    out.extend(items(&mut conn, id));
    let terminals: Vec<_> = out.iter().filter(|i| i.is_err()).collect();
    assert!(
        matches!(terminals.as_slice(), [Err(Error::Cancelled)]),
        "{out:?}"
    );
    // The session goes on: the next request starts at once.
    let next = query(&mut conn, RequestOptions::default(), t0 + ms(1_000));
    assert_ne!(next, id);
    assert_eq!(texts(&mut conn), ["invocation_message"]);
}

#[test]
fn frames_the_runtime_did_not_acknowledge_are_sent_again_first() {
    let t0 = Instant::now();
    let mut conn = connection(t0, Some(60_000));
    let id = query(&mut conn, RequestOptions::default(), t0);
    assert_eq!(texts(&mut conn), ["invocation_message"]);
    conn.connection_lost(t0 + ms(10), None);
    // An abort while no socket is attached: kept for the next one, not written.
    conn.abort(t0 + ms(20));
    assert!(written(&mut conn).is_empty());
    assert!(conn.poll_reconnect().is_some());
    // The runtime had processed none of them.
    conn.connected(t0 + ms(30), 0);
    assert_eq!(texts(&mut conn), ["invocation_message", "cancel_message"]);
    // Lost again, after the runtime acknowledged the first.
    conn.handle_frame(t0 + ms(31), Frame::Ping(&resume::ack_payload(1)));
    conn.connection_lost(t0 + ms(40), None);
    assert!(conn.poll_reconnect().is_some());
    conn.connected(t0 + ms(50), 1);
    assert_eq!(texts(&mut conn), ["cancel_message"]);
    let _ = id;
}

#[test]
fn keepalive_pings_when_quiet_and_gives_up_without_an_answer() {
    let t0 = Instant::now();
    let mut config = Config::default();
    config.keepalive_interval = Some(ms(1_000));
    config.keepalive_timeout = ms(500);
    let mut conn: Connection<()> = Connection::new(config, t0);
    assert_eq!(conn.poll_timeout(), t0 + ms(1_000));
    conn.handle_timeout(t0 + ms(1_000));
    assert_eq!(written(&mut conn), [Outgoing::Ping(Vec::new())]);
    conn.handle_frame(t0 + ms(1_100), Frame::Pong);
    assert_eq!(
        conn.poll_timeout(),
        t0 + ms(2_100),
        "an interval after the pong"
    );
    conn.handle_timeout(t0 + ms(2_100));
    assert_eq!(written(&mut conn), [Outgoing::Ping(Vec::new())]);
    conn.handle_timeout(t0 + ms(2_600));
    assert!(conn.is_finished(), "no pong in time: the peer is dead");
}

#[test]
fn a_token_taken_at_any_point_gives_the_rest_of_the_request() {
    let t0 = Instant::now();
    let frames: Vec<String> = (0..5)
        .map(|n| assistant(&format!("m{n}")))
        .chain([result("done")])
        .collect();
    let whole = {
        let mut conn = connection(t0, Some(60_000));
        let id = query(&mut conn, RequestOptions::default(), t0);
        let mut out = Vec::new();
        for f in &frames {
            feed(&mut conn, t0, f);
            out.extend(items(&mut conn, id));
        }
        texts_of(&out)
    };
    for cut in 0..frames.len() {
        let mut conn = connection(t0, Some(60_000));
        let id = query(&mut conn, RequestOptions::default(), t0);
        written(&mut conn);
        let mut first = Vec::new();
        for f in &frames[..cut] {
            feed(&mut conn, t0, f);
            first.extend(items(&mut conn, id));
        }
        let token = conn.resume_token("ws://127.0.0.1:1", t0).expect("token");
        let json = serde_json::to_string(&token).expect("serialize");
        let token: ResumeToken = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(token.received(), cut as u64);
        let (resumption, state) = Resumption::from_token(token, t0).expect("from token");
        let mut taker: Connection<()> =
            Connection::take_over(Config::default(), resumption, state, 1, t0).expect("taken");
        assert_eq!(taker.received(), Some(cut as u64));
        let id = taker.requests().current().expect("the request in flight");
        let mut rest = Vec::new();
        for f in &frames[cut..] {
            feed(&mut taker, t0, f);
            rest.extend(items(&mut taker, id));
        }
        first.extend(rest);
        assert_eq!(texts_of(&first), whole, "cut at {cut}");
    }
}

#[test]
fn an_early_or_extra_timeout_does_nothing() {
    let t0 = Instant::now();
    let mut conn = connection(t0, Some(60_000));
    let id = query(&mut conn, RequestOptions::default(), t0);
    written(&mut conn);
    for n in 0..100 {
        conn.handle_timeout(t0 + ms(n));
    }
    assert!(written(&mut conn).is_empty());
    assert!(items(&mut conn, id).is_empty());
    let _ = FailReason::Cancelled;
}
