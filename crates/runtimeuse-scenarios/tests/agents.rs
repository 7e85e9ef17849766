//! The runtime's agents against mock model providers (real HTTP servers on loopback speaking
//! each API's streaming format), driven by the tokio client: every scenario runs for the
//! OpenAI Responses API, Chat Completions and Anthropic Messages.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runtimeuse_runtime::{AgentOptions, CommandAgent, ModelAgent, PromptInput, RuntimeOptions};
use runtimeuse_scenarios::{Api, MockProvider, Recorded, Reply, Served, TEST_KEY};
use runtimeuse_tokio::{Client, Error, QueryOptions, SessionEnd};
use serde_json::{Value, json};

fn quick() -> AgentOptions {
    let mut o = AgentOptions::default();
    o.retry_base_delay = Duration::from_millis(10);
    o
}

fn served(api: Api, replies: Vec<Reply>) -> (Served, MockProvider) {
    served_with(api, replies, quick())
}

fn served_with(api: Api, replies: Vec<Reply>, agent: AgentOptions) -> (Served, MockProvider) {
    Served::model_agent(api, replies, agent, RuntimeOptions::default())
}

fn opts() -> QueryOptions {
    QueryOptions::new("You are a careful assistant.", "test-model")
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn runtime_error(err: Error) -> (String, Value) {
    match err {
        Error::Runtime(e) => (e.error, e.metadata),
        other => panic!("expected a runtime error, got {other:?}"),
    }
}

fn check_request(api: Api, r: &Recorded) {
    assert_eq!(r.path, api.path(), "{api:?}");
    assert_eq!(r.body["model"], "test-model", "{api:?}");
    assert_eq!(r.body["stream"], true, "{api:?}");
    match api {
        Api::Responses => {
            assert_eq!(
                r.header("authorization"),
                Some(&*format!("Bearer {TEST_KEY}"))
            );
            assert_eq!(r.body["instructions"], "You are a careful assistant.");
            assert_eq!(r.body["input"][0], json!({"role": "user", "content": "hi"}));
            assert_eq!(r.body["tools"][0]["type"], "function");
            assert_eq!(r.body["tools"][0]["name"], "shell");
            assert_eq!(r.body["tools"][0]["strict"], true);
        }
        Api::Chat => {
            assert_eq!(
                r.header("authorization"),
                Some(&*format!("Bearer {TEST_KEY}"))
            );
            assert_eq!(
                r.body["messages"][0],
                json!({"role": "system", "content": "You are a careful assistant."})
            );
            assert_eq!(
                r.body["messages"][1],
                json!({"role": "user", "content": "hi"})
            );
            assert_eq!(r.body["stream_options"], json!({"include_usage": true}));
            assert_eq!(r.body["tools"][0]["function"]["name"], "shell");
        }
        Api::Anthropic => {
            assert_eq!(r.header("x-api-key"), Some(TEST_KEY));
            assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
            assert_eq!(r.body["system"], "You are a careful assistant.");
            assert!(r.body["max_tokens"].as_u64().is_some_and(|n| n > 0));
            assert_eq!(
                r.body["messages"][0],
                json!({"role": "user", "content": "hi"})
            );
            assert_eq!(r.body["tools"][0]["name"], "shell");
            assert_eq!(r.body["tools"][0]["input_schema"]["type"], "object");
        }
    }
}

#[test]
fn plain_answer_is_streamed_once_and_returned() {
    for api in Api::ALL {
        let (rt, mock) = served(api, vec![Reply::stream(api.text("Hello from the model"))]);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        let options = opts().on_assistant_message(move |blocks| {
            s.lock().unwrap().push(blocks.join(""));
            async {}
        });
        let result = block_on(Client::new(rt.url()).query("hi", options)).unwrap();
        assert_eq!(result.text(), Some("Hello from the model"), "{api:?}");
        assert_eq!(*seen.lock().unwrap(), ["Hello from the model"], "{api:?}");
        let m = &result.metadata;
        assert_eq!(m["turns"], 1, "{api:?}");
        assert_eq!(m["tool_calls"], 0);
        assert_eq!(m["model"], "test-model");
        assert_eq!(
            m["usage"],
            json!({"inputTokens": 20, "outputTokens": 7, "totalTokens": 27}),
            "{api:?}"
        );
        assert!(m["duration_ms"].as_u64().is_some());
        let requests = mock.requests();
        assert_eq!(requests.len(), 1);
        check_request(api, &requests[0]);
    }
}

#[test]
fn a_tool_call_runs_a_real_command_with_agent_env_and_the_model_sees_its_output() {
    for api in Api::ALL {
        let replies = vec![
            Reply::stream(api.tool_call(
                "call_1",
                "shell",
                &json!({"command": "echo \"$GREETING from the tool\"; echo oops >&2; exit 3"}),
            )),
            Reply::stream(api.text("The tool said hello.")),
        ];
        let (rt, mock) = served(api, replies);
        let options = opts().agent_env("GREETING", "hello");
        let result = block_on(Client::new(rt.url()).query("hi", options)).unwrap();
        assert_eq!(result.text(), Some("The tool said hello."), "{api:?}");
        assert_eq!(result.metadata["turns"], 2);
        assert_eq!(result.metadata["tool_calls"], 1);
        let requests = mock.requests();
        assert_eq!(requests.len(), 2, "{api:?}");
        let results = api.tool_results(&requests[1].body);
        assert_eq!(results.len(), 1, "{api:?}: {}", requests[1].body);
        assert_eq!(results[0].0, "call_1");
        assert_eq!(
            results[0].1, "exit_code: 3\nstdout:\nhello from the tool\n\nstderr:\noops\n",
            "{api:?}"
        );
    }
}

#[test]
fn read_and_write_file_tools() {
    let dir = runtimeuse_scenarios::temp_dir("agent-files");
    let path = dir.join("sub/note.txt").display().to_string();
    for api in Api::ALL {
        let replies = vec![
            Reply::stream(api.tool_call(
                "call_w",
                "write_file",
                &json!({"path": path, "content": "written by the model"}),
            )),
            Reply::stream(api.tool_call("call_r", "read_file", &json!({"path": path}))),
            Reply::stream(api.tool_call("call_x", "no_such_tool", &json!({}))),
            Reply::stream(api.text("done")),
        ];
        let (rt, mock) = served(api, replies);
        let result = block_on(Client::new(rt.url()).query("hi", opts())).unwrap();
        assert_eq!(result.text(), Some("done"));
        let requests = mock.requests();
        assert_eq!(
            api.tool_results(&requests[1].body)[0].1,
            format!("wrote 20 bytes to {path}")
        );
        assert_eq!(
            api.tool_results(&requests[2].body)[1].1,
            "written by the model"
        );
        assert_eq!(
            api.tool_results(&requests[3].body)[2].1,
            "error: there is no tool named \"no_such_tool\""
        );
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn structured_output_asks_for_a_strict_schema_and_returns_the_json() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Out {
        answer: u32,
        note: Option<String>,
    }
    // `output_schema` sends the wrapper the Python client sends.
    let schema = json!({
        "title": "Out",
        "type": "object",
        "properties": {"answer": {"type": "integer"}, "note": {"type": ["string", "null"]}},
        "required": ["answer"]
    });
    let strict = json!({
        "type": "object",
        "properties": {"answer": {"type": "integer"}, "note": {"type": ["string", "null"]}},
        "required": ["answer", "note"],
        "additionalProperties": false
    });
    for api in Api::ALL {
        let answer = json!({"answer": 42, "note": null});
        let (rt, mock) = served(api, vec![Reply::stream(api.structured(&answer))]);
        let result =
            block_on(Client::new(rt.url()).query("hi", opts().output_schema(schema.clone())))
                .unwrap();
        assert_eq!(
            result.deserialize::<Out>().unwrap(),
            Out {
                answer: 42,
                note: None
            },
            "{api:?}"
        );
        let body = &mock.requests()[0].body;
        match api {
            Api::Responses => {
                assert_eq!(body["text"]["format"]["type"], "json_schema");
                assert_eq!(body["text"]["format"]["strict"], true);
                assert_eq!(body["text"]["format"]["schema"], strict);
            }
            Api::Chat => {
                assert_eq!(body["response_format"]["type"], "json_schema");
                assert_eq!(body["response_format"]["json_schema"]["strict"], true);
                assert_eq!(body["response_format"]["json_schema"]["schema"], strict);
            }
            Api::Anthropic => {
                let tool = body["tools"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["name"] == "final_output")
                    .expect("final_output tool");
                assert_eq!(tool["input_schema"], strict);
            }
        }
    }
}

#[test]
fn an_answer_that_breaks_the_schema_is_a_clear_error() {
    let schema = json!({"type": "object", "properties": {"answer": {"type": "integer"}}});
    for api in [Api::Responses, Api::Chat] {
        let (rt, _mock) = served(api, vec![Reply::stream(api.text("{\"answer\": \"many\"}"))]);
        // A bare schema as the raw format: the agent reads that form too.
        let options = opts().output_format(schema.to_string());
        let err = block_on(Client::new(rt.url()).query("hi", options)).unwrap_err();
        let (error, metadata) = runtime_error(err);
        assert_eq!(
            error,
            "the model's answer does not follow the schema: /answer: expected integer, found string"
        );
        assert_eq!(metadata["error_name"], "StructuredOutputError");
    }
}

#[test]
fn anthropic_answering_in_text_is_asked_once_more_with_the_tool_forced() {
    let api = Api::Anthropic;
    let schema = json!({"type": "object", "properties": {"answer": {"type": "integer"}}});
    let replies = vec![
        Reply::stream(api.text("The answer is 7.")),
        Reply::stream(api.structured(&json!({"answer": 7}))),
    ];
    let (rt, mock) = served(api, replies);
    let result =
        block_on(Client::new(rt.url()).query("hi", opts().output_schema(schema.clone()))).unwrap();
    assert_eq!(result.structured_output(), Some(&json!({"answer": 7})));
    let requests = mock.requests();
    assert_eq!(requests[0].body.get("tool_choice"), None);
    assert_eq!(
        requests[1].body["tool_choice"],
        json!({"type": "tool", "name": "final_output"})
    );
}

#[test]
fn unauthorized_is_not_retried_and_never_shows_the_key() {
    for api in Api::ALL {
        let (rt, mock) = served(api, vec![api.unauthorized(), api.unauthorized()]);
        let err = block_on(Client::new(rt.url()).query("hi", opts())).unwrap_err();
        let (error, metadata) = runtime_error(err);
        assert!(error.contains("HTTP 401 Unauthorized"), "{api:?}: {error}");
        let words = match api {
            Api::Anthropic => "(authentication_error): invalid x-api-key",
            _ => "(invalid_request_error, invalid_api_key): Incorrect API key provided",
        };
        assert!(error.contains(words), "{api:?}: {error}");
        assert!(!error.contains(TEST_KEY) && !metadata.to_string().contains(TEST_KEY));
        assert_eq!(metadata["error_name"], "ProviderError");
        assert_eq!(metadata["status"], 401);
        assert_eq!(mock.requests().len(), 1, "{api:?}: retried a 401");
    }
}

#[test]
fn rate_limited_then_success_waits_as_retry_after_says() {
    for api in Api::ALL {
        let (rt, mock) = served(
            api,
            vec![api.rate_limited(1), Reply::stream(api.text("ok"))],
        );
        let started = Instant::now();
        let result = block_on(Client::new(rt.url()).query("hi", opts())).unwrap();
        assert_eq!(result.text(), Some("ok"));
        assert_eq!(mock.requests().len(), 2);
        // The base delay is 10 ms: only Retry-After explains a second.
        assert!(started.elapsed() >= Duration::from_secs(1), "{api:?}");
    }
}

#[test]
fn repeated_server_errors_give_up_after_the_attempts() {
    for api in Api::ALL {
        let errors = vec![api.server_error(), api.server_error(), api.server_error()];
        let (rt, mock) = served(api, errors);
        let err = block_on(Client::new(rt.url()).query("hi", opts())).unwrap_err();
        let (error, metadata) = runtime_error(err);
        assert!(
            error.contains("HTTP 500 Internal Server Error")
                && error.ends_with("(after 3 attempts)"),
            "{api:?}: {error}"
        );
        assert_eq!(metadata["attempts"], 3);
        assert_eq!(mock.requests().len(), 3);
    }
}

#[test]
fn an_unreachable_provider_is_retried_then_named() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let provider = runtimeuse_runtime::ProviderConfig::new(
        runtimeuse_runtime::ModelApi::OpenAiChat,
        format!("http://127.0.0.1:{port}/v1"),
    )
    .api_key("k");
    let rt = Served::with_handler(
        ModelAgent::new(provider, quick()).unwrap(),
        RuntimeOptions::default(),
    );
    let (error, metadata) =
        runtime_error(block_on(Client::new(rt.url()).query("hi", opts())).unwrap_err());
    assert!(
        error.starts_with(&format!(
            "openai chat API error: cannot connect to http://127.0.0.1:{port}/v1/chat/completions"
        )),
        "{error}"
    );
    assert_eq!(metadata["attempts"], 3);
}

#[test]
fn cancel_during_a_slow_stream_closes_it_and_ends_at_once() {
    for api in Api::ALL {
        let stalled = Reply::Stream {
            events: api.text("never finished"),
            stall_after: Some(2),
        };
        let (rt, mock) = served(api, vec![stalled]);
        let mock = Arc::new(mock);
        block_on(async {
            let mut session = Client::new(rt.url()).session().await.unwrap();
            let abort = session.abort_handle();
            let m = Arc::clone(&mock);
            let aborter = std::thread::spawn(move || {
                assert!(m.wait_stalled(Duration::from_secs(10)));
                abort.abort();
                Instant::now()
            });
            let err = session.query("hi", opts()).await.unwrap_err();
            let aborted = aborter.join().unwrap();
            assert!(matches!(err, Error::Cancelled), "{api:?}: {err}");
            assert!(aborted.elapsed() < Duration::from_secs(2), "{api:?}");
            assert!(
                mock.wait_closed(Duration::from_secs(5)),
                "{api:?}: the provider's stream stayed open after cancel"
            );
            assert_eq!(session.close().await.unwrap(), SessionEnd::Confirmed);
        });
    }
}

#[test]
fn a_secret_in_tool_output_is_redacted_everywhere() {
    for api in Api::ALL {
        let replies = vec![
            Reply::stream(api.tool_call(
                "call_1",
                "shell",
                &json!({"command": "echo token=$API_TOKEN"}),
            )),
            Reply::stream(api.text("I found hunter2-abc in the output")),
        ];
        let (rt, mock) = served(api, replies);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        let options = opts()
            .agent_env("API_TOKEN", "hunter2-abc")
            .secret("hunter2-abc")
            .on_assistant_message(move |blocks| {
                s.lock().unwrap().push(blocks.join(""));
                async {}
            });
        let result = block_on(Client::new(rt.url()).query("hi", options)).unwrap();
        assert_eq!(result.text(), Some("I found [REDACTED] in the output"));
        assert_eq!(*seen.lock().unwrap(), ["I found [REDACTED] in the output"]);
        let tool_output = &api.tool_results(&mock.requests()[1].body)[0].1;
        assert!(tool_output.contains("token=[REDACTED]"), "{tool_output}");
        assert!(!tool_output.contains("hunter2"));
    }
}

#[test]
fn the_turn_limit_ends_a_model_that_never_stops() {
    for api in Api::ALL {
        let call =
            |id: &str| Reply::stream(api.tool_call(id, "shell", &json!({"command": "true"})));
        let mut options = quick();
        options.max_turns = 2;
        let (rt, mock) = served_with(api, vec![call("c1"), call("c2"), call("c3")], options);
        let (error, metadata) =
            runtime_error(block_on(Client::new(rt.url()).query("hi", opts())).unwrap_err());
        assert_eq!(error, "the model did not finish within 2 turns (max turns)");
        assert_eq!(metadata["error_name"], "MaxTurnsExceeded");
        assert_eq!(mock.requests().len(), 2);
    }
}

#[test]
fn a_tool_running_past_its_limit_is_killed_and_the_model_told() {
    let api = Api::Chat;
    let mut options = quick();
    options.tool_timeout = Duration::from_millis(300);
    let replies = vec![
        Reply::stream(api.tool_call("c1", "shell", &json!({"command": "sleep 30"}))),
        Reply::stream(api.text("gave up")),
    ];
    let (rt, mock) = served_with(api, replies, options);
    let started = Instant::now();
    let result = block_on(Client::new(rt.url()).query("hi", opts())).unwrap();
    assert_eq!(result.text(), Some("gave up"));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        api.tool_results(&mock.requests()[1].body)[0].1,
        "error: the command ran longer than 0.3 s and was killed"
    );
}

