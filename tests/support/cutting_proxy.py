"""A loopback TCP proxy to Redis that cuts a client's connection at a chosen byte: before
forwarding a chunk (Redis never saw it) or after (Redis applied it, the answer is lost)."""

from __future__ import annotations

import asyncio
import contextlib


class CuttingProxy:
    """Loopback TCP proxy to Redis that cuts the client's connection when it sends
    ``marker``: ``before`` drops that chunk, else it is forwarded and the reply dropped.
    ``times`` cuts happen (then it forwards faithfully)."""

    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        self.marker = b""
        self.also = b""
        self.before = True
        self.times = 0
        self.cuts = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task

    def cut(self, marker: bytes, *, before: bool, times: int = 1, also: bytes = b"") -> None:
        """Cut when a chunk holds ``marker`` (and ``also``, when given)."""
        self.marker, self.before, self.times, self.also = marker, before, times, also

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.redis_port)
        cut = asyncio.Event()
        answered = asyncio.Event()

        async def upstream() -> None:
            while data := await reader.read(65536):
                if self.times > 0 and self.marker and self.marker in data \
                        and self.also in data:
                    self.times -= 1
                    self.cuts += 1
                    cut.set()  # from now on nothing goes back to the client
                    if not self.before:
                        up_writer.write(data)
                        await up_writer.drain()
                        # Redis applied it (it answered) before the client hears of the cut.
                        await asyncio.wait_for(answered.wait(), 5)
                    return
                up_writer.write(data)
                await up_writer.drain()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                if cut.is_set():
                    answered.set()
                    return
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        self._tasks.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
                self._tasks.discard(task)
            for w in (writer, up_writer):
                w.close()
