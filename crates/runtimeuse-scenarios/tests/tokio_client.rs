//! The tokio client against the project's runtime, in-process on an ephemeral loopback port.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use runtimeuse_runtime::{Runtime, RuntimeHandle, RuntimeOptions, ScriptedHandler};
use runtimeuse_scenarios::{HttpServer, temp_dir};
use runtimeuse_tokio::proto::{Config, TimeoutKind};
use runtimeuse_tokio::{
    ArtifactUpload, Client, Error, ExecuteCommandsOptions, OutputStream, QueryOptions, RequestEvent,
};

async fn runtime_with(options: RuntimeOptions) -> RuntimeHandle {
    Runtime::new(ScriptedHandler)
        .options(options)
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
        .spawn()
}

async fn runtime() -> RuntimeHandle {
    runtime_with(RuntimeOptions::default()).await
}

fn opts() -> QueryOptions {
    QueryOptions::new("You are a test assistant.", "echo")
}

#[tokio::test]
async fn text_query() {
    let rt = runtime().await;
    let result = Client::new(rt.url())
        .query("ECHO:hello world", opts())
        .await
        .unwrap();
    assert_eq!(result.text(), Some("hello world"));
    assert_eq!(result.metadata, serde_json::json!({}));
}

#[tokio::test]
async fn structured_query_into_the_callers_type() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Out {
        answer: u32,
    }
    let rt = runtime().await;
    let result = Client::new(rt.url())
        .query(r#"STRUCTURED:{"answer": 42}"#, opts().output_schema("{}"))
        .await
        .unwrap();
    assert_eq!(result.deserialize::<Out>().unwrap(), Out { answer: 42 });
}

#[tokio::test]
async fn assistant_messages_stream_through_the_callback() {
    let rt = runtime().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let options = opts().on_assistant_message(move |blocks| {
        let s = Arc::clone(&s);
        async move { s.lock().unwrap().push(blocks.join("")) }
    });
    let result = Client::new(rt.url())
        .query("STREAM:3", options)
        .await
        .unwrap();
    assert_eq!(result.text(), Some("streamed 3 messages"));
    assert_eq!(
        *seen.lock().unwrap(),
        ["message 1 of 3", "message 2 of 3", "message 3 of 3"]
    );
}

#[tokio::test]
async fn events_as_a_stream() {
    let rt = runtime().await;
    let mut session = Client::new(rt.url()).session().await.unwrap();
    let mut events = session.query_events("STREAM:2", opts()).unwrap();
    let mut kinds = Vec::new();
    // Through the `Stream` impl.
    while let Some(item) = StreamExt::next(&mut events).await {
        kinds.push(match item.unwrap() {
            RequestEvent::AssistantMessage(b) => b.join(""),
            RequestEvent::Result(r) => format!("result {}", r.text().unwrap()),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(
        kinds,
        [
            "message 1 of 2",
            "message 2 of 2",
            "result streamed 2 messages"
        ]
    );
    drop(events);
    session.close().await.unwrap();
}

#[tokio::test]
async fn command_output_and_results() {
    let rt = runtime().await;
    let out = Arc::new(Mutex::new(Vec::new()));
    let o = Arc::clone(&out);
    let options = ExecuteCommandsOptions::new().on_command_output(move |chunk| {
        let o = Arc::clone(&o);
        async move { o.lock().unwrap().push((chunk.stream, chunk.text)) }
    });
    let result = Client::new(rt.url())
        .execute_commands(["echo out; echo err >&2", "exit 4", "echo never"], options)
        .await
        .unwrap();
    let codes: Vec<i64> = result.results.iter().map(|r| r.exit_code).collect();
    assert_eq!(codes, [0, 4]);
    assert_eq!(result.results[0].stdout.as_deref(), Some("out\n"));
    let out = out.lock().unwrap();
    assert!(out.contains(&(OutputStream::Stdout, "out\n".to_owned())));
    assert!(out.contains(&(OutputStream::Stderr, "err\n".to_owned())));
}

#[tokio::test]
async fn artifact_handshake_uploads_to_a_real_put_target() {
    let rt = runtime().await;
    let http = HttpServer::start(HashMap::new()).await;
    let dir = temp_dir("artifacts");
    let base = http.url("/uploads/");
    let options = opts()
        .artifacts_dir(dir.to_string_lossy())
        .on_artifact_upload_request(move |req| {
            let url = format!("{base}{}", req.filename);
            async move { ArtifactUpload::new(url, "text/plain") }
        });
    let file = dir.join("hello.txt");
    let result = Client::new(rt.url())
        .query(
            format!("WRITE_FILE:{} hello artifact", file.display()),
            options,
        )
        .await
        .unwrap();
    assert_eq!(result.text().unwrap(), format!("wrote {}", file.display()));
    let upload = tokio::time::timeout(Duration::from_secs(10), http.upload("/uploads/hello.txt"))
        .await
        .expect("uploaded");
    assert_eq!(upload.body, b"hello artifact");
    assert_eq!(upload.content_type.as_deref(), Some("text/plain"));
}

#[tokio::test]
async fn cancel_mid_stream_then_reuse_the_session() {
    let rt = runtime().await;
    let mut session = Client::new(rt.url()).session().await.unwrap();
    let abort = session.abort_handle();
    let options = ExecuteCommandsOptions::new().on_command_output(move |_| {
        let abort = abort.clone();
        async move { abort.abort() }
    });
    let err = session
        .execute_commands(["echo first; sleep 30"], options)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    let next = session.query("ECHO:next", opts()).await.unwrap();
    assert_eq!(next.text(), Some("next"));
    session.close().await.unwrap();
}

#[tokio::test]
async fn abort_from_another_task() {
    let rt = runtime().await;
    let mut session = Client::new(rt.url()).session().await.unwrap();
    let abort = session.abort_handle();
    let aborter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        abort.abort();
    });
    let started = std::time::Instant::now();
    let err = session.query("SLOW:30000", opts()).await.unwrap_err();
    assert!(matches!(err, Error::Cancelled));
    assert!(started.elapsed() < Duration::from_secs(5));
    aborter.await.unwrap();
    assert_eq!(
        session.query("ECHO:after", opts()).await.unwrap().text(),
        Some("after")
    );
}

#[tokio::test]
async fn handler_error_then_a_successful_query_on_the_same_session() {
    let rt = runtime().await;
    let mut session = Client::new(rt.url()).session().await.unwrap();
    let err = session.query("ERROR:boom", opts()).await.unwrap_err();
    assert_eq!(err.runtime_error(), Some("boom"));
    let ok = session.query("ECHO:after", opts()).await.unwrap();
    assert_eq!(
        ok.text(),
        Some("after"),
        "the first request's terminal did not leak"
    );
    session.close().await.unwrap();
}

#[tokio::test]
async fn overall_timeout() {
    let rt = runtime().await;
    let mut session = Client::new(rt.url()).session().await.unwrap();
    let err = session
        .query("SLOW:30000", opts().timeout(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                kind: TimeoutKind::Overall(_),
                ..
            }
        ),
        "{err}"
    );
    // The timed-out request was cancelled on the wire; the session goes on.
    assert_eq!(
        session.query("ECHO:next", opts()).await.unwrap().text(),
        Some("next")
    );
}

