"""The Python package's quick start, against a local runtime.

    python crates/runtimeuse-python/examples/quickstart.py

Starts `runtimeuse serve --agent scripted` on a free loopback port (the binary from
RUNTIMEUSE_BIN, else target/debug or target/release of this checkout: `cargo build -p
runtimeuse-cli` first) unless RUNTIMEUSE_URL names a runtime, then runs a streamed query, a
structured query into a pydantic model, a persistent session with a command batch, and the
same through the blocking client.
"""

import asyncio
import os
import pathlib
import subprocess
import sys

import pydantic

from runtimeuse_rs import (
    CommandInterface,
    ExecuteCommandsOptions,
    QueryOptions,
    RuntimeUseClient,
    SyncRuntimeUseClient,
    TextResult,
)

ROOT = pathlib.Path(__file__).resolve().parents[3]


class Answer(pydantic.BaseModel):
    answer: int


def start_runtime() -> tuple[str, "subprocess.Popen[str] | None"]:
    url = os.environ.get("RUNTIMEUSE_URL")
    if url:
        return url, None
    binary = os.environ.get("RUNTIMEUSE_BIN")
    if not binary:
        candidates = [ROOT / "target" / profile / "runtimeuse" for profile in ("debug", "release")]
        found = [c for c in candidates if c.exists()]
        if not found:
            sys.exit("no runtime: run `cargo build -p runtimeuse-cli`, or set RUNTIMEUSE_BIN or RUNTIMEUSE_URL")
        binary = str(found[0])
    proc = subprocess.Popen(
        [binary, "--quiet", "serve", "--host", "127.0.0.1", "--port", "0", "--agent", "scripted"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    port = int(line.rsplit(" ", 1)[1])
    return f"ws://127.0.0.1:{port}", proc


async def main(url: str) -> None:
    client = RuntimeUseClient(url, idle_timeout=60)
    options = QueryOptions(
        system_prompt="You are a helpful assistant.",
        model="gpt-4o",
        on_assistant_message=lambda m: print("assistant:", *m.text_blocks),
    )
    result = await client.query("STREAM:2", options)
    assert isinstance(result.data, TextResult)  # no output schema: text
    print("result:", result.data.text)

    structured = await client.query(
        'STRUCTURED:{"answer": 42}', QueryOptions(system_prompt="", model="gpt-4o", output_type=Answer)
    )
    print("structured:", structured.output)

    async with client.session() as session:
        out = await session.execute_commands(
            [CommandInterface(command="echo hello from the sandbox")],
            ExecuteCommandsOptions(on_command_output=lambda m: print(f"[{m.stream}]", m.text, end="")),
        )
        print("exit code:", out.results[0].exit_code)


if __name__ == "__main__":
    url, proc = start_runtime()
    try:
        asyncio.run(main(url))
        blocking = SyncRuntimeUseClient(url)
        answer = blocking.query("ECHO:no event loop needed", QueryOptions(system_prompt="", model="gpt-4o"))
        print("blocking:", answer.data)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
