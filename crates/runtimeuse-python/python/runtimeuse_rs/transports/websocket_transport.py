"""``WebSocketTransport``, the default transport.

Given to ``RuntimeUseClient`` (or as its ``ws_url``), its connection is the Rust client's: the
request layer, timers, keepalive and resumption run in Rust. Used directly, as a ``Transport``
(``transport(send_queue=...)``) or through ``connect()``, it is what the upstream's is: a plain
stream of the runtime's messages as dicts over the ``websockets`` library, for programs that
run the protocol themselves.
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncGenerator, AsyncIterator

import websockets

from .transport import EndSessionMessageHandler

__all__ = ["ConnectedWebSocketTransport", "WebSocketTransport"]

_logger = logging.getLogger(__name__)


def settings(
    headers: dict[str, str] | None,
    connect_timeout: float | None,
    idle_timeout: float | None,
    keepalive_interval: float | None,
    max_frame_size: int | None,
    resume: bool = False,
) -> dict[str, Any]:
    """The Rust client's settings, as the native connection takes them (a frame limit below
    1 KiB, where no message fits, is refused here)."""
    if max_frame_size is not None and max_frame_size < 1024:
        raise ValueError(f"max_frame_size must be at least 1024 bytes (no message fits in {max_frame_size})")
    return {
        "headers": list((headers or {}).items()),
        "connect_timeout": connect_timeout,
        "idle_timeout": idle_timeout,
        "keepalive_interval": keepalive_interval,
        "max_frame_size": max_frame_size,
        "resume": resume,
    }


class ConnectedWebSocketTransport:
    """An open WebSocket (a ``websockets`` client connection) for requests in turn, as a plain
    message stream: ``request`` yields the runtime's messages and sends what its queue gets;
    ``end_session`` ends the session gracefully; ``close`` closes."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws

    async def request(self, send_queue: asyncio.Queue[dict[str, Any]]) -> AsyncGenerator[dict[str, Any], None]:
        """Yields each message of the runtime (a text that is not JSON as ``{"raw": text}``)
        while what ``send_queue`` gets is sent; ends when the socket closes. The socket stays
        open when the caller closes the generator."""
        sending = asyncio.create_task(self._send_all(send_queue))
        try:
            async for text in self._ws:
                try:
                    message = json.loads(text)
                except ValueError:
                    message = {"raw": text}
                yield message
        except websockets.ConnectionClosed:
            return
        finally:
            sending.cancel()
            try:
                await sending
            except asyncio.CancelledError:
                pass

    async def _send_all(self, send_queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            message = await send_queue.get()
            try:
                await self._ws.send(json.dumps(message))
            finally:
                send_queue.task_done()

    async def end_session(
        self,
        on_message: EndSessionMessageHandler | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        """Sends ``end_session_message`` and reads until the runtime confirms (at most
        ``timeout_s``): each message meanwhile (a late artifact upload request) goes to
        ``on_message``, and what it returns is sent back."""
        try:
            await self._ws.send(json.dumps({"message_type": "end_session_message"}))
            async with asyncio.timeout(timeout_s):
                async for text in self._ws:
                    try:
                        message = json.loads(text)
                    except ValueError:
                        continue
                    if message.get("message_type") == "end_session_confirm_message":
                        return
                    if on_message is None:
                        continue
                    try:
                        answer = await on_message(message)
                    except Exception:
                        _logger.exception("the end-of-session message handler failed")
                        continue
                    if answer is not None:
                        await self._ws.send(json.dumps(answer))
        except TimeoutError:
            _logger.warning("the runtime did not confirm the end of the session in %ss", timeout_s)
        except websockets.ConnectionClosed:
            return

    async def close(self) -> None:
        """Closes the socket (without ending the session: call ``end_session`` first)."""
        await self._ws.close()


class WebSocketTransport:
    """The runtime at ``ws_url``.

    The keyword arguments are the Rust client's settings (this package's extension): extra
    handshake ``headers``; ``connect_timeout`` (seconds, default 30); ``idle_timeout``, the
    default limit of silence for each request (60 s; ``math.inf``: none);
    ``keepalive_interval`` between pings when nothing arrives (20 s; ``0``: no pings);
    ``max_frame_size`` in bytes (64 MiB); ``resume``: resumable sessions (a connection lost
    within the runtime's grace is reconnected and resumed, unseen).
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
        resume: bool = False,
    ) -> None:
        self.ws_url = ws_url
        self._headers = headers
        self._connect_timeout = connect_timeout
        self._max_frame_size = max_frame_size
        self._settings = settings(
            headers, connect_timeout, idle_timeout, keepalive_interval, max_frame_size, resume
        )

    async def _connect(self) -> Any:
        """The Rust client's connection, on the running event loop."""
        from .._loop import LoopConn

        return await LoopConn.connect(self.ws_url, self._settings)

    @asynccontextmanager
    async def _plain(self) -> AsyncIterator[Any]:
        limit = self._connect_timeout if self._connect_timeout is not None else 30.0
        async with websockets.connect(
            self.ws_url,
            additional_headers=self._headers,
            open_timeout=limit,
            max_size=self._max_frame_size if self._max_frame_size is not None else 64 << 20,
        ) as ws:
            yield ws

    async def __call__(self, send_queue: asyncio.Queue[dict[str, Any]]) -> AsyncGenerator[dict[str, Any], None]:
        """One request's messages over a new connection, closed with the generator."""
        async with self._plain() as ws:
            messages = ConnectedWebSocketTransport(ws).request(send_queue)
            try:
                async for message in messages:
                    yield message
            finally:
                await messages.aclose()

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[ConnectedWebSocketTransport]:
        """A persistent connection (closed on exit; ``end_session`` first for a graceful end)."""
        async with self._plain() as ws:
            yield ConnectedWebSocketTransport(ws)