#[tokio::test]
async fn idle_timeout_with_diagnostics() {
    let mut options = RuntimeOptions::default();
    options.heartbeat_interval = None;
    let rt = runtime_with(options).await;
    let err = Client::new(rt.url())
        .query(
            "SLOW:30000",
            opts().idle_timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
    let Error::Timeout { kind, diagnostics } = err else {
        panic!("{err}")
    };
    assert_eq!(kind, TimeoutKind::Idle(Duration::from_millis(300)));
    assert_eq!(diagnostics.message_count, 0);
}

#[tokio::test]
async fn connection_dropped_mid_request_is_a_clear_error_within_a_second() {
    let rt = runtime().await;
    let client = Client::new(rt.url());
    let call = tokio::spawn(async move { client.query("SLOW:30000", opts()).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = std::time::Instant::now();
    rt.shutdown().await;
    let err = tokio::time::timeout(Duration::from_secs(1), call)
        .await
        .expect("the call ends within a second")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed), "{err}");
    assert!(stopped.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_dropped_call_future_leaves_the_session_usable() {
    let rt = runtime().await;
    let mut session = Client::new(rt.url()).session().await.unwrap();
    let dropped = tokio::time::timeout(
        Duration::from_millis(200),
        session.query("STREAM:100000", opts()),
    )
    .await;
    assert!(dropped.is_err(), "the call was cut short");
    let ok = session.query("ECHO:next", opts()).await.unwrap();
    assert_eq!(ok.text(), Some("next"));
    session.close().await.unwrap();
}

#[tokio::test]
async fn a_token_is_sent_as_an_extra_header() {
    let mut options = RuntimeOptions::default();
    options.token = Some("s3cret".into());
    let rt = runtime_with(options).await;
    let refused = Client::new(rt.url()).query("ECHO:x", opts()).await;
    assert!(matches!(refused, Err(Error::WebSocket(_))), "{refused:?}");
    let client = Client::builder(rt.url())
        .header("Authorization", "Bearer s3cret")
        .build();
    assert_eq!(
        client.query("ECHO:in", opts()).await.unwrap().text(),
        Some("in")
    );
}

#[tokio::test]
async fn a_10_mb_result() {
    let rt = runtime().await;
    let big = "y".repeat(10 << 20);
    let result = Client::new(rt.url())
        .query(format!("ECHO:{big}"), opts())
        .await
        .unwrap();
    assert_eq!(result.text().map(str::len), Some(10 << 20));
}

#[tokio::test]
async fn a_result_over_the_frame_limit_is_a_clear_error() {
    let rt = runtime().await;
    let client = Client::builder(rt.url()).max_frame_size(1 << 20).build();
    let err = client
        .query(format!("ECHO:{}", "z".repeat(1_100_000)), opts())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed), "{err}");
}

#[tokio::test]
async fn persistent_session_with_graceful_close() {
    let rt = runtime().await;
    let mut session = Client::builder(rt.url())
        .session_config(Config::default())
        .build()
        .session()
        .await
        .unwrap();
    let a = session.query("ECHO:one", opts()).await.unwrap();
    let b = session
        .execute_commands(["echo two"], ExecuteCommandsOptions::new())
        .await
        .unwrap();
    assert_eq!(a.text(), Some("one"));
    assert_eq!(b.results[0].stdout.as_deref(), Some("two\n"));
    session.close().await.unwrap();
}

#[tokio::test]
async fn usage_errors_are_reported_before_anything_is_sent() {
    let rt = runtime().await;
    let err = Client::new(rt.url())
        .query("ECHO:x", opts().artifacts_dir("/tmp/x"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Usage(_)), "{err}");
}

mod tls {
    use super::*;
    use runtimeuse_tokio::proto::runtime::RuntimeEvent;
    use runtimeuse_tokio::proto::{QueryResult, ResultData};
    use runtimeuse_tokio::server::{RuntimeConnection, ServerConfig};
    use tokio_rustls::TlsAcceptor;
    use tokio_rustls::rustls;

    /// A `wss://` echo runtime with a fresh self-signed certificate for `localhost`; returns
    /// its port and the certificate (DER).
    async fn wss_echo_server() -> (u16, Vec<u8>) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let der = cert.cert.der().to_vec();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone().into()], key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // An untrusting client aborts the TLS handshake: nothing to serve.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut conn) =
                        RuntimeConnection::accept(tls, ServerConfig::default()).await
                    else {
                        return;
                    };
                    while let Some(event) = conn.next_event().await {
                        match event {
                            RuntimeEvent::Invocation { invocation, .. } => {
                                let result = QueryResult {
                                    data: ResultData::Text(format!(
                                        "tls:{}",
                                        invocation.user_prompt
                                    )),
                                    metadata: serde_json::Value::Null,
                                };
                                conn.session().finish_query(&result).unwrap();
                            }
                            RuntimeEvent::EndSession => {
                                conn.session().confirm_end_session().unwrap()
                            }
                            _ => {}
                        }
                    }
                });
            }
        });
        (port, der)
    }

    #[tokio::test]
    async fn wss_with_a_certificate_made_in_the_test() {
        let (port, der) = wss_echo_server().await;
        let url = format!("wss://localhost:{port}");
        let untrusted = Client::new(&url).query("x", opts()).await.unwrap_err();
        assert!(matches!(untrusted, Error::WebSocket(_)), "{untrusted}");
        let client = Client::builder(&url).root_certificate(der).build();
        let result = client.query("hello", opts()).await.unwrap();
        assert_eq!(result.text(), Some("tls:hello"));
    }
}

