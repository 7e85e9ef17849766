"""``RuntimeUseClient`` and ``RuntimeUseSession``: the upstream client's API on the Rust core."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from typing import Any, AsyncGenerator, AsyncIterator, Callable

from . import _native
from ._dispatch import ARTIFACT, ENDED, FAILED, Request, answer_late, from_native, late_answerer, logger, start
from .exceptions import ProtocolError
from ._loop import LoopConn
from .transports import Transport, WebSocketTransport
from .transports.transport import EndSessionMessageHandler
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
    follow: bool = False,
) -> Any:
    """One call on an event-loop connection (``follow``: the request in flight of a session
    taken over, not started here)."""
    # Messages of an earlier call that was itself cancelled (its task was) are not this call's;
    # artifact requests are the session's, and stay.
    conn.items = [i for i in conn.items if isinstance(i, tuple) and i[0] == ARTIFACT]
    if not follow:
        start(conn.conn, kind, prompt, commands, options, default_timeout)
    request = Request(options, kind=kind, answers=conn.conn, flush=conn.send, uploader=uploader)
    track(request)
    try:
        conn.send()
        return await request.run(conn.next_items)
    finally:
        track(None)


async def _transport_call(
    driver: Any,
    stream: AsyncGenerator[dict[str, Any], None],
    send_queue: asyncio.Queue[dict[str, Any]],
    kind: str,
    prompt: str | None,
    commands: Any,
    options: Any,
    *,
    default_timeout: float | None,
    track: Track,
) -> Any:
    """One call over a user-supplied transport: its messages feed the Rust request layer.

    As the upstream does, one message is pulled at a time and handled completely (callbacks
    awaited, answers and cancels queued) before the next is pulled; the generator is closed
    at the terminal. A timer of the request layer (the idle or overall limit) never cancels
    a pull in progress: the pull waits for the next one."""
    start(driver, kind, prompt, commands, options, default_timeout)
    wake = asyncio.Event()
    pull: asyncio.Future[dict[str, Any]] | None = None
    ended = False

    async def next_items() -> list[Any]:
        nonlocal pull, ended
        while True:
            wake.clear()
            sent, items, wait = driver.poll()
            for text in sent:
                send_queue.put_nowait(json.loads(text))
            if items:
                ready: list[Any] = items
                return ready
            if ended:
                return []
            if pull is None:
                pull = asyncio.ensure_future(anext(stream))
            woken: asyncio.Future[Any] = asyncio.ensure_future(wake.wait())
            waiting: set[asyncio.Future[Any]] = {pull, woken}
            try:
                await asyncio.wait(waiting, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()
            if not pull.done():
                continue
            done, pull = pull, None
            try:
                message = done.result()
            except StopAsyncIteration:
                ended = True
                driver.closed()
                continue
            driver.receive(json.dumps(message))

    request = Request(options, kind=kind, answers=driver, flush=wake.set)
    track(request)
    try:
        return await request.run(next_items)
    finally:
        track(None)
        # What the request layer still sends (an answer, a cancel) goes out before the close.
        for text in driver.poll()[0]:
            send_queue.put_nowait(json.loads(text))
        if pull is not None:
            pull.cancel()
            try:
                await pull
            except (asyncio.CancelledError, StopAsyncIteration, Exception):
                pass
        await stream.aclose()


class _NativeConnected:
    """A session's connection when the transport is ``WebSocketTransport``: the Rust client's
    own (``LoopConn``), ended gracefully as the upstream's connected transport is."""

    def __init__(self, conn: LoopConn) -> None:
        self._conn = conn

    async def end_session(
        self,
        on_message: EndSessionMessageHandler | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        """Ends the session gracefully (``end_session_message``, then the runtime's
        confirmation, at most ``timeout_s``); each late artifact upload request goes to
        ``on_message`` and its answer is sent back."""
        conn = self._conn
        conn.end()
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    items = await conn.next_items()
                    if not items:
                        return
                    for item in items:
                        if not isinstance(item, tuple):
                            continue  # a message of a request that was cancelled
                        if item[0] == ARTIFACT:
                            await answer_late(conn.conn, item, on_message)
                            conn.send()
                        elif item[0] in (ENDED, FAILED):
                            return
        except TimeoutError:
            logger.warning("the runtime did not confirm the end of the session in time")


class RuntimeUseSession:
    """A persistent session: ``query`` and ``execute_commands`` in turn over one connection.

    Made by ``RuntimeUseClient.session()``; ended gracefully when its context exits (late
    artifact requests are answered by the last ``on_artifact_upload_request`` given).
    """

    def __init__(self, connected: Any, *, default_timeout: float | None = None, driver: Callable[[], Any] | None = None) -> None:
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
                send_queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
                # Each request of a user's transport is a stream of its own: a fresh request
                # layer for each, so one that ended without its terminal (its stream closed
                # after a cancel) leaves nothing behind for the next.
                return await _transport_call(
                    self._driver(),
                    self._connected.request(send_queue),
                    send_queue,
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

    def resume_token(self) -> str:
        """A resume token of this session (JSON text, the Rust clients' format): with it,
        ``RuntimeUseClient.resume`` (here or in another process, or a Rust client) takes the
        session over, and the request in flight goes on there. Called from a callback, it
        covers exactly the messages handed out until then. Needs ``resume=True`` and a runtime
        that granted resumption; **the token is a secret** (whoever holds it can take the
        session over). Taking one pins the session's replay at its count: take a new one each
        time you store one."""
        if self._driver is not None:
            raise ProtocolError("resume tokens need the client's own WebSocket transport")
        try:
            token: str = self._connected._conn.conn.resume_token()
        except _native.NativeError as err:
            raise from_native(err) from None
        return token

    async def follow(self, options: QueryOptions | ExecuteCommandsOptions) -> Any:
        """The result of the request that was in flight when this session's token was taken
        (a session of ``RuntimeUseClient.resume``): ``options``' callbacks get its messages
        after the token's (its limits are the request's own, as the token carries them).
        Returns a ``QueryResult`` or a ``CommandExecutionResult``, as the request was."""
        async with self._lock:
            conn = self._connected._conn if self._driver is None else None
            if conn is None or not conn.conn.following():
                raise ValueError("no request was in flight when the session's token was taken")
            if options.on_artifact_upload_request is not None:
                self._last_artifact_cb = options.on_artifact_upload_request
            return await _loop_call(
                conn,
                "query" if isinstance(options, QueryOptions) else "commands",
                None,
                None,
                options,
                default_timeout=None,
                track=self._track,
                uploader=options.on_artifact_upload_request or self._last_artifact_cb,
                follow=True,
            )

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
        resume: bool = False,
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
                resume=resume,
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
            send_queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            return await _transport_call(
                self._driver(),
                self._transport(send_queue=send_queue),
                send_queue,
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
                await _NativeConnected(conn).end_session(
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
    async def resume(self, token: str) -> AsyncIterator[RuntimeUseSession]:
        """Takes over the session of a resume token (``RuntimeUseSession.resume_token``, from
        this process or another, or a Rust client's) and yields it as a session (an async
        context manager, ended gracefully on exit): ``follow`` gives the request that was in
        flight, and more calls may follow. The token's URL is used with this client's other
        settings. One attempt: raises ``RuntimeConnectionError`` when the runtime refuses
        (the session is gone, or past its replay) or cannot be reached."""
        if not isinstance(self._transport, WebSocketTransport):
            raise TypeError("resume needs the client's own WebSocket transport (ws_url=...)")
        conn = await LoopConn.take_over(token, self._transport._settings)
        async with self._native_session(conn) as session:
            yield session

    @asynccontextmanager
    async def _native_session(self, conn: LoopConn) -> AsyncIterator[RuntimeUseSession]:
        connected = _NativeConnected(conn)
        session = RuntimeUseSession(connected, default_timeout=self._timeout)
        ok = False
        try:
            yield session
            ok = True
        finally:
            try:
                await session._end_session()
            finally:
                await conn.close(ok)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[RuntimeUseSession]:
        """A persistent session (an async context manager): one connection for several calls,
        ended gracefully on exit."""
        if isinstance(self._transport, WebSocketTransport):
            async with self._native_session(await self._transport._connect()) as session:
                yield session
            return
        connect = getattr(self._transport, "connect", None)
        if connect is None:
            raise TypeError(
                "The configured transport does not support persistent sessions: it needs a "
                "connect() method (PersistentTransport)."
            )
        async with connect() as connected:
            session = RuntimeUseSession(connected, default_timeout=self._timeout, driver=self._driver)
            try:
                yield session
            finally:
                await session._end_session()
