"""One RS-485 line, one owner: :class:`ModbusLine`.

Every Modbus transaction of the daemon on one line goes through one ``ModbusLine``.
The policy of the line lives here, once; the bytes move through a transport of
:mod:`drivers.modbus.transport` (serial port or TCP gateway), frames are built and
checked by :mod:`drivers.modbus.codec`, counters are kept in :mod:`drivers.modbus.stats`:

* **One transaction at a time.** RTU is master/slave on a shared pair of wires: a
  second request sent before the first reply ended garbles both.
* **Priority.** Writes (door pulses, outputs) queue ahead of reads (polls): a door
  command waits for at most the one transaction already on the wire, never for a
  whole poll cycle. Within one priority, first come first served.
* **Silent interval** (3.5 characters, 1.75 ms above 19200 baud) between the end of
  the previous frame on the line (our request when broadcast, the reply otherwise)
  and the next request. An interval of up to 2.5 ms (3.5 characters at 19200 baud and
  above) is slept whole with ``time.sleep``: it blocks the loop that long, costs no
  CPU and saves a trip through the event loop, which costs more CPU than the rest of
  the transaction. A longer one sleeps whole milliseconds on the loop (epoll's
  granularity) and the sub-millisecond rest with ``time.sleep``. The line does not
  wait at all when the interval has already elapsed. Replies are awaited on the
  descriptor (``add_reader``), never polled: no busy wait anywhere.
* **Timeout per attempt**, counted from the end of the request on the wire (the
  request's own transmission time is added), and a **retry budget** for timeouts and
  garbled replies. An exception response is an answer: it is never retried. A caller
  that must not repeat a frame (a door pulse) passes ``retries=0``.
* **Strict replies** (:mod:`drivers.modbus.codec`): unit, function, byte count and
  echo must match the request, CRC must be good, or the attempt is a
  :class:`~drivers.errors.FrameError`. On RTU, a read's reply equal byte for byte to
  the last reply to the same request that passed them is taken with the values it
  decoded to then: the checks depend on nothing else, so they would pass again (an
  unchanged poll, the common case, costs a bytes comparison instead of a CRC). A reply
  that differs from it in any byte is checked in full.
* **A late reply is never taken for a fresh one.** RTU has no transaction id, so after
  an attempt timed out its reply may still come. The line then does not send again
  until the *late window* (``late_window_s``, default twice the attempt's timeout,
  stretched to twice the lateness the unit has shown, at most ten timeouts) has passed
  and the input has been quiet for ``settle_s``. A reply that arrives in that
  window, or while no request is outstanding, is a *late reply*: counted
  (``late_replies``, per line and per unit) and discarded. The window closes early
  once the late reply is complete (the board has answered; nothing more will come).
  A caller may send inside the window with ``early=True`` only a request whose reply
  cannot be taken for the late one (another function code, or a write with another
  echo): a late reply arriving meanwhile is recognised and discarded, not decoded as
  the answer. After a garbled reply the line only waits for the input to be quiet.
* **One attempt for a failing unit's reads.** A unit in a failure incident (or degraded)
  gets no retry on a read: its signals are unknown already, and each retry, with its late
  window, is line time the healthy boards on the same wires need. Writes keep the budget
  (a pulse is never retried anyway).
* **Degraded units.** A unit with late replies in ``degraded_after`` of its last
  ``2 * degraded_after`` transactions is *degraded* (``UnitStats.degraded``): its
  replies cannot be trusted to answer the request just sent, so every read of it raises
  :class:`~drivers.errors.BoardLate` (a :class:`~drivers.errors.BoardTimeout`),
  exactly like a silent board, until ``degraded_after`` consecutive transactions are
  answered on the first attempt with no late reply. Residual risk, inherent to RTU:
  a board later than the timeout plus the late window can still answer the next
  request to it with the previous reply; the reply that then arrives while the line
  is idle is counted as late, so such a board becomes degraded within a few
  transactions. Over Modbus TCP (MBAP) the transaction id settles it: replies with
  another id are discarded and counted as late.
* **Errors are logged once per incident**, per unit: the first failed transaction
  logs a warning, the following ones are only counted, the first success logs the
  recovery at info. Callers get an exception every time.
* **The quiet run** (:meth:`ModbusLine.run_quiet`, :mod:`drivers.modbus.quiet`): while
  a cabinet is quiet, its unchanged polls are read by the line's own thread at the poll's
  cadence, with the silent interval and the timeouts above, and the loop sleeps. The
  thread takes only replies byte-identical to the expected ones. On anything else it
  hands the line back, and the transaction under way is resumed here with the ordinary
  rules. It also hands the line back before a request when a caller waits (a door write
  still waits for at most one transaction), on stray input, on close, and when its time
  budget is spent. Decision 0025.
* **Statistics** for telemetry: :meth:`ModbusLine.stats` returns a frozen
  :class:`LineStats` snapshot with per-unit :class:`UnitStats`.

Why the transaction is implemented here over pyserial / asyncio streams rather than
delegated to pymodbus's client: see ``docs/decisions/0002-modbus-line.md``. In short,
pymodbus 3.16 accepts wrong-count and wrong-function replies, turns bad CRCs and
foreign units into silent timeouts, and can take a late reply for the next answer.

Errors: every method raises only :mod:`drivers.errors` types:
:class:`~drivers.errors.BoardTimeout` (retries spent),
:class:`~drivers.errors.BoardLate` (a read of a degraded unit),
:class:`~drivers.errors.FrameError` (retries spent on garbled replies),
:class:`~drivers.errors.BoardRejected` (exception response, with its code),
:class:`~drivers.errors.BusError` (port missing, write failed, gateway gone),
:class:`~drivers.errors.BusClosed` (used after :meth:`ModbusLine.close`),
:class:`~drivers.errors.BackendUnavailable` (pyserial missing),
``ValueError`` for arguments no request can carry (count 0, address > 65535).

Example::

    params = BusParams(name="rs485-0", port="/dev/ttyLOCKER0", baudrate=19200)
    async with ModbusLine.from_config(params) as line:
        levels = await line.read_discrete_inputs(1, 0, 16)
        await line.write_coil(1, 0x0200 + 3, 7)   # Waveshare flash, 700 ms
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any, Literal

from drivers.config import BusParams
from drivers.errors import (
    BoardError,
    BoardLate,
    BoardRejected,
    BoardTimeout,
    BusClosed,
    BusError,
    DriverConfigError,
    FrameError,
)
from drivers.modbus import codec
from drivers.modbus.codec import Request
from drivers.modbus.quiet import QuietPlan, QuietRun, Resume, read_quiet
from drivers.modbus.registers import char_time, silent_interval
from drivers.modbus.stats import LineStats, UnitCounters, UnitStats
from drivers.modbus.transport import SerialTransport, TcpTransport, Transport

__all__ = ["LineStats", "ModbusLine", "QuietPlan", "QuietRun", "UnitStats"]

log = logging.getLogger(__name__)

Framing = Literal["rtu", "socket"]

#: A silent interval this short (3.5 characters at 19200 baud and above, with a margin)
#: is slept whole with time.sleep: one wake-up, no trip through the event loop. A longer
#: one sleeps whole milliseconds on the loop first, then the rest with time.sleep.
_BLOCK_LIMIT_S = 0.0025
#: Valid late replies remembered for :meth:`ModbusLine.late_reply_at` (recent ones only).
_LATE_MEMORY = 32
#: Read requests whose last good reply is remembered (all of a cabinet's polls, and more).
_GOOD_MEMORY = 256


class _PriorityGate:
    """A lock whose waiters are served by priority (lower first), then by arrival."""

    def __init__(self) -> None:
        self._busy = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = 0
        #: Called when a caller starts waiting (the quiet run hands the line back then).
        self.on_contended: Callable[[], None] | None = None

    @property
    def waiting(self) -> int:
        return sum(1 for *_, f in self._waiters if not f.done())

    def try_acquire(self) -> bool:
        """Take the gate if it is free, without waiting (no coroutine on the hot path)."""
        if self._busy or self._waiters:
            return False
        self._busy = True
        return True

    async def acquire(self, priority: int) -> None:
        if not self._busy and not self._waiters:
            self._busy = True
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._waiters, (priority, self._seq, fut))
        if self.on_contended is not None:
            self.on_contended()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # ownership was handed over just before the cancel
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)  # ownership passes on; _busy stays True
                return
        self._busy = False


class ModbusLine:
    """The only owner of one RS-485 line (a serial port, or a TCP gateway).

    Build it from a ``[[buses]]`` table with :meth:`from_config`, or directly:

    ``ModbusLine(name, port=..., baudrate=19200)`` for RTU on a serial port (which may
    be a pty); ``ModbusLine(name, host=..., tcp_port=502)`` for a Modbus TCP gateway
    (``framing="socket"``, the default over TCP) or a transparent RTU-over-TCP gateway
    (``framing="rtu"``).

    ``timeout`` is per attempt; ``retries`` the number of re-sends after a timeout or
    a garbled reply; ``settle_s`` the quiet time required after a failed attempt
    (default ``min(timeout, 0.05)``); ``late_window_s`` how long after a timed-out
    attempt its reply is still awaited as late (default twice the attempt's timeout);
    ``degraded_after`` how many consecutive transactions with late replies make a unit
    degraded (and how many without one clear it); ``frame_gap_s`` the silence kept
    between frames (default the Modbus 3.5 characters on a serial line, none behind a
    gateway). The line opens lazily on first use,
    or explicitly with :meth:`connect`; a line whose port vanished reopens on the next
    transaction.
    """

    def __init__(
        self,
        name: str,
        port: str | None = None,
        *,
        baudrate: int = 19200,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: int = 1,
        host: str | None = None,
        tcp_port: int = 502,
        framing: Framing | None = None,
        timeout: float = 0.1,
        retries: int = 2,
        settle_s: float | None = None,
        late_window_s: float | None = None,
        degraded_after: int = 3,
        frame_gap_s: float | None = None,
    ) -> None:
        if (port is None) == (host is None):
            raise DriverConfigError(f"bus {name!r}: give exactly one of port (rtu) or host (tcp)")
        if timeout <= 0:
            raise DriverConfigError(f"bus {name!r}: timeout must be > 0, got {timeout}")
        if retries < 0:
            raise DriverConfigError(f"bus {name!r}: retries must be >= 0, got {retries}")
        if baudrate <= 0:
            raise DriverConfigError(f"bus {name!r}: baudrate must be > 0, got {baudrate}")
        if late_window_s is not None and late_window_s < 0:
            raise DriverConfigError(
                f"bus {name!r}: late_window_s must be >= 0, got {late_window_s}"
            )
        if frame_gap_s is not None and not 0 <= frame_gap_s <= 1:
            raise DriverConfigError(
                f"bus {name!r}: frame_gap_s must be in [0, 1], got {frame_gap_s}"
            )
        if degraded_after < 1:
            raise DriverConfigError(
                f"bus {name!r}: degraded_after must be >= 1, got {degraded_after}"
            )
        if parity not in ("N", "E", "O"):
            raise DriverConfigError(f"bus {name!r}: parity must be N, E or O, got {parity!r}")
        self.name = name
        self.port = port
        self.host = host
        self.tcp_port = tcp_port
        self.baudrate = baudrate
        self.framing: Framing = framing or ("rtu" if port is not None else "socket")
        if self.framing not in ("rtu", "socket"):
            raise DriverConfigError(f"bus {name!r}: framing must be rtu or socket")
        self.timeout = timeout
        self.retries = retries
        self.settle_s = min(timeout, 0.05) if settle_s is None else settle_s
        self.late_window_s = late_window_s
        self.degraded_after = degraded_after
        self._serial_params = (bytesize, parity, stopbits)
        # On a serial line we time the wire; behind a gateway the gateway does.
        self._timed = port is not None
        # Seconds per character on the wire, to add a request's own transmission time.
        self._char_s = char_time(baudrate) if self._timed else 0.0
        if frame_gap_s is not None:
            self._gap = frame_gap_s  # set for slow boards that need more than 3.5 characters
        else:
            self._gap = silent_interval(baudrate) if self._timed else 0.0
        self._transport: Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._gate = _PriorityGate()
        self._connect_lock = asyncio.Lock()
        # Receive state, touched from the reader callback.
        self._rx = bytearray()
        self._req: Request | None = None
        self._waiter: asyncio.Future[bytes] | None = None
        # The last good reply to each read request (by its frame) and what it decoded to.
        # A poll reads the same inputs every cycle and, while nothing on the lane moves,
        # gets the same bytes back: a reply equal byte for byte to one that passed every
        # check (CRC included) passes them again, and decodes to the same values.
        self._good: dict[bytes, tuple[bytes, tuple[bool, ...] | tuple[int, ...]]] = {}
        self._expected: bytes | None = None
        # The quiet run (:meth:`run_quiet`): the transactions recorded for its plan, the
        # last one's unchanged reply, the thread while it runs, its stop signal, and the
        # transaction it handed back to be resumed.
        self._watch: list[tuple[Request, bytes, bytes] | None] | None = None
        self._hit: tuple[bytes, bytes] | None = None
        self._quiet_worker: threading.Thread | None = None
        self._quiet_jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._quiet_running: threading.Event | None = None
        self._quiet_stop = threading.Event()
        self._resume: Resume | None = None
        self._tid = 0
        self._last_rx = 0.0
        self._next_send = 0.0
        self._dirty = False
        # Late replies (RTU framing): the last request that expected a reply, the one
        # whose reply may still come late (set when an attempt timed out or was
        # cancelled), until when, and the bytes of a late reply received so far.
        self._last_req: Request | None = None
        self._late_req: Request | None = None
        self._late_until = 0.0
        self._late_rx = bytearray()
        self._late_done = asyncio.Event()
        self._late_valid: OrderedDict[tuple[int, bytes], float] = OrderedDict()
        # Statistics.
        self._units: dict[int, UnitCounters] = {}
        self._total = UnitCounters()
        self._bus_errors = 0
        self._stray = 0
        self._late_total = 0
        self._last_sent_at = 0.0
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._bus_failing = False

    # -- construction ------------------------------------------------------------------

    @classmethod
    def from_config(cls, cfg: BusParams | Mapping[str, Any]) -> ModbusLine:
        """Build from the bus's typed settings (:class:`~drivers.config.BusParams`), or
        from a plain ``[[buses]]`` table read by :meth:`BusParams.from_table`."""
        p = cfg if isinstance(cfg, BusParams) else BusParams.from_table(cfg)
        common: dict[str, Any] = {
            "timeout": p.timeout_s,
            "retries": p.retries,
            "settle_s": p.settle_s,
            "late_window_s": p.late_window_s,
            "degraded_after": p.degraded_after,
            "frame_gap_s": p.frame_gap_s,
        }
        if p.kind == "rtu":
            if p.port is None:
                raise DriverConfigError(f"bus {p.name!r}: missing key 'port' (kind rtu)")
            return cls(p.name, port=p.port, baudrate=p.baudrate, bytesize=p.bytesize,
                       parity=p.parity, stopbits=p.stopbits, **common)
        if p.kind == "tcp":
            if p.host is None:
                raise DriverConfigError(f"bus {p.name!r}: missing key 'host' (kind tcp)")
            return cls(p.name, host=p.host, tcp_port=p.tcp_port,
                       framing=p.framing or "socket", baudrate=p.baudrate, **common)
        raise DriverConfigError(f"bus {p.name!r}: kind must be 'rtu' or 'tcp', got {p.kind!r}")

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._transport is not None

    async def connect(self) -> None:
        """Open the port or the gateway connection. Raises BusError if it cannot."""
        if self._closed:
            raise BusClosed(f"bus {self.name} is closed", bus=self.name)
        async with self._connect_lock:
            if self._transport is not None:
                return
            transport: Transport
            if self.port is not None:
                bytesize, parity, stopbits = self._serial_params
                transport = SerialTransport(
                    self._on_data,
                    self._on_lost,
                    port=self.port,
                    baudrate=self.baudrate,
                    bytesize=bytesize,
                    parity=parity,
                    stopbits=stopbits,
                )
            else:
                assert self.host is not None
                transport = TcpTransport(
                    self._on_data,
                    self._on_lost,
                    host=self.host,
                    port=self.tcp_port,
                    connect_timeout=max(1.0, self.timeout * 10),
                )
            try:
                await transport.open()
            except BusError as exc:
                exc.bus = self.name
                self._note_bus_error(exc)
                raise
            self._transport = transport
            self._loop = asyncio.get_running_loop()
            self._rx.clear()
            if self._bus_failing:
                self._bus_failing = False
                log.info("bus %s: line open again", self.name)

    async def close(self) -> None:
        """Close the line; safe to call twice. Pending transactions fail with BusClosed."""
        self._closed = True
        self._drop_transport(BusClosed(f"bus {self.name} is closed", bus=self.name))
        worker, self._quiet_worker = self._quiet_worker, None
        if worker is not None:
            self._quiet_jobs.put(None)
            worker.join()

    async def __aenter__(self) -> ModbusLine:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- public transactions -------------------------------------------------------------

    async def read_coils(
        self, unit: int, address: int, count: int, *, priority: bool = False
    ) -> tuple[bool, ...]:
        """Function 01: ``count`` coils from ``address``."""
        req = codec.read_request(unit, codec.Function.READ_COILS, address, count)
        bits = await self.execute(req, priority=priority)
        return bits  # type: ignore[return-value]  # a bit read decodes to bools

    async def read_discrete_inputs(
        self, unit: int, address: int, count: int, *, priority: bool = False
    ) -> tuple[bool, ...]:
        """Function 02: ``count`` discrete inputs from ``address``."""
        req = codec.read_request(unit, codec.Function.READ_DISCRETE_INPUTS, address, count)
        bits = await self.execute(req, priority=priority)
        return bits  # type: ignore[return-value]  # a bit read decodes to bools

    async def read_holding_registers(
        self, unit: int, address: int, count: int, *, priority: bool = False
    ) -> tuple[int, ...]:
        """Function 03: ``count`` holding registers (unsigned 16-bit) from ``address``."""
        req = codec.read_request(unit, codec.Function.READ_HOLDING_REGISTERS, address, count)
        return await self.execute(req, priority=priority)

    async def read_input_registers(
        self, unit: int, address: int, count: int, *, priority: bool = False
    ) -> tuple[int, ...]:
        """Function 04: ``count`` input registers (unsigned 16-bit) from ``address``."""
        req = codec.read_request(unit, codec.Function.READ_INPUT_REGISTERS, address, count)
        return await self.execute(req, priority=priority)

    async def write_coil(
        self, unit: int, address: int, value: bool | int, *, priority: bool = True
    ) -> None:
        """Function 05. ``bool`` is on/off; an ``int`` is sent raw (vendor extensions).
        Unit 0 broadcasts (no reply, no retry)."""
        await self.execute(codec.write_coil_request(unit, address, value), priority=priority)

    async def write_register(
        self, unit: int, address: int, value: int, *, priority: bool = True
    ) -> None:
        """Function 06. Unit 0 broadcasts."""
        await self.execute(codec.write_register_request(unit, address, value), priority=priority)

    async def write_coils(
        self, unit: int, address: int, values: tuple[bool, ...] | list[bool], *,
        priority: bool = True,
    ) -> None:
        """Function 15. Unit 0 broadcasts."""
        await self.execute(codec.write_coils_request(unit, address, values), priority=priority)

    async def write_registers(
        self, unit: int, address: int, values: tuple[int, ...] | list[int], *,
        priority: bool = True,
    ) -> None:
        """Function 16. Unit 0 broadcasts."""
        await self.execute(
            codec.write_registers_request(unit, address, values), priority=priority
        )

    async def execute(
        self,
        req: Request,
        *,
        priority: bool = False,
        timeout_s: float | None = None,
        retries: int | None = None,
        log_failures: bool = True,
        early: bool = False,
    ) -> tuple[bool, ...] | tuple[int, ...]:
        """Run one transaction with the line's policy and return the decoded reply
        (bits or registers for reads, ``()`` for writes).

        ``timeout_s`` and ``retries`` override the line's for this call (the bus scan uses
        a short timeout and no retry; a door pulse ``retries=0``: its frame goes on the
        wire once, whatever happens); ``log_failures=False`` keeps a failure out of the
        once-per-incident log (still counted); ``early=True`` lets the request go inside
        the late window of a timed-out request when its reply cannot be taken for that
        one's (see the module docstring)."""
        if self._closed:
            raise BusClosed(f"bus {self.name} is closed", bus=self.name)
        budget = self.retries if retries is None else retries
        if not req.expects_reply:
            budget = 0
        attempt_timeout = self.timeout if timeout_s is None else timeout_s
        counters = self._units.get(req.unit)
        if counters is None:
            counters = self._units[req.unit] = UnitCounters()
        if req.is_read and retries is None and (counters.failing or counters.degraded):
            # A unit already failing gets one attempt per read: its signals are unknown
            # anyway, and every retry (each with its late window) is line time the
            # healthy boards on the same pair of wires need.
            budget = 0
        counters.transactions += 1
        self._total.transactions += 1
        t0 = counters.timeouts
        if not self._gate.try_acquire():
            await self._gate.acquire(0 if priority else 1)
        hit: tuple[bytes, bytes] | None = None
        entry: tuple[Request, bytes, bytes] | None = None
        try:
            last: BoardError | None = None
            result: tuple[bool, ...] | tuple[int, ...] | None = None
            for attempt in range(budget + 1):
                if attempt:
                    counters.retries += 1
                    self._total.retries += 1
                self._hit = None
                try:
                    result = await self._attempt(req, attempt_timeout, early)
                    hit = self._hit if attempt == 0 else None
                except BoardTimeout as exc:
                    counters.timeouts += 1
                    self._total.timeouts += 1
                    last = exc
                except FrameError as exc:
                    counters.frame_errors += 1
                    self._total.frame_errors += 1
                    last = exc
                except BoardRejected as exc:
                    counters.exceptions += 1
                    self._total.exceptions += 1
                    self._judge_lateness(
                        req.unit, counters, answered=True, timed_out=counters.timeouts > t0
                    )
                    self._failed(req.unit, counters, exc, log_failures)
                    raise
                except BusError as exc:
                    self._note_bus_error(exc)
                    raise
                else:
                    break
            if (result is not None and not counters.late_pending and not counters.degraded
                    and counters.timeouts == t0 and True not in counters.late_history):
                # The common case: answered, no timeout, no late reply in the unit's recent
                # transactions. What _judge_lateness concludes, without appending to a
                # history that holds no late transaction to age out.
                counters.clean_streak += 1
                if counters.clean_streak >= self.degraded_after:
                    counters.lateness_s = 0.0
                degraded = False
            else:
                degraded = self._judge_lateness(
                    req.unit, counters, answered=result is not None,
                    timed_out=counters.timeouts > t0,
                )
            if result is not None and degraded and req.is_read:
                # It answered, but a degraded board's answer may be the previous one.
                last = BoardLate(
                    f"{req.describe()}: board degraded, its replies keep coming late "
                    f"({counters.late_replies} late so far); reading discarded",
                    bus=self.name, address=req.unit,
                )
                result = None
            if result is not None:
                counters.ok += 1
                self._total.ok += 1
                if counters.failing:
                    counters.failing = False
                    log.info(
                        "bus %s unit %d: answering again after %d failed transaction(s)",
                        self.name, req.unit, counters.failures_in_incident,
                    )
                    counters.failures_in_incident = 0
                if hit is not None:  # (answered on the first attempt: no timeout)
                    entry = (req, *hit)
                return result
            assert last is not None
            if degraded and req.is_read and not isinstance(last, BoardLate):
                late = BoardLate(
                    f"{req.describe()}: board degraded, its replies keep coming late; "
                    f"last attempt: {last.args[0] if last.args else last}",
                    bus=self.name, address=req.unit,
                )
                late.__cause__ = last
                last = late
            self._failed(req.unit, counters, last, log_failures)
            raise last
        finally:
            if self._watch is not None:
                # An unchanged read answered at once, or None: no quiet run on this cycle.
                if len(self._watch) < _GOOD_MEMORY:
                    self._watch.append(entry)
                else:
                    self._watch = None  # a recording never collected: bounded, and let go
            self._gate.release()

    def late_reply_at(self, req: Request) -> float | None:
        """When (monotonic) a *valid* reply to a request equal to ``req`` last arrived
        late (in its late window, or later while the line was idle), or None. A write's
        late echo is the board's own acknowledgement: the pulse policy uses it to
        confirm a pulse whose echo missed the timeout. Only recent ones are remembered."""
        return self._late_valid.get((req.unit, req.pdu))

    async def wait_late_reply(self, req: Request) -> float | None:
        """Wait out the open late window, if any (the line is held meanwhile, like
        before any request), then return :meth:`late_reply_at` for ``req``: whether
        its valid reply came late after all."""
        await self._gate.acquire(0)
        try:
            if self._late_req is not None:
                await self._settle()
        finally:
            self._gate.release()
        return self.late_reply_at(req)

    def stats(self) -> LineStats:
        """A frozen snapshot of the counters (cheap; call it for every telemetry message)."""
        t = self._total
        units = {unit: c.freeze() for unit, c in sorted(self._units.items())}
        return LineStats(
            name=self.name,
            connected=self.connected,
            transactions=t.transactions,
            ok=t.ok,
            timeouts=t.timeouts,
            frame_errors=t.frame_errors,
            exceptions=t.exceptions,
            retries=t.retries,
            bus_errors=self._bus_errors,
            stray_bytes=self._stray,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
            units=units,
            late_replies=self._late_total,
            degraded=tuple(unit for unit, u in units.items() if u.degraded),
        )

    @property
    def waiting(self) -> int:
        """Transactions queued behind the one on the wire."""
        return self._gate.waiting

    # -- the quiet run -------------------------------------------------------------------

    def watch(self) -> None:
        """Start recording transactions for a :class:`QuietPlan` (see :meth:`watched`)."""
        self._watch = []

    def watched(self) -> QuietPlan | None:
        """Stop recording; return the plan of the recorded transactions when every one was
        a read answered at once, on its first attempt, by the same bytes as its last good
        reply (an unchanged poll), else None."""
        entries, self._watch = self._watch, None
        if not entries or None in entries:
            return None
        done = [e for e in entries if e is not None]
        return QuietPlan(
            requests=tuple(e[0] for e in done),
            frames=tuple(e[1] for e in done),
            replies=tuple(e[2] for e in done),
            tx_times=tuple(len(e[1]) * self._char_s for e in done),
        )

    async def run_quiet(
        self,
        plan: QuietPlan,
        *,
        next_start: float,
        interval_s: float,
        budget_s: float,
        on_cycle: Callable[[float], None],
    ) -> QuietRun | None:
        """Read ``plan`` every ``interval_s`` from ``next_start`` (monotonic) in a thread
        (:mod:`drivers.modbus.quiet`) while every reply is the expected one, for about
        ``budget_s`` at most; return how the run ended. Returns None at once, having done
        nothing, unless the line is an open RTU serial port, clean (no late window, no
        input to drain), free, and every unit of the plan healthy and on time.

        Meanwhile the line is held: a caller waiting for it ends the run before the next
        request. A reply that is not the expected one ends it too; that transaction is
        then resumed by the next :meth:`execute` of the same request, with the line's
        ordinary checks (any other transaction first gives it up: its reply is then
        treated like a cancelled transaction's). ``on_cycle`` is called from the thread
        after each whole cycle, with the time of its last reply."""
        transport = self._transport
        if (self._closed or self.framing != "rtu" or not isinstance(transport, SerialTransport)
                or transport.fd < 0 or self._dirty or self._late_req is not None
                or self._resume is not None or self._quiet_running is not None
                or not plan.frames or not self._units_on_time(plan)):
            return None
        if not self._gate.try_acquire():
            return None
        loop = self._loop or asyncio.get_running_loop()
        stop = self._quiet_stop
        stop.clear()
        done: asyncio.Future[None] = loop.create_future()
        box: list[QuietRun | BaseException] = []
        fd = transport.fd
        running = threading.Event()
        last_rx = max(self._last_rx, self._next_send - self._gap)

        def work() -> None:
            try:
                box.append(read_quiet(
                    fd, plan, gap_s=self._gap, timeout_s=self.timeout, last_rx=last_rx,
                    next_start=next_start, interval_s=interval_s,
                    until=time.monotonic() + budget_s, stop=stop, on_cycle=on_cycle,
                ))
            except BaseException as exc:  # handed to the loop, raised there
                box.append(exc)
            running.set()
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_wake, done)

        self._quiet_running = running
        self._gate.on_contended = stop.set
        transport.pause_reading()
        try:
            self._quiet_submit(work)
            await asyncio.shield(done)
        finally:
            stop.set()
            # At once after a normal end; within a transaction after a cancel.
            running.wait()
            self._quiet_running = None
            self._gate.on_contended = None
            outcome = box[0] if box else None
            if self._transport is transport:
                transport.resume_reading()
                if isinstance(outcome, QuietRun):
                    self._quiet_done(plan, outcome)
            self._gate.release()
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        return outcome

    def _quiet_submit(self, work: Callable[[], None]) -> None:
        """Run ``work`` on the line's reader thread, started on the first quiet run and
        ended by :meth:`close` (idle, it waits on its queue: no wake-ups)."""
        if self._quiet_worker is None:
            jobs = self._quiet_jobs

            def serve() -> None:
                while (job := jobs.get()) is not None:
                    job()

            worker = threading.Thread(target=serve, name=f"line-{self.name}", daemon=True)
            worker.start()
            self._quiet_worker = worker
        self._quiet_jobs.put(work)

    def _units_on_time(self, plan: QuietPlan) -> bool:
        for req in plan.requests:
            c = self._units.get(req.unit)
            if (c is None or c.failing or c.degraded or c.late_pending
                    or True in c.late_history):
                return False
        return True

    def _quiet_done(self, plan: QuietPlan, run: QuietRun) -> None:
        """Take the line back from a quiet run: its times, its counts, what to resume."""
        self._last_rx = max(self._last_rx, run.last_rx)
        self._next_send = max(self._next_send, self._last_rx + self._gap)
        if run.last_sent_at > self._last_sent_at:
            self._last_sent_at = run.last_sent_at
            n = len(plan.requests)
            last = run.resume.index if run.resume is not None else (run.index - 1) % n
            self._last_req = plan.requests[last]
        for req, k in zip(plan.requests, run.counts, strict=True):
            if not k:
                continue
            c = self._units.get(req.unit)
            if c is None:
                c = self._units[req.unit] = UnitCounters()
            c.transactions += k
            c.ok += k
            c.clean_streak += k
            if c.clean_streak >= self.degraded_after:
                c.lateness_s = 0.0
            self._total.transactions += k
            self._total.ok += k
        self._resume = run.resume

    def _take_resume(self, req: Request) -> Resume | None:
        """The transaction a quiet run handed back, if ``req`` is its request; any other
        request gives it up first (:meth:`_give_up`)."""
        resume, self._resume = self._resume, None
        if resume is None:
            return None
        if resume.request == req and self._transport is not None:
            return resume
        self._give_up(resume)
        return None

    def _give_up(self, resume: Resume) -> None:
        """A handed-back transaction not resumed: a whole, valid reply leaves the line
        quiet (the poll is read again); anything else is handled as the reply of a
        cancelled transaction (the input drained, a late window for the rest)."""
        try:
            n = codec.rtu_reply_length(resume.request, resume.rx)
        except FrameError:
            n = None
        if n == len(resume.rx) and codec.rtu_crc_ok(resume.rx):
            return
        self._dirty = True
        self._open_late_window(resume.request, self.timeout, resume.rx)

    # -- mechanism ---------------------------------------------------------------------

    def _judge_lateness(
        self, unit: int, counters: UnitCounters, *, answered: bool, timed_out: bool
    ) -> bool:
        """At the end of a transaction: record whether late replies were seen since the
        previous one; return whether the unit is degraded now.

        Degraded: late replies in ``degraded_after`` of its last ``2 * degraded_after``
        transactions (a board later than the window shifts its replies by one request:
        only every other late reply is then seen as late). Recovered: ``degraded_after``
        consecutive transactions answered on the first attempt with no late reply."""
        late = counters.late_pending
        counters.late_pending = False
        history = counters.late_history
        history.append(late)
        while len(history) > 2 * self.degraded_after:
            history.popleft()
        if late or not answered or timed_out:
            counters.clean_streak = 0
        else:
            counters.clean_streak += 1
            if counters.clean_streak >= self.degraded_after:
                counters.lateness_s = 0.0  # on time again: back to the configured window
        if not counters.degraded and sum(history) >= self.degraded_after:
            counters.degraded = True
            log.warning(
                "bus %s unit %d: degraded, late replies in %d of its last %d transactions; "
                "its reads fail until it answers on time", self.name, unit, sum(history),
                len(history),
            )
        elif counters.degraded and counters.clean_streak >= self.degraded_after:
            counters.degraded = False
            history.clear()
            log.info("bus %s unit %d: answering on time again, no longer degraded",
                     self.name, unit)
        return counters.degraded

    def _late_window(self, unit: int, timeout_s: float) -> float:
        """The configured window, stretched to twice the lateness this unit has shown
        (at most ten timeouts) until it answers on time again: a board seen answering
        later than the window gets a longer one, so its next late reply is caught in
        it. Twice, because a reply seen after the window may answer the request before
        the last one (when the retry took the previous reply), so the measure can fall
        short by a request."""
        base = 2 * timeout_s if self.late_window_s is None else self.late_window_s
        counters = self._units.get(unit)
        seen = counters.lateness_s if counters is not None else 0.0
        return max(base, min(2 * seen, 10 * timeout_s))

    def _open_late_window(self, req: Request, timeout_s: float, partial: bytes) -> None:
        """The reply to ``req`` may still come: expect it as late for a while."""
        if self.framing != "rtu":
            return  # MBAP: the transaction id tells a late reply apart
        self._late_req = req
        self._late_until = time.monotonic() + self._late_window(req.unit, timeout_s)
        self._late_rx[:] = partial
        self._late_done.clear()

    async def _attempt(
        self, req: Request, timeout_s: float, early: bool = False
    ) -> tuple[bool, ...] | tuple[int, ...]:
        resume = self._take_resume(req) if self._resume is not None else None
        if resume is None:
            if self._transport is None:
                await self.connect()
            if self._dirty or self._late_req is not None:
                await self._settle(req if early else None)
            # The silent interval: a short one is slept here, without a trip through the
            # loop.
            target = max(self._next_send, self._last_rx + self._gap)
            wait = target - time.monotonic()
            if wait > _BLOCK_LIMIT_S:
                await self._sleep_on_loop(target)
                _sleep_until(target)
            elif wait > 0:
                time.sleep(wait)  # noqa: ASYNC251 - blocks the loop on purpose
        transport = self._transport
        if transport is None:
            raise BusError(f"bus {self.name}: line lost", bus=self.name)
        if self.framing == "rtu":
            adu = codec.encode_rtu(req)
        else:
            self._tid = self._tid % 0xFFFF + 1
            adu = codec.encode_mbap(req, self._tid)
        loop = self._loop or asyncio.get_running_loop()
        self._rx.clear()
        tx_time = len(adu) * self._char_s
        if not req.expects_reply:
            await self._send(transport, adu)
            self._next_send = time.monotonic() + tx_time + self._gap
            return ()
        # RTU: a reply equal to the last good one to this very frame needs no new check.
        good = self._good.get(adu) if self.framing == "rtu" and req.is_read else None
        fut: asyncio.Future[bytes] = loop.create_future()
        self._req = req
        self._waiter = fut
        self._last_req = req
        self._expected = good[0] if good is not None else None
        try:
            if resume is None:
                await self._send(transport, adu)
                self._last_sent_at = sent_at = time.monotonic()
            else:
                # Sent by the quiet run: go on from the bytes it had received.
                self._last_sent_at = sent_at = resume.sent_at
                if resume.rx:
                    self._on_data(resume.rx)
                    self._last_rx = resume.rx_at
            timer = loop.call_at(sent_at + timeout_s + tx_time, _expire, fut)
            try:
                frame = await fut
            finally:
                timer.cancel()
        except BoardTimeout as exc:
            self._dirty = True
            partial = bytes(self._rx)
            self._open_late_window(req, timeout_s, partial)
            exc.bus, exc.address = self.name, req.unit
            if partial:
                exc.args = (f"{exc.args[0]} ({len(partial)} byte(s) of a reply: "
                            f"{partial.hex()})",)
            raise
        except BoardError as exc:
            self._dirty = True
            exc.bus = self.name
            raise
        except BusError as exc:
            exc.frame_sent = True
            raise
        except BaseException:
            if not fut.done():
                # Cancelled mid-transaction: the reply may still come.
                self._dirty = True
                self._open_late_window(req, timeout_s, bytes(self._rx))
            raise
        finally:
            self._waiter = None
            self._req = None
            self._expected = None
        self._next_send = self._last_rx + self._gap
        try:
            if self.framing == "rtu":
                if good is not None and frame == good[0]:
                    self._hit = (adu, frame)
                    return good[1]
                result = codec.decode_reply(req, frame[0], frame[1:-2])
                if req.is_read:
                    if len(self._good) >= _GOOD_MEMORY:
                        self._good.clear()
                    self._good[adu] = (frame, result)
                return result
            _, unit, pdu = codec.split_mbap(frame)
            return codec.decode_reply(req, unit, pdu)
        except BoardError as exc:
            exc.bus = self.name
            raise

    async def _send(self, transport: Transport, adu: bytes) -> None:
        """Put ``adu`` on the wire (at once where the port takes it all, the usual case)."""
        try:
            sent = transport.try_write(adu)
            if sent < len(adu):
                await transport.write(adu[sent:])
        except OSError as exc:
            raise self._lost_error(exc) from exc

    async def _sleep_on_loop(self, target: float) -> None:
        """The whole milliseconds of a long silent interval, on the loop (epoll sleeps in
        whole milliseconds, rounded up: ask for whole ones only); the caller sleeps the
        rest with :func:`_sleep_until`."""
        wait = target - time.monotonic()
        await asyncio.sleep(int(wait * 1000) / 1000)

    async def _settle(self, early: Request | None = None) -> None:
        """Before a request: wait out the late window of a timed-out request (unless
        ``early`` is a request whose reply cannot be taken for the late one) and until
        the input has been quiet for ``settle_s``, discarding what arrives. Bounded."""
        late = self._late_req
        skip_window = (
            early is not None and late is not None and _distinguishable(early, late)
        )
        if skip_window:
            self._late_rx.clear()  # a short late reply's head: it will not complete now
        start = time.monotonic()
        window_end = self._late_until if late is not None and not skip_window else start
        deadline = max(start, window_end) + self.settle_s + self.timeout
        while True:
            now = time.monotonic()
            if not skip_window and self._late_req is not None:
                window_end = self._late_until  # moves earlier once the late reply is in
            quiet_at = max(self._last_rx, start) + self.settle_s
            ready_at = max(quiet_at, window_end)
            if now >= ready_at or now >= deadline:
                break
            self._late_done.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(ready_at, deadline) - now):
                    await self._late_done.wait()
        transport = self._transport
        if transport is not None:
            transport.flush_input()
        if not skip_window:
            self._close_late_window()
        self._rx.clear()
        self._dirty = False

    def _close_late_window(self) -> None:
        self._late_req = None
        self._late_until = 0.0
        self._late_rx.clear()

    def _answered_late(self, unit: int) -> bool:
        """Whether ``unit`` has a timed-out request on this line that it may still be
        answering (it is failing, or has answered late before)."""
        counters = self._units.get(unit)
        return counters is not None and (counters.failing or counters.late_replies > 0
                                         or counters.timeouts > 0)

    def _count_late(self, unit: int, lateness_s: float | None = None) -> None:
        counters = self._units.get(unit)
        if counters is None:
            counters = self._units[unit] = UnitCounters()
        counters.late_replies += 1
        counters.late_pending = True
        if lateness_s is not None:
            counters.lateness_s = max(counters.lateness_s, lateness_s)
        self._late_total += 1

    def _take_late(self, data: bytes, waiting: bool) -> bytes:
        """RTU: consume the bytes of a late reply (to the timed-out request, or while
        idle to the last request); return the bytes that are not part of one."""
        now = self._last_rx
        in_window = self._late_req is not None and now < self._late_until
        target = self._late_req if in_window else None
        if target is None and not waiting:
            target = self._late_req or self._last_req
        if target is None:
            return data
        buf = self._late_rx
        started = not buf
        buf += data
        for _ in range(len(buf) + 1):  # bounded: each pass consumes a frame or returns
            if not buf:
                return b""
            try:
                n = codec.rtu_reply_length(target, buf)
            except FrameError:
                rest = bytes(buf)
                buf.clear()
                return rest  # not (the start of) its reply
            if started and not waiting:
                # Counted as it starts (it may stay short). Arriving after the window,
                # it answers the last request sent: that tells how late the board is.
                self._count_late(
                    target.unit, None if in_window else now - self._last_sent_at
                )
            if n is None or len(buf) < n:
                return b""
            frame = bytes(buf[:n])
            valid = codec.rtu_crc_ok(frame)
            if valid:
                try:
                    codec.decode_reply(target, frame[0], frame[1:-2])
                except BoardRejected:
                    pass  # an answer all the same
                except FrameError:
                    valid = False
            if waiting and not valid:
                rest = bytes(buf)
                buf.clear()
                return rest  # the same shape but not its reply: ours, presumably
            del buf[:n]
            if waiting:
                self._count_late(target.unit)
            self._stray += n
            if valid:
                self._late_valid[(target.unit, target.pdu)] = now
                self._late_valid.move_to_end((target.unit, target.pdu))
                while len(self._late_valid) > _LATE_MEMORY:
                    self._late_valid.popitem(last=False)
                if in_window:
                    self._late_until = now  # answered: nothing more will come
            self._late_done.set()
            started = True
        return b""  # pragma: no cover - the loop always returns

    def _on_data(self, data: bytes) -> None:
        self._last_rx = time.monotonic()
        fut, req = self._waiter, self._req
        waiting = fut is not None and req is not None and not fut.done()
        if not waiting:
            self._dirty = True  # drain before the next request
        if (self.framing == "rtu" and not (waiting and self._rx)
                and (self._late_req is not None or not waiting)):
            # (Waiting, with no late window open, it has nothing to take.)
            data = self._take_late(data, waiting)
            if not data:
                return
        if not waiting:
            self._stray += len(data)
            return
        assert fut is not None
        assert req is not None
        rx = self._rx
        rx += data
        expected = self._expected
        if expected is not None and rx == expected:
            # The last good reply to this request again, whole: it passed every check.
            rx.clear()
            fut.set_result(expected)
            return
        try:
            if self.framing == "rtu":
                # A frame from a board that failed to answer in time before may be its late
                # reply landing in this transaction: measured as a reply of the same shape
                # from that unit, and, if whole and valid, charged to it, not to the board
                # asked now.
                foreign = rx[0] != req.unit and self._answered_late(rx[0])
                n = codec.rtu_reply_length(replace(req, unit=rx[0]) if foreign else req, rx)
                if n is None or len(rx) < n:
                    return
                frame = bytes(rx[:n])
                if foreign:
                    if not codec.rtu_crc_ok(frame):
                        raise FrameError(f"{req.describe()}: garbled reply from unit "
                                         f"{frame[0]}: {frame.hex()}", address=req.unit)
                    del rx[:n]
                    self._stray += n
                    self._count_late(frame[0])
                    if rx:
                        self._on_data(b"")  # what followed it: the start of ours
                    return
                if len(rx) > n:
                    self._stray += len(rx) - n
                    self._dirty = True
                del rx[:n]
                if not codec.rtu_crc_ok(frame):
                    raise FrameError(
                        f"{req.describe()}: bad CRC in reply {frame.hex()}", address=req.unit
                    )
                fut.set_result(frame)
                return
            while True:
                n = codec.mbap_reply_length(rx)
                if n is None or len(rx) < n:
                    return
                frame = bytes(rx[:n])
                del rx[:n]
                if frame[0] << 8 | frame[1] == self._tid:
                    if rx:
                        self._stray += len(rx)
                        rx.clear()
                    fut.set_result(frame)
                    return
                self._stray += n  # a stale reply to an earlier, timed-out request
                self._count_late(frame[6])
        except FrameError as exc:
            self._stray += len(rx)
            rx.clear()
            fut.set_exception(exc)

    def _on_lost(self, exc: Exception) -> None:
        err = BusError(f"bus {self.name}: line lost: {exc}", bus=self.name)
        err.__cause__ = exc
        self._drop_transport(err)

    def _lost_error(self, exc: BaseException) -> BusError:
        err = BusError(f"bus {self.name}: write failed: {exc}", bus=self.name)
        self._drop_transport(err)
        return err

    def _drop_transport(self, err: BusError) -> None:
        running = self._quiet_running
        if running is not None:
            # A quiet run reads the port: end it before the port closes (a transaction).
            self._quiet_stop.set()
            running.wait()
        self._resume = None
        transport, self._transport = self._transport, None
        self._loop = None
        if transport is not None:
            transport.close()
        fut = self._waiter
        if fut is not None and not fut.done():
            fut.set_exception(err)
        self._dirty = True

    def _note_bus_error(self, exc: BusError) -> None:
        self._bus_errors += 1
        self._last_error = str(exc)
        self._last_error_at = time.monotonic()
        if not self._bus_failing and not isinstance(exc, BusClosed):
            self._bus_failing = True
            log.warning("bus %s: %s; further line errors are counted, not logged", self.name, exc)

    def _failed(self, unit: int, counters: UnitCounters, exc: BoardError, log_it: bool) -> None:
        text = str(exc)
        counters.last_error = text
        counters.failures_in_incident += 1
        self._last_error = text
        self._last_error_at = time.monotonic()
        if isinstance(exc, BoardRejected):
            # An answer, not an outage: the board is alive.
            log.debug("bus %s: %s", self.name, text)
            return
        if not counters.failing:
            counters.failing = True
            if log_it:
                log.warning("%s; further failures of unit %d are counted, not logged, "
                            "until it answers again", text, unit)


def _sleep_until(target: float) -> None:
    """Sleep until ``target`` (at most ``_BLOCK_LIMIT_S`` away), blocking the loop that
    long. nanosleep keeps to tens of microseconds and, unlike a busy-wait, costs no CPU
    and releases the GIL (a paho network thread, an in-process simulator run on)."""
    remaining = target - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


def _distinguishable(req: Request, late: Request) -> bool:
    """Whether a reply to ``late`` can never be decoded as the reply to ``req``."""
    if req.unit != late.unit or req.function != late.function:
        return True
    return not req.is_read and req.pdu != late.pdu


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _expire(fut: asyncio.Future[bytes]) -> None:
    if not fut.done():
        fut.set_exception(BoardTimeout("no complete reply within the timeout"))
