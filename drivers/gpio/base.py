"""GPIO line contract: what a lane I/O backend must and may implement.

The lane of a drive-through cabinet has a few digital lines wired to the Pi (or, in tests,
to the simulator): inputs (vehicle presence, help button, cabinet tamper switch, the UPS
"mains lost" contact) and outputs (lane light lamps, buzzer). The controller sees them
only through the two classes of this module, :class:`InputLine` and :class:`OutputLine`,
opened by name from a :class:`GpioBackend`. Which backend runs is the composition root's
choice (see :func:`drivers.gpio.open_backend`).

Values
======
Every public value is *logical*: ``True`` means *active* (vehicle present, button pressed,
tamper open, mains lost, lamp lit). The raw electrical level is the backend's business and
is converted exactly once, here, with each line's ``active_low``. A pushbutton wired to
ground with the Pi's pull-up is ``pull="up", active_low=True``.

Policy (written once, here)
===========================
- Names and pins are unique per backend; a second line on the same pin is a
  :class:`~drivers.errors.DriverConfigError` before any hardware is touched.
- Debounce: an edge reported by the backend only *arms* a settle timer of
  ``debounce_s``; when the input has been quiet that long the line reads the level again
  and emits one :class:`Edge` if the settled value differs from the last one emitted. So a
  contact that bounces ten times produces one event, and an edge the library swallowed
  (RPi.GPIO's ``bouncetime`` drops edges inside its window) cannot leave a stale value.
  A backend whose kernel debounces (``hardware_debounce = True``, libgpiod) skips the timer
  and its edge levels are taken as settled.
- Edges reach the asyncio loop and only the loop: backends may report from any thread
  through the ``notify`` callable they are given, which does nothing but
  ``loop.call_soon_threadsafe``. Consumers get edges as an async iterator
  (``async for edge in line.edges()``) or as a plain callback run on the loop
  (:meth:`InputLine.add_listener`).
- ``close()`` is idempotent on lines and on the backend; the backend closes every line it
  opened. Outputs are switched to their inactive level on close (best effort) so a
  buzzer never keeps sounding after the daemon stopped.

Backend hooks (the mechanism)
=============================
``_start()``  *may* implement
    Acquire what the backend needs (set the numbering mode, connect to the simulator).
    Called once, on the loop, before the first line is opened.
``_open_input(spec, notify) -> handle``  *must* implement
    Configure ``spec.pin`` as an input with ``spec.pull`` and arrange for
    ``notify(raw_level)`` to be called, from any thread, whenever the raw level changed.
    ``raw_level`` is the electrical level after the change (``True`` = high).
    Return any object that identifies the line to the other hooks.
``_read(handle) -> bool``  *must* implement
    The raw level of an input, now.
``_open_output(spec, raw_initial) -> handle``  *must* implement
    Configure ``spec.pin`` as an output driven at ``raw_initial`` from the first instant.
``_write(handle, raw_level)``  *must* implement
    Drive an output.
``_release(handle)``  *must* implement
    Stop edge detection and give the pin back. Called once per line.
``_stop()``  *may* implement
    Release what ``_start`` acquired. Called once, after every line was released.

Every hook raises only :mod:`drivers.errors` types, translating the vendor's exceptions
with ``raise ... from exc``: :class:`~drivers.errors.BusError` when the GPIO chip, the
library or the simulator link fails, :class:`~drivers.errors.ChannelError` for a pin the
chip does not have, :class:`~drivers.errors.DriverConfigError` for settings the backend
cannot honour. The public methods raise :class:`~drivers.errors.BusClosed` after close.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

from drivers.errors import BusClosed, DriverConfigError

__all__ = [
    "Edge",
    "EdgeListener",
    "EdgeStream",
    "GpioBackend",
    "InputLine",
    "InputSpec",
    "Notify",
    "OutputLine",
    "OutputSpec",
    "Pull",
]

_log = logging.getLogger(__name__)

Pull = Literal["up", "down", "none"]

#: Called by a backend, from any thread, with the raw level after an edge.
Notify = Callable[[bool], None]

#: A listener registered with :meth:`InputLine.add_listener`; runs on the loop.
EdgeListener = Callable[["Edge"], None]

#: The longest an output may be pulsed by :meth:`OutputLine.pulse`.
MAX_PULSE_S = 30.0
#: How many unread edges an :meth:`InputLine.edges` iterator keeps; older ones are dropped.
EDGE_QUEUE_DEPTH = 64


@dataclass(frozen=True, slots=True)
class InputSpec:
    """How one input line is wired.

    ``pin`` is the BCM GPIO number (rpigpio), the line offset on the chip (gpiod) or
    ignored (simulator, which goes by ``name``). ``debounce_s`` is 0 to disable debouncing.
    """

    name: str
    pin: int
    pull: Pull = "none"
    active_low: bool = False
    debounce_s: float = 0.02

    def __post_init__(self) -> None:
        _check_name_pin(self.name, self.pin)
        if self.pull not in ("up", "down", "none"):
            raise DriverConfigError(f"gpio input {self.name!r}: pull must be up, down or none")
        if not 0 <= self.debounce_s <= 1.0:
            raise DriverConfigError(
                f"gpio input {self.name!r}: debounce_s must be in [0, 1], got {self.debounce_s}"
            )


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """How one output line is wired. ``initial`` is the *logical* value at open."""

    name: str
    pin: int
    active_low: bool = False
    initial: bool = False

    def __post_init__(self) -> None:
        _check_name_pin(self.name, self.pin)


def _check_name_pin(name: str, pin: int) -> None:
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise DriverConfigError(f"gpio line name must be [A-Za-z0-9_-]+, got {name!r}")
    if isinstance(pin, bool) or not isinstance(pin, int) or pin < 0:
        raise DriverConfigError(f"gpio line {name!r}: pin must be an integer >= 0, got {pin!r}")


@dataclass(frozen=True, slots=True)
class Edge:
    """An input settled at a new logical value. ``at`` is the backend clock's time."""

    line: str
    value: bool
    at: float

    @property
    def rising(self) -> bool:
        """The input became active."""
        return self.value


