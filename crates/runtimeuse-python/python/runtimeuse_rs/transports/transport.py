"""The transport protocols: what a user-supplied transport provides (the upstream's)."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncContextManager, AsyncGenerator, Awaitable, Callable, Protocol

__all__ = ["ConnectedTransport", "EndSessionMessageHandler", "PersistentTransport", "Transport"]

EndSessionMessageHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]
"""Called with each message that arrives while a session ends; what it returns (a message
dict) is sent back, ``None`` sends nothing."""


class Transport(Protocol):
    """A one-shot transport: called with ``send_queue=``, it opens a connection, yields each
    message of the runtime as a dict, sends what the queue gets, and closes when the generator
    is closed. The client pulls one message at a time and handles it completely (callbacks
    awaited, answers queued) before it pulls the next."""

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
