"""A blocking client on the same Rust core, for scripts and notebooks: the calls of
``RuntimeUseClient`` without ``await``. The GIL is released while it waits; callbacks are plain
functions, run on the calling thread; ``abort()`` works from any thread."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Coroutine, Iterator

from . import _native
from ._dispatch import ARTIFACT, ENDED, FAILED, Request, answer_late, from_native, late_answerer, start
from .transports.websocket_transport import settings
from .types import (
    CommandExecutionResult,
    CommandInterface,
    ExecuteCommandsOptions,
    QueryOptions,
    QueryResult,
)

__all__ = ["SyncRuntimeUseClient", "SyncRuntimeUseSession"]


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Runs a coroutine that never suspends (every wait inside it blocks instead)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise TypeError(
        "a callback awaited something: the blocking client runs plain functions; use "
        "RuntimeUseClient for async callbacks"
    )


class _Calls:
    """What the blocking client and session share: one call on a blocking connection."""

    _timeout: float | None

    def __init__(self) -> None:
        self._current: Request | None = None
        self._guard = threading.Lock()

    def abort(self) -> None:
        """Cancels the call in progress (from any thread): it raises ``CancelledException``."""
        with self._guard:
            current = self._current
        if current is not None:
            current.abort()

    def _call(
        self,
        conn: Any,
        kind: str,
        prompt: str | None,
        commands: Any,
        options: Any,
        uploader: Any = None,
        follow: bool = False,
    ) -> Any:
        if not follow:
            start(conn, kind, prompt, commands, options, self._timeout)
        request = Request(options, kind=kind, answers=conn, blocking=True, uploader=uploader)

        async def next_items() -> Any:
            return _items(conn)

        with self._guard:
            self._current = request
        try:
            return _run(request.run(next_items))
        finally:
            with self._guard:
                self._current = None


def _items(conn: Any) -> list[Any]:
    items: list[Any] = conn.take_blocking()[0]
    return items


def _end(conn: Any, uploader: Any) -> None:
    """Ends a session gracefully: late artifact requests go to ``uploader`` (a plain function)."""
    on_message = late_answerer(uploader)
    items = conn.end()[0]
    while True:
        for item in items:
            if not isinstance(item, tuple):
                continue  # a message of a request that was cancelled
            if item[0] == ARTIFACT:
                _run(answer_late(conn, item, on_message))
            elif item[0] in (ENDED, FAILED):
                return
        items = _items(conn)
        if not items:
            return


class SyncRuntimeUseSession(_Calls):
    """A persistent session of the blocking client (``SyncRuntimeUseClient.session()``)."""

    def __init__(self, conn: Any, timeout: float | None) -> None:
        super().__init__()
        self._conn = conn
        self._timeout = timeout
        self._last_artifact_cb: Any = None

    def _session_call(self, kind: str, prompt: str | None, commands: Any, options: Any) -> Any:
        if options.on_artifact_upload_request is not None:
            self._last_artifact_cb = options.on_artifact_upload_request
        return self._call(
            self._conn, kind, prompt, commands, options,
            options.on_artifact_upload_request or self._last_artifact_cb,
        )

    def query(self, prompt: str, options: QueryOptions) -> QueryResult:
        """Runs a query on this session."""
        result: QueryResult = self._session_call("query", prompt, None, options)
        return result

    def execute_commands(self, commands: list[CommandInterface], options: ExecuteCommandsOptions) -> CommandExecutionResult:
        """Runs a command batch on this session."""
        result: CommandExecutionResult = self._session_call("commands", None, commands, options)
        return result

    def resume_token(self) -> str:
        """A resume token of this session (as ``RuntimeUseSession.resume_token``)."""
        try:
            token: str = self._conn.resume_token()
        except _native.NativeError as err:
            raise from_native(err) from None
        return token

    def follow(self, options: QueryOptions | ExecuteCommandsOptions) -> Any:
        """The result of the request in flight when the token was taken (as
        ``RuntimeUseSession.follow``)."""
        if not self._conn.following():
            raise ValueError("no request was in flight when the session's token was taken")
        if options.on_artifact_upload_request is not None:
            self._last_artifact_cb = options.on_artifact_upload_request
        kind = "query" if isinstance(options, QueryOptions) else "commands"
        return self._call(
            self._conn, kind, None, None, options,
            options.on_artifact_upload_request or self._last_artifact_cb, follow=True,
        )


class SyncRuntimeUseClient(_Calls):
    """The blocking client: ``query``, ``execute_commands`` and ``session()`` as in
    ``RuntimeUseClient``, returning their results directly. Same keyword arguments."""

    def __init__(
        self,
        ws_url: str,
        *,
        headers: dict[str, str] | None = None,
        connect_timeout: float | None = None,
        idle_timeout: float | None = None,
        timeout: float | None = None,
        keepalive_interval: float | None = None,
        max_frame_size: int | None = None,
        resume: bool = False,
    ) -> None:
        super().__init__()
        self.ws_url = ws_url
        self._timeout = timeout
        self._settings = settings(
            headers, connect_timeout, idle_timeout, keepalive_interval, max_frame_size, resume
        )

    def _connect(self) -> Any:
        try:
            return _native.Conn.connect(self.ws_url, blocking=True, **self._settings)
        except _native.NativeError as err:
            raise from_native(err) from None

    def _one_shot(self, kind: str, prompt: str | None, commands: Any, options: Any) -> Any:
        conn = self._connect()
        ok = False
        try:
            result = self._call(conn, kind, prompt, commands, options)
            ok = True
            if options.artifacts_dirs:
                _end(conn, options.on_artifact_upload_request)
            return result
        finally:
            conn.close(ok)

    def query(self, prompt: str, options: QueryOptions) -> QueryResult:
        """Sends ``prompt`` over a new connection and returns the result."""
        result: QueryResult = self._one_shot("query", prompt, None, options)
        return result

    def execute_commands(self, commands: list[CommandInterface], options: ExecuteCommandsOptions) -> CommandExecutionResult:
        """Runs shell commands over a new connection."""
        result: CommandExecutionResult = self._one_shot("commands", None, commands, options)
        return result

    @contextmanager
    def resume(self, token: str) -> Iterator[SyncRuntimeUseSession]:
        """Takes over the session of a resume token (as ``RuntimeUseClient.resume``): a
        context manager yielding the session, whose ``follow`` gives the request in flight."""
        try:
            conn = _native.Conn.connect("", token=token, blocking=True, **self._settings)
        except _native.NativeError as err:
            raise from_native(err) from None
        with self._session_on(conn) as session:
            yield session

    @contextmanager
    def session(self) -> Iterator[SyncRuntimeUseSession]:
        """A persistent session (a context manager), ended gracefully on exit."""
        with self._session_on(self._connect()) as session:
            yield session

    @contextmanager
    def _session_on(self, conn: Any) -> Iterator[SyncRuntimeUseSession]:
        session = SyncRuntimeUseSession(conn, self._timeout)
        ok = False
        try:
            yield session
            ok = True
        finally:
            try:
                _end(conn, session._last_artifact_cb)
            finally:
                conn.close(ok)