class InputLine:
    """One debounced input. Opened by :meth:`GpioBackend.open_input`, never built directly."""

    def __init__(self, backend: GpioBackend, spec: InputSpec) -> None:
        self._backend = backend
        self.spec = spec
        self._handle: Any = None
        self._value = False
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._settling: asyncio.Task[None] | None = None
        self._listeners: list[EdgeListener] = []
        self._streams: list[EdgeStream] = []
        #: Edges dropped because an ``edges()`` consumer fell behind.
        self.dropped = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def value(self) -> bool:
        """The last settled logical value (no I/O)."""
        return self._value

    async def read(self) -> bool:
        """Read the line now and return its logical value (not debounced)."""
        self._check_open()
        raw = await self._backend._read(self._handle)
        return raw != self.spec.active_low

    def add_listener(self, listener: EdgeListener) -> Callable[[], None]:
        """Call ``listener(edge)`` on the loop for every settled edge; returns a remover.

        A listener that raises is logged and kept; it must not block.
        """
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    def edges(self) -> EdgeStream:
        """Subscribe to settled edges from this call on; iterate with ``async for``.

        The subscription starts when ``edges()`` is called, not when iteration starts, so
        an edge between the call and the first ``await`` is not lost. Iteration ends when
        the line is closed or the stream is closed (``aclose()`` or ``async with``). Each
        stream has its own bounded queue: a consumer more than ``EDGE_QUEUE_DEPTH`` edges
        behind loses the oldest ones (counted in ``dropped``); the latest is never lost.
        """
        self._check_open()
        stream = EdgeStream(self)
        self._streams.append(stream)
        return stream

    async def wait_for(self, value: bool) -> Edge | None:
        """Return once the settled value is ``value``: ``None`` if it already is, else the
        edge that made it so. Unbounded: wrap it in ``asyncio.timeout``."""
        if self._value == value:
            return None
        async with self.edges() as stream:
            async for edge in stream:
                if edge.value == value:
                    return edge
        raise BusClosed(f"gpio input {self.name!r} closed while waiting")

    async def close(self) -> None:
        """Stop edge detection and release the pin. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._settling is not None:
            self._settling.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._settling
        for stream in list(self._streams):
            stream._finish()
        await self._backend._release_line(self)

    # -- called by the backend machinery, on the loop ----------------------------------

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()

        def notify(raw: bool) -> None:
            # The only thing a library thread may do: hand the edge to the loop.
            with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
                loop.call_soon_threadsafe(self._on_raw_edge, raw)

        self._handle = await self._backend._open_input(self.spec, notify)
        raw = await self._backend._read(self._handle)
        self._value = raw != self.spec.active_low

    def _on_raw_edge(self, raw: bool) -> None:
        if self._closed:
            return
        if self._backend.hardware_debounce or self.spec.debounce_s == 0:
            self._settle_to(raw != self.spec.active_low)
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.spec.debounce_s, self._start_settle)

    def _start_settle(self) -> None:
        self._timer = None
        if self._closed or (self._settling is not None and not self._settling.done()):
            # A settle read is in flight; it reads the level after this edge anyway.
            return
        self._settling = asyncio.get_running_loop().create_task(self._settle_read())

    async def _settle_read(self) -> None:
        try:
            raw = await self._backend._read(self._handle)
        except Exception:
            _log.exception("gpio input %s: read after edge failed", self.name)
            return
        self._settle_to(raw != self.spec.active_low)

    def _settle_to(self, value: bool) -> None:
        if value == self._value:
            return
        self._value = value
        edge = Edge(self.name, value, self._backend.clock())
        for stream in list(self._streams):
            stream._put(edge)
        for listener in list(self._listeners):
            try:
                listener(edge)
            except Exception:
                _log.exception("gpio input %s: edge listener failed", self.name)

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosed(f"gpio input {self.name!r} is closed")


class EdgeStream:
    """Settled edges of one input, for one consumer. Made by :meth:`InputLine.edges`."""

    def __init__(self, line: InputLine) -> None:
        self._line = line
        # None marks the end; unbounded as a queue so it always fits (_put keeps the edges
        # to EDGE_QUEUE_DEPTH by dropping the oldest).
        self._items: asyncio.Queue[Edge | None] = asyncio.Queue()
        self._ended = False

    def __aiter__(self) -> EdgeStream:
        return self

    async def __anext__(self) -> Edge:
        edge = await self._items.get()
        if edge is None:
            self._items.put_nowait(None)  # ended for every later call too
            raise StopAsyncIteration
        return edge

    async def aclose(self) -> None:
        """Unsubscribe; pending edges are dropped. Safe to call twice."""
        while not self._items.empty():
            self._items.get_nowait()
        self._finish()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _put(self, edge: Edge) -> None:
        if self._ended:
            return
        if self._items.qsize() >= EDGE_QUEUE_DEPTH:
            self._items.get_nowait()  # the oldest goes
            self._line.dropped += 1
        self._items.put_nowait(edge)

    def _finish(self) -> None:
        if not self._ended:
            self._ended = True
            self._items.put_nowait(None)
        with contextlib.suppress(ValueError):
            self._line._streams.remove(self)


class OutputLine:
    """One output. Opened by :meth:`GpioBackend.open_output`, never built directly."""

    def __init__(self, backend: GpioBackend, spec: OutputSpec) -> None:
        self._backend = backend
        self.spec = spec
        self._handle: Any = None
        self._value = spec.initial
        self._closed = False
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def value(self) -> bool:
        """The logical value last driven."""
        return self._value

    async def set(self, on: bool) -> None:
        """Drive the output active (``True``) or inactive."""
        self._check_open()
        async with self._lock:
            await self._backend._write(self._handle, bool(on) != self.spec.active_low)
            self._value = bool(on)

    async def on(self) -> None:
        await self.set(True)

    async def off(self) -> None:
        await self.set(False)

    async def pulse(self, duration_s: float) -> None:
        """Active for ``duration_s`` (at most ``MAX_PULSE_S``), then inactive, even if the
        caller is cancelled in between (a beep never sticks on)."""
        if not 0 < duration_s <= MAX_PULSE_S:
            raise ValueError(f"gpio output {self.name!r}: pulse must be in (0, {MAX_PULSE_S}] s")
        await self.set(True)
        try:
            await asyncio.sleep(duration_s)
        finally:
            if not self._closed:
                await asyncio.shield(self.set(False))

    async def close(self) -> None:
        """Drive inactive (best effort) and release the pin. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._backend._write(self._handle, self.spec.active_low)
            self._value = False
        except Exception:
            _log.warning("gpio output %s: could not switch off on close", self.name)
        await self._backend._release_line(self)

    async def _open(self) -> None:
        self._handle = await self._backend._open_output(
            self.spec, self.spec.initial != self.spec.active_low
        )

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosed(f"gpio output {self.name!r} is closed")


