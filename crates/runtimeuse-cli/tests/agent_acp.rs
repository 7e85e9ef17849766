//! `serve --agent acp`: a real ACP agent (Zed's Claude Code adapter, from npm, pinned) per
//! query, pointed at the project's mock Anthropic provider. A plain answer, a shell tool call
//! allowed by the permission policy (and one denied), structured output, a provider 401, a
//! cancel mid-run (the process group gone), and the same query through the three Rust
//! clients.

use std::time::Duration;

mod common;
use common::agents::{AgentRuntime, agent_runtime, claude_acp, of_type};
use runtimeuse_scenarios::{Api, Reply};
use serde_json::{Value, json};

fn setup(name: &str, replies: Vec<Reply>, extra: &[&str]) -> AgentRuntime {
    let cli = claude_acp();
    let mut args = vec!["--agent", "acp", "--agent-command", cli.to_str().unwrap()];
    args.extend(extra);
    agent_runtime(&format!("acp-{name}"), replies, &args)
}

fn query(s: &AgentRuntime, args: &[&str]) -> (Vec<Value>, Option<i32>) {
    s.query(args)
}

/// The turns the agent asked the mock for (streamed requests; the adapter's side requests,
/// token counts and the like, are not turns).
fn turns(s: &AgentRuntime) -> Vec<Value> {
    s.mock
        .requests()
        .into_iter()
        .filter(|r| r.body["stream"] == true)
        .map(|r| r.body)
        .collect()
}

#[test]
fn a_plain_answer_is_streamed_as_one_message() {
    let s = setup(
        "plain",
        vec![Reply::stream(Api::Anthropic.text("hello over acp"))],
        &[],
    );
    let (lines, code) = query(&s, &["say hello"]);
    let seen: Vec<String> = s
        .mock
        .requests()
        .iter()
        .map(|r| {
            format!(
                "{} stream={} model={} n={} max={}",
                r.path,
                r.body["stream"],
                r.body["model"],
                r.body["messages"].as_array().map_or(0, Vec::len),
                r.body["max_tokens"]
            )
        })
        .collect();
    assert_eq!(code, Some(0), "{seen:?}");
    let said = of_type(&lines, "assistant_message");
    assert_eq!(
        said.len(),
        1,
        "the chunks of one message are joined: {lines:?}"
    );
    assert_eq!(said[0]["text"], "hello over acp");
    let result = of_type(&lines, "result")[0];
    assert_eq!(result["text"], "hello over acp");
    assert_eq!(result["metadata"]["stop_reason"], "end_turn");
    assert!(turns(&s)[0].to_string().contains("say hello"));
}

/// A Bash call that writes `file` (and says its name), then an answer that quotes its output.
fn bash_then_done(file: &std::path::Path) -> Vec<Reply> {
    let command = format!("echo {0} | tee {0}", file.display());
    let bash = json!({"command": command, "description": "say it"});
    vec![
        Reply::stream(Api::Anthropic.tool_call("toolu_1", "Bash", &bash)),
        // The model's answer quotes the tool's output it was given.
        Reply::stream(Api::Anthropic.text_echoing_tool_result()),
    ]
}

fn marker_file(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("runtimeuse-acp-{name}-{}.ran", std::process::id()))
}

