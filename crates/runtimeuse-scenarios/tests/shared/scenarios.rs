// The client scenarios, written once for every adapter. Included (`include!`) by each adapter's
// test file, which first brings the adapter's names into scope (`Client`, `Error`, the option
// types, `RequestEvent`, `ArtifactUpload`, `OutputStream`, `TimeoutKind`, `Config`) and defines:
//
// - `scenario! { fn name() { body } }`: a test whose body runs in the adapter's context (inside
//   an async block on the adapter's executor, or plainly for the blocking client);
// - `wait!(call)`: the call's outcome (`call.await`, or `call`);
// - `cb!(move |arg| expr)`: a callback (a future of `expr`, or a closure returning it);
// - `next!(events)`: the next item of a request's events (the `Stream` or the `Iterator`);
// - `thread!(body)`: runs `body` on another thread, in the adapter's context; a `JoinHandle`.

fn opts() -> QueryOptions {
    QueryOptions::new("You are a test assistant.", "echo")
}

/// Whether the process at `/proc/<pid>` has exited and waits to be reaped.
fn is_zombie(proc: &std::path::Path) -> bool {
    std::fs::read_to_string(proc.join("stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

fn without_heartbeats() -> runtimeuse_runtime::RuntimeOptions {
    let mut options = runtimeuse_runtime::RuntimeOptions::default();
    options.heartbeat_interval = None;
    options
}

scenario! {
    fn text_query() {
        let rt = runtimeuse_scenarios::served();
        let result = wait!(Client::new(rt.url()).query("ECHO:hello world", opts())).unwrap();
        assert_eq!(result.text(), Some("hello world"));
        assert_eq!(result.metadata, serde_json::json!({}));
    }
}

scenario! {
    fn structured_query_into_the_callers_type() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Out {
            answer: u32,
        }
        let rt = runtimeuse_scenarios::served();
        let result = wait!(
            Client::new(rt.url()).query(r#"STRUCTURED:{"answer": 42}"#, opts().output_schema(serde_json::json!({})))
        )
        .unwrap();
        assert_eq!(result.deserialize::<Out>().unwrap(), Out { answer: 42 });
        assert_eq!(result.structured_output().unwrap()["answer"], 42);
    }
}

scenario! {
    fn assistant_messages_stream_through_the_callback() {
        let rt = runtimeuse_scenarios::served();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        let options = opts().on_assistant_message(cb!(move |blocks| s.lock().unwrap().push(blocks.join(""))));
        let result = wait!(Client::new(rt.url()).query("STREAM:3", options)).unwrap();
        assert_eq!(result.text(), Some("streamed 3 messages"));
        assert_eq!(
            *seen.lock().unwrap(),
            ["message 1 of 3", "message 2 of 3", "message 3 of 3"]
        );
    }
}

scenario! {
    fn events_one_by_one() {
        let rt = runtimeuse_scenarios::served();
        let mut session = wait!(Client::new(rt.url()).session()).unwrap();
        let mut kinds = Vec::new();
        {
            let mut events = session.query_events("STREAM:2", opts()).unwrap();
            while let Some(item) = next!(events) {
                kinds.push(match item.unwrap() {
                    RequestEvent::AssistantMessage(b) => b.join(""),
                    RequestEvent::Result(r) => format!("result {}", r.text().unwrap()),
                    other => format!("{other:?}"),
                });
            }
        }
        assert_eq!(
            kinds,
            ["message 1 of 2", "message 2 of 2", "result streamed 2 messages"]
        );
        assert_eq!(wait!(session.close()).unwrap(), SessionEnd::Confirmed);
    }
}

scenario! {
    fn command_output_and_results() {
        let rt = runtimeuse_scenarios::served();
        let out = Arc::new(Mutex::new(Vec::new()));
        let o = Arc::clone(&out);
        let options = ExecuteCommandsOptions::new()
            .on_command_output(cb!(move |chunk| o.lock().unwrap().push((chunk.stream, chunk.text))));
        let result = wait!(Client::new(rt.url())
            .execute_commands(["echo out; echo err >&2", "exit 4", "echo never"], options))
        .unwrap();
        let codes: Vec<i64> = result.results.iter().map(|r| r.exit_code).collect();
        assert_eq!(codes, [0, 4]);
        assert_eq!(result.results[0].stdout.as_deref(), Some("out\n"));
        let out = out.lock().unwrap();
        assert!(out.contains(&(OutputStream::Stdout, "out\n".to_owned())));
        assert!(out.contains(&(OutputStream::Stderr, "err\n".to_owned())));
    }
}

scenario! {
    fn artifact_handshake_uploads_to_a_real_put_target() {
        let rt = runtimeuse_scenarios::served();
        // A storage service that takes its time: the result must still come after the PUT.
        let http = rt.slow_http(Duration::from_millis(300));
        let dir = runtimeuse_scenarios::temp_dir("artifacts");
        let base = http.url("/uploads/");
        let options = opts()
            .artifacts_dir(dir.to_string_lossy())
            .on_artifact_upload_request(cb!(move |req| {
                ArtifactUpload::new(format!("{base}{}", req.filename), "text/plain")
            }));
        let file = dir.join("hello.txt");
        let result = wait!(Client::new(rt.url())
            .query(format!("WRITE_FILE:{} hello artifact", file.display()), options))
        .unwrap();
        assert_eq!(result.text().unwrap(), format!("wrote {}", file.display()));
        // The result went out only once the PUT it asked for was done, as upstream.
        let upload = http.uploaded("/uploads/hello.txt").expect("uploaded before the result");
        assert_eq!(upload.body, b"hello artifact");
        assert_eq!(upload.content_type.as_deref(), Some("text/plain"));
    }
}

scenario! {
    fn cancel_mid_stream_then_reuse_the_session() {
        let rt = runtimeuse_scenarios::served();
        let mut session = wait!(Client::new(rt.url()).session()).unwrap();
        let abort = session.abort_handle();
        let options = ExecuteCommandsOptions::new().on_command_output(cb!(move |_chunk| abort.abort()));
        let err = wait!(session.execute_commands(["echo first; sleep 30"], options)).unwrap_err();
        assert!(matches!(err, Error::Cancelled), "{err}");
        let next = wait!(session.query("ECHO:next", opts())).unwrap();
        assert_eq!(next.text(), Some("next"));
        assert_eq!(wait!(session.close()).unwrap(), SessionEnd::Confirmed);
    }
}

scenario! {
    fn abort_from_another_thread_while_waiting() {
        let rt = runtimeuse_scenarios::served();
        let mut session = wait!(Client::new(rt.url()).session()).unwrap();
        let abort = session.abort_handle();
        // The query runs once its pre-command's output arrives; the other thread aborts then.
        let (running_tx, running) = std::sync::mpsc::channel::<()>();
        let aborter = std::thread::spawn(move || {
            running.recv().expect("the query started");
            abort.abort();
        });
        let options = opts()
            .pre_command("echo running")
            .on_command_output(cb!(move |_chunk| {
                let _ = running_tx.send(());
            }));
        let started = Instant::now();
        let err = wait!(session.query("SLOW:30000", options)).unwrap_err();
        assert!(matches!(err, Error::Cancelled), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        aborter.join().unwrap();
        assert_eq!(wait!(session.query("ECHO:after", opts())).unwrap().text(), Some("after"));
        assert_eq!(wait!(session.close()).unwrap(), SessionEnd::Confirmed);
    }
}

scenario! {
    fn handler_error_then_a_successful_query_on_the_same_session() {
        let rt = runtimeuse_scenarios::served();
        let mut session = wait!(Client::new(rt.url()).session()).unwrap();
        let err = wait!(session.query("ERROR:boom", opts())).unwrap_err();
        assert_eq!(err.runtime_error(), Some("boom"));
        assert!(err.to_string().contains("boom"), "{err}");
        let ok = wait!(session.query("ECHO:after", opts())).unwrap();
        assert_eq!(ok.text(), Some("after"), "the first request's terminal did not leak");
        assert_eq!(wait!(session.close()).unwrap(), SessionEnd::Confirmed);
    }
}

scenario! {
    fn overall_timeout_then_the_session_goes_on() {
        let rt = runtimeuse_scenarios::served();
        let mut session = wait!(Client::new(rt.url()).session()).unwrap();
        let err = wait!(session.query("SLOW:30000", opts().timeout(Duration::from_millis(300))))
            .unwrap_err();
        assert!(
            matches!(err, Error::Timeout { kind: TimeoutKind::Overall(_), .. }),
            "{err}"
        );
        // The timed-out request was cancelled on the wire; the session goes on.
        assert_eq!(wait!(session.query("ECHO:next", opts())).unwrap().text(), Some("next"));
    }
}

scenario! {
    fn idle_timeout_with_diagnostics() {
        let rt = runtimeuse_scenarios::Served::start(without_heartbeats());
        let err = wait!(Client::new(rt.url())
            .query("SLOW:30000", opts().idle_timeout(Duration::from_millis(300))))
        .unwrap_err();
        let Error::Timeout { kind, diagnostics } = err else {
            panic!("{err}")
        };
        assert_eq!(kind, TimeoutKind::Idle(Duration::from_millis(300)));
        assert_eq!(diagnostics.message_count, 0);
    }
}

scenario! {
    fn connection_dropped_mid_request_is_a_clear_error_within_a_second() {
        let mut rt = runtimeuse_scenarios::served();
        let mut session = wait!(Client::new(rt.url()).session()).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let (running_tx, running) = std::sync::mpsc::channel::<()>();
        let _call = thread!({
            // In flight once its pre-command's output arrives.
            let options = opts()
                .pre_command("echo running")
                .on_command_output(cb!(move |_chunk| {
                    let _ = running_tx.send(());
                }));
            let outcome = wait!(session.query("SLOW:30000", options));
            done_tx.send(outcome).unwrap();
        });
        running.recv().expect("the query started");
        let stopped = Instant::now();
        rt.kill();
        let outcome = done_rx
            .recv_timeout(Duration::from_secs(1))
            .expect("the call ends within a second of the connection dropping");
        assert!(stopped.elapsed() < Duration::from_secs(1), "{:?}", stopped.elapsed());
        let err = outcome.unwrap_err();
        assert!(matches!(err, Error::ConnectionClosed), "{err}");
    }
}

scenario! {
    fn dropping_the_events_midway_leaves_the_session_usable() {
        let rt = runtimeuse_scenarios::served();
        let mut session = wait!(Client::new(rt.url()).session()).unwrap();
        {
            let mut events = session.query_events("STREAM:100000", opts()).unwrap();
            assert!(next!(events).is_some());
        }
        assert_eq!(wait!(session.query("ECHO:next", opts())).unwrap().text(), Some("next"));
        assert_eq!(wait!(session.close()).unwrap(), SessionEnd::Confirmed);
    }
}

scenario! {
    fn a_token_is_sent_as_an_extra_header() {
        let mut options = runtimeuse_runtime::RuntimeOptions::default();
        options.token = Some("s3cret".into());
        let rt = runtimeuse_scenarios::Served::start(options);
        let refused = wait!(Client::new(rt.url()).query("ECHO:x", opts()));
        assert!(matches!(refused, Err(Error::WebSocket(_))), "{refused:?}");
        let client = Client::builder(rt.url())
            .header("Authorization", "Bearer s3cret")
            .build();
        assert_eq!(wait!(client.query("ECHO:in", opts())).unwrap().text(), Some("in"));
    }
}

scenario! {
    fn a_10_mb_result() {
        let rt = runtimeuse_scenarios::served();
        let big = "y".repeat(10 << 20);
        let result = wait!(Client::new(rt.url()).query(format!("ECHO:{big}"), opts())).unwrap();
        assert_eq!(result.text().map(str::len), Some(10 << 20));
    }
}

scenario! {
    fn a_result_over_the_frame_limit_is_a_clear_error() {
        let rt = runtimeuse_scenarios::served();
        let client = Client::builder(rt.url()).max_frame_size(1 << 20).build();
        let err = wait!(client.query(format!("ECHO:{}", "z".repeat(1_100_000)), opts())).unwrap_err();
        assert!(matches!(err, Error::ConnectionClosed), "{err}");
    }
}

scenario! {
    fn persistent_session_with_graceful_close() {
        let rt = runtimeuse_scenarios::served();
        let client = Client::builder(rt.url()).session_config(Config::default()).build();
        let mut session = wait!(client.session()).unwrap();
        let a = wait!(session.query("ECHO:one", opts())).unwrap();
        let b = wait!(session.execute_commands(["echo two"], ExecuteCommandsOptions::new())).unwrap();
        assert_eq!(a.text(), Some("one"));
        assert_eq!(b.results[0].stdout.as_deref(), Some("two\n"));
        let end = wait!(session.close()).unwrap();
        assert_eq!(end, SessionEnd::Confirmed);
    }
}

scenario! {
    fn a_session_that_ran_nothing_closes_confirmed() {
        // The runtime makes a connection's message channel with its first need: here the end.
        let rt = runtimeuse_scenarios::served();
        let client = Client::builder(rt.url()).session_config(Config::default()).build();
        let session = wait!(client.session()).unwrap();
        let end = wait!(session.close()).unwrap();
        assert_eq!(end, SessionEnd::Confirmed);
    }
}

scenario! {
    fn close_says_when_the_runtime_went_away_instead_of_confirming() {
        let mut rt = runtimeuse_scenarios::served();
        let session = wait!(Client::new(rt.url()).session()).unwrap();
        rt.stop();
        let end = wait!(session.close()).unwrap();
        assert_eq!(end, SessionEnd::TransportClosed);
    }
}

scenario! {
    fn usage_errors_are_reported_before_anything_is_sent() {
        let rt = runtimeuse_scenarios::served();
        let err = wait!(Client::new(rt.url()).query("ECHO:x", opts().artifacts_dir("/tmp/x")))
            .unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{err}");
        let empty: [&str; 0] = [];
        let err = wait!(Client::new(rt.url()).execute_commands(empty, ExecuteCommandsOptions::new()))
            .unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{err}");
    }
}

scenario! {
    fn wss_with_a_certificate_made_in_the_test() {
        let rt = runtimeuse_scenarios::served();
        let (port, der) = rt.wss_echo();
        let url = format!("wss://localhost:{port}");
        let untrusted = wait!(Client::new(&url).query("x", opts())).unwrap_err();
        assert!(matches!(untrusted, Error::WebSocket(_)), "{untrusted}");
        let client = Client::builder(&url).root_certificate(der).build();
        let result = wait!(client.query("hello", opts())).unwrap();
        assert_eq!(result.text(), Some("tls:hello"));
    }
}

scenario! {
    fn a_vanished_client_gets_its_commands_killed() {
        let rt = runtimeuse_scenarios::served();
        let dir = runtimeuse_scenarios::temp_dir("vanished");
        let pid_file = dir.join("grandchild.pid");
        // A grandchild that would run for a minute: killing only the shell would not stop it.
        let command = format!(
            "sh -c 'echo $$ > {}; exec sleep 60' & while [ ! -s {} ]; do :; done; echo started; wait",
            pid_file.display(),
            pid_file.display()
        );
        let mut session = wait!(Client::new(rt.url()).session()).unwrap();
        {
            let mut events = session
                .execute_commands_events([command], ExecuteCommandsOptions::new())
                .unwrap();
            // The command runs once its first output arrives.
            assert!(matches!(next!(events), Some(Ok(RequestEvent::CommandOutput(_)))));
        }
        let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
        let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
        assert!(proc.exists(), "the grandchild runs");
        // The client disappears without a word: its socket is dropped mid-request.
        drop(session);
        // The runtime kills the whole group; the grandchild exits (polled, bounded).
        let deadline = Instant::now() + Duration::from_secs(10);
        while proc.exists() && !is_zombie(&proc) {
            assert!(Instant::now() < deadline, "the command's process group outlived its client");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

// A model agent in the runtime, its provider a mock on loopback (all three APIs).

scenario! {
    fn a_model_agent_runs_a_tool_and_answers() {
        use runtimeuse_scenarios::{Api, Reply, Served};
        for api in Api::ALL {
            let replies = vec![
                Reply::stream(api.tool_call(
                    "call_1",
                    "shell",
                    &serde_json::json!({"command": "echo from-$WHO"}),
                )),
                Reply::stream(api.text("The tool ran.")),
            ];
            let (rt, mock) = Served::model_agent(
                api,
                replies,
                runtimeuse_runtime::AgentOptions::default(),
                runtimeuse_runtime::RuntimeOptions::default(),
            );
            let seen = Arc::new(Mutex::new(Vec::new()));
            let s = Arc::clone(&seen);
            let options = opts()
                .agent_env("WHO", "the-agent")
                .on_assistant_message(cb!(move |blocks| s.lock().unwrap().push(blocks.join(""))));
            let result = wait!(Client::new(rt.url()).query("hi", options)).unwrap();
            assert_eq!(result.text(), Some("The tool ran."), "{api:?}");
            assert_eq!(*seen.lock().unwrap(), ["The tool ran."], "{api:?}");
            assert_eq!(result.metadata["tool_calls"], 1);
            let output = &api.tool_results(&mock.requests()[1].body)[0].1;
            assert!(output.contains("stdout:\nfrom-the-agent\n"), "{api:?}: {output}");
        }
    }
}

scenario! {
    fn cancelling_a_model_agent_closes_the_provider_stream_and_the_session_goes_on() {
        use runtimeuse_scenarios::{Api, Reply, Served};
        let api = Api::Responses;
        let replies = vec![
            Reply::Stream { events: api.text("never finished"), stall_after: Some(3) },
            Reply::stream(api.text("after the cancel")),
        ];
        let (rt, mock) = Served::model_agent(
            api,
            replies,
            runtimeuse_runtime::AgentOptions::default(),
            runtimeuse_runtime::RuntimeOptions::default(),
        );
        let mock = Arc::new(mock);
        let mut session = wait!(Client::new(rt.url()).session()).unwrap();
        let abort = session.abort_handle();
        let m = Arc::clone(&mock);
        let aborter = std::thread::spawn(move || {
            assert!(m.wait_stalled(Duration::from_secs(10)));
            abort.abort();
        });
        let started = Instant::now();
        let err = wait!(session.query("hi", opts())).unwrap_err();
        assert!(matches!(err, Error::Cancelled), "{err}");
        aborter.join().unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(mock.wait_closed(Duration::from_secs(5)), "the provider stream stayed open");
        let next = wait!(session.query("again", opts())).unwrap();
        assert_eq!(next.text(), Some("after the cancel"));
        assert_eq!(wait!(session.close()).unwrap(), SessionEnd::Confirmed);
    }
}

// The fault matrix: a proxy between the client and the runtime does each fault after the
// runtime's first N frames (N = 0..4; `STREAM:3` is four frames: three assistant messages and
// the result). Each outcome is checked, with a generous upper bound on its time.

/// Checks one run of the matrix; returns its row for the printed table.
fn check_fault(
    fault: runtimeuse_scenarios::Fault,
    n: usize,
    idle_limit: bool,
    outcome: Result<Option<String>, Error>,
    elapsed: Duration,
) -> String {
    use runtimeuse_scenarios::Fault;
    let harmless = n >= 4 || matches!(fault, Fault::NonJson | Fault::UnknownType);
    let label = match &outcome {
        Ok(_) => "ok".to_owned(),
        Err(Error::Timeout { kind, .. }) => format!("timeout {kind:?}"),
        Err(Error::ConnectionClosed) => "connection closed".to_owned(),
        Err(Error::WebSocket(e)) => format!("websocket: {e}"),
        Err(e) => format!("{e}"),
    };
    let case = format!("{fault:?} after {n} (idle limit: {idle_limit})");
    if harmless {
        assert_eq!(outcome.as_ref().ok(), Some(&Some("streamed 3 messages".to_owned())), "{case}: {label}");
        assert!(elapsed < Duration::from_secs(3), "{case}: {elapsed:?}");
    } else {
        match fault {
            Fault::Cut | Fault::Close => {
                assert!(
                    matches!(outcome, Err(Error::ConnectionClosed | Error::WebSocket(_))),
                    "{case}: {label}"
                );
                assert!(elapsed < Duration::from_secs(2), "{case}: {elapsed:?}");
            }
            Fault::Stall | Fault::Freeze => {
                assert!(idle_limit, "{case}: only run with an idle limit");
                assert!(
                    matches!(outcome, Err(Error::Timeout { kind: TimeoutKind::Idle(_), .. })),
                    "{case}: {label}"
                );
                // The limit is 1 s; the call returns within the close's 100 ms of it.
                assert!(
                    elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
                    "{case}: {elapsed:?}"
                );
            }
            Fault::NonJson | Fault::UnknownType => unreachable!(),
        }
    }
    format!("| {fault:?} | {n} | {label} | {} ms |", elapsed.as_millis())
}

#[allow(clippy::print_stderr)]
fn print_fault_table(client: &str, rows: &[String]) {
    for row in rows {
        eprintln!("fault-matrix {client} {row}");
    }
}

scenario! {
    fn fault_matrix_with_an_idle_limit() {
        use runtimeuse_scenarios::Fault;
        let rt = runtimeuse_scenarios::served();
        let mut rows = Vec::new();
        for fault in Fault::ALL {
            for n in 0..=4 {
                let proxy = rt.fault_proxy(fault, n);
                let started = Instant::now();
                let options = opts().idle_timeout(Duration::from_secs(1));
                let outcome = wait!(Client::new(proxy.url()).query("STREAM:3", options))
                    .map(|r| r.text().map(str::to_owned));
                rows.push(check_fault(fault, n, true, outcome, started.elapsed()));
            }
        }
        print_fault_table(module_path!(), &rows);
    }
}

scenario! {
    fn fault_matrix_with_default_settings() {
        // Stall and freeze before the result wait for the default limits (60 s, 40 s): those
        // two run once, in `tests/fault_defaults.rs`.
        use runtimeuse_scenarios::Fault;
        let rt = runtimeuse_scenarios::served();
        let mut rows = Vec::new();
        for fault in Fault::ALL {
            for n in 0..=4 {
                if matches!(fault, Fault::Stall | Fault::Freeze) && n < 4 {
                    continue;
                }
                let proxy = rt.fault_proxy(fault, n);
                let started = Instant::now();
                let outcome = wait!(Client::new(proxy.url()).query("STREAM:3", opts()))
                    .map(|r| r.text().map(str::to_owned));
                rows.push(check_fault(fault, n, false, outcome, started.elapsed()));
            }
        }
        print_fault_table(module_path!(), &rows);
    }
}

// One API shape: the same failure is the same variant in every client; errors keep all the
// runtime said; `?` works on structured output.

scenario! {
    fn a_refused_connection_is_error_connect() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let err = wait!(Client::new(format!("ws://127.0.0.1:{port}")).query("x", opts())).unwrap_err();
        let Error::Connect(io) = &err else { panic!("{err:?}") };
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
        // Display names the failure once; the cause is the source.
        assert_eq!(err.to_string(), "cannot connect to the runtime");
        assert!(std::error::Error::source(&err).is_some());
    }
}

scenario! {
    fn a_runtime_error_keeps_the_handlers_own_error_and_metadata() {
        let rt = runtimeuse_scenarios::served();
        let err = wait!(Client::new(rt.url()).query("ERROR:boom", opts())).unwrap_err();
        let Error::Runtime(e) = &err else { panic!("{err:?}") };
        assert_eq!(e.error, "boom");
        assert_eq!(e.metadata["error_name"], "Error");
        assert_eq!(e.earlier.len(), 1, "{err}");
        assert_eq!(e.earlier[0].error, "boom");
        assert_eq!(e.earlier[0].metadata, serde_json::json!({"source": "scripted"}));
        assert!(e.earlier[0].earlier.is_empty());
        // The one type everywhere: the adapter names it at its root.
        let _: &RuntimeError = e;
    }
}

scenario! {
    fn structured_output_deserializes_with_the_question_mark() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Out {
            answer: String,
        }
        let rt = runtimeuse_scenarios::served();
        let result = wait!(
            Client::new(rt.url()).query(r#"STRUCTURED:{"answer": 42}"#, opts().output_schema(serde_json::json!({})))
        )
        .unwrap();
        let parse = |r: &QueryResult| -> Result<Out, Error> { Ok(r.deserialize::<Out>()?) };
        assert!(matches!(parse(&result), Err(Error::Deserialize(_))));
    }
}

scenario! {
    fn output_schema_sends_the_json_schema_wrapper_and_output_format_the_raw_text() {
        let rt = runtimeuse_scenarios::served();
        let client = Client::new(rt.url());
        let schema = serde_json::json!({"type": "object", "properties": {"n": {"type": "integer"}}});
        let sent = wait!(client.query("ECHO_FORMAT:", opts().output_schema(schema.clone()))).unwrap();
        assert_eq!(
            sent.structured_output(),
            Some(&serde_json::json!({"type": "json_schema", "schema": schema}))
        );
        let sent = wait!(client.query("ECHO_FORMAT:", opts().output_format(r#"{"custom": 1}"#))).unwrap();
        assert_eq!(sent.structured_output(), Some(&serde_json::json!({"custom": 1})));
    }
}

scenario! {
    fn output_schema_takes_json_text_or_a_wrapper_and_refuses_a_non_object_before_sending() {
        let rt = runtimeuse_scenarios::served();
        let client = Client::new(rt.url());
        let schema = serde_json::json!({"type": "object"});
        let wrapped = serde_json::json!({"type": "json_schema", "schema": schema});
        // JSON text, a borrowed value, and the wrapper itself: the same format, wrapped once.
        let text = r#"{"type": "object"}"#;
        for options in [
            opts().output_schema(text),
            opts().output_schema(text.to_string()),
            opts().output_schema(&schema),
            opts().output_schema(wrapped.clone()),
            opts().output_schema(wrapped.to_string()),
        ] {
            let sent = wait!(client.query("ECHO_FORMAT:", options)).unwrap();
            assert_eq!(sent.structured_output(), Some(&wrapped));
        }
        // What `"…".into()` makes of a schema: a JSON string. Refused before anything is sent.
        let mut session = wait!(client.session()).unwrap();
        for bad in [
            serde_json::Value::from(text),
            serde_json::json!([1]),
            serde_json::json!({"type": "json_schema", "schema": "x"}),
        ] {
            let err = wait!(session.query("ECHO_FORMAT:", opts().output_schema(bad))).unwrap_err();
            assert!(matches!(err, Error::Usage(UsageError::InvalidOutputSchema(_))), "{err:?}");
        }
        let err = wait!(session.query("ECHO_FORMAT:", opts().output_schema("{not json"))).unwrap_err();
        assert!(err.to_string().contains("misused"), "{err}");
        // Nothing went out: the session is as new, and its next query runs.
        let sent = wait!(session.query("ECHO_FORMAT:", opts().output_schema(text))).unwrap();
        assert_eq!(sent.structured_output(), Some(&wrapped));
        assert_eq!(wait!(session.close()).unwrap(), SessionEnd::Confirmed);
    }
}

scenario! {
    fn output_type_derives_the_schema_from_the_callers_type() {
        #[derive(serde::Deserialize, schemars::JsonSchema)]
        #[allow(dead_code)]
        struct Answer {
            answer: u32,
            unit: String,
        }
        let rt = runtimeuse_scenarios::served();
        let sent = wait!(Client::new(rt.url()).query("ECHO_FORMAT:", opts().output_type::<Answer>())).unwrap();
        let format = sent.structured_output().unwrap();
        assert_eq!(format["type"], "json_schema");
        assert_eq!(format["schema"]["type"], "object");
        assert_eq!(format["schema"]["properties"]["answer"]["type"], "integer");
        assert_eq!(format["schema"]["properties"]["unit"]["type"], "string");
        assert_eq!(format["schema"]["required"], serde_json::json!(["answer", "unit"]));
    }
}

scenario! {
    fn a_one_shot_call_can_be_aborted() {
        let rt = runtimeuse_scenarios::served();
        let client = Client::new(rt.url());
        let abort = AbortHandle::new();
        let a = abort.clone();
        let options = ExecuteCommandsOptions::new()
            .abort_handle(&abort)
            .on_command_output(cb!(move |_chunk| a.abort()));
        let started = Instant::now();
        let err = wait!(client.execute_commands(["echo started; sleep 30"], options)).unwrap_err();
        assert!(matches!(err, Error::Cancelled), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        // A handle aborted before the call fails it at once; a fresh one does nothing.
        let aborted = AbortHandle::new();
        aborted.abort();
        let err = wait!(client.query("ECHO:x", opts().abort_handle(&aborted))).unwrap_err();
        assert!(matches!(err, Error::Cancelled), "{err}");
        let fresh = AbortHandle::new();
        let ok = wait!(client.query("ECHO:x", opts().abort_handle(&fresh))).unwrap();
        assert_eq!(ok.text(), Some("x"));
    }
}

scenario! {
    fn command_batch_options_are_flat() {
        let rt = runtimeuse_scenarios::served();
        let http = rt.http(HashMap::from([("/f.txt".to_owned(), b"downloaded".to_vec())]));
        let work = runtimeuse_scenarios::temp_dir("flat-options");
        let art = work.join("art");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        let options = ExecuteCommandsOptions::new()
            .source_id("flat-1")
            .secret("s3cr3t")
            .download(Downloadable::new(http.url("/f.txt"), work.display().to_string()))
            .artifacts_dir(art.display().to_string())
            .artifacts_ignore("*.log\n")
            .on_artifact_upload_request(cb!(move |r| {
                s.lock().unwrap().push(r.filename.clone());
                ArtifactUpload::new("http://127.0.0.1:9/none", "text/plain")
            }));
        let cmd = format!(
            "cat {dir}/f.txt; echo ' s3cr3t'; mkdir -p {art} && echo x > {art}/skip.log",
            dir = work.display(),
            art = art.display()
        );
        let result = wait!(Client::new(rt.url()).execute_commands([cmd], options)).unwrap();
        assert_eq!(result.results[0].stdout.as_deref(), Some("downloaded [REDACTED]\n"));
        assert!(seen.lock().unwrap().is_empty(), "an ignored artifact was requested");
    }
}