class GpioBackend(abc.ABC):
    """A source of named GPIO lines. See the module docstring for the contract.

    Use as ``async with backend:``; lines opened from it are closed with it.
    """

    #: Registry name of the backend ("mock", "simulator", "rpigpio", "gpiod").
    name: str = "abstract"
    #: The kernel (or the library) debounces; edge levels are final.
    hardware_debounce: bool = False

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lines: dict[str, InputLine | OutputLine] = {}
        self._pins: dict[int, str] = {}
        self._started = False
        self._closed = False
        self._start_lock = asyncio.Lock()

    @property
    def lines(self) -> dict[str, InputLine | OutputLine]:
        """The lines open right now, by name (a copy)."""
        return dict(self._lines)

    async def start(self) -> None:
        """Acquire the backend's resources. Implicit on the first ``open_*``."""
        if self._closed:
            raise BusClosed(f"gpio backend {self.name!r} is closed")
        async with self._start_lock:
            if not self._started:
                await self._start()
                self._started = True

    async def open_input(self, spec: InputSpec) -> InputLine:
        """Configure and return an input; its ``value`` is read once before returning."""
        line = InputLine(self, spec)
        await self._register(line)
        try:
            await line._open()
        except BaseException:
            await self._abandon(line)
            raise
        return line

    async def open_output(self, spec: OutputSpec) -> OutputLine:
        """Configure and return an output, driven at ``spec.initial`` from the start."""
        line = OutputLine(self, spec)
        await self._register(line)
        try:
            await line._open()
        except BaseException:
            await self._abandon(line)
            raise
        return line

    async def close(self) -> None:
        """Close every line, then the backend. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for line in list(self._lines.values()):
            try:
                await line.close()
            except Exception:
                _log.exception("gpio backend %s: closing line %s failed", self.name, line.name)
        if self._started:
            await self._stop()

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

    # -- internal ------------------------------------------------------------------------

    async def _register(self, line: InputLine | OutputLine) -> None:
        await self.start()
        spec = line.spec
        if spec.name in self._lines:
            raise DriverConfigError(f"gpio line {spec.name!r} is already open")
        if spec.pin in self._pins:
            raise DriverConfigError(
                f"gpio line {spec.name!r}: pin {spec.pin} already used by {self._pins[spec.pin]!r}"
            )
        self._lines[spec.name] = line
        self._pins[spec.pin] = spec.name

    def _forget(self, line: InputLine | OutputLine) -> None:
        if self._lines.get(line.name) is line:
            del self._lines[line.name]
            self._pins.pop(line.spec.pin, None)

    async def _abandon(self, line: InputLine | OutputLine) -> None:
        """A line failed half-way through opening: give back whatever it got."""
        line._closed = True
        self._forget(line)
        if line._handle is not None:
            try:
                await self._release(line._handle)
            except Exception:
                _log.exception(
                    "gpio backend %s: releasing %s after a failed open", self.name, line.name
                )

    async def _release_line(self, line: InputLine | OutputLine) -> None:
        self._forget(line)
        if line._handle is not None:
            await self._release(line._handle)

    # -- backend hooks ------------------------------------------------------------------

    async def _start(self) -> None:
        """Optional: acquire backend resources."""

    async def _stop(self) -> None:
        """Optional: release what ``_start`` acquired."""

    @abc.abstractmethod
    async def _open_input(self, spec: InputSpec, notify: Notify) -> Any: ...

    @abc.abstractmethod
    async def _read(self, handle: Any) -> bool: ...

    @abc.abstractmethod
    async def _open_output(self, spec: OutputSpec, raw_initial: bool) -> Any: ...

    @abc.abstractmethod
    async def _write(self, handle: Any, raw_level: bool) -> None: ...

    @abc.abstractmethod
    async def _release(self, handle: Any) -> None: ...
