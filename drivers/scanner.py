"""The lane's barcode/QR scanner, in serial mode (USB CDC-ACM or RS-232, via pyserial).

A scanned code is a *pickup code*: a secret that opens a compartment. It is handed to the
caller and to nobody else: never logged, never in a ``repr``. Logs carry its length and a
fingerprint (HMAC-SHA256 under a key drawn at random per scanner instance, first 12 hex
digits): enough to correlate "the same code scanned twice" within a run, useless for
recovering a 6-digit code by brute force, which a bare hash prefix would not be.

Field notes
===========
- Scanners in serial mode send the code followed by a suffix, usually CR (the factory
  default of most Honeywell, Zebra and Datalogic models), sometimes CRLF or LF.
  ``terminator="auto"`` (the default) ends a line at any CR or LF and ignores empty lines,
  so all three work; pass ``terminator=b"\\r\\n"`` (or ``b"\\t"`` …) to insist on one.
- Scanners send nothing else unless configured to (no prefix, no AIM symbology id); a
  line with control characters or invalid UTF-8 is rejected as ``not_text``, one longer
  than ``max_length`` as ``line_too_long`` (reported once, the rest of that line up to the
  next terminator is discarded). A rejection is an event, never an exception.
- A USB scanner that is unplugged makes reads fail (``EIO``) and its device node vanish;
  it reappears, often under the same udev symlink (``deploy/`` names it
  ``/dev/ttyScanner``). The scanner closes the port, reports itself disconnected, and
  tries to reopen with a backoff that doubles from ``backoff_initial_s`` to
  ``backoff_max_s``, until :meth:`CodeScanner.close`. Opening flushes the input buffer
  (pyserial does), so a code half-sent before the unplug is dropped, not glued to the next.
- Reads happen on the event loop: the port's file descriptor is registered with
  ``loop.add_reader`` and read without blocking (``timeout=0``). No thread.

Events
======
Iterating a :class:`CodeScanner` yields :data:`ScanEvent`: :class:`ScannedCode`,
:class:`ScanRejected` or :class:`ScannerStatus` (connected / disconnected, for health and
alarms). One consumer; a consumer that falls ``queue_depth`` events behind loses the
oldest (counted in ``dropped``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Protocol, Self

import serial

from drivers.errors import DriverConfigError

__all__ = [
    "CodeScanner",
    "LineAssembler",
    "Overlong",
    "ScanEvent",
    "ScanRejected",
    "ScannedCode",
    "ScannerStatus",
    "SerialPort",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ScannedCode:
    """A code read from the scanner. ``code`` is secret: it is left out of ``repr``."""

    code: str = field(repr=False)
    at: float
    fingerprint: str

    @property
    def length(self) -> int:
        return len(self.code)


@dataclass(frozen=True, slots=True)
class ScanRejected:
    """A line that is not a usable code. Carries no content, only its length."""

    reason: Literal["line_too_long", "not_text"]
    length: int
    at: float
    message: str


@dataclass(frozen=True, slots=True)
class ScannerStatus:
    """The scanner's port was opened (``connected``) or lost."""

    connected: bool
    port: str
    at: float
    detail: str = ""


ScanEvent = ScannedCode | ScanRejected | ScannerStatus


@dataclass(frozen=True, slots=True)
class Overlong:
    """:class:`LineAssembler` output: a line exceeded the limit (``length`` bytes seen)."""

    length: int