#[test]
fn long_tool_output_is_cut_in_the_middle_and_says_so() {
    let api = Api::Responses;
    let mut options = quick();
    options.max_tool_output = 800;
    let replies = vec![
        Reply::stream(api.tool_call("c1", "shell", &json!({"command": "seq 1 10000"}))),
        Reply::stream(api.text("ok")),
    ];
    let (rt, mock) = served_with(api, replies, options);
    block_on(Client::new(rt.url()).query("hi", opts())).unwrap();
    let out = &api.tool_results(&mock.requests()[1].body)[0].1;
    assert!(out.starts_with("exit_code: 0\nstdout:\n1\n2\n3\n"), "{out}");
    assert!(out.contains("\n9999\n10000\n\nstderr:\n"), "{out}");
    assert!(out.contains(" bytes cut ...]"), "{out}");
    assert!(out.len() < 1000, "{}", out.len());
}

#[test]
fn a_missing_key_is_an_error_at_the_query_with_a_hint() {
    for (api, var) in [
        (
            runtimeuse_runtime::ModelApi::OpenAiResponses,
            "OPENAI_API_KEY",
        ),
        (
            runtimeuse_runtime::ModelApi::AnthropicMessages,
            "ANTHROPIC_API_KEY",
        ),
    ] {
        let provider = runtimeuse_runtime::ProviderConfig::new(api, "http://127.0.0.1:9");
        let rt = Served::with_handler(
            ModelAgent::new(provider, quick()).unwrap(),
            RuntimeOptions::default(),
        );
        let (error, metadata) =
            runtime_error(block_on(Client::new(rt.url()).query("hi", opts())).unwrap_err());
        assert!(error.starts_with(&format!("{var} is not set")), "{error}");
        assert_eq!(metadata["error_name"], "ConfigurationError");
    }
}

