"""One run of the upstream Python client (runtimeuse-client 0.15.1) for the comparison bench
`benches/python_client.rs`, which starts the runtime and alternates this with the Rust client.

    python python_client.py URL BYTES QUERIES FLOOD_URL FLOOD_FRAMES [MODULE]

MODULE is the client's import name: `runtimeuse_client` (the default) or `runtimeuse_rs`, this
repository's package, whose API is the same; or `floor`: no client at all, the same queries as
raw WebSocket frames through an asyncio Protocol (what any asyncio client pays at least), the
other figures zero.

In one persistent session with the runtime at URL: QUERIES sequential `ECHO:ping` queries
(after 20 warm-up ones), then one command writing BYTES of output, counted through
`on_command_output`. Then one `execute_commands` call to the flood server at FLOOD_URL, which
answers with FLOOD_FRAMES small `command_output_message` frames, counted the same way. Prints
one line:

    rtt_median_s output_s frames bytes output_cpu_s flood_s flood_cpu_s peak_rss_kib
"""

import asyncio
import base64
import importlib
import json
import os
import resource
import socket
import statistics
import struct
import sys
import time

MODULE = sys.argv[6] if len(sys.argv) > 6 else "runtimeuse_client"
# `runtimeuse_rs+resume`: this repository's package with resumable sessions (`resume=True`).
RESUME = MODULE.endswith("+resume")
MODULE = MODULE.removesuffix("+resume")
_client = importlib.import_module("runtimeuse_client" if MODULE == "floor" else MODULE)
CommandInterface = _client.CommandInterface
ExecuteCommandsOptions = _client.ExecuteCommandsOptions
QueryOptions = _client.QueryOptions
RuntimeUseClient = _client.RuntimeUseClient

PRODUCER = "yes 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde | head -c {n}"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def flood(url: str, expected: int) -> tuple[float, float]:
    frames = 0

    async def on_output(message) -> None:
        nonlocal frames
        frames += 1

    cpu = cpu_seconds()
    start = time.perf_counter()
    await RuntimeUseClient(url).execute_commands(
        [CommandInterface(command="make")],
        ExecuteCommandsOptions(on_command_output=on_output),
    )
    elapsed = time.perf_counter() - start
    assert frames == expected, (frames, expected)
    return elapsed, cpu_seconds() - cpu


async def main(url: str, nbytes: int, queries: int, flood_url: str, flood_frames: int) -> None:
    options = QueryOptions(system_prompt="", model="echo")
    times = []
    frames = 0
    received = 0

    async def on_output(message) -> None:
        nonlocal frames, received
        frames += 1
        received += len(message.text)

    client = RuntimeUseClient(url, resume=True) if RESUME else RuntimeUseClient(url)
    async with client.session() as session:
        for i in range(20 + queries):
            start = time.perf_counter()
            result = await session.query("ECHO:ping", options)
            elapsed = time.perf_counter() - start
            assert result.data.text == "ping", result
            if i >= 20:
                times.append(elapsed)
        cpu = cpu_seconds()
        start = time.perf_counter()
        result = await session.execute_commands(
            [CommandInterface(command=PRODUCER.format(n=nbytes))],
            ExecuteCommandsOptions(on_command_output=on_output),
        )
        output_s = time.perf_counter() - start
        output_cpu = cpu_seconds() - cpu
        assert result.results[0].exit_code == 0, result
        # Small frames through the runtime: assistant messages, counted in their callback.
        messages = 0

        async def on_message(message) -> None:
            nonlocal messages
            messages += 1

        n = max(flood_frames // 10, 100)
        start = time.perf_counter()
        await session.query(f"STREAM:{n}", QueryOptions(system_prompt="", model="echo", on_assistant_message=on_message))
        stream_s = time.perf_counter() - start
        assert messages == n, (messages, n)
    assert received == nbytes, (received, nbytes)
    flood_s, flood_cpu = await flood(flood_url, flood_frames)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(statistics.median(times), output_s, frames, received, output_cpu, flood_s, flood_cpu, peak, stream_s)


class _Frames(asyncio.Protocol):
    """Collects bytes; wakes the waiter when `marker` arrived."""

    def __init__(self) -> None:
        self.buf = b""
        self.marker = b"\r\n\r\n"
        self.waiter: asyncio.Future | None = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.marker in self.buf and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


def _masked_text_frame(text: str) -> bytes:
    data = text.encode()
    mask = os.urandom(4)
    n = len(data)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0xFE]) + struct.pack("!H", n))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


async def floor(url: str, queries: int) -> None:
    """The round trip of raw frames: the asyncio part of any client's round trip."""
    host, port = url.removeprefix("ws://").split("/")[0].rsplit(":", 1)
    loop = asyncio.get_running_loop()
    transport, frames = await loop.create_connection(_Frames, host, int(port))
    transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    frames.waiter = loop.create_future()
    transport.write(
        f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await frames.waiter
    query = _masked_text_frame(
        json.dumps(
            {
                "message_type": "invocation_message",
                "system_prompt": "",
                "user_prompt": "ECHO:ping",
                "model": "echo",
                "secrets_to_redact": [],
            }
        )
    )
    frames.marker = b"result_message"
    times = []
    for i in range(20 + queries):
        frames.buf = b""
        frames.waiter = loop.create_future()
        start = time.perf_counter()
        transport.write(query)
        await frames.waiter
        if i >= 20:
            times.append(time.perf_counter() - start)
    transport.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(statistics.median(times), 0, 0, 0, 0, 0, 0, peak, 0)


if __name__ == "__main__":
    if MODULE == "floor":
        asyncio.run(floor(sys.argv[1], int(sys.argv[3])))
    else:
        asyncio.run(
            main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
        )
