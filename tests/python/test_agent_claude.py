"""The upstream Python client 0.15.1 against `runtimeuse serve --agent claude` and `--agent acp`:
the real Claude Code CLI and Zed's ACP adapter (installed from npm by the Rust tests, or here
when missing), pointed at a small mock of the Anthropic Messages API."""

import http.server
import json
import os
import pathlib
import subprocess
import threading

import pytest
from conftest import ROOT, _binary
from runtimeuse_client import QueryOptions, RuntimeUseClient

pytestmark = pytest.mark.asyncio

PACKAGES = ["@anthropic-ai/claude-code@2.1.197", "@zed-industries/claude-code-acp@0.16.2"]


def _agents() -> pathlib.Path:
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    agents = target / "agents"
    if not (agents / "node_modules/.bin/claude-code-acp").exists():
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(agents), *PACKAGES],
            check=True,
        )
    return agents / "node_modules/.bin"


class _Anthropic(http.server.BaseHTTPRequestHandler):
    """Streams one text answer to every turn; answers token counts and side requests."""

    protocol_version = "HTTP/1.1"
    turns: list = []

    def _send(self, status, kind, body: bytes):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send(200, "text/plain", b"")

    do_HEAD = do_GET

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        if "count_tokens" in self.path:
            return self._send(200, "application/json", b'{"input_tokens": 20}')
        if not request.get("stream"):
            message = {"id": "m", "type": "message", "role": "assistant", "model": request.get("model"),
                       "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                       "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}
            return self._send(200, "application/json", json.dumps(message).encode())
        text = "ok" if request.get("model") == "claude-side" else "hello from the mock"
        if text != "ok":
            self.turns.append(request)
        events = [
            ("message_start", {"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant",
             "content": [], "model": request.get("model"), "stop_reason": None, "stop_sequence": None,
             "usage": {"input_tokens": 20, "output_tokens": 1}}}),
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
             "usage": {"output_tokens": 7}}),
            ("message_stop", {"type": "message_stop"}),
        ]
        body = "".join(f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, d in events).encode()
        self._send(200, "text/event-stream", body)

    def log_message(self, *args):
        pass


@pytest.fixture
def anthropic():
    handler = type("Anthropic", (_Anthropic,), {"turns": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.base = f"http://127.0.0.1:{server.server_address[1]}"
    server.handler = handler
    yield server
    server.shutdown()
    server.server_close()


def _serve(agent_args, anthropic, tmp_path):
    env = dict(os.environ, ANTHROPIC_BASE_URL=anthropic.base, ANTHROPIC_API_KEY="sk-test",
               CLAUDE_CONFIG_DIR=str(tmp_path), CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
               CLAUDE_CODE_MAX_RETRIES="0", ANTHROPIC_DEFAULT_HAIKU_MODEL="claude-side",
               ANTHROPIC_SMALL_FAST_MODEL="claude-side")
    proc = subprocess.Popen(
        [_binary(), "serve", "--host", "127.0.0.1", "--port", "0", *agent_args],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    line = proc.stdout.readline()
    assert "listening on port" in line, line
    return proc, f"ws://127.0.0.1:{int(line.rsplit(' ', 1)[1])}"


@pytest.mark.parametrize("agent", ["claude", "acp"])
async def test_the_upstream_client_gets_a_coding_agents_answer(agent, anthropic, tmp_path):
    bin_dir = _agents()
    cli = bin_dir / ("claude" if agent == "claude" else "claude-code-acp")
    proc, url = _serve(["--agent", agent, "--agent-command", str(cli)], anthropic, tmp_path)
    try:
        said = []

        async def on_assistant_message(message):
            said.append(message)

        options = QueryOptions(system_prompt="", model="claude-test",
                               on_assistant_message=on_assistant_message)
        result = await RuntimeUseClient(url).query("say hello", options)
        assert result.data.text == "hello from the mock"
        assert said, "the assistant message was streamed"
        assert len(anthropic.handler.turns) == 1
        assert "say hello" in json.dumps(anthropic.handler.turns[0])
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