// The command agent.

#[test]
fn command_agent_streams_lines_and_returns_its_output() {
    let agent =
        CommandAgent::new("read p; echo \"got: $p\"; echo; echo \"model=$RUNTIMEUSE_MODEL\"");
    let rt = Served::with_handler(agent, RuntimeOptions::default());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let options = opts().on_assistant_message(move |blocks| {
        s.lock().unwrap().push(blocks.join(""));
        async {}
    });
    let result = block_on(Client::new(rt.url()).query("the prompt", options)).unwrap();
    assert_eq!(result.text(), Some("got: the prompt\n\nmodel=test-model"));
    assert_eq!(
        *seen.lock().unwrap(),
        ["got: the prompt", "model=test-model"]
    );
}

#[test]
fn command_agent_prompt_as_argument_and_structured_output() {
    // The prompt comes as one more argument: here the inner script's `$1`.
    let agent = CommandAgent::new(
        r#"sh -c 'printf "working on %s\n" "$1"; printf "{\"len\": %d}\n" ${#1}' agent"#,
    )
    .prompt_input(PromptInput::Argument);
    let rt = Served::with_handler(agent, RuntimeOptions::default());
    let schema = json!({"type": "object", "properties": {"len": {"type": "integer"}}});
    let result = block_on(
        Client::new(rt.url()).query("abcd; rm -rf x", opts().output_schema(schema.clone())),
    )
    .unwrap();
    assert_eq!(result.structured_output(), Some(&json!({"len": 14})));
}