#[test]
fn an_allowed_shell_tool_call_runs_and_its_output_reaches_the_answer() {
    let file = marker_file("allowed");
    let _ = std::fs::remove_file(&file);
    let s = setup("tool", bash_then_done(&file), &[]);
    let (lines, code) = query(&s, &["run the command"]);
    assert_eq!(code, Some(0), "{lines:?}");
    let result = of_type(&lines, "result")[0];
    let said = file.display().to_string();
    let answer = result["text"].as_str().unwrap();
    assert!(
        answer.contains(&said),
        "the command's output reached the answer: {answer}"
    );
    assert_eq!(
        s.mock.refused(),
        0,
        "every request of the agent was one the mock knows"
    );
    let calls = result["metadata"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{result}");
    assert_eq!(calls[0]["status"], "completed", "{result}");
    assert!(file.exists(), "the command ran");
    let turns = turns(&s);
    assert_eq!(turns.len(), 2);
    let _ = std::fs::remove_file(&file);
}

#[test]
fn a_denied_tool_call_does_not_run() {
    let file = marker_file("denied");
    let _ = std::fs::remove_file(&file);
    let s = setup("deny", bash_then_done(&file), &["--deny-permissions"]);
    let (lines, _) = query(&s, &["run the command"]);
    assert!(!file.exists(), "the denied command ran: {lines:?}");
    // Not passed by a query that never got as far: the model asked for the tool, the agent
    // asked for permission, and the call was refused, not run.
    let result = of_type(&lines, "result")[0];
    let calls = result["metadata"]["tool_calls"]
        .as_array()
        .expect("tool calls");
    assert_eq!(calls.len(), 1, "{result}");
    assert_eq!(calls[0]["id"], "toolu_1", "{result}");
    assert_eq!(
        calls[0]["status"], "failed",
        "a denied call is not completed: {result}"
    );
}

#[test]
fn structured_output_is_asked_for_and_checked() {
    let s = setup(
        "structured",
        vec![Reply::stream(Api::Anthropic.text(r#"{"n": 42}"#))],
        &[],
    );
    let schema = r#"{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"]}"#;
    let (lines, code) = query(&s, &["--output-schema", schema, "a number"]);
    assert_eq!(code, Some(0), "{lines:?}");
    assert_eq!(
        of_type(&lines, "result")[0]["structured_output"],
        json!({"n": 42})
    );
    assert!(
        turns(&s)[0].to_string().contains("JSON Schema"),
        "the schema was asked for"
    );
}

#[test]
fn a_provider_401_is_a_clear_error() {
    let s = setup("401", vec![Api::Anthropic.unauthorized()], &[]);
    let (lines, code) = query(&s, &["hello"]);
    assert_eq!(code, Some(70), "the runtime reported an error: {lines:?}");
    let error = of_type(&lines, "error")[0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.to_lowercase().contains("api key") || error.contains("401"),
        "{error}"
    );
}

#[test]
fn a_cancel_mid_run_ends_the_agent() {
    let replies = vec![Reply::Stream {
        events: Api::Anthropic.text("never finished"),
        stall_after: Some(2),
    }];
    // The agent's processes carry a variable of their own, to tell them from the other tests'.
    let marker = format!("RUNTIMEUSE_TEST_CANCEL={}", std::process::id());
    let s = setup("cancel", replies, &[]);
    let url = s.url();
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let abort = runtimeuse_tokio::AbortHandle::default();
    let (key, value) = marker.split_once('=').unwrap();
    let options = runtimeuse_tokio::QueryOptions::new("", "claude-test")
        .abort_handle(&abort)
        .agent_env(key, value);
    let call = tokio.spawn(async move {
        runtimeuse_tokio::Client::new(url)
            .query("wait", options)
            .await
    });
    assert!(
        s.mock.wait_stalled(Duration::from_secs(60)),
        "the agent reached the provider"
    );
    assert!(
        common::raw::processes_with_env(&marker) > 0,
        "the agent runs"
    );
    abort.abort();
    let outcome = tokio.block_on(call).unwrap();
    assert!(
        matches!(outcome, Err(runtimeuse_tokio::Error::Cancelled)),
        "{outcome:?}"
    );
    // session/cancel first; the process group is killed if it has not stopped within 2 s.
    common::raw::wait_gone(
        || common::raw::processes_with_env(&marker),
        Duration::from_secs(10),
        "the agent is still there",
    );
}

#[test]
fn the_three_clients_get_the_same_answer() {
    let replies = (0..3)
        .map(|_| Reply::stream(Api::Anthropic.text("same for all")))
        .collect();
    let s = setup("clients", replies, &[]);
    let same = Some("same for all".to_owned());
    assert_eq!(
        s.three_clients_answer("hi", "m"),
        [same.clone(), same.clone(), same]
    );
}
