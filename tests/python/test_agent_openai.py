"""The upstream Python client 0.15.1 against `runtimeuse serve --agent openai`, whose model is a
mock OpenAI Responses API on loopback (server-sent events as the API documents them)."""

import http.server
import json
import os
import subprocess
import threading

import pytest
from runtimeuse_client import QueryOptions, RuntimeUseClient, StructuredOutputResult, TextResult

from conftest import _binary

pytestmark = pytest.mark.asyncio


def _event(name, **data):
    data["type"] = name
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def _response(status, output, usage=None):
    return {"id": "resp_1", "object": "response", "created_at": 1764000000, "status": status,
            "model": "gpt-test", "output": output, "usage": usage}


def _stream(items):
    """A Responses stream whose output is `items` (each announced, then done), then completed."""
    events = [_event("response.created", sequence_number=0, response=_response("in_progress", []))]
    seq = 1
    for i, item in enumerate(items):
        events.append(_event("response.output_item.added", sequence_number=seq, output_index=i,
                             item={**item, "status": "in_progress"}))
        events.append(_event("response.output_item.done", sequence_number=seq + 1, output_index=i,
                             item=item))
        seq += 2
    usage = {"input_tokens": 11, "output_tokens": 5, "total_tokens": 16}
    events.append(_event("response.completed", sequence_number=seq,
                         response=_response("completed", items, usage)))
    return "".join(events)


def text(t):
    return _stream([{"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
                     "content": [{"type": "output_text", "text": t, "annotations": []}]}])


def tool_call(call_id, name, args):
    return _stream([{"id": "fc_1", "type": "function_call", "status": "completed",
                     "call_id": call_id, "name": name, "arguments": json.dumps(args)}])


class _Provider(http.server.BaseHTTPRequestHandler):
    replies = []
    requests = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                    "body": json.loads(body)})
        reply = type(self).replies.pop(0)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(reply.encode())
        self.wfile.flush()

    def log_message(self, *args):
        pass


@pytest.fixture
def provider():
    handler = type("Provider", (_Provider,), {"replies": [], "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.base = f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.handler = handler
    yield server
    server.shutdown()
    thread.join()
    server.server_close()


@pytest.fixture
def agent_runtime(provider):
    env = {**os.environ, "OPENAI_BASE_URL": provider.base, "OPENAI_API_KEY": "sk-test-key"}
    proc = subprocess.Popen(
        [_binary(), "serve", "--host", "127.0.0.1", "--port", "0", "--agent", "openai"],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    line = proc.stdout.readline()
    assert "listening on port" in line, line
    yield f"ws://127.0.0.1:{int(line.rsplit(' ', 1)[1])}"
    proc.terminate()
    assert proc.wait(timeout=10) == 0


def opts(**kw):
    return QueryOptions(system_prompt="Be brief.", model="gpt-test", **kw)


async def test_plain_answer(agent_runtime, provider):
    provider.handler.replies.append(text("Hello from the mock model"))
    seen = []

    async def on_assistant(msg):
        seen.append(msg.text_blocks)

    result = await RuntimeUseClient(agent_runtime).query("hi", opts(on_assistant_message=on_assistant))
    assert isinstance(result.data, TextResult)
    assert result.data.text == "Hello from the mock model"
    assert seen == [["Hello from the mock model"]]
    assert result.metadata["usage"] == {"inputTokens": 11, "outputTokens": 5, "totalTokens": 16}
    (request,) = provider.handler.requests
    assert request["path"] == "/v1/responses"
    assert request["headers"]["authorization"] == "Bearer sk-test-key"
    assert request["body"]["model"] == "gpt-test"
    assert request["body"]["instructions"] == "Be brief."
    assert request["body"]["input"] == [{"role": "user", "content": "hi"}]


async def test_tool_call_runs_in_the_sandbox(agent_runtime, provider):
    provider.handler.replies += [
        tool_call("call_7", "shell", {"command": "echo hi-from-the-shell"}),
        text("The shell said hi."),
    ]
    result = await RuntimeUseClient(agent_runtime).query("run it", opts())
    assert result.data.text == "The shell said hi."
    assert result.metadata["tool_calls"] == 1
    second = provider.handler.requests[1]["body"]["input"]
    assert second[1] == {"type": "function_call", "call_id": "call_7", "name": "shell",
                         "arguments": '{"command": "echo hi-from-the-shell"}'}
    assert second[2]["type"] == "function_call_output"
    assert second[2]["call_id"] == "call_7"
    assert "exit_code: 0\nstdout:\nhi-from-the-shell\n" in second[2]["output"]


async def test_structured_output(agent_runtime, provider):
    provider.handler.replies.append(text('{"answer": 42}'))
    schema = {"type": "json_schema",
              "schema": {"type": "object", "properties": {"answer": {"type": "integer"}}}}
    result = await RuntimeUseClient(agent_runtime).query(
        "the answer?", opts(output_format_json_schema_str=json.dumps(schema)))
    assert isinstance(result.data, StructuredOutputResult)
    assert result.data.structured_output == {"answer": 42}
    fmt = provider.handler.requests[0]["body"]["text"]["format"]
    assert fmt["type"] == "json_schema" and fmt["strict"] is True
    assert fmt["schema"] == {"type": "object", "properties": {"answer": {"type": "integer"}},
                             "required": ["answer"], "additionalProperties": False}
