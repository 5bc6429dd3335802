"""Byte streams under a Modbus line: a serial port (RTU on RS-485, or a pty) and a TCP
connection to a gateway. A transport only moves bytes: it opens, writes, hands received
bytes to ``on_data`` and reports a lost stream to ``on_lost``. Framing, timing, retries
and late replies are the line's business (:mod:`drivers.modbus.line`).

Errors: :class:`~drivers.errors.BusError` when the port or the gateway cannot be opened
or written, :class:`~drivers.errors.BackendUnavailable` when pyserial is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import Any

from drivers.errors import BackendUnavailable, BusError

__all__ = ["SerialTransport", "TcpTransport", "Transport"]

#: Consecutive empty reads of a "readable" serial port after which it counts as gone.
_EMPTY_READS_LIMIT = 50


class Transport:
    """A byte stream: open, write, close; received bytes go to ``on_data``."""

    def __init__(self, on_data: Callable[[bytes], None], on_lost: Callable[[Exception], None]):
        self._on_data = on_data
        self._on_lost = on_lost

    async def open(self) -> None:
        raise NotImplementedError

    async def write(self, data: bytes) -> None:
        raise NotImplementedError

    def try_write(self, data: bytes) -> int:
        """Write what can be written now without waiting; return the count of bytes
        written (the caller awaits :meth:`write` for the rest). Raises like ``write``.
        The default writes nothing, so a transport need only implement ``write``."""
        return 0

    def flush_input(self) -> None:
        """Drop what the OS holds in its receive buffer."""

    def close(self) -> None:
        raise NotImplementedError


class SerialTransport(Transport):
    """The serial port through pyserial (configuration, exclusive lock), then raw
    non-blocking ``os.read``/``os.write`` on its descriptor from the event loop."""

    def __init__(
        self,
        on_data: Callable[[bytes], None],
        on_lost: Callable[[Exception], None],
        *,
        port: str,
        baudrate: int,
        bytesize: int,
        parity: str,
        stopbits: int,
    ) -> None:
        super().__init__(on_data, on_lost)
        self._params = (port, baudrate, bytesize, parity, stopbits)
        self._serial: Any = None
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._empty_reads = 0

    async def open(self) -> None:
        try:
            import serial
        except ImportError as exc:  # pragma: no cover - pyserial is a dependency
            raise BackendUnavailable("pyserial is not installed") from exc
        port, baudrate, bytesize, parity, stopbits = self._params
        try:
            self._serial = serial.Serial(
                port=port,
                baudrate=baudrate,
                bytesize=bytesize,
                parity=parity,
                stopbits=stopbits,
                timeout=0,
                write_timeout=0,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise BusError(f"cannot open {port}: {exc}") from exc
        self._fd = self._serial.fileno()
        os.set_blocking(self._fd, False)
        self._loop = asyncio.get_running_loop()
        self._serial.reset_input_buffer()
        self._loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._on_lost(exc)
            return
        if data:
            self._empty_reads = 0
            self._on_data(data)
            return
        # pyserial leaves VMIN = VTIME = 0, so a read with nothing to read returns 0
        # bytes instead of EAGAIN: that happens when the input was flushed between the
        # readiness report and the read. Only a port that keeps reporting readiness with
        # nothing to read (hung up, unplugged) is gone.
        self._empty_reads += 1
        if self._empty_reads > _EMPTY_READS_LIMIT:
            self._on_lost(EOFError("serial port closed"))

    def try_write(self, data: bytes) -> int:
        try:
            return os.write(self._fd, data)
        except (BlockingIOError, InterruptedError):
            return 0

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._fd, view)
            except (BlockingIOError, InterruptedError):
                n = 0
            view = view[n:]
            if view:
                await self._writable()

    async def _writable(self) -> None:
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        self._loop.add_writer(self._fd, fut.set_result, None)
        try:
            await fut
        finally:
            self._loop.remove_writer(self._fd)

    @property
    def fd(self) -> int:
        """The port's descriptor (-1 once closed)."""
        return self._fd

    def pause_reading(self) -> None:
        """Stop watching the port: another reader (the line's quiet run) owns the input."""
        if self._loop is not None and self._fd >= 0:
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        """Watch the port again after :meth:`pause_reading`."""
        if self._loop is not None and self._fd >= 0:
            self._empty_reads = 0
            self._loop.add_reader(self._fd, self._readable)

    def flush_input(self) -> None:
        if self._serial is not None:
            with contextlib.suppress(Exception):
                self._serial.reset_input_buffer()

    def close(self) -> None:
        if self._serial is None:
            return
        if self._loop is not None and self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        with contextlib.suppress(Exception):
            self._serial.close()
        self._serial = None
        self._fd = -1


class _StreamProtocol(asyncio.Protocol):
    def __init__(self, owner: TcpTransport) -> None:
        self._owner = owner

    def data_received(self, data: bytes) -> None:
        self._owner._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._lost(exc or EOFError("gateway closed the connection"))


class TcpTransport(Transport):
    """A TCP connection to an RS-485 gateway."""

    def __init__(
        self,
        on_data: Callable[[bytes], None],
        on_lost: Callable[[Exception], None],
        *,
        host: str,
        port: int,
        connect_timeout: float,
    ) -> None:
        super().__init__(on_data, on_lost)
        self._host = host
        self._port = port
        self._connect_timeout = connect_timeout
        self._transport: asyncio.Transport | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                transport, _ = await loop.create_connection(
                    lambda: _StreamProtocol(self), self._host, self._port
                )
        except (OSError, TimeoutError) as exc:
            raise BusError(f"cannot connect to {self._host}:{self._port}: {exc}") from exc
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def _lost(self, exc: Exception) -> None:
        if self._transport is not None:
            self._transport = None
            self._on_lost(exc)

    def try_write(self, data: bytes) -> int:
        if self._transport is None or self._transport.is_closing():
            raise BusError(f"connection to {self._host}:{self._port} is gone")
        self._transport.write(data)  # asyncio buffers what the socket does not take
        return len(data)

    async def write(self, data: bytes) -> None:
        self.try_write(data)

    def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
