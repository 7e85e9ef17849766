"""The upstream Python client `runtimeuse-client` 0.15.1, unchanged, against `runtimeuse serve`."""

import asyncio
import io
import json
import zipfile

import pytest
import websockets
from runtimeuse_client import (
    AgentRuntimeError,
    ArtifactUploadResult,
    CancelledException,
    CommandInterface,
    ExecuteCommandsOptions,
    QueryOptions,
    RuntimeEnvironmentDownloadableInterface,
    RuntimeUseClient,
    StructuredOutputResult,
    TextResult,
)

pytestmark = pytest.mark.asyncio


def opts(**kw):
    return QueryOptions(system_prompt="You are a test assistant.", model="echo", **kw)


async def test_echo(runtime):
    result = await RuntimeUseClient(runtime).query("ECHO:hello world", opts())
    assert isinstance(result.data, TextResult)
    assert result.data.text == "hello world"


async def test_plain_prompt_echoed(runtime):
    result = await RuntimeUseClient(runtime).query("just words", opts())
    assert result.data.text == "just words"


async def test_structured_output(runtime):
    result = await RuntimeUseClient(runtime).query(
        'STRUCTURED:{"answer": 42, "nested": {"k": "v"}}',
        opts(output_format_json_schema_str='{"type": "object"}'),
    )
    assert isinstance(result.data, StructuredOutputResult)
    assert result.data.structured_output == {"answer": 42, "nested": {"k": "v"}}


async def test_assistant_streaming(runtime):
    seen = []

    async def on_assistant(msg):
        seen.append(msg.text_blocks)

    result = await RuntimeUseClient(runtime).query("STREAM:3", opts(on_assistant_message=on_assistant))
    assert seen == [["message 1 of 3"], ["message 2 of 3"], ["message 3 of 3"]]
    assert result.data.text == "streamed 3 messages"


async def test_error_raises(runtime):
    with pytest.raises(AgentRuntimeError) as err:
        await RuntimeUseClient(runtime).query("ERROR:something broke", opts())
    assert "something broke" in str(err.value)


async def test_timeout(runtime):
    with pytest.raises((TimeoutError, asyncio.TimeoutError)):
        await RuntimeUseClient(runtime).query("SLOW:5000", opts(timeout=0.5))


async def test_heartbeats_keep_idle_timeout_at_bay(runtime):
    # The fixture's runtime sends a heartbeat every 500 ms.
    result = await RuntimeUseClient(runtime).query("SLOW:1800", opts(idle_timeout=1.0))
    assert result.data.text == "done"


async def test_cancel_during_slow_query(runtime):
    client = RuntimeUseClient(runtime)

    async def abort_soon():
        await asyncio.sleep(0.3)
        client.abort()

    task = asyncio.create_task(abort_soon())
    with pytest.raises(CancelledException):
        await client.query("SLOW:10000", opts(timeout=5))
    await task


async def test_cancel_command_kills_it(runtime, tmp_path):
    client = RuntimeUseClient(runtime)
    marker = tmp_path / "still-running"

    async def on_output(msg):
        client.abort()

    with pytest.raises(CancelledException):
        await client.execute_commands(
            # The touch runs in a grandchild: killing only the shell would not stop it.
            [CommandInterface(command=f"echo start; sh -c 'sleep 2; touch {marker}' & wait")],
            ExecuteCommandsOptions(on_command_output=on_output, timeout=5),
        )
    await asyncio.sleep(2.5)
    assert not marker.exists(), "the command's process group was not killed"


async def test_pre_and_post_commands(runtime, tmp_path):
    out = []

    async def on_output(msg):
        out.append((msg.stream, msg.text))

    work = tmp_path / "made-by-runtime"
    result = await RuntimeUseClient(runtime).query(
        "ECHO:ok",
        opts(
            pre_agent_invocation_commands=[CommandInterface(command="pwd", cwd=str(work))],
            post_agent_invocation_commands=[
                CommandInterface(command="echo $GREETING >&2", env={"GREETING": "hi"})
            ],
            on_command_output=on_output,
        ),
    )
    assert result.data.text == "ok"
    assert ("stdout", f"{work}\n") in out
    assert ("stderr", "hi\n") in out


