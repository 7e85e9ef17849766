"""This package beyond the upstream API: plain and async callbacks, typed errors and each time
limit, custom transports, the blocking client, structured output into a pydantic model, large
frames, the close code. Against `runtimeuse serve` (the `runtime` fixture) or small servers
started here on loopback."""

import asyncio
import json
import socket
import threading
import time

import pydantic
import pytest
import runtimeuse_client
import websockets
from runtimeuse_rs import (
    AgentRuntimeError,
    ArtifactUploadResult,
    CallbackTimeoutError,
    CancelledException,
    CommandInterface,
    ConnectTimeoutError,
    ExecuteCommandsOptions,
    IdleTimeoutError,
    QueryOptions,
    RequestTimeoutError,
    RuntimeConnectionError,
    RuntimeUseClient,
    SyncRuntimeUseClient,
)


def opts(**kw):
    return QueryOptions(system_prompt="You are a test assistant.", model="echo", **kw)


# ----- callbacks -----


async def test_plain_and_async_callbacks(runtime):
    plain, awaited = [], []

    async def on_output(msg):
        await asyncio.sleep(0)
        awaited.append(msg.text)
        dumped = msg.model_dump()
        assert dumped == {"message_type": "command_output_message", "stream": "stdout", "text": msg.text,
                          "command": "echo one; echo two"}
        assert msg == type(msg)(**dumped)

    result = await RuntimeUseClient(runtime).query(
        "STREAM:2", opts(on_assistant_message=lambda m: plain.append(m.text_blocks))
    )
    assert result.data.text == "streamed 2 messages"
    assert plain == [["message 1 of 2"], ["message 2 of 2"]]
    batch = await RuntimeUseClient(runtime).execute_commands(
        [CommandInterface(command="echo one; echo two")], ExecuteCommandsOptions(on_command_output=on_output)
    )
    assert "".join(awaited) == "one\ntwo\n"
    assert batch.results[0].stdout == "one\ntwo\n"


async def test_a_plain_artifact_callback_gets_the_put(runtime, files, tmp_path):
    art = tmp_path / "out"
    art.mkdir()

    def on_request(req):
        return ArtifactUploadResult(presigned_url=f"{files.base}/up/{req.filename}", content_type="text/plain")

    await RuntimeUseClient(runtime).execute_commands(
        [CommandInterface(command=f"printf hello > {art}/tmp && mv {art}/tmp {art}/a.txt")],
        ExecuteCommandsOptions(artifacts_dirs=[str(art)], on_artifact_upload_request=on_request),
    )
    for _ in range(100):
        if "/up/a.txt" in files.handler.uploads:
            break
        await asyncio.sleep(0.05)
    assert files.handler.uploads["/up/a.txt"] == b"hello"
    assert files.handler.content_types["/up/a.txt"] == "text/plain"


async def test_a_failing_callback_fails_the_call_and_the_session_goes_on(runtime):
    def on_output(msg):
        raise KeyError("from the callback")

    async with RuntimeUseClient(runtime).session() as s:
        with pytest.raises(KeyError):
            await s.execute_commands(
                [CommandInterface(command="echo x; sleep 5")], ExecuteCommandsOptions(on_command_output=on_output)
            )
        assert (await s.query("ECHO:after", opts())).data.text == "after"


async def test_a_runtime_error_does_not_leak_into_the_next_request(runtime):
    async with RuntimeUseClient(runtime).session() as s:
        with pytest.raises(AgentRuntimeError) as err:
            await s.query("ERROR:first", opts())
        assert err.value.error == "first"
        for i in range(3):
            assert (await s.query(f"ECHO:{i}", opts())).data.text == str(i)


# ----- time limits and errors -----


async def test_the_overall_timeout_is_a_timeout_error(runtime):
    with pytest.raises(RequestTimeoutError) as err:
        await RuntimeUseClient(runtime).query("SLOW:5000", opts(timeout=0.3))
    assert isinstance(err.value, TimeoutError)
    with pytest.raises(TimeoutError):
        await RuntimeUseClient(runtime, timeout=0.3).query("SLOW:5000", opts())


