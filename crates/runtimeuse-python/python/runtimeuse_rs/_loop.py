"""A native connection driven by the running asyncio event loop: the loop watches the socket
and pumps it when readable (or writable, while writes wait), and when the session's next timer
is due; the caller takes the items of the frames read. A reconnection (a resumable session)
runs in a worker thread while the loop goes on. Everything else runs on the loop's thread."""

from __future__ import annotations

import asyncio
import math
from typing import Any, Callable

from . import _native
from ._dispatch import from_native


class LoopConn:
    """One connection on the running event loop."""

    def __init__(self, conn: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.conn = conn
        self.loop = loop
        self.fd = -1
        self.items: list[Any] = []
        self.waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = math.inf
        self.writing = False
        self.reading = False
        self.finished = False
        self.reconnecting: asyncio.Future[None] | None = None
        # An error of a pump run by the loop (not by a caller), for the waiting caller.
        self.error: BaseException | None = None
        self.pump()

    @classmethod
    async def connect(cls, url: str, settings: dict[str, Any]) -> "LoopConn":
        """Connects in a worker thread (the handshake blocks), then joins the loop."""
        return await cls._open(lambda: _native.Conn.connect(url, **settings))

    @classmethod
    async def take_over(cls, token: str, settings: dict[str, Any]) -> "LoopConn":
        """Takes over the session of a resume token (in a worker thread), then joins the loop."""
        return await cls._open(lambda: _native.Conn.connect("", token=token, **settings))

    @classmethod
    async def _open(cls, make: Callable[[], Any]) -> "LoopConn":
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(None, make)
        except _native.NativeError as err:
            raise from_native(err) from None
        return cls(conn, loop)

    def _watch(self, fd: int, reading: bool, writing: bool) -> None:
        if fd != self.fd:
            self._unwatch()
            self.fd = fd
        if fd < 0:
            return
        if reading != self.reading:
            self.reading = reading
            if reading:
                self.loop.add_reader(fd, self.pump)
            else:
                self.loop.remove_reader(fd)
        if writing != self.writing:
            self.writing = writing
            if writing:
                self.loop.add_writer(fd, self.pump)
            else:
                self.loop.remove_writer(fd)

    def _unwatch(self) -> None:
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.fd)
        if self.writing:
            self.writing = False
            self.loop.remove_writer(self.fd)

    def _apply(self, pumped: tuple[Any, ...]) -> bool:
        """What a native pump said; whether frames wait to be taken."""
        items, wait, (want_write, over, ready, more, reading), fd, due = pumped
        if items:
            self.items.extend(items)
        if over:
            self.finished = True
            self._detach()
        else:
            self._watch(fd, reading, want_write)
            at = self.loop.time() + wait
            if at < self.timer_at:
                if self.timer is not None:
                    self.timer.cancel()
                self.timer = self.loop.call_at(at, self._on_timer)
                self.timer_at = at
            if more:
                # Frames may wait in the WebSocket's buffer, which the loop cannot watch.
                self.loop.call_soon(self.pump)
            if due and self.reconnecting is None:
                self.reconnecting = asyncio.ensure_future(self._reconnect())
        waiter = self.waiter
        if (items or ready or over) and waiter is not None and not waiter.done():
            waiter.set_result(None)
        return bool(ready)

    async def _reconnect(self) -> None:
        try:
            await self.loop.run_in_executor(None, self.conn.reconnect)
        except Exception as exc:
            self._failed(exc)
            return
        finally:
            self.reconnecting = None
        self.pump()

    def _failed(self, exc: BaseException) -> None:
        self.error = exc
        self.finished = True
        self._detach()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def pump(self) -> None:
        """Moves what is ready, both ways, and runs the timers. Run by the loop: an error ends
        the connection and goes to the waiting caller rather than to the loop's handler."""
        if self.finished:
            return
        try:
            # A caller waits with nothing in hand: give it the frames' items at once (else
            # frames are only read ahead, for the caller to take).
            waiter = self.waiter
            if waiter is not None and not waiter.done() and not self.items:
                pumped = self.conn.take()
            else:
                pumped = self.conn.pump()
        except Exception as exc:
            self._failed(exc)
            return
        self._apply(pumped)

    send = pump

    def _on_timer(self) -> None:
        self.timer = None
        self.timer_at = math.inf
        self.pump()

    def _detach(self) -> None:
        self._unwatch()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            self.timer_at = math.inf

    async def next_items(self) -> list[Any]:
        """The items of the frames read so far, waiting for one; empty once the connection
        is over."""
        while not self.items:
            if self.error is not None:
                raise self.error
            if self.finished:
                return []
            if self._apply(self.conn.take()) or self.items:
                continue
            if self.finished:
                continue
            waiter = self.waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                self.waiter = None
        items = self.items
        self.items = []
        return items

    def end(self) -> None:
        """Starts the graceful end; its end comes as an item."""
        if not self.finished:
            self._apply(self.conn.end())

    async def close(self, ok: bool) -> None:
        """Closes the connection (the close handshake runs in a worker thread)."""
        self.finished = True
        self._detach()
        if self.reconnecting is not None:
            try:
                await self.reconnecting
            except Exception:
                pass
        await self.loop.run_in_executor(None, self.conn.close, ok)
