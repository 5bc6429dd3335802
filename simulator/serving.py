"""A loopback asyncio server whose connections are tracked, so ``close()`` can end them.

Shared by the control channel (:mod:`simulator.control`) and the Modbus TCP gateway
(:mod:`simulator.tcp`): a subclass implements :meth:`LoopbackServer._handle` for one
connection; the base counts it, swallows the client going away, and closes the writer.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["LoopbackServer"]


class LoopbackServer:
    """``start()`` listens on ``host:port`` (port 0: any free one; :attr:`port` tells which);
    ``close()`` stops listening, cancels every connection and waits (bounded). Both are safe
    to call twice."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, limit: int = 2**16) -> None:
        self.host = host
        self.requested_port = port
        self.port = 0
        self._limit = limit
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._serve, self.host, self.requested_port, limit=self._limit
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._handle(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass  # the client went away, or stayed idle past its bound
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