#[test]
fn command_agent_failure_names_the_exit_code_and_stderr() {
    let agent = CommandAgent::new("echo partial; echo 'model refused' >&2; exit 7");
    let rt = Served::with_handler(agent, RuntimeOptions::default());
    let (error, metadata) =
        runtime_error(block_on(Client::new(rt.url()).query("x", opts())).unwrap_err());
    assert_eq!(error, "the agent command exited with code 7: model refused");
    assert_eq!(metadata["exit_code"], 7);
}

#[test]
fn command_agent_is_killed_on_cancel() {
    let dir = runtimeuse_scenarios::temp_dir("command-agent");
    let pid_file = dir.join("pid");
    let agent = CommandAgent::new(format!(
        "sh -c 'echo $$ > {}; echo started; exec sleep 30'",
        pid_file.display()
    ));
    let rt = Served::with_handler(agent, RuntimeOptions::default());
    block_on(async {
        let mut session = Client::new(rt.url()).session().await.unwrap();
        let abort = session.abort_handle();
        let options = opts().on_assistant_message(move |_| {
            abort.abort();
            async {}
        });
        let started = Instant::now();
        let err = session.query("x", options).await.unwrap_err();
        assert!(matches!(err, Error::Cancelled), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(session.close().await.unwrap(), SessionEnd::Confirmed);
    });
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    // The kill is sent before the terminal; the process is gone once the kernel reaps it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "the agent command {pid} survived the cancel"
        );
        std::thread::yield_now();
    }
}