class LineAssembler:
    """Cuts a byte stream into lines, bounded. Pure: no I/O, no clock.

    ``terminator`` is ``None`` for "any CR or LF" (empty lines dropped) or the exact byte
    sequence that ends a line. :meth:`feed` returns complete lines (without terminator) and
    :class:`Overlong` markers, in stream order; the buffer never holds more than
    ``max_length + len(terminator)`` bytes.
    """

    def __init__(self, max_length: int, terminator: bytes | None = None) -> None:
        if max_length < 1:
            raise DriverConfigError("scanner max_length must be >= 1")
        if terminator is not None and not terminator:
            raise DriverConfigError("scanner terminator must not be empty")
        self.max_length = max_length
        self.terminator = terminator
        self._buf = bytearray()
        self._discarding = False

    def reset(self) -> None:
        """Forget a partial line (after the port was reopened)."""
        self._buf.clear()
        self._discarding = False

    def _find(self) -> tuple[int, int]:
        if self.terminator is None:
            positions = [p for p in (self._buf.find(b"\r"), self._buf.find(b"\n")) if p >= 0]
            return (min(positions), 1) if positions else (-1, 0)
        return self._buf.find(self.terminator), len(self.terminator)

    def feed(self, data: bytes) -> list[bytes | Overlong]:
        out: list[bytes | Overlong] = []
        self._buf += data
        while True:
            index, term_len = self._find()
            if index < 0:
                break
            line = bytes(self._buf[:index])
            del self._buf[: index + term_len]
            if self._discarding:
                self._discarding = False  # the end of a line already reported too long
                continue
            if len(line) > self.max_length:
                out.append(Overlong(len(line)))
            elif line:
                out.append(line)
        keep = len(self.terminator) - 1 if self.terminator is not None else 0
        if len(self._buf) > self.max_length + keep:
            if not self._discarding:
                out.append(Overlong(len(self._buf)))
                self._discarding = True
            # Keep only what could be the start of a terminator split across reads.
            del self._buf[: len(self._buf) - keep]
        return out


class SerialPort(Protocol):
    """What the scanner needs of a pyserial ``Serial`` (the injection point for tests)."""

    @property
    def in_waiting(self) -> int: ...
    def fileno(self) -> int: ...
    def read(self, size: int = 1) -> bytes: ...
    def close(self) -> None: ...


def _open_pyserial(port: str, baudrate: int) -> SerialPort:
    opened: SerialPort = serial.Serial(port=port, baudrate=baudrate, timeout=0)
    return opened


