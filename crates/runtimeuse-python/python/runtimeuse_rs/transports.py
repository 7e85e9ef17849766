"""Transports: the upstream protocols for user-supplied ones, and ``WebSocketTransport``, the
default, which the Rust client drives itself."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncContextManager, AsyncGenerator, Awaitable, Callable, Protocol

from ._dispatch import ARTIFACT, ENDED, FAILED, answer_late, logger

__all__ = [
    "ConnectedTransport",
    "ConnectedWebSocketTransport",
    "PersistentTransport",
    "Transport",
    "WebSocketTransport",
]

EndSessionMessageHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]


class Transport(Protocol):
    """A one-shot transport: called with a send queue, it opens a connection, yields each
    message of the runtime as a dict, sends what the queue gets, and closes when the generator
    is closed."""

    def __call__(self, send_queue: asyncio.Queue[dict[str, Any]]) -> AsyncGenerator[dict[str, Any], None]: ...


class ConnectedTransport(Protocol):
    """An open connection for several requests in turn: ``request`` runs one (as
    ``Transport``, without closing), ``end_session`` ends the session gracefully, ``close``
    closes."""

    def request(self, send_queue: asyncio.Queue[dict[str, Any]]) -> AsyncGenerator[dict[str, Any], None]: ...

    async def end_session(
        self,
        on_message: EndSessionMessageHandler | None = None,
        timeout_s: float = 60.0,
    ) -> None: ...

    async def close(self) -> None: ...


class PersistentTransport(Protocol):
    """A transport that can open a persistent connection: ``connect()`` is an async context
    manager yielding a ``ConnectedTransport``."""

    def connect(self) -> AsyncContextManager[ConnectedTransport]: ...


_DIRECT_USE = (
    "runtimeuse_rs drives WebSocket connections in Rust and does not hand out their messages: "
    "pass the transport to RuntimeUseClient (or give RuntimeUseClient the URL)"
)


def settings(
    headers: dict[str, str] | None,
    connect_timeout: float | None,
    idle_timeout: float | None,
    keepalive_interval: float | None,
    max_frame_size: int | None,
) -> dict[str, Any]:
    """The Rust client's settings, as the native connection takes them."""
    return {
        "headers": list((headers or {}).items()),
        "connect_timeout": connect_timeout,
        "idle_timeout": idle_timeout,
        "keepalive_interval": keepalive_interval,
        "max_frame_size": max_frame_size,
    }


class WebSocketTransport:
    """The runtime at ``ws_url``, over the Rust client's WebSocket connection.

    The keyword arguments are the Rust client's settings (this package's extension): extra
    handshake ``headers``; ``connect_timeout`` (seconds, default 30); ``idle_timeout``, the
    default limit of silence for each request (60 s; ``math.inf``: none);
    ``keepalive_interval`` between pings when nothing arrives (20 s; ``0``: no pings);
    ``max_frame_size`` in bytes (64 MiB).
    """

    def __init__(
        self,
        ws_url: str,
        *,
        headers: dict[str, str] | None = None,
        connect_timeout: float | None = None,
        idle_timeout: float | None = None,
        keepalive_interval: float | None = None,
        max_frame_size: int | None = None,
    ) -> None:
        self.ws_url = ws_url
        self._settings = settings(headers, connect_timeout, idle_timeout, keepalive_interval, max_frame_size)

    async def _connect(self) -> Any:
        from ._loop import LoopConn

        return await LoopConn.connect(self.ws_url, self._settings)

    def __call__(self, send_queue: asyncio.Queue[dict[str, Any]]) -> AsyncGenerator[dict[str, Any], None]:
        raise TypeError(_DIRECT_USE)

    def connect(self) -> AsyncContextManager[ConnectedTransport]:
        raise TypeError(_DIRECT_USE)


class ConnectedWebSocketTransport:
    """An open connection of ``WebSocketTransport``: what a ``RuntimeUseSession`` of the
    default transport runs on. Its requests go through the session; ``close`` closes it."""

    def __init__(self, ws: Any) -> None:
        # The upstream's argument name; here it is this package's own connection.
        self._conn = ws

    def request(self, send_queue: asyncio.Queue[dict[str, Any]]) -> AsyncGenerator[dict[str, Any], None]:
        raise TypeError(_DIRECT_USE)

    async def end_session(
        self,
        on_message: EndSessionMessageHandler | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        """Ends the session gracefully (``end_session_message``, then the runtime's
        confirmation, at most ``timeout_s``); each late artifact upload request goes to
        ``on_message`` as a message dict, and its answer (an
        ``artifact_upload_response_message`` dict, or ``None`` to decline) is sent back."""
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

    async def close(self) -> None:
        """Closes the connection."""
        await self._conn.close(True)
