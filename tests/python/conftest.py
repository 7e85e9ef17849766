"""Fixtures: `runtimeuse serve --handler scripted` on an ephemeral loopback port, and a local
HTTP server for downloads and artifact uploads."""

import http.server
import os
import pathlib
import subprocess
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _binary() -> str:
    explicit = os.environ.get("RUNTIMEUSE_BIN")
    if explicit:
        return explicit
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return str(target / "debug" / "runtimeuse")


@pytest.fixture
def runtime():
    """Starts the runtime; yields its ws:// URL; stops it (SIGTERM) afterwards."""
    proc = subprocess.Popen(
        [_binary(), "serve", "--host", "127.0.0.1", "--port", "0", "--handler", "scripted",
         "--heartbeat-interval-ms", "500"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert "listening on port" in line, line
    port = int(line.rsplit(" ", 1)[1])
    yield f"ws://127.0.0.1:{port}"
    proc.terminate()
    assert proc.wait(timeout=10) == 0


class _Files(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    uploads: dict = {}
    content_types: dict = {}

    def do_GET(self):
        body = self.files.get(self.path)
        if body is None:
            self.send_response(404, "Not Found")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):
        length = int(self.headers.get("Content-Length", "0"))
        self.uploads[self.path] = self.rfile.read(length)
        self.content_types[self.path] = self.headers.get("Content-Type")
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def files():
    """A local HTTP server: `server.files[path] = bytes` to serve, `server.uploads` to read."""
    handler = type("Files", (_Files,), {"files": {}, "uploads": {}, "content_types": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.base = f"http://127.0.0.1:{server.server_address[1]}"
    server.handler = handler
    yield server
    server.shutdown()
    # Close the listening socket too, so that late connections are refused, not left hanging.
    server.server_close()
