"""What a new user hits first (issue 34's Python items): clear errors for calls that cannot
work, and infinity as "no limit" everywhere."""

import math

import pytest

from runtimeuse_rs import (
    ExecuteCommandsOptions,
    QueryOptions,
    RuntimeUseClient,
    SyncRuntimeUseClient,
)


def opts(**kw):
    return QueryOptions(system_prompt="You are a test assistant.", model="echo", **kw)


async def test_an_empty_command_batch_is_a_clear_value_error(runtime):
    with pytest.raises(ValueError, match="at least one command"):
        await RuntimeUseClient(runtime).execute_commands([], ExecuteCommandsOptions())
    with pytest.raises(ValueError, match="at least one command"):
        SyncRuntimeUseClient(runtime).execute_commands([], ExecuteCommandsOptions())


async def test_infinite_limits_mean_no_limit(runtime):
    client = RuntimeUseClient(runtime, idle_timeout=math.inf, timeout=math.inf)
    result = await client.query("ECHO:ok", opts(timeout=math.inf, idle_timeout=math.inf))
    assert result.data.text == "ok"
    sync = SyncRuntimeUseClient(runtime, idle_timeout=math.inf, timeout=math.inf)
    assert sync.query("ECHO:ok", opts(timeout=math.inf, idle_timeout=math.inf)).data.text == "ok"


@pytest.mark.parametrize("size", [0, 100])
async def test_a_frame_limit_too_small_for_any_message_is_refused(runtime, size):
    with pytest.raises(ValueError, match="max_frame_size"):
        RuntimeUseClient(runtime, max_frame_size=size)
    with pytest.raises(ValueError, match="max_frame_size"):
        SyncRuntimeUseClient(runtime, max_frame_size=size)


async def test_an_idle_timeout_says_what_the_upstream_says(runtime):
    from runtimeuse_rs import IdleTimeoutError

    with pytest.raises(IdleTimeoutError) as caught:
        await RuntimeUseClient(runtime).query("SLOW:2000", opts(idle_timeout=0.2))
    assert str(caught.value).startswith("No message received from agent runtime for 0.2s")
    assert caught.value.metadata["phase"] == "waiting_for_message"
    assert caught.value.metadata["timeout_type"] == "idle_timeout"


async def test_a_callback_timeout_says_where_it_stood():
    import asyncio

    from runtimeuse_rs import ArtifactUploadResult, CallbackTimeoutError

    async def transport(send_queue):
        yield {"message_type": "assistant_message", "text_blocks": ["one"]}
        yield {"message_type": "assistant_message", "text_blocks": ["two"]}
        yield {"message_type": "artifact_upload_request_message", "filename": "f", "filepath": "/a/f"}
        await asyncio.sleep(10)

    async def slow_second(message):
        if message.text_blocks == ["two"]:
            await asyncio.sleep(10)

    with pytest.raises(CallbackTimeoutError) as caught:
        await RuntimeUseClient(transport=transport).query(
            "hi", opts(on_assistant_message=slow_second, assistant_callback_timeout=0.05, timeout=2)
        )
    assert caught.value.metadata == {
        "timeout_type": "assistant_callback_timeout",
        "timeout": 0.05,
        "last_message_type": "assistant_message",
        "message_count": 2,
        "phase": "assistant_callback",
    }

    async def slow_upload(request):
        await asyncio.sleep(10)
        return ArtifactUploadResult(presigned_url="x", content_type="y")

    with pytest.raises(CallbackTimeoutError) as caught:
        await RuntimeUseClient(transport=transport).query(
            "hi",
            opts(
                artifacts_dirs=["/a"],
                on_artifact_upload_request=slow_upload,
                artifact_upload_callback_timeout=0.05,
                timeout=2,
            ),
        )
    assert caught.value.metadata["filename"] == "f"
    assert caught.value.metadata["filepath"] == "/a/f"