async def test_failed_pre_command(runtime):
    with pytest.raises(AgentRuntimeError) as err:
        await RuntimeUseClient(runtime).query(
            "ECHO:never", opts(pre_agent_invocation_commands=[CommandInterface(command="exit 7")])
        )
    assert "pre-agent command failed with exit code: 7" in str(err.value)


async def test_failed_post_command(runtime):
    with pytest.raises(AgentRuntimeError) as err:
        await RuntimeUseClient(runtime).query(
            "ECHO:x", opts(post_agent_invocation_commands=[CommandInterface(command="exit 1")])
        )
    assert "post-agent command failed with exit code: 1" in str(err.value)


async def test_command_batch(runtime):
    result = await RuntimeUseClient(runtime).execute_commands(
        [
            CommandInterface(command="echo one"),
            CommandInterface(command="exit 3"),
            CommandInterface(command="echo never"),
        ],
        ExecuteCommandsOptions(),
    )
    assert [(r.command, r.exit_code) for r in result.results] == [("echo one", 0), ("exit 3", 3)]


async def test_secrets_redacted(runtime):
    out = []

    async def on_output(msg):
        out.append(msg.text)

    result = await RuntimeUseClient(runtime).execute_commands(
        [CommandInterface(command="echo token=s3cr3t")],
        ExecuteCommandsOptions(secrets_to_redact=["s3cr3t"], on_command_output=on_output),
    )
    assert "s3cr3t" not in "".join(out)
    assert "[REDACTED]" in "".join(out)
    assert "s3cr3t" not in json.dumps(result.model_dump())


async def test_secret_redacted_from_result_and_assistant(runtime):
    seen = []

    async def on_assistant(msg):
        seen.append(msg.text_blocks)

    client = RuntimeUseClient(runtime)
    result = await client.query(
        "STREAM_TEXT:the key is hunter2", opts(secrets_to_redact=["hunter2"], on_assistant_message=on_assistant)
    )
    assert seen == [["the key is [REDACTED]"]]
    result = await client.query("ECHO:hunter2!", opts(secrets_to_redact=["hunter2"]))
    assert result.data.text == "[REDACTED]!"


async def test_downloads(runtime, files, tmp_path):
    files.handler.files["/files/setup.sh"] = b"payload-1"
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("inner/data.txt", "zipped")
    files.handler.files["/files/bundle.zip"] = archive.getvalue()
    work = tmp_path / "dl"
    result = await RuntimeUseClient(runtime).query(
        f"READ_FILE:{work}/setup.sh",
        opts(
            pre_agent_downloadables=[
                RuntimeEnvironmentDownloadableInterface(download_url=f"{files.base}/files/setup.sh", working_dir=str(work)),
                RuntimeEnvironmentDownloadableInterface(download_url=f"{files.base}/files/bundle.zip", working_dir=str(work)),
            ]
        ),
    )
    assert result.data.text == "payload-1"
    assert (work / "inner" / "data.txt").read_text() == "zipped"
    assert not (work / "bundle.zip").exists()


async def test_download_failure(runtime, files, tmp_path):
    with pytest.raises(AgentRuntimeError) as err:
        await RuntimeUseClient(runtime).query(
            "ECHO:x",
            opts(pre_agent_downloadables=[RuntimeEnvironmentDownloadableInterface(
                download_url=f"{files.base}/files/missing", working_dir=str(tmp_path))]),
        )
    assert "Download failed: 404 Not Found" in str(err.value)


async def test_artifact_uploaded(runtime, files, tmp_path):
    art = tmp_path / "artifacts"
    requested = []

    async def on_request(req):
        requested.append(req.filename)
        return ArtifactUploadResult(presigned_url=f"{files.base}/uploads/{req.filename}", content_type="text/plain")

    result = await RuntimeUseClient(runtime).query(
        f"WRITE_FILE:{art}/hello.txt hello artifact",
        opts(artifacts_dirs=[str(art)], on_artifact_upload_request=on_request),
    )
    assert result.data.text == f"wrote {art}/hello.txt"
    assert requested == ["hello.txt"]
    for _ in range(100):
        if "/uploads/hello.txt" in files.handler.uploads:
            break
        await asyncio.sleep(0.05)
    assert files.handler.uploads["/uploads/hello.txt"] == b"hello artifact"
    assert files.handler.content_types["/uploads/hello.txt"] == "text/plain"


