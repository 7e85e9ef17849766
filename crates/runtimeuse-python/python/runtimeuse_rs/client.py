"""``RuntimeUseClient`` and ``RuntimeUseSession``: the upstream client's API on the Rust core."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

from . import _native
from ._dispatch import ARTIFACT, Request, late_answerer, start
from ._loop import LoopConn
from .transports import ConnectedWebSocketTransport, Transport, WebSocketTransport
from .types import (
    CommandExecutionResult,
    CommandInterface,
    ExecuteCommandsOptions,
    OnArtifactUploadRequestCallback,
    QueryOptions,
    QueryResult,
)

__all__ = ["RuntimeUseClient", "RuntimeUseSession"]

Track = Callable[[Request | None], None]


async def _loop_call(
    conn: LoopConn,
    kind: str,
    prompt: str | None,
    commands: Any,
    options: Any,
    *,
    default_timeout: float | None,
    track: Track,
    uploader: Any = None,
) -> Any:
    """One call on an event-loop connection."""
    # Messages of an earlier call that was itself cancelled (its task was) are not this call's;
    # artifact requests are the session's, and stay.
    conn.items = [i for i in conn.items if isinstance(i, tuple) and i[0] == ARTIFACT]
    start(conn.conn, kind, prompt, commands, options, default_timeout)
    request = Request(options, kind=kind, answers=conn.conn, flush=conn.send, uploader=uploader)
    track(request)
    try:
        conn.send()
        return await request.run(conn.next_items)
    finally:
        track(None)


_WAKE = object()


async def _transport_call(
    driver: Any,
    open_stream: Any,
    kind: str,
    prompt: str | None,
    commands: Any,
    options: Any,
    *,
    default_timeout: float | None,
    track: Track,
) -> Any:
    """One call over a user-supplied transport: its messages feed the Rust request layer."""
    start(driver, kind, prompt, commands, options, default_timeout)
    send_queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    stream = open_stream(send_queue)

    async def pump() -> None:
        try:
            async for message in stream:
                inbox.put_nowait(message)
        finally:
            inbox.put_nowait(None)

    def wake() -> None:
        inbox.put_nowait(_WAKE)

    reader = asyncio.create_task(pump())

    async def next_items() -> list[tuple[Any, ...]]:
        while True:
            sent, items, wait = driver.poll()
            for text in sent:
                send_queue.put_nowait(json.loads(text))
            if items:
                ready: list[tuple[Any, ...]] = items
                return ready
            try:
                async with asyncio.timeout(wait):
                    message = await inbox.get()
            except TimeoutError:
                continue
            if message is None:
                driver.closed()
            elif message is not _WAKE:
                driver.receive(json.dumps(message))

    request = Request(options, kind=kind, answers=driver, flush=wake)
    track(request)
    try:
        return await request.run(next_items)
    finally:
        track(None)
        # What the request layer still sends (an answer, a cancel) goes out before the close.
        for text in driver.poll()[0]:
            send_queue.put_nowait(json.loads(text))
        reader.cancel()
        try:
            await reader
        except (asyncio.CancelledError, Exception):
            pass
        await stream.aclose()


class RuntimeUseSession:
    """A persistent session: ``query`` and ``execute_commands`` in turn over one connection.

    Made by ``RuntimeUseClient.session()``; ended gracefully when its context exits (late
    artifact requests are answered by the last ``on_artifact_upload_request`` given).
    """

    def __init__(self, connected: Any, *, default_timeout: float | None = None, driver: Any = None) -> None:
        self._connected = connected
        self._driver = driver
        self._lock = asyncio.Lock()
        self._current: Request | None = None
        self._last_artifact_cb: OnArtifactUploadRequestCallback | None = None
        self._default_timeout = default_timeout
        self._end_session_timeout_s = 60.0

    def _track(self, request: Request | None) -> None:
        self._current = request

    def abort(self) -> None:
        """Cancels the request in flight (if any): it raises ``CancelledException`` once the
        runtime confirmed; the session stays usable."""
        if self._current is not None:
            self._current.abort()

    async def _call(self, kind: str, prompt: str | None, commands: Any, options: Any) -> Any:
        async with self._lock:
            if options.on_artifact_upload_request is not None:
                self._last_artifact_cb = options.on_artifact_upload_request
            if self._driver is not None:
                return await _transport_call(
                    self._driver,
                    self._connected.request,
                    kind,
                    prompt,
                    commands,
                    options,
                    default_timeout=self._default_timeout,
                    track=self._track,
                )
            # Late artifact requests of earlier calls may arrive during this one: the last
            # uploader answers them.
            return await _loop_call(
                self._connected._conn,
                kind,
                prompt,
                commands,
                options,
                default_timeout=self._default_timeout,
                track=self._track,
                uploader=options.on_artifact_upload_request or self._last_artifact_cb,
            )

    async def query(self, prompt: str, options: QueryOptions) -> QueryResult:
        """Runs a query on this session (as ``RuntimeUseClient.query``)."""
        result: QueryResult = await self._call("query", prompt, None, options)
        return result

    async def execute_commands(
        self, commands: list[CommandInterface], options: ExecuteCommandsOptions
    ) -> CommandExecutionResult:
        """Runs a command batch on this session (as ``RuntimeUseClient.execute_commands``)."""
        result: CommandExecutionResult = await self._call("commands", None, commands, options)
        return result

    async def _end_session(self) -> None:
        end = getattr(self._connected, "end_session", None)
        if end is None:
            return
        async with self._lock:
            await end(on_message=late_answerer(self._last_artifact_cb), timeout_s=self._end_session_timeout_s)


class RuntimeUseClient:
    """A client of the runtime at ``ws_url`` (or over ``transport``).

    ``query`` and ``execute_commands`` each open a connection, run one request and close;
    ``session()`` keeps one connection for several. The keyword-only arguments are this
    package's extensions: the Rust client's settings (see ``WebSocketTransport``) and
    ``timeout``, a default overall limit for every call (seconds; none by default).
    """

    def __init__(
        self,
        ws_url: str | None = None,
        transport: Transport | WebSocketTransport | None = None,
        *,
        headers: dict[str, str] | None = None,
        connect_timeout: float | None = None,
        idle_timeout: float | None = None,
        timeout: float | None = None,
        keepalive_interval: float | None = None,
        max_frame_size: int | None = None,
    ) -> None:
        self._transport: Any
        if transport is not None:
            self._transport = transport
        elif ws_url is not None:
            self._transport = WebSocketTransport(
                ws_url,
                headers=headers,
                connect_timeout=connect_timeout,
                idle_timeout=idle_timeout,
                keepalive_interval=keepalive_interval,
                max_frame_size=max_frame_size,
            )
        else:
            raise ValueError("Either ws_url or transport must be provided")
        self._timeout = timeout
        self._idle_timeout = idle_timeout
        self._max_frame_size = max_frame_size
        self._current: Request | None = None

    def _track(self, request: Request | None) -> None:
        self._current = request

    def abort(self) -> None:
        """Cancels the one-shot call in progress: it raises ``CancelledException`` once the
        runtime confirmed. For a session, use ``RuntimeUseSession.abort``."""
        if self._current is not None:
            self._current.abort()

    def _driver(self) -> Any:
        return _native.Driver(idle_timeout=self._idle_timeout, max_frame_size=self._max_frame_size)

    async def _one_shot(self, kind: str, prompt: str | None, commands: Any, options: Any) -> Any:
        if not isinstance(self._transport, WebSocketTransport):
            return await _transport_call(
                self._driver(),
                self._transport,
                kind,
                prompt,
                commands,
                options,
                default_timeout=self._timeout,
                track=self._track,
            )
        conn = await self._transport._connect()
        ok = False
        try:
            result = await _loop_call(
                conn, kind, prompt, commands, options, default_timeout=self._timeout, track=self._track
            )
            ok = True
            # Artifacts written at the very end still upload: the end-of-session handshake.
            if options.artifacts_dirs:
                await ConnectedWebSocketTransport(conn).end_session(
                    on_message=late_answerer(options.on_artifact_upload_request)
                )
            return result
        finally:
            await conn.close(ok)

    async def query(self, prompt: str, options: QueryOptions) -> QueryResult:
        """Sends ``prompt`` to the agent over a new connection and returns the result.

        Raises ``AgentRuntimeError`` when the runtime fails the query, ``CancelledException``
        after ``abort()``, ``TimeoutError`` subclasses for each limit, ``ConnectionError``
        subclasses when the connection fails (see ``runtimeuse_rs.exceptions``).
        """
        result: QueryResult = await self._one_shot("query", prompt, None, options)
        return result

    async def execute_commands(
        self, commands: list[CommandInterface], options: ExecuteCommandsOptions
    ) -> CommandExecutionResult:
        """Runs shell commands in the runtime without the agent, over a new connection."""
        result: CommandExecutionResult = await self._one_shot("commands", None, commands, options)
        return result

    @asynccontextmanager
    async def session(self) -> AsyncIterator[RuntimeUseSession]:
        """A persistent session (an async context manager): one connection for several calls,
        ended gracefully on exit."""
        if isinstance(self._transport, WebSocketTransport):
            connected = ConnectedWebSocketTransport(await self._transport._connect())
            session = RuntimeUseSession(connected, default_timeout=self._timeout)
            ok = False
            try:
                yield session
                ok = True
            finally:
                try:
                    await session._end_session()
                finally:
                    await connected._conn.close(ok)
            return
        connect = getattr(self._transport, "connect", None)
        if connect is None:
            raise TypeError(
                "The configured transport does not support persistent sessions: it needs a "
                "connect() method (PersistentTransport)."
            )
        async with connect() as connected:
            session = RuntimeUseSession(connected, default_timeout=self._timeout, driver=self._driver())
            try:
                yield session
            finally:
                await session._end_session()
