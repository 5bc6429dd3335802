"""Modbus RTU over a pty pair, with the line's timing emulated.

The simulator owns the master side of ``os.openpty()``; a Modbus master (the production
driver, ``mbpoll``, a test) opens the slave side by its path like any serial port.

Why our own transport loop and not pymodbus' serial server
----------------------------------------------------------
A pty has no baud rate: it carries thousands of frames a second whatever the termios
speed says. To measure the driver against the physical limit of the line, each reply
must leave no earlier than a real board's would, and that needs sub-millisecond timers:
asyncio timers are rounded up to whole milliseconds (epoll), so a dedicated thread waits
with ``time.sleep`` and spins on ``time.perf_counter`` for the last fraction. Faults
(no reply, bad CRC, collisions, late replies) also live at this level. pymodbus still
decodes every request and builds every reply (see :mod:`simulator.boards`).

Framing, as a board does it
---------------------------
* A request's length is known from its function code (8 bytes for 01..06, byte count
  for 15/16/23); a frame is cut there and its CRC checked.
* A frame with an unknown function code ends at the silent interval (the line quiet for
  3.5 characters, at least :data:`MIN_SILENCE_S` here because a pty has no clock).
* A frame with a bad CRC is dropped and so is everything after it until the line has
  been quiet for the silent interval (the board resynchronises). No reply: a board never
  answers a frame it could not check.

Timing emulation
----------------
With ``emulate_timing`` a reply is written no earlier than::

    arrival of the request's first byte + frame_time(request) + silent_interval
        + frame_time(reply) [+ the answer's delay: the board's processing time and
                             the "slow" and "late" faults]

(:mod:`drivers.modbus.registers`), i.e. when its last byte would have reached the master
on a real line. A request that starts less than one silent interval after the previous
reply ended is counted in ``BusStats.gap_violations``. Without emulation replies leave
as soon as they are computed (plus the answer's delay). A request that arrives while a
late reply is still pending is read after that reply has left, as a board that answers
one frame at a time would.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
import tty

from drivers.modbus.registers import crc16, frame_time, silent_interval
from simulator.bus import SimBus

__all__ = ["MIN_SILENCE_S", "RtuPtyServer", "expected_request_length"]

log = logging.getLogger(__name__)

#: A pty has no character clock: bytes written at once may still be read in two chunks
#: a few hundred microseconds apart. Below this no gap is taken as a frame boundary.
MIN_SILENCE_S = 0.004
#: How often the loop looks at its stop flag when the line is idle.
IDLE_POLL_S = 0.05
#: The last stretch of a wait is spun, not slept, for sub-millisecond precision.
SPIN_S = 0.0006
#: Gap violations are counted with this much tolerance for the measuring itself.
GAP_TOLERANCE_S = 0.0002
#: Longest request a board accepts (RTU ADU limit).
MAX_FRAME = 256

_FIXED_LENGTH = {1: 8, 2: 8, 3: 8, 4: 8, 5: 8, 6: 8, 7: 4, 8: 8, 11: 4, 12: 4, 17: 4, 22: 10, 43: 7}
_BYTE_COUNT_AT = {15: 6, 16: 6, 23: 10}


def expected_request_length(buffer: bytes | bytearray) -> int | None:
    """Length of the request frame starting ``buffer``, or None when it cannot be told
    (unknown function, or the byte count not received yet: wait for more or for silence)."""
    if len(buffer) < 2:
        return None
    fc = buffer[1]
    if fc in _FIXED_LENGTH:
        return _FIXED_LENGTH[fc]
    pos = _BYTE_COUNT_AT.get(fc)
    if pos is None or len(buffer) <= pos:
        return None
    return pos + 1 + buffer[pos] + 2


def _crc_ok(frame: bytes) -> bool:
    if len(frame) < 4:
        return False
    crc = crc16(frame[:-2])
    return frame[-2] == crc & 0xFF and frame[-1] == crc >> 8


def sleep_until(deadline: float, stop: threading.Event) -> None:
    """Wait until ``time.perf_counter() >= deadline``: sleep most of it, spin the end.
    Returns early only when ``stop`` is set. Bounded by the deadline."""
    while not stop.is_set():
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return
        if remaining > 0.05:
            stop.wait(remaining - 0.02)
        elif remaining > SPIN_S:
            time.sleep(remaining - SPIN_S)
        # else: spin


class RtuPtyServer:
    """Serves one :class:`~simulator.bus.SimBus` as Modbus RTU on a pty, from a thread.

    ``start()`` opens the pty and starts the thread; :attr:`slave_path` is what a master
    opens. ``close()`` stops and joins the thread and closes the pty; safe twice.
    """

    def __init__(self, bus: SimBus, *, emulate_timing: bool = True) -> None:
        self.bus = bus
        self.emulate_timing = emulate_timing
        self.baudrate = bus.baudrate
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_path: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_reply_end: float | None = None

    @property
    def slave_path(self) -> str:
        if self._slave_path is None:
            raise RuntimeError("RTU server not started")
        return self._slave_path

    def start(self) -> None:
        if self._thread is not None:
            return
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._slave_path = os.ttyname(slave)
        self._thread = threading.Thread(
            target=self._run, name=f"sim-rtu-{self.bus.name}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None

    # -- the loop ------------------------------------------------------------------

    def _silence(self) -> float:
        return max(silent_interval(self.baudrate), MIN_SILENCE_S)

    def _run(self) -> None:
        assert self._master is not None
        master = self._master
        buffer = bytearray()
        first_at = 0.0  # perf_counter of the current frame's first byte
        last_rx = 0.0
        resync = False  # after a bad frame: drop everything until silence
        while not self._stop.is_set():
            if buffer or resync:
                timeout = max(0.0, last_rx + self._silence() - time.perf_counter())
            else:
                timeout = IDLE_POLL_S
            try:
                readable, _, _ = select.select([master], [], [], timeout)
            except (OSError, ValueError):
                return
            now = time.perf_counter()
            if not readable:
                if buffer and not resync:
                    # line quiet: whatever is buffered is a (probably bad) frame
                    self._frame(bytes(buffer), first_at)
                buffer.clear()
                resync = False
                continue
            try:
                data = os.read(master, 4096)
            except BlockingIOError:
                continue
            except OSError:
                self._stop.wait(IDLE_POLL_S)  # no slave open right now (EIO)
                continue
            last_rx = now
            if resync:
                continue
            if not buffer:
                first_at = now
            buffer += data
            for _ in range(MAX_FRAME):  # bounded: each pass consumes a frame or stops
                need = expected_request_length(buffer)
                if need is None or len(buffer) < need:
                    if len(buffer) > MAX_FRAME:
                        buffer.clear()
                        resync = True
                    break
                frame = bytes(buffer[:need])
                del buffer[:need]
                if not _crc_ok(frame):
                    self.bus.stats.bad_crc_requests += 1
                    buffer.clear()
                    resync = True
                    break
                self._frame(frame, first_at)
                first_at = time.perf_counter()
                if not buffer:
                    break

    def _frame(self, frame: bytes, arrival: float) -> None:
        """One complete frame from the master: check, answer, reply on time."""
        if not _crc_ok(frame):
            self.bus.stats.bad_crc_requests += 1
            return
        if (
            self.emulate_timing
            and self._last_reply_end is not None
            and arrival < self._last_reply_end + silent_interval(self.baudrate) - GAP_TOLERANCE_S
        ):
            self.bus.stats.gap_violations += 1
        unit = frame[0]
        answer = self.bus.answer(unit, frame[1:-2])
        reply = self.bus.rtu_reply(unit, answer)
        if reply is None:
            return
        if self.emulate_timing:
            deadline = (
                arrival
                + frame_time(len(frame), self.baudrate)
                + silent_interval(self.baudrate)
                + frame_time(len(reply), self.baudrate)
                + answer.latency_s
            )
        else:
            deadline = time.perf_counter() + answer.latency_s
        sleep_until(deadline, self._stop)
        if self._stop.is_set():
            return
        self._write(reply)
        self._last_reply_end = time.perf_counter()

    def _write(self, data: bytes) -> None:
        assert self._master is not None
        try:
            written = os.write(self._master, data)
        except (BlockingIOError, OSError):
            log.warning("bus %s: reply dropped, nobody reads the line", self.bus.name)
            return
        if written != len(data):
            log.warning("bus %s: reply truncated, nobody reads the line", self.bus.name)