async def test_artifact_ignore_rules(runtime, files, tmp_path):
    art = tmp_path / "artifacts"
    requested = []

    async def on_request(req):
        requested.append(req.filename)
        return ArtifactUploadResult(presigned_url=f"{files.base}/u/{req.filename}", content_type="text/plain")

    await RuntimeUseClient(runtime).execute_commands(
        [CommandInterface(command=f"mkdir -p {art}/node_modules && echo x > {art}/node_modules/skip.js && echo y > {art}/skip.log && echo z > {art}/keep.txt")],
        ExecuteCommandsOptions(
            artifacts_dirs=[str(art)],
            artifacts_ignore_content="*.log\nnode_modules/\n",
            on_artifact_upload_request=on_request,
        ),
    )
    async with RuntimeUseClient(runtime).session() as s:
        await s.query(f"WRITE_FILE:{art}/second.txt two",
                      opts(artifacts_dirs=[str(art)], artifacts_ignore_content="*.log\nnode_modules/\n",
                           on_artifact_upload_request=on_request))
    assert "skip.js" not in requested and "skip.log" not in requested
    assert "second.txt" in requested


async def test_persistent_session(runtime):
    async with RuntimeUseClient(runtime).session() as s:
        a = await s.query("ECHO:first", opts())
        b = await s.query("ECHO:second", opts())
        c = await s.execute_commands([CommandInterface(command="echo third")], ExecuteCommandsOptions())
    assert (a.data.text, b.data.text) == ("first", "second")
    assert c.results[0].exit_code == 0


async def test_session_abort_then_query(runtime):
    async with RuntimeUseClient(runtime).session() as s:
        async def abort_soon():
            await asyncio.sleep(0.3)
            s.abort()

        task = asyncio.create_task(abort_soon())
        with pytest.raises(CancelledException):
            await s.query("SLOW:5000", opts())
        await task
        nxt = await s.query("ECHO:next", opts())
    assert nxt.data.text == "next"


async def test_concurrent_connections(runtime):
    client = RuntimeUseClient(runtime)
    results = await asyncio.gather(*[client.query(f"ECHO:{i}", opts()) for i in range(10)])
    assert [r.data.text for r in results] == [str(i) for i in range(10)]


