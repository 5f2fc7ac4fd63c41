"""A loopback TCP proxy that can take a service down: every open connection is cut and new ones are
refused until it comes back on the same port, like a real network outage (stopping a server alone leaves
keep-alive connections served). It can also hold every client->server chunk for a while (a network round
trip) and counts the connections open at once.

It runs on an event loop in a thread of its own: the loop owns the listening socket, so `down()` really
closes it (no thread is left blocked in accept() on it, which on Linux would keep it listening)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")


class TcpProxy:
    """`TcpProxy(port)` listens on 127.0.0.1 at once (`url`, `port`) and forwards to `target_host:port`.
    `down()` / `up()`: an outage and its end; `close()` (or leaving a `with` block) stops it for good.
    `delay_s` holds every client->server chunk that long; `open` / `peak`: connections open now / at most."""

    def __init__(self, target_port: int, delay_s: float = 0.0, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.delay_s = delay_s
        self.port = self.open = self.peak = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._thread.start()
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        """Listen (again, on the same port after `down()`)."""
        self._server = self._call(asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True))
        self.port = self._server.sockets[0].getsockname()[1]

    def down(self) -> None:
        """Refuse new connections and cut every open one."""
        self._call(self._down())

    def close(self) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _down(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for w in self._writers:
            w.close()
        self._writers = set()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            await asyncio.gather(self._pump(reader, up_writer, self.delay_s), self._pump(up_reader, writer, 0.0))
        finally:
            self.open -= 1

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay: float) -> None:
        try:
            while data := await src.read(65536):
                if delay:
                    await asyncio.sleep(delay)
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            dst.close()
