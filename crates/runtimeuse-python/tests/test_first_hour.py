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
