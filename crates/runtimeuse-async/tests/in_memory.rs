//! The async session over an in-memory duplex stream, against a scripted fake runtime, with
//! tokio's clock paused: each case runs in no real time, and timeouts of many seconds are
//! proven without waiting for them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use runtimeuse_async::{Backend, ClientSettings, Error, QueryOptions, Session};
use runtimeuse_proto::{Config, TimeoutKind};
use serde_json::{Value, json};
use tokio::io::DuplexStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

/// tokio's clock and timers over an in-memory WebSocket (no connecting: tests make the pair).
struct Memory;

impl Backend for Memory {
    type Socket = WebSocketStream<DuplexStream>;
    type Timer = Pin<Box<tokio::time::Sleep>>;

    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn timer(deadline: Instant) -> Self::Timer {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }

    fn reset(timer: &mut Self::Timer, deadline: Instant) {
        timer.as_mut().reset(deadline.into());
    }

    fn poll_timer(timer: &mut Self::Timer, cx: &mut Context<'_>) -> Poll<()> {
        timer.as_mut().poll(cx)
    }

    async fn connect(
        _: &ClientSettings,
        _: &[(&'static str, String)],
    ) -> Result<(Self::Socket, runtimeuse_async::tungstenite::http::HeaderMap), Error> {
        Err(Error::Config(
            "in-memory sessions are made by the test".into(),
        ))
    }
}

/// The fake runtime's end of the connection.
struct Runtime(WebSocketStream<DuplexStream>);

impl Runtime {
    /// The next text frame the client sent, as JSON.
    async fn recv(&mut self) -> Value {
        loop {
            match self.0.next().await.expect("a frame").expect("read") {
                Message::Text(t) => return serde_json::from_str(&t).expect("JSON"),
                Message::Close(_) => panic!("the client closed"),
                _ => {}
            }
        }
    }

    async fn send(&mut self, v: Value) {
        self.0
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send");
    }

    async fn result(&mut self, text: &str) {
        self.send(json!({
            "message_type": "result_message",
            "metadata": {},
            "data": {"type": "text", "text": text}
        }))
        .await;
    }
}

async fn pair(config: Config) -> (Session<Memory>, Runtime) {
    let (client, server) = tokio::io::duplex(64 << 10);
    let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
    let server = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
    (Session::new(client, config), Runtime(server))
}

fn opts() -> QueryOptions {
    QueryOptions::new("system", "model")
}

#[tokio::test(start_paused = true)]
async fn a_query_gets_its_result() {
    let (mut session, mut runtime) = pair(Config::default()).await;
    let fake = tokio::spawn(async move {
        let invocation = runtime.recv().await;
        assert_eq!(invocation["message_type"], "invocation_message");
        assert_eq!(invocation["user_prompt"], "hello");
        runtime.result("world").await;
        runtime
    });
    let result = session.query("hello", opts()).await.unwrap();
    assert_eq!(result.text(), Some("world"));
    fake.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_is_cancelled_and_its_terminal_never_reaches_the_next() {
    let (mut session, mut runtime) = pair(Config::default()).await;
    let fake = tokio::spawn(async move {
        assert_eq!(runtime.recv().await["user_prompt"], "first");
        // The first call is dropped: its request is cancelled before the next one goes out.
        assert_eq!(runtime.recv().await["message_type"], "cancel_message");
        runtime.result("first's late result").await;
        assert_eq!(runtime.recv().await["user_prompt"], "second");
        runtime.result("second").await;
    });
    {
        let first = session.query("first", opts());
        // Runs until it waits for the runtime, then is dropped.
        assert!(
            tokio::time::timeout(Duration::from_secs(1), first)
                .await
                .is_err()
        );
    }
    let second = session.query("second", opts()).await.unwrap();
    assert_eq!(second.text(), Some("second"));
    fake.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_silent_runtime_fails_the_request_at_its_idle_limit() {
    let (mut session, mut runtime) = pair(Config::default()).await;
    let fake = tokio::spawn(async move {
        runtime.recv().await;
        // Says nothing; keeps the connection (and answers the cancel with a terminal).
        assert_eq!(runtime.recv().await["message_type"], "cancel_message");
        runtime
    });
    let started = tokio::time::Instant::now();
    let err = session
        .query("x", opts().idle_timeout(Duration::from_secs(90)))
        .await
        .unwrap_err();
    let Error::Timeout { kind, .. } = err else {
        panic!("{err}")
    };
    assert_eq!(kind, TimeoutKind::Idle(Duration::from_secs(90)));
    // On the paused clock: exactly the limit, in no real time.
    assert_eq!(started.elapsed(), Duration::from_secs(90));
    fake.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_abort_from_another_task_cancels_and_waits_for_the_terminal() {
    let (mut session, mut runtime) = pair(Config::default()).await;
    let abort = session.abort_handle();
    let fake = tokio::spawn(async move {
        runtime.recv().await;
        abort.abort();
        assert_eq!(runtime.recv().await["message_type"], "cancel_message");
        runtime
            .send(json!({"message_type": "error_message", "error": "Request cancelled", "metadata": {}}))
            .await;
        runtime
    });
    let err = session.query("x", opts()).await.unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    let mut runtime = fake.await.unwrap();
    // The session goes on.
    let next = tokio::spawn(async move {
        assert_eq!(runtime.recv().await["user_prompt"], "next");
        runtime.result("next").await;
    });
    assert_eq!(
        session.query("next", opts()).await.unwrap().text(),
        Some("next")
    );
    next.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn close_waits_for_the_confirmation_and_reports_it() {
    let (session, mut runtime) = pair(Config::default()).await;
    let fake = tokio::spawn(async move {
        assert_eq!(runtime.recv().await["message_type"], "end_session_message");
        runtime
            .send(json!({"message_type": "end_session_confirm_message"}))
            .await;
        // The client closes with 1000.
        loop {
            match runtime.0.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                Some(Ok(_)) => {}
                other => panic!("{other:?}"),
            }
        }
    });
    let end = session.close().await.unwrap();
    assert_eq!(end, runtimeuse_proto::SessionEnd::Confirmed);
    assert_eq!(fake.await.unwrap(), 1000);
}

#[tokio::test(start_paused = true)]
async fn closed_returns_when_the_runtime_goes_away_between_requests() {
    let (mut session, runtime) = pair(Config::default()).await;
    drop(runtime);
    let e = session.closed().await;
    assert!(matches!(e, Error::ConnectionClosed), "{e}");
}

#[tokio::test(start_paused = true)]
async fn closed_keeps_waiting_while_the_runtime_only_answers_pings() {
    let (mut session, mut runtime) = pair(Config::default()).await;
    // The runtime's side answers pings as it reads (tungstenite does).
    let fake = tokio::spawn(async move { while runtime.0.next().await.is_some() {} });
    let waited = tokio::time::timeout(Duration::from_secs(300), session.closed()).await;
    assert!(waited.is_err(), "the session ended: {waited:?}");
    fake.abort();
}