class CodeScanner:
    """Reads codes from a serial barcode/QR scanner. See the module docstring.

    ::

        async with CodeScanner("/dev/ttyScanner") as scanner:
            async for event in scanner:
                if isinstance(event, ScannedCode):
                    await collect(event.code)
    """

    def __init__(
        self,
        port: str,
        baudrate: int = 9600,
        *,
        terminator: bytes | Literal["auto"] = "auto",
        max_length: int = 256,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 5.0,
        queue_depth: int = 64,
        open_port: Callable[[str, int], SerialPort] = _open_pyserial,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not port:
            raise DriverConfigError("scanner port must be a device path")
        if baudrate <= 0:
            raise DriverConfigError(f"scanner baudrate must be > 0, got {baudrate}")
        if not 0 < backoff_initial_s <= backoff_max_s <= 300:
            raise DriverConfigError("scanner backoff: need 0 < initial <= max <= 300 s")
        if not 1 <= queue_depth <= 10_000:
            raise DriverConfigError("scanner queue_depth must be in 1..10000")
        self.port = port
        self.baudrate = baudrate
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._assembler = LineAssembler(max_length, None if terminator == "auto" else terminator)
        self._open_port = open_port
        self._clock = clock
        self._key = os.urandom(16)
        # Unbounded as a queue so the end marker (None) always fits; _emit keeps the events
        # to queue_depth by dropping the oldest.
        self._events: asyncio.Queue[ScanEvent | None] = asyncio.Queue()
        self._queue_depth = queue_depth
        self._ended = False
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lost: asyncio.Future[str] | None = None
        self._closed = False
        self.connected = False
        #: Counters for health telemetry.
        self.codes = 0
        self.rejected = 0
        self.reconnects = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Scan events read from the port and not yet taken by the consumer."""
        return self._events.qsize() - (1 if self._ended else 0)  # not the end marker

    def fingerprint(self, code: str) -> str:
        """The loggable stand-in for ``code`` (keyed per scanner instance)."""
        return hmac.new(self._key, code.encode(), hashlib.sha256).hexdigest()[:12]

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start reading (and reconnecting) in the background. Idempotent."""
        if self._closed:
            raise RuntimeError("scanner is closed")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="code-scanner")

    async def close(self) -> None:
        """Stop, close the port, end iteration. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._lost is not None and not self._lost.done():
            self._lost.set_result("closed")
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._events.put_nowait(None)  # the end, after the events still queued
        self._ended = True

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __aiter__(self) -> CodeScanner:
        return self

    async def __anext__(self) -> ScanEvent:
        event = await self._events.get()
        if event is None:
            self._events.put_nowait(None)  # ended for every later call too
            raise StopAsyncIteration
        return event

    # -- the reconnect loop -------------------------------------------------------------

    async def _run(self) -> None:
        backoff = self.backoff_initial_s
        failing_since_logged = False
        while not self._stop.is_set():  # bounded by close()
            try:
                port = self._open_port(self.port, self.baudrate)
            except (serial.SerialException, OSError, ValueError) as exc:
                if not failing_since_logged:
                    _log.warning("scanner %s cannot be opened (%s); retrying", self.port, exc)
                    failing_since_logged = True
                await self._pause(backoff)
                backoff = min(backoff * 2, self.backoff_max_s)
                continue
            failing_since_logged = False
            backoff = self.backoff_initial_s
            self._assembler.reset()
            self.connected = True
            _log.info("scanner %s connected", self.port)
            self._emit(ScannerStatus(True, self.port, self._clock()))
            try:
                reason = await self._pump(port)
            finally:
                self.connected = False
                with contextlib.suppress(Exception):
                    port.close()
            if self._stop.is_set():
                break
            self.reconnects += 1
            _log.warning("scanner %s lost: %s; reopening", self.port, reason)
            self._emit(ScannerStatus(False, self.port, self._clock(), reason))
            await self._pause(self.backoff_initial_s)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

    async def _pump(self, port: SerialPort) -> str:
        """Read ``port`` on the loop until it fails or the scanner is closed."""
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[str] = loop.create_future()

        def on_readable() -> None:
            try:
                data = port.read(max(port.in_waiting, 1))
            except (serial.SerialException, OSError) as exc:
                if not lost.done():
                    lost.set_result(str(exc) or type(exc).__name__)
                return
            if data:
                self._on_data(data)

        fd = port.fileno()
        self._lost = lost
        if self._stop.is_set():
            lost.set_result("closed")
        loop.add_reader(fd, on_readable)
        try:
            return await lost
        finally:
            loop.remove_reader(fd)
            self._lost = None

    def _on_data(self, data: bytes) -> None:
        for item in self._assembler.feed(data):
            now = self._clock()
            if isinstance(item, Overlong):
                self._reject("line_too_long", item.length, now)
                continue
            try:
                text = item.decode("utf-8").strip(" ")
            except UnicodeDecodeError:
                self._reject("not_text", len(item), now)
                continue
            if not text or not text.isprintable():
                self._reject("not_text", len(item), now)
                continue
            fingerprint = self.fingerprint(text)
            self.codes += 1
            _log.info("scanner: code of %d chars, fingerprint %s", len(text), fingerprint)
            self._emit(ScannedCode(text, now, fingerprint))

    def _reject(self, reason: Literal["line_too_long", "not_text"], length: int, at: float) -> None:
        self.rejected += 1
        message = {
            "line_too_long": f"line of {length}+ bytes, limit {self._assembler.max_length}",
            "not_text": f"line of {length} bytes with control characters or invalid UTF-8",
        }[reason]
        _log.warning("scanner: rejected %s", message)
        self._emit(ScanRejected(reason, length, at, message))

    def _emit(self, event: ScanEvent) -> None:
        if self._closed:
            return
        if self._events.qsize() >= self._queue_depth:
            self._events.get_nowait()  # the oldest goes
            self.dropped += 1
        self._events.put_nowait(event)
