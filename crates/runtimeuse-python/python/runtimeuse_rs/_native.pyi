"""Type stubs of the native module (``src/`` of the runtimeuse-python crate)."""

from typing import Any

__version__: str

class NativeError(Exception):
    """``args[0]`` is ``(kind, message, details)``."""

Item = tuple[Any, ...]

def set_models(output: type, assistant: type) -> None: ...

Flags = tuple[bool, bool, bool, bool, bool]
Pumped = tuple[list[Item], float, Flags, int, bool]

class Conn:
    @staticmethod
    def connect(
        url: str,
        *,
        headers: list[tuple[str, str]] | None = None,
        connect_timeout: float | None = None,
        idle_timeout: float | None = None,
        keepalive_interval: float | None = None,
        max_frame_size: int | None = None,
        blocking: bool = False,
        resume: bool = False,
    ) -> Conn: ...
    @staticmethod
    def take_over(
        token: str,
        *,
        headers: list[tuple[str, str]] | None = None,
        connect_timeout: float | None = None,
        idle_timeout: float | None = None,
        keepalive_interval: float | None = None,
        max_frame_size: int | None = None,
        blocking: bool = False,
    ) -> Conn: ...
    def fileno(self) -> int: ...
    def is_resumable(self) -> bool: ...
    def following(self) -> bool: ...
    def resume_token(self) -> str: ...
    def query(
        self,
        prompt: str | None,
        wire: dict[str, Any],
        timeout: float | None,
        idle_timeout: float | None,
        uploader: bool,
    ) -> None: ...
    def execute_commands(
        self,
        wire: dict[str, Any],
        timeout: float | None,
        idle_timeout: float | None,
        uploader: bool,
    ) -> None: ...
    def abort(self) -> None: ...
    def respond(self, key: int, presigned_url: str, content_type: str) -> None: ...
    def decline(self, key: int) -> None: ...
    def end(self) -> Pumped: ...
    def pump(self) -> Pumped: ...
    def take(self) -> Pumped: ...
    def take_blocking(self) -> Pumped: ...
    def reconnect(self) -> None: ...
    def close(self, ok: bool) -> None: ...

class Driver:
    def __init__(self, *, idle_timeout: float | None = None, max_frame_size: int | None = None) -> None: ...
    def query(
        self,
        prompt: str,
        wire: dict[str, Any],
        timeout: float | None,
        idle_timeout: float | None,
        uploader: bool,
    ) -> None: ...
    def execute_commands(
        self,
        wire: dict[str, Any],
        timeout: float | None,
        idle_timeout: float | None,
        uploader: bool,
    ) -> None: ...
    def receive(self, text: str) -> None: ...
    def closed(self) -> None: ...
    def abort(self) -> None: ...
    def respond(self, key: int, presigned_url: str, content_type: str) -> None: ...
    def decline(self, key: int) -> None: ...
    def poll(self) -> tuple[list[str], list[Item], float]: ...