async def test_malformed_frames_get_an_error_and_the_connection_survives(runtime):
    async with websockets.connect(runtime) as ws:
        for bad in ["this is not json {", '{"hello": 1}', '{"message_type": "invocation_message"}']:
            await ws.send(bad)
            reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert reply["message_type"] == "error_message", reply
        await ws.send('{"message_type": "frobnicate_message"}')
        await ws.send(json.dumps({"message_type": "invocation_message", "user_prompt": "ECHO:probe"}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert reply["data"]["text"] == "probe"
        await ws.send('{"message_type": "end_session_message"}')
        reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert reply == {"message_type": "end_session_confirm_message"}


async def test_second_request_while_in_flight(runtime):
    async with websockets.connect(runtime) as ws:
        slow = {"message_type": "invocation_message", "user_prompt": "SLOW:500"}
        await ws.send(json.dumps(slow))
        await ws.send(json.dumps({"message_type": "invocation_message", "user_prompt": "ECHO:x"}))
        first = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert first["error"] == "Received request while another is in flight!"
        while True:
            reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if reply["message_type"] == "result_message":
                break
        assert reply["data"]["text"] == "done"


async def test_token_is_required_when_set(tmp_path):
    import subprocess
    from conftest import _binary

    proc = subprocess.Popen([_binary(), "serve", "--host", "127.0.0.1", "--port", "0", "--token", "tok",
                             "--agent", "scripted"],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline().rsplit(" ", 1)[1])
        with pytest.raises(Exception):
            await RuntimeUseClient(f"ws://127.0.0.1:{port}").query("ECHO:x", opts())
        result = await RuntimeUseClient(f"ws://127.0.0.1:{port}/?token=tok").query("ECHO:ok", opts())
        assert result.data.text == "ok"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_a_large_command_result_fits_the_clients_frames(runtime):
    """`seq 1 200000` prints 1.3 MB: every byte is streamed, and the result (over the Python
    client's 1 MiB frame limit if whole) keeps the end of stdout and says what was cut."""
    chunks = []

    async def on_output(msg):
        chunks.append(msg.text)

    result = await RuntimeUseClient(runtime).execute_commands(
        [CommandInterface(command="seq 1 200000")],
        ExecuteCommandsOptions(on_command_output=on_output),
    )
    expected = "".join(f"{i}\n" for i in range(1, 200001))
    assert "".join(chunks) == expected
    (item,) = result.results
    assert item.exit_code == 0
    head, tail = item.stdout.split("]\n", 1)
    assert head.startswith("[runtimeuse: the first ")
    assert head.endswith("bytes of this stdout are cut to fit the result; they were streamed in full")
    assert expected.endswith(tail) and tail.endswith("199999\n200000\n")
    assert int(head.split()[3]) == len(expected) - len(tail)


async def test_an_artifact_written_by_a_post_command_is_uploaded_before_the_session_ends(
    runtime, files, tmp_path
):
    """The file appears after the agent finished: the runtime asks for its upload late (during
    or after the result), the client answers, ends the session, and the PUT still happens."""
    art = tmp_path / "late-artifacts"
    requested = []

    async def on_request(req):
        requested.append(req.filename)
        return ArtifactUploadResult(presigned_url=f"{files.base}/late/{req.filename}", content_type="text/plain")

    async with RuntimeUseClient(runtime).session() as s:
        result = await s.query(
            "ECHO:done",
            opts(
                artifacts_dirs=[str(art)],
                on_artifact_upload_request=on_request,
                post_agent_invocation_commands=[
                    CommandInterface(command=f"mkdir -p {art} && printf late > {art}/late.txt")
                ],
            ),
        )
        assert result.data.text == "done"
    assert requested == ["late.txt"]
    # The session has ended; the PUT must follow (the runtime is still up).
    for _ in range(100):
        if "/late/late.txt" in files.handler.uploads:
            break
        await asyncio.sleep(0.05)
    assert files.handler.uploads.get("/late/late.txt") == b"late"


async def test_the_wire_is_unchanged_for_a_client_that_does_not_ask_for_resumption(runtime, tmp_path):
    """Resumption (docs/resume.md) only when asked: the upstream client's handshake gets no
    `runtimeuse-*` header, and its session no acknowledgement pings, recorded by the proxy."""
    import subprocess

    from conftest import _binary

    async with websockets.connect(runtime) as ws:
        assert not [k for k in ws.response.headers if k.lower().startswith("runtimeuse-")]

    proxy = subprocess.Popen(
        [_binary(), "--quiet", "proxy", "--listen", "127.0.0.1:0", "--to", runtime,
         "--record", str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proxy.stdout.readline()
        port = int(line.split("port ")[1].split(",")[0])
        client = RuntimeUseClient(f"ws://127.0.0.1:{port}")
        result = await client.query("ECHO:hello", opts())
        assert result.data.text == "hello"
        batch = await client.execute_commands(
            [CommandInterface(command="echo hi")], ExecuteCommandsOptions()
        )
        assert batch.results[0].stdout == "hi\n"
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
    records = [
        json.loads(line)
        for path in sorted(tmp_path.glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    opens = [r for r in records if r["kind"] == "open"]
    assert len(opens) == 2
    for o in opens:
        assert not [k for k in o["client_request_headers"] if k.lower().startswith("runtimeuse-")]
    kinds = {r["kind"] for r in records if r["dir"] == "r2c"}
    assert kinds <= {"text", "close"}, kinds
    assert not [r for r in records if r["kind"] in ("ping", "pong")]
