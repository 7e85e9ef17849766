//! The blocking session over a loopback socket pair against a scripted fake runtime on
//! another thread.

use std::net::{TcpListener, TcpStream};

use runtimeuse_client_core::read_ahead::ReadAheadStream;
use serde_json::{Value, json};
use tungstenite::protocol::Role;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use super::Session;
use crate::{Error, QueryOptions};

struct Runtime(WebSocket<TcpStream>);

impl Runtime {
    fn recv(&mut self) -> Value {
        loop {
            match self.0.read().expect("read") {
                Message::Text(t) => return serde_json::from_str(&t).expect("JSON"),
                Message::Close(_) => panic!("the client closed"),
                _ => {}
            }
        }
    }

    fn send(&mut self, v: Value) {
        self.0
            .send(Message::Text(v.to_string().into()))
            .expect("send");
    }

    fn result(&mut self, text: &str) {
        self.send(json!({
            "message_type": "result_message",
            "metadata": {},
            "data": {"type": "text", "text": text}
        }));
    }
}

fn pair() -> (Session, Runtime) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let stream = MaybeTlsStream::Plain(ReadAheadStream::new(client));
    let ws = WebSocket::from_raw_socket(stream, Role::Client, None);
    let session = Session::new(ws, runtimeuse_proto::Config::default());
    (
        session,
        Runtime(WebSocket::from_raw_socket(server, Role::Server, None)),
    )
}

fn opts() -> QueryOptions {
    QueryOptions::new("system", "model")
}

#[test]
fn a_query_gets_its_result_and_callbacks_run() {
    let (mut session, mut runtime) = pair();
    let fake = std::thread::spawn(move || {
        assert_eq!(runtime.recv()["user_prompt"], "hello");
        runtime.send(json!({"message_type": "assistant_message", "text_blocks": ["hi"]}));
        runtime.result("world");
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let options = opts().on_assistant_message(move |blocks| tx.send(blocks).unwrap());
    let result = session.query("hello", options).unwrap();
    assert_eq!(result.text(), Some("world"));
    assert_eq!(rx.try_recv().unwrap(), vec!["hi".to_owned()]);
    fake.join().unwrap();
}

#[test]
fn a_dropped_iterator_is_cancelled_and_its_terminal_never_reaches_the_next_call() {
    let (mut session, mut runtime) = pair();
    let fake = std::thread::spawn(move || {
        assert_eq!(runtime.recv()["user_prompt"], "first");
        runtime.send(json!({"message_type": "assistant_message", "text_blocks": ["1"]}));
        assert_eq!(runtime.recv()["message_type"], "cancel_message");
        runtime.result("first's late result");
        assert_eq!(runtime.recv()["user_prompt"], "second");
        runtime.result("second");
    });
    {
        let mut events = session.query_events("first", opts()).unwrap();
        assert!(matches!(
            events.next(),
            Some(Ok(runtimeuse_proto::RequestEvent::AssistantMessage(_)))
        ));
    }
    let second = session.query("second", opts()).unwrap();
    assert_eq!(second.text(), Some("second"));
    fake.join().unwrap();
}

#[test]
fn an_abort_from_another_thread_cancels_a_blocked_read() {
    let (mut session, mut runtime) = pair();
    let abort = session.abort_handle();
    let fake = std::thread::spawn(move || {
        runtime.recv();
        // The session is blocked reading; the abort reaches the wire anyway.
        abort.abort();
        assert_eq!(runtime.recv()["message_type"], "cancel_message");
        runtime.send(json!({
            "message_type": "error_message", "error": "Request cancelled", "metadata": {}
        }));
        runtime
    });
    let err = session.query("x", opts()).unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    fake.join().unwrap();
}

#[test]
fn close_reports_the_confirmed_end() {
    let (session, mut runtime) = pair();
    let fake = std::thread::spawn(move || {
        assert_eq!(runtime.recv()["message_type"], "end_session_message");
        runtime.send(json!({"message_type": "end_session_confirm_message"}));
        loop {
            match runtime.0.read() {
                Ok(Message::Close(Some(frame))) => return u16::from(frame.code),
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    });
    assert_eq!(
        session.close().unwrap(),
        runtimeuse_proto::SessionEnd::Confirmed
    );
    assert_eq!(fake.join().unwrap(), 1000);
}
