//! `serve --agent claude`: the real Claude Code CLI (from npm, pinned) per query, pointed at
//! the project's mock Anthropic provider. A plain answer, a shell tool call whose output
//! reaches the model, structured output, a provider 401, a cancel mid-run (the process group
//! gone), and the same query through the three Rust clients.

use std::time::Duration;

mod common;
use common::agents::{AgentRuntime, agent_runtime, claude, of_type};
use runtimeuse_scenarios::{Api, Reply};
use serde_json::{Value, json};

fn setup(name: &str, replies: Vec<Reply>) -> AgentRuntime {
    let cli = claude();
    agent_runtime(
        &format!("claude-{name}"),
        replies,
        &[
            "--agent",
            "claude",
            "--agent-command",
            cli.to_str().unwrap(),
        ],
    )
}

fn query(s: &AgentRuntime, args: &[&str]) -> (Vec<Value>, Option<i32>) {
    s.query(args)
}

#[test]
fn a_plain_answer_streams_and_carries_the_metadata() {
    let s = setup(
        "plain",
        vec![Reply::stream(Api::Anthropic.text("hello from the mock"))],
    );
    let (lines, code) = query(&s, &["--model", "claude-test", "say hello"]);
    assert_eq!(code, Some(0), "{lines:?}");
    let said = of_type(&lines, "assistant_message");
    assert_eq!(said.len(), 1, "{lines:?}");
    assert_eq!(said[0]["text"], "hello from the mock");
    let result = of_type(&lines, "result")[0];
    assert_eq!(result["text"], "hello from the mock");
    let m = &result["metadata"];
    for key in [
        "duration_ms",
        "duration_api_ms",
        "num_turns",
        "total_cost_usd",
        "usage",
        "session_id",
    ] {
        assert!(!m[key].is_null(), "{key} in {m}");
    }
    assert_eq!(m["num_turns"], 1);
    // What the CLI sent: the prompt, the model named, streaming.
    let sent = &s.mock.requests()[0];
    assert_eq!(sent.body["model"], "claude-test");
    assert_eq!(sent.body["stream"], true);
    assert!(sent.body.to_string().contains("say hello"));
}

#[test]
fn a_shell_tool_call_runs_and_its_output_reaches_the_answer() {
    let marker = format!("tool-said-{}", std::process::id());
    let bash = json!({"command": format!("echo {marker}"), "description": "say it"});
    let replies = vec![
        Reply::stream(Api::Anthropic.tool_call("toolu_1", "Bash", &bash)),
        // The model's answer quotes the tool's output it was given.
        Reply::stream(Api::Anthropic.text_echoing_tool_result()),
    ];
    let s = setup("tool", replies);
    let (lines, code) = query(&s, &["run the command"]);
    assert_eq!(code, Some(0), "{lines:?}");
    let answer = of_type(&lines, "result")[0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        answer.contains(&marker),
        "the command's output reached the answer: {answer}"
    );
    assert_eq!(s.mock.requests().len(), 2);
    assert_eq!(
        s.mock.refused(),
        0,
        "every request of the CLI was one the mock knows"
    );
}

#[test]
fn structured_output_goes_through_the_clis_schema() {
    let answer = json!({"n": 42});
    let replies = vec![
        Reply::stream(Api::Anthropic.tool_call("toolu_1", "StructuredOutput", &answer)),
        Reply::stream(Api::Anthropic.text("done")),
    ];
    let s = setup("structured", replies);
    let schema = r#"{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"]}"#;
    let (lines, code) = query(&s, &["--output-schema", schema, "a number"]);
    assert_eq!(code, Some(0), "{lines:?}");
    assert_eq!(of_type(&lines, "result")[0]["structured_output"], answer);
    let tools = s.mock.requests()[0].body["tools"].to_string();
    assert!(
        tools.contains("StructuredOutput"),
        "the schema went to the CLI"
    );
}

#[test]
fn a_provider_401_is_a_clear_error() {
    let s = setup("401", vec![Api::Anthropic.unauthorized()]);
    let (lines, code) = query(&s, &["hello"]);
    assert_eq!(code, Some(70), "the runtime reported an error: {lines:?}");
    let error = of_type(&lines, "error")[0];
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("Agent ended with an error"), "{message}");
    assert!(message.contains("401"), "{message}");
    assert!(
        of_type(&lines, "assistant_message").is_empty(),
        "no error text as the answer"
    );
}

#[test]
fn a_cancel_mid_run_kills_the_process_group() {
    let replies = vec![Reply::Stream {
        events: Api::Anthropic.text("never finished"),
        stall_after: Some(2),
    }];
    let s = setup("cancel", replies);
    let marker = format!("claude-cancel-{}", std::process::id());
    let url = s.url();
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let abort = runtimeuse_tokio::AbortHandle::default();
    let options = runtimeuse_tokio::QueryOptions::new("", marker.clone()).abort_handle(&abort);
    let call = tokio.spawn(async move {
        runtimeuse_tokio::Client::new(url)
            .query("wait", options)
            .await
    });
    assert!(
        s.mock.wait_stalled(Duration::from_secs(60)),
        "the CLI reached the provider"
    );
    assert!(common::raw::processes_with(&marker) > 0, "the CLI runs");
    abort.abort();
    let outcome = tokio.block_on(call).unwrap();
    assert!(
        matches!(outcome, Err(runtimeuse_tokio::Error::Cancelled)),
        "{outcome:?}"
    );
    // The runtime sent SIGKILL to the group before it confirmed the cancel; the processes
    // are gone once the kernel has torn them down.
    common::raw::wait_gone(
        || common::raw::processes_with(&marker),
        Duration::from_secs(5),
        "the process group is still there",
    );
}

#[test]
fn the_three_clients_get_the_same_answer() {
    let replies = (0..3)
        .map(|_| Reply::stream(Api::Anthropic.text("same for all")))
        .collect();
    let s = setup("clients", replies);
    let same = Some("same for all".to_owned());
    assert_eq!(
        s.three_clients_answer("hi", "claude-test"),
        [same.clone(), same.clone(), same]
    );
}