@pytest.fixture
async def silent():
    """A WebSocket server that accepts and never says anything (it answers pings)."""

    async def handler(ws):
        try:
            async for _ in ws:
                pass
        except websockets.ConnectionClosed:
            pass

    async with websockets.serve(handler, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_a_silent_runtime_hits_the_idle_limit(silent):
    started = time.monotonic()
    with pytest.raises(IdleTimeoutError) as err:
        await RuntimeUseClient(silent).query("ECHO:x", opts(idle_timeout=0.3))
    assert isinstance(err.value, TimeoutError) and isinstance(err.value, AgentRuntimeError)
    assert err.value.metadata["timeout_type"] == "idle_timeout"
    assert time.monotonic() - started < 5
    # The client's default for every call.
    with pytest.raises(IdleTimeoutError):
        await RuntimeUseClient(silent, idle_timeout=0.3).query("ECHO:x", opts())
    # The blocking client in a thread: the server runs on this loop.
    with pytest.raises(IdleTimeoutError):
        await asyncio.to_thread(SyncRuntimeUseClient(silent, idle_timeout=0.3).query, "ECHO:x", opts())


async def test_a_slow_callback_hits_its_limit_and_cancels_the_request(runtime):
    async def slow(msg):
        await asyncio.sleep(2)

    async with RuntimeUseClient(runtime).session() as s:
        with pytest.raises(CallbackTimeoutError) as err:
            await s.query("STREAM:3", opts(on_assistant_message=slow, assistant_callback_timeout=0.2))
        assert isinstance(err.value, TimeoutError)
        assert err.value.metadata["timeout_type"] == "assistant_callback_timeout"
        assert (await s.query("ECHO:next", opts())).data.text == "next"


async def test_connect_timeout_and_refusal():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts TCP, never answers the handshake
    port = listener.getsockname()[1]
    try:
        with pytest.raises(ConnectTimeoutError) as err:
            await RuntimeUseClient(f"ws://127.0.0.1:{port}", connect_timeout=0.3).query("ECHO:x", opts())
        assert isinstance(err.value, TimeoutError)
    finally:
        listener.close()
    with pytest.raises(RuntimeConnectionError) as err:
        await RuntimeUseClient(f"ws://127.0.0.1:{port}").query("ECHO:x", opts())
    assert isinstance(err.value, ConnectionError)
    assert "cannot connect to the runtime" in str(err.value)


async def test_a_dropped_connection_is_a_connection_error():
    async def handler(ws):
        await ws.recv()
        await ws.send(json.dumps({"message_type": "assistant_message", "text_blocks": ["hi"]}))
        # Gone without a terminal.

    async with websockets.serve(handler, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        with pytest.raises(RuntimeConnectionError):
            await RuntimeUseClient(url).query("x", opts())


async def test_frames_over_a_mebibyte_arrive_and_the_close_code_is_1000():
    big = "y" * (3 << 20)
    codes = []

    async def handler(ws):
        await ws.recv()
        await ws.send(json.dumps({"message_type": "assistant_message", "text_blocks": [big]}))
        await ws.send(json.dumps({"message_type": "result_message", "data": {"type": "text", "text": "ok"}}))
        try:
            async for _ in ws:
                pass
        except websockets.ConnectionClosed:
            pass
        codes.append(ws.close_code)

    seen = []
    async with websockets.serve(handler, "127.0.0.1", 0, max_size=None) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        result = await RuntimeUseClient(url).query("x", opts(on_assistant_message=lambda m: seen.append(m)))
        for _ in range(100):
            if codes:
                break
            await asyncio.sleep(0.02)
    assert result.data.text == "ok"
    assert seen[0].text_blocks == [big]
    assert codes == [1000]


# ----- abort -----


async def test_abort_from_a_callback_cancels_the_batch(runtime):
    client = RuntimeUseClient(runtime)

    def on_output(msg):
        client.abort()

    with pytest.raises(CancelledException):
        await client.execute_commands(
            [CommandInterface(command="echo start; sleep 10")],
            ExecuteCommandsOptions(on_command_output=on_output, timeout=5),
        )


# ----- structured output -----


class Answer(pydantic.BaseModel):
    answer: int
    nested: dict[str, str]


async def test_output_type_validates_the_answer_into_the_model(runtime):
    result = await RuntimeUseClient(runtime).query(
        'STRUCTURED:{"answer": 42, "nested": {"k": "v"}}', opts(output_type=Answer)
    )
    assert result.output == Answer(answer=42, nested={"k": "v"})
    with pytest.raises(pydantic.ValidationError):
        await RuntimeUseClient(runtime).query('STRUCTURED:{"answer": "many"}', opts(output_type=Answer))
    with pytest.raises(ValueError):
        opts(output_type=Answer, output_format_json_schema_str="{}")


# ----- custom transports -----


class Recording:
    """A user-supplied transport: a fake runtime in Python that records what it is sent."""

    def __init__(self, replies):
        self.replies = replies
        self.sent = []

    async def __call__(self, send_queue):
        first = await send_queue.get()
        self.sent.append(first)
        for reply in self.replies:
            yield reply
        while True:  # answers and cancels, until closed
            self.sent.append(await send_queue.get())


async def test_a_custom_transport_carries_the_request_and_the_schema():
    transport = Recording(
        [
            {"message_type": "assistant_message", "text_blocks": ["thinking"]},
            {"message_type": "result_message", "data": {"type": "structured_output",
                                                         "structured_output": {"answer": 1, "nested": {}}}},
        ]
    )
    seen = []
    result = await RuntimeUseClient(transport=transport).query(
        "hello", opts(output_type=Answer, on_assistant_message=lambda m: seen.append(m.text_blocks))
    )
    assert result.output == Answer(answer=1, nested={})
    assert seen == [["thinking"]]
    sent = transport.sent[0]
    assert sent["message_type"] == "invocation_message" and sent["user_prompt"] == "hello"
    assert json.loads(sent["output_format_json_schema_str"]) == {
        "type": "json_schema",
        "schema": Answer.model_json_schema(),
    }


async def test_a_silent_custom_transport_hits_the_idle_limit():
    with pytest.raises(IdleTimeoutError):
        await RuntimeUseClient(transport=Recording([])).query("x", opts(idle_timeout=0.3))


async def test_the_upstream_websocket_transport_as_a_custom_transport(runtime):
    """The upstream client's transport (websockets in Python) under this package's Rust
    request layer: one-shot calls and a persistent session."""
    client = RuntimeUseClient(transport=runtimeuse_client.WebSocketTransport(runtime))
    out = []
    batch = await client.execute_commands(
        [CommandInterface(command="echo via-transport")],
        ExecuteCommandsOptions(on_command_output=lambda m: out.append(m.text)),
    )
    assert batch.results[0].stdout == "via-transport\n" and "".join(out) == "via-transport\n"
    with pytest.raises(AgentRuntimeError):
        await client.query("ERROR:over the transport", opts())

    # Aborted once the runtime is known to run the request (its first output), not after a
    # guessed delay that a slow start outlasts.
    with pytest.raises(CancelledException):
        await client.execute_commands(
            [CommandInterface(command="echo started; sleep 5; echo never")],
            ExecuteCommandsOptions(on_command_output=lambda m: client.abort(), timeout=10),
        )
    async with client.session() as s:
        assert (await s.query("ECHO:a", opts())).data.text == "a"
        assert (await s.query("ECHO:b", opts())).data.text == "b"


# ----- the blocking client -----


def test_the_blocking_client(runtime, files, tmp_path):
    client = SyncRuntimeUseClient(runtime)
    assert client.query("ECHO:sync", opts()).data.text == "sync"
    out = []
    batch = client.execute_commands(
        [CommandInterface(command="echo a")], ExecuteCommandsOptions(on_command_output=lambda m: out.append(m.text))
    )
    assert batch.results[0].exit_code == 0 and out == ["a\n"]
    with pytest.raises(AgentRuntimeError):
        client.query("ERROR:sync error", opts())
    art = tmp_path / "art"
    art.mkdir()
    with client.session() as s:
        assert s.query("ECHO:1", opts()).data.text == "1"
        s.execute_commands(
            [CommandInterface(command=f"printf data > {art}/t && mv {art}/t {art}/f.bin")],
            ExecuteCommandsOptions(
                artifacts_dirs=[str(art)],
                on_artifact_upload_request=lambda r: ArtifactUploadResult(
                    presigned_url=f"{files.base}/sync/{r.filename}", content_type="application/octet-stream"
                ),
            ),
        )
    for _ in range(100):
        if "/sync/f.bin" in files.handler.uploads:
            break
        time.sleep(0.05)
    assert files.handler.uploads["/sync/f.bin"] == b"data"


def test_the_blocking_client_releases_the_gil_and_aborts_from_another_thread(runtime):
    client = SyncRuntimeUseClient(runtime)
    ticks = 0
    stop = threading.Event()

    def spin():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        assert client.query("SLOW:600", opts()).data.text == "done"
    finally:
        stop.set()
        spinner.join()
    assert ticks > 100, ticks  # the spinner ran while the query waited
    timer = threading.Timer(0.3, client.abort)
    timer.start()
    started = time.monotonic()
    with pytest.raises(CancelledException):
        client.query("SLOW:10000", opts(timeout=5))
    assert time.monotonic() - started < 3
    timer.join()


def test_the_blocking_client_refuses_callbacks_that_suspend(runtime):
    async def suspends(msg):
        await asyncio.sleep(0.01)

    with pytest.raises(TypeError):
        SyncRuntimeUseClient(runtime).query("STREAM:1", opts(on_assistant_message=suspends))


async def test_a_call_whose_task_was_cancelled_leaves_nothing_for_the_next(runtime):
    seen = []

    async def slow(msg):
        await asyncio.sleep(0.5)  # output piles up meanwhile; the task is cancelled in here

    async with RuntimeUseClient(runtime).session() as s:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(
                s.execute_commands(
                    [CommandInterface(command="for i in $(seq 20); do echo old $i; sleep 0.02; done")],
                    ExecuteCommandsOptions(on_command_output=slow),
                ),
                0.3,
            )
        batch = await s.execute_commands(
            [CommandInterface(command="echo new")],
            ExecuteCommandsOptions(on_command_output=lambda m: seen.append(m.text)),
        )
    assert batch.results[0].stdout == "new\n"
    assert seen == ["new\n"]


async def test_messages_built_natively_behave_as_models():
    out = {"message_type": "command_output_message", "stream": "stderr", "text": "a", "command": "c"}
    transport = Recording(
        [
            out,
            dict(out, text="b"),
            {"message_type": "command_execution_result_message", "results": [{"command": "c", "exit_code": 0}]},
        ]
    )
    seen = []
    await RuntimeUseClient(transport=transport).execute_commands(
        [CommandInterface(command="c")], ExecuteCommandsOptions(on_command_output=seen.append)
    )
    a, b = seen
    assert a.model_dump() == out
    a.text = "changed"  # an assignment touches this message only
    assert (a.text, b.text) == ("changed", "b")
    assert a.model_fields_set == b.model_fields_set == set(out)
    assert b.model_dump() == dict(out, text="b") and b == type(b)(**dict(out, text="b"))
    assert "text='b'" in repr(b)


async def test_a_slow_consumer_stops_the_reading_instead_of_growing_memory():
    """50,000 frames sent at once to a consumer that stalls on the first: the connection holds
    at most its backlog (4,096 items, plus one pump's 1,024) and reads the rest as it drains."""
    from runtimeuse_rs import _loop

    n = 50_000
    frame = json.dumps({"message_type": "command_output_message", "stream": "stdout", "text": "x" * 100,
                        "command": "make"})
    terminal = json.dumps({"message_type": "command_execution_result_message",
                           "results": [{"command": "make", "exit_code": 0}]})

    async def handler(ws):
        await ws.recv()
        for _ in range(n):
            await ws.send(frame)
        await ws.send(terminal)
        try:
            async for _ in ws:
                pass
        except websockets.ConnectionClosed:
            pass

    conns, held, count = [], [], 0
    original = _loop.LoopConn.__init__

    def spy(self, *args):
        original(self, *args)
        conns.append(self)

    async def on_output(msg):
        nonlocal count
        count += 1
        if count == 1:
            await asyncio.sleep(1.0)  # the sender goes on meanwhile
        if count % 1000 == 0:
            held.append(len(conns[0].items))

    _loop.LoopConn.__init__ = spy
    try:
        async with websockets.serve(handler, "127.0.0.1", 0, compression=None) as server:
            url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            await RuntimeUseClient(url).execute_commands(
                [CommandInterface(command="make")], ExecuteCommandsOptions(on_command_output=on_output)
            )
    finally:
        _loop.LoopConn.__init__ = original
    assert count == n
    assert held and max(held) <= 4096 + 1024, max(held)


async def test_the_plain_websocket_transport_ends_the_session_and_answers_late_artifacts(runtime, files, tmp_path):
    """`WebSocketTransport` used directly (as the upstream's: a plain message stream over
    `websockets`), under a transport of the user's: the session's calls run on the Rust request
    layer over it, and `ConnectedWebSocketTransport.end_session` answers a late artifact
    request through the session's last artifact callback."""
    from runtimeuse_rs import WebSocketTransport

    class Plain:
        def __init__(self, url):
            self.inner = WebSocketTransport(url)

        def connect(self):
            return self.inner.connect()

    art = tmp_path / "late"
    asked = []

    def on_artifact(request):
        asked.append(request.filename)
        return ArtifactUploadResult(presigned_url=f"{files.base}/end/{request.filename}", content_type="text/plain")

    async with RuntimeUseClient(transport=Plain(runtime)).session() as session:
        result = await session.query(
            "ECHO:ok",
            opts(
                artifacts_dirs=[str(art)],
                on_artifact_upload_request=on_artifact,
                # Written after the result: the request for it arrives as the session ends.
                post_agent_invocation_commands=[
                    CommandInterface(
                        command=f"mkdir -p {art} && (sleep 0.3; printf end > {art}/t && mv {art}/t {art}/e.txt) "
                        ">/dev/null 2>&1 &"
                    )
                ],
            ),
        )
        assert result.data.text == "ok"
        for _ in range(200):  # the runtime drains its watcher before it confirms the end
            if (art / "e.txt").exists():
                break
            await asyncio.sleep(0.05)
    for _ in range(100):
        if "/end/e.txt" in files.handler.uploads:
            break
        await asyncio.sleep(0.05)
    assert asked == ["e.txt"]
    assert files.handler.uploads["/end/e.txt"] == b"end"
