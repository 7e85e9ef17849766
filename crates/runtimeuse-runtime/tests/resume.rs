//! The runtime side of resumable sessions (docs/resume.md), driven by a raw WebSocket client
//! on loopback that speaks the extension by hand: a cut connection resumed with nothing lost
//! and nothing twice, and each refusal.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use runtimeuse_proto::resume::{
    self, GRACE_HEADER, RECEIVED_HEADER, REFUSED_HEADER, RESUME_HEADER, SESSION_HEADER,
};
use runtimeuse_runtime::{Runtime, RuntimeHandle, RuntimeOptions, ScriptedHandler};
use runtimeuse_tokio::tokio_tungstenite::tungstenite::client::IntoClientRequest;
use runtimeuse_tokio::tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use runtimeuse_tokio::tokio_tungstenite::tungstenite::{self, Message};
use runtimeuse_tokio::tokio_tungstenite::{self as tt, MaybeTlsStream, WebSocketStream};
use serde_json::{Value, json};
use tokio::net::TcpStream;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const LINES: u32 = 150;

async fn start(options: RuntimeOptions) -> RuntimeHandle {
    Runtime::new(ScriptedHandler)
        .options(options)
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
        .spawn()
}

fn quick() -> RuntimeOptions {
    let mut o = RuntimeOptions::default();
    o.heartbeat_interval = None;
    o
}

/// Opens a connection with these extra request headers.
async fn open(
    url: &str,
    headers: &[(&'static str, String)],
) -> Result<(Ws, tungstenite::handshake::client::Response), tungstenite::Error> {
    let mut request = url.into_client_request().expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(value).expect("header"),
        );
    }
    tt::connect_async(request).await
}

/// A command that prints 1..=LINES, a line every few milliseconds: many output frames.
fn batch() -> Value {
    let command = format!("for i in $(seq 1 {LINES}); do echo $i; sleep 0.004; done");
    json!({
        "message_type": "command_execution_message",
        "commands": [{"command": command}],
        "secrets_to_redact": [],
    })
}

/// What a client that processed the runtime's frames in order has seen.
#[derive(Default)]
struct Seen {
    /// The runtime's data frames processed.
    received: u64,
    stdout: String,
    result: Option<Value>,
}

impl Seen {
    /// Processes frames until the result, or until `stop_after` data frames in all; acks
    /// every 8 frames. Returns the acks the runtime sent (its count of our frames).
    async fn read(&mut self, ws: &mut Ws, stop_after: Option<u64>) -> Vec<u64> {
        let mut acks = Vec::new();
        while self.result.is_none() && stop_after.is_none_or(|n| self.received < n) {
            let message = tokio::time::timeout(Duration::from_secs(20), ws.next())
                .await
                .expect("a frame within 20 s")
                .expect("open")
                .expect("read");
            match message {
                Message::Text(t) => {
                    self.received += 1;
                    let v: Value = serde_json::from_str(&t).expect("json");
                    match v["message_type"].as_str() {
                        Some("command_output_message") => {
                            self.stdout.push_str(v["text"].as_str().unwrap_or_default())
                        }
                        Some("command_execution_result_message") => self.result = Some(v),
                        _ => {}
                    }
                    if self.received.is_multiple_of(8) {
                        let ack = resume::ack_payload(self.received);
                        ws.send(Message::Ping(ack.into())).await.expect("ack");
                    }
                }
                Message::Ping(p) => acks.extend(resume::parse_ack(&p)),
                Message::Close(frame) => panic!("closed: {frame:?}"),
                _ => {}
            }
        }
        acks
    }
}

fn expected_stdout() -> String {
    (1..=LINES).map(|i| format!("{i}\n")).collect()
}

