#!/usr/bin/env python3
"""Writes the fuzz seeds from the recorded transcripts (run from fuzz/; the output is committed).

decode: every recorded frame payload, one file each.
session: per Python-client transcript, a start-request op followed by every runtime frame as a
raw-receive op (opcode 0, little-endian u16 length) and a small time step (opcode 4).
runtime_session: per transcript, its short client frames as raw-receive ops (opcode 0, one-byte
length), each followed by a time step, an output chunk and a terminal.
"""
import hashlib, json, pathlib

root = pathlib.Path(__file__).resolve().parent
transcripts = root.parent / "crates/runtimeuse-proto/tests/transcripts"
out_decode = root / "seeds/decode"
out_session = root / "seeds/session"
out_runtime = root / "seeds/runtime_session"
out_runtime.mkdir(parents=True, exist_ok=True)


def payload(r):
    text = r["text"]
    if r.get("truncated"):
        return None  # megabytes: not useful as seeds
    return text.encode()


def write(folder, data):
    name = hashlib.sha1(data).hexdigest()[:16]
    (folder / name).write_bytes(data)


for path in sorted(transcripts.glob("*.jsonl")):
    records = [json.loads(line) for line in path.read_text().splitlines()]
    ops = bytearray()
    runtime_ops = bytearray()
    for r in records:
        if r["dir"] not in ("c2r", "r2c") or r["kind"] != "text":
            continue
        data = payload(r)
        if data is None or len(data) > 4000:
            continue
        write(out_decode, data)
        if r["dir"] == "c2r" and len(data) < 256:
            # runtime_session: opcode 0 takes a one-byte length.
            runtime_ops += bytes([0, len(data)]) + data + bytes([3, 1, 4, 0, 9, 0])
        if r["dir"] == "c2r":
            try:
                msg = json.loads(r["text"])
            except ValueError:
                msg = None
            kind = msg.get("message_type") if isinstance(msg, dict) else None
            if kind == "invocation_message":
                ops += bytes([5, 0])
            elif kind == "command_execution_message":
                ops += bytes([6, 0])
            elif kind == "cancel_message":
                ops += bytes([7, 0])
            elif kind == "end_session_message":
                ops += bytes([8, 0])
            elif kind == "artifact_upload_response_message":
                ops += bytes([9, 0])
        else:
            ops += bytes([0]) + len(data).to_bytes(2, "little") + data + bytes([4, 3])
    if ops:
        write(out_session, bytes(ops))
    if runtime_ops:
        write(out_runtime, bytes(runtime_ops))
