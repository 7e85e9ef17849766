"""One run of the upstream Python client (runtimeuse-client 0.15.1) for the comparison bench
`benches/python_client.rs`, which starts the runtime and alternates this with the Rust client.

    python python_client.py URL BYTES QUERIES FLOOD_URL FLOOD_FRAMES

In one persistent session with the runtime at URL: QUERIES sequential `ECHO:ping` queries
(after 20 warm-up ones), then one command writing BYTES of output, counted through
`on_command_output`. Then one `execute_commands` call to the flood server at FLOOD_URL, which
answers with FLOOD_FRAMES small `command_output_message` frames, counted the same way. Prints
one line:

    rtt_median_s output_s frames bytes output_cpu_s flood_s flood_cpu_s peak_rss_kib
"""

import asyncio
import resource
import statistics
import sys
import time

from runtimeuse_client import (
    CommandInterface,
    ExecuteCommandsOptions,
    QueryOptions,
    RuntimeUseClient,
)

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

    async with RuntimeUseClient(url).session() as session:
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
    assert received == nbytes, (received, nbytes)
    flood_s, flood_cpu = await flood(flood_url, flood_frames)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(statistics.median(times), output_s, frames, received, output_cpu, flood_s, flood_cpu, peak)


if __name__ == "__main__":
    asyncio.run(
        main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
    )