#[tokio::test]
async fn a_slow_callback_cancels_the_request_with_a_clear_error() {
    let rt = runtime().await;
    let mut session = Client::new(rt.url()).session().await.unwrap();
    let options = opts()
        .callback_timeout(Duration::from_millis(100))
        .on_assistant_message(|_| tokio::time::sleep(Duration::from_secs(30)));
    let err = session.query("STREAM:3", options).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::CallbackTimeout {
                callback: "on_assistant_message",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        session
            .query("ECHO:still usable", opts())
            .await
            .unwrap()
            .text(),
        Some("still usable")
    );
}

#[tokio::test]
async fn a_slow_uploader_is_declined_and_the_request_goes_on() {
    let rt = runtime().await;
    let http = HttpServer::start(HashMap::new()).await;
    let dir = temp_dir("slow-uploader");
    let url = http.url("/never");
    let options = opts()
        .artifacts_dir(dir.to_string_lossy())
        .callback_timeout(Duration::from_millis(100))
        .on_artifact_upload_request(move |_| {
            let url = url.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                ArtifactUpload::new(url, "text/plain")
            }
        });
    let file = dir.join("late.txt");
    let result = Client::new(rt.url())
        .query(format!("WRITE_FILE:{} x", file.display()), options)
        .await
        .unwrap();
    assert_eq!(result.text().unwrap(), format!("wrote {}", file.display()));
}

#[tokio::test]
async fn a_vanished_client_gets_its_commands_killed() {
    let rt = runtime().await;
    let dir = temp_dir("vanished");
    let marker = dir.join("still-running");
    let client = Client::new(rt.url());
    // The touch runs in a grandchild: killing only the shell would not stop it.
    let command = format!(
        "echo started; sh -c 'sleep 3; touch {}' & wait",
        marker.display()
    );
    let started = Arc::new(tokio::sync::Notify::new());
    let s = Arc::clone(&started);
    let options = ExecuteCommandsOptions::new().on_command_output(move |_| {
        let s = Arc::clone(&s);
        async move { s.notify_one() }
    });
    let call = tokio::spawn(async move { client.execute_commands([command], options).await });
    started.notified().await;
    // The client disappears without a word (its task and socket are dropped).
    call.abort();
    let _ = call.await;
    // Past the moment the command would have touched the marker.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(
        !marker.exists(),
        "the command's process group outlived its client"
    );
}
