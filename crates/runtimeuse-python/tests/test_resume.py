"""Resumable sessions (`resume=True`): cuts within the grace are invisible to the caller, and
a request is handed from one process to another with a resume token, in both directions
between the Python and the Rust clients."""

import asyncio
import json
import os
import pathlib
import signal
import subprocess
import sys
from contextlib import contextmanager

import pytest

from conftest import ROOT, _binary
from runtimeuse_rs import (
    ExecuteCommandsOptions,
    QueryOptions,
    RuntimeUseClient,
    SyncRuntimeUseClient,
)

HERE = pathlib.Path(__file__).resolve().parent
MESSAGES = 2000


def opts(**kw):
    return QueryOptions(system_prompt="You are a test assistant.", model="echo", **kw)


@contextmanager
def proxy(url: str, cut_after: int, how: str):
    """`runtimeuse proxy` in front of the runtime, cutting each connection after the
    runtime's `cut_after`-th data frame; yields its URL."""
    proc = subprocess.Popen(
        [_binary(), "proxy", "-q", "--listen", "127.0.0.1:0", "--to", url,
         "--cut-after", str(cut_after), "--cut", how],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "listening on port" in line, line
        port = int(line.split("listening on port ", 1)[1].split(",", 1)[0])
        yield f"ws://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def streamed(url: str) -> tuple[list[str], str]:
    seen: list[str] = []
    client = RuntimeUseClient(url, resume=True, idle_timeout=20)
    async with client.session() as session:
        result = await session.query(
            f"STREAM:{MESSAGES}",
            opts(on_assistant_message=lambda m: seen.append(m.text_blocks[0])),
        )
    return seen, result.data.text


@pytest.mark.parametrize("cut_after,how", [(150, "reset"), (150, "close"), (1333, "reset"), (1333, "close")])
async def test_a_cut_within_the_grace_is_invisible(runtime, cut_after, how):
    expected = await streamed(runtime)
    assert len(expected[0]) == MESSAGES
    with proxy(runtime, cut_after, how) as url:
        got = await streamed(url)
    assert got == expected


async def test_a_cut_with_nothing_to_acknowledge_is_noticed_at_once(runtime):
    """A cut that leaves the client no timer but its limits (every frame acknowledged, the
    runtime silent between heartbeats) is noticed when the socket says so: the client
    reconnects at once. It waited for its idle limit before, and failed there."""
    proc = subprocess.Popen(
        [_binary(), "proxy", "--listen", "127.0.0.1:0", "--to", runtime],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        port = int(line.split("listening on port ", 1)[1].split(",", 1)[0])
        client = RuntimeUseClient(f"ws://127.0.0.1:{port}", resume=True, idle_timeout=8)
        loop = asyncio.get_running_loop()

        async def cut_once_the_client_acknowledged():
            # The proxy shows each frame on stderr: the client's acknowledgement of the first
            # heartbeat, then nothing is due on the client's side.
            seen_heartbeat = False
            while True:
                shown = await loop.run_in_executor(None, proc.stderr.readline)
                assert shown, "the proxy ended"
                seen_heartbeat |= "heartbeat_message" in shown
                if seen_heartbeat and "c2r ping ack" in shown:
                    break
            proc.send_signal(signal.SIGUSR1)

        cut = asyncio.ensure_future(cut_once_the_client_acknowledged())
        started = loop.time()
        result = await client.query("SLOW:3000", opts())
        took = loop.time() - started
        await cut
        assert result.data.text == "done"
        # Noticed when it happened, not when the idle limit's timer (8 s after the last
        # heartbeat) pumped the connection next: the 3 s query ends in about 3 s.
        assert took < 7.5, f"the cut was noticed only at a timer: {took:.1f} s"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_blocking_client_resumes_too(runtime):
    seen: list[str] = []
    with proxy(runtime, 400, "reset") as url:
        client = SyncRuntimeUseClient(url, resume=True, idle_timeout=20)
        with client.session() as session:
            result = session.query(
                f"STREAM:{MESSAGES}", opts(on_assistant_message=lambda m: seen.append(m.text_blocks[0]))
            )
    assert seen == [f"message {i} of {MESSAGES}" for i in range(1, MESSAGES + 1)]
    assert result.data.text == f"streamed {MESSAGES} messages"


# ----- hand-off -----


def _command(go: pathlib.Path) -> str:
    return (
        f"echo run >> {go.with_name('runs')}; for i in $(seq 1 100); do echo $i; sleep 0.001; done; "
        f"echo half; while [ ! -e {go} ]; do sleep 0.01; done; seq 101 120"
    )


EXPECTED = "".join(f"{i}\n" for i in range(1, 101)) + "half\n" + "".join(f"{i}\n" for i in range(101, 121))


def _first_owner(argv: list[str]) -> tuple[subprocess.Popen, str]:
    """Starts a first owner; returns it (ready: past `half`) and the output it had when it
    took its token."""
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
    line = child.stdout.readline()
    assert line.startswith("seen "), line
    seen = json.loads(line[len("seen "):])
    assert child.stdout.readline().strip() == "ready"
    return child, seen


def _kill(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)


def _python_owner(url: str, go: pathlib.Path, token: pathlib.Path) -> tuple[subprocess.Popen, str]:
    return _first_owner([sys.executable, str(HERE / "resume_child.py"), url, _command(go), str(token)])


def _bin(name: str) -> str:
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    path = target / "debug" / name
    if not path.exists():
        subprocess.run(["cargo", "build", "-q", "-p", "runtimeuse-scenarios", "--bin", name], cwd=ROOT, check=True)
    return str(path)


async def test_a_killed_python_process_hands_its_request_to_another(runtime, tmp_path):
    go, token = tmp_path / "go", tmp_path / "token"
    child, before = _python_owner(runtime, go, token)
    _kill(child)
    go.touch()
    rest: list[str] = []
    async with RuntimeUseClient(runtime, resume=True).resume(token.read_text()) as session:
        result = await session.follow(ExecuteCommandsOptions(on_command_output=lambda m: rest.append(m.text)))
    assert result.results[0].exit_code == 0
    assert before + "".join(rest) == EXPECTED
    assert (tmp_path / "runs").read_text() == "run\n"  # the runtime ran it once


def test_a_python_token_is_followed_by_the_rust_client(runtime, tmp_path):
    go, token = tmp_path / "go", tmp_path / "token"
    child, before = _python_owner(runtime, go, token)
    _kill(child)
    go.touch()
    out = subprocess.run([_bin("handoff_take"), str(token)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    taken = json.loads(out.stdout)
    assert taken["exit_code"] == 0
    assert before + taken["rest"] == EXPECTED
    assert (tmp_path / "runs").read_text() == "run\n"


def test_a_rust_token_is_followed_by_the_python_client(runtime, tmp_path):
    go, token = tmp_path / "go", tmp_path / "token"
    child, before = _first_owner([_bin("handoff_child"), runtime, _command(go), str(token)])
    _kill(child)
    go.touch()
    rest: list[str] = []
    with SyncRuntimeUseClient(runtime, resume=True).resume(token.read_text()) as session:
        result = session.follow(ExecuteCommandsOptions(on_command_output=lambda m: rest.append(m.text)))
    assert result.results[0].exit_code == 0
    assert before + "".join(rest) == EXPECTED
    assert (tmp_path / "runs").read_text() == "run\n"


async def test_a_token_needs_a_resumable_session(runtime):
    from runtimeuse_rs import RuntimeUseError

    async with RuntimeUseClient(runtime).session() as session:
        with pytest.raises(RuntimeUseError, match="resum"):
            session.resume_token()
