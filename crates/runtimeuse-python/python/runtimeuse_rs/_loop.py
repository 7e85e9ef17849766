"""A native connection driven by the running asyncio event loop: the loop watches the socket
and pumps it when readable (or writable, while writes wait), and when the session's next timer
is due. Everything runs on the loop's thread."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from . import _native
from ._dispatch import from_native

# Items waiting for the caller beyond which the loop stops reading the socket (the runtime
# then waits, through TCP's flow control): what bounds the client's memory.
_BACKLOG = 4096


class LoopConn:
    """One connection on the running event loop."""

    def __init__(self, conn: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.conn = conn
        self.loop = loop
        self.fd = conn.fileno()
        self.items: list[Any] = []
        self.waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = math.inf
        self.writing = False
        self.finished = False
        self.reading = True
        # An error of a pump run by the loop (not by a caller), for the waiting caller.
        self.error: BaseException | None = None
        loop.add_reader(self.fd, self.pump)

    @classmethod
    async def connect(cls, url: str, settings: dict[str, Any]) -> "LoopConn":
        """Connects in a worker thread (the handshake blocks), then joins the loop."""
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(None, lambda: _native.Conn.connect(url, **settings))
        except _native.NativeError as err:
            raise from_native(err) from None
        return cls(conn, loop)

    def _apply(self, pumped: tuple[list[Any], float, bool, bool, bool]) -> None:
        items, wait, want_write, finished, more = pumped
        if items:
            if self.items:
                self.items.extend(items)
            else:
                self.items = items
        if finished:
            self.finished = True
            self._detach()
        else:
            at = self.loop.time() + wait
            if at < self.timer_at:
                if self.timer is not None:
                    self.timer.cancel()
                self.timer = self.loop.call_at(at, self._on_timer)
                self.timer_at = at
            if want_write != self.writing:
                self.writing = want_write
                if want_write:
                    self.loop.add_writer(self.fd, self.pump)
                else:
                    self.loop.remove_writer(self.fd)
            if self.reading and len(self.items) >= _BACKLOG:
                self.reading = False
                self.loop.remove_reader(self.fd)
            elif more and self.reading:
                # Frames may wait in the WebSocket's buffer, which the loop cannot watch.
                self.loop.call_soon(self.pump)
        waiter = self.waiter
        if (items or finished) and waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pump(self) -> None:
        """Moves what is ready, both ways. Run by the loop: an error ends the connection and
        goes to the waiting caller rather than to the loop's exception handler."""
        if self.finished:
            return
        try:
            # Backlogged: timers and writes only; the socket is read again once the caller
            # took the items.
            pumped = self.conn.pump() if self.reading else self.conn.send()
        except Exception as exc:
            self.error = exc
            self.finished = True
            self._detach()
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)
            return
        self._apply(pumped)

    def send(self) -> None:
        """Sends what waits to be sent (a request, an answer, a cancel), without reading."""
        if not self.finished:
            self._apply(self.conn.send())

    def _on_timer(self) -> None:
        self.timer = None
        self.timer_at = math.inf
        self.pump()

    def _detach(self) -> None:
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.fd)
        if self.writing:
            self.writing = False
            self.loop.remove_writer(self.fd)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            self.timer_at = math.inf

    async def next_items(self) -> list[Any]:
        """The items so far, waiting for one; empty once the connection is over."""
        while not self.items:
            if self.error is not None:
                raise self.error
            if self.finished:
                return []
            waiter = self.waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                self.waiter = None
        items = self.items
        self.items = []
        if not self.reading and not self.finished:
            self.reading = True
            self.loop.add_reader(self.fd, self.pump)
            self.pump()
        return items

    def end(self) -> None:
        """Starts the graceful end; its end comes as an item."""
        if not self.finished:
            self._apply(self.conn.end())

    async def close(self, ok: bool) -> None:
        """Closes the connection (the close handshake runs in a worker thread)."""
        self.finished = True
        self._detach()
        await self.loop.run_in_executor(None, self.conn.close, ok)