fn header(response: &tungstenite::handshake::client::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Starts a resumable session running the batch; returns it with its id.
async fn resumable(url: &str) -> (Ws, String) {
    let (mut ws, response) = open(url, &[(RESUME_HEADER, "1".into())])
        .await
        .expect("handshake");
    let id = header(&response, SESSION_HEADER).expect("granted");
    ws.send(Message::text(batch().to_string()))
        .await
        .expect("send");
    (ws, id)
}

fn resume_headers(id: &str, received: u64) -> Vec<(&'static str, String)> {
    vec![
        (SESSION_HEADER, id.to_owned()),
        (RECEIVED_HEADER, received.to_string()),
    ]
}

/// The refusal of a resumption: its HTTP status and token.
fn refusal(
    result: Result<(Ws, tungstenite::handshake::client::Response), tungstenite::Error>,
) -> (u16, Option<String>) {
    match result {
        Err(tungstenite::Error::Http(response)) => (
            response.status().as_u16(),
            header(&response, REFUSED_HEADER),
        ),
        Err(e) => panic!("not an HTTP refusal: {e}"),
        Ok(_) => panic!("accepted"),
    }
}

#[tokio::test]
async fn a_cut_session_resumes_with_nothing_lost_and_nothing_twice() {
    let runtime = start(quick()).await;
    let (mut ws, id) = resumable(&runtime.url()).await;
    assert_eq!(id.len(), 32);
    let mut seen = Seen::default();
    seen.read(&mut ws, Some(20)).await;
    // The connection drops without a close frame (as behind a proxy that cuts it), and the
    // client comes back at once: whether the runtime saw the cut first (the session waits
    // detached) or the new connection (it supersedes the old one), nothing is lost.
    drop(ws);
    let (mut ws, response) = open(&runtime.url(), &resume_headers(&id, seen.received))
        .await
        .expect("resumed");
    assert_eq!(
        header(&response, SESSION_HEADER).as_deref(),
        Some(id.as_str())
    );
    // The runtime says first how many of our frames it processed: the batch.
    let acks = seen.read(&mut ws, None).await;
    assert_eq!(acks.first(), Some(&1), "{acks:?}");
    assert_eq!(seen.stdout, expected_stdout(), "every line once, in order");
    let result = seen.result.expect("the result");
    assert_eq!(result["results"][0]["exit_code"], 0, "{result}");
    runtime.shutdown().await;
}

#[tokio::test]
async fn resumption_is_granted_only_when_asked_and_not_when_turned_off() {
    let runtime = start(quick()).await;
    let (_, response) = open(&runtime.url(), &[]).await.expect("handshake");
    assert_eq!(header(&response, SESSION_HEADER), None);
    let (_, response) = open(&runtime.url(), &[(RESUME_HEADER, "1".into())])
        .await
        .expect("handshake");
    assert_eq!(header(&response, GRACE_HEADER).as_deref(), Some("60000"));
    runtime.shutdown().await;

    let mut off = quick();
    off.resume_grace = Duration::ZERO;
    let runtime = start(off).await;
    let (_, response) = open(&runtime.url(), &[(RESUME_HEADER, "1".into())])
        .await
        .expect("handshake");
    assert_eq!(header(&response, SESSION_HEADER), None);
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_wrong_id_and_a_stale_count_are_refused() {
    let runtime = start(quick()).await;
    let (mut ws, id) = resumable(&runtime.url()).await;
    let mut seen = Seen::default();
    // 16 frames read and acknowledged: the runtime forgets them.
    seen.read(&mut ws, Some(16)).await;
    // Wait for the ack to be read: the runtime answers its ping.
    ws.send(Message::Ping(b"sync".to_vec().into()))
        .await
        .expect("ping");
    loop {
        match ws.next().await.expect("open").expect("read") {
            Message::Pong(p) if &p[..] == b"sync" => break,
            _ => {}
        }
    }
    drop(ws);
    let other = "0".repeat(32);
    assert_eq!(
        refusal(open(&runtime.url(), &resume_headers(&other, 16)).await),
        (404, Some("unknown-session".into()))
    );
    assert_eq!(
        refusal(open(&runtime.url(), &resume_headers("not-an-id", 16)).await),
        (404, Some("unknown-session".into()))
    );
    assert_eq!(
        refusal(open(&runtime.url(), &resume_headers(&id, 8)).await),
        (409, Some("out-of-window".into())),
        "frames up to 16 were acknowledged: 8 is stale"
    );
    assert_eq!(
        refusal(open(&runtime.url(), &resume_headers(&id, 1_000_000)).await),
        (409, Some("out-of-window".into()))
    );
    // The count is decimal digits, once: no sign, no second header.
    let signed = [
        (SESSION_HEADER, id.clone()),
        (RECEIVED_HEADER, "+16".to_owned()),
    ];
    assert_eq!(
        refusal(open(&runtime.url(), &signed).await),
        (409, Some("out-of-window".into()))
    );
    let mut twice = runtime.url().into_client_request().expect("request");
    twice
        .headers_mut()
        .insert(SESSION_HEADER, HeaderValue::from_str(&id).unwrap());
    for _ in 0..2 {
        twice
            .headers_mut()
            .append(RECEIVED_HEADER, HeaderValue::from_static("16"));
    }
    assert_eq!(
        refusal(tt::connect_async(twice).await),
        (409, Some("out-of-window".into()))
    );
    // The refusals left the session as it was: the right count resumes it.
    let (mut ws, _) = open(&runtime.url(), &resume_headers(&id, 16))
        .await
        .expect("resumed");
    seen.read(&mut ws, None).await;
    assert_eq!(seen.stdout, expected_stdout());
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_session_not_resumed_within_the_grace_is_gone() {
    let mut options = quick();
    options.resume_grace = Duration::from_millis(200);
    let runtime = start(options).await;
    let (mut ws, id) = resumable(&runtime.url()).await;
    Seen::default().read(&mut ws, Some(4)).await;
    drop(ws);
    // Live, the session answers a count it never holds with 409; given up, with its reason.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while refusal_or_accept(&runtime.url(), &id).await.1.as_deref() != Some("expired") {
        assert!(tokio::time::Instant::now() < deadline, "never given up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        refusal(open(&runtime.url(), &resume_headers(&id, 4)).await),
        (410, Some("expired".into()))
    );
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_replay_buffer_overflow_ends_the_session() {
    let mut options = quick();
    options.max_replay = 2 << 10;
    let runtime = start(options).await;
    let (mut ws, id) = resumable(&runtime.url()).await;
    Seen::default().read(&mut ws, Some(2)).await;
    drop(ws);
    // The command goes on printing; some 30 frames later the buffer is over 2 KiB.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, token) = refusal_or_accept(&runtime.url(), &id).await;
        if token.as_deref() == Some("replay-overflow") {
            assert_eq!(status, 410);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no overflow: {status} {token:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    runtime.shutdown().await;
}

/// A resumption attempt that must not take the session over: a count the window never holds
/// (`u64::MAX`), so that a live session answers 409 and a gone one its reason.
async fn refusal_or_accept(url: &str, id: &str) -> (u16, Option<String>) {
    refusal(open(url, &resume_headers(id, u64::MAX)).await)
}

#[tokio::test]
async fn the_right_id_without_the_token_is_refused() {
    let mut options = quick();
    options.token = Some("s3cret".into());
    let runtime = start(options).await;
    let auth = ("authorization", "Bearer s3cret".to_owned());
    let (mut ws, response) = open(&runtime.url(), &[(RESUME_HEADER, "1".into()), auth.clone()])
        .await
        .expect("handshake");
    let id = header(&response, SESSION_HEADER).expect("granted");
    ws.send(Message::text(batch().to_string()))
        .await
        .expect("send");
    let mut seen = Seen::default();
    seen.read(&mut ws, Some(4)).await;
    drop(ws);
    let (status, _) = refusal(open(&runtime.url(), &resume_headers(&id, 4)).await);
    assert_eq!(status, 401);
    let mut headers = resume_headers(&id, seen.received);
    headers.push(auth);
    let (mut ws, _) = open(&runtime.url(), &headers).await.expect("resumed");
    seen.read(&mut ws, None).await;
    assert_eq!(seen.stdout, expected_stdout());
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_resumption_closes_the_connection_still_attached() {
    let runtime = start(quick()).await;
    let (mut old, id) = resumable(&runtime.url()).await;
    let mut seen = Seen::default();
    seen.read(&mut old, Some(8)).await;
    // A second connection takes the session over while the first is still open.
    let (mut ws, _) = open(&runtime.url(), &resume_headers(&id, seen.received))
        .await
        .expect("resumed");
    let closed = loop {
        match old.next().await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    };
    let frame = closed.expect("a close frame with a code");
    assert_eq!(u16::from(frame.code), resume::CLOSE_SUPERSEDED);
    seen.read(&mut ws, None).await;
    assert_eq!(seen.stdout, expected_stdout());
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_acknowledges_still_gets_everything() {
    // As behind a proxy that passed the request for resumption on but not the grant.
    // Output waits at 8 KiB held for the client: unacknowledged frames held until then would
    // stall the stream for good.
    let mut options = quick();
    options.max_buffered = 8 << 10;
    options.max_replay = 4 << 10;
    let runtime = start(options).await;
    let (mut ws, _id) = resumable(&runtime.url()).await;
    let mut stdout = String::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a frame within 20 s: the stream must not stall")
            .expect("open")
            .expect("read");
        let Message::Text(t) = message else { continue };
        let v: Value = serde_json::from_str(&t).expect("json");
        match v["message_type"].as_str() {
            Some("command_output_message") => {
                stdout.push_str(v["text"].as_str().unwrap_or_default())
            }
            Some("command_execution_result_message") => break,
            _ => {}
        }
    }
    assert_eq!(stdout, expected_stdout());
    runtime.shutdown().await;
}
