"""The quiet run: a line's unchanged polls read by a thread, with no trip through the loop.

An unchanged poll (every board answering exactly what it answered last, every signal
settled) is the cabinet's common case, and on the event loop it costs two wake-ups of the
loop per transaction, dear on a Pi-class CPU (``docs/performance.md``, section 17). While
the line is clean and the cabinet quiet, :meth:`drivers.modbus.line.ModbusLine.run_quiet`
hands the port to :func:`read_quiet`, which runs here in a thread of its own: it keeps the
poll cadence, the silent interval and each attempt's timeout, and compares each reply with
the one it expects, byte for byte. It hands the line back to the loop (the thread ends):

* at the first reply that is not the expected one, whole (a door moved; a short, garbled,
  foreign or exception reply; no reply by the timeout; the port gone): the transaction is
  *resumed* on the loop as if the loop had sent it (its send time, the bytes in so far),
  and the line's ordinary checks, timeout, retries and late-reply rules take it from there;
* before a request, when anything else waits for the line (a door pulse waits for at most
  the transaction on the wire, as always), when bytes arrived that no request asked for,
  or when the line is being closed;
* at a cycle's start once its time budget is spent, so the loop takes the poll times, the
  counters and the model's bookkeeping at least that often.

Nothing here decodes or decides: a reply that is not byte-identical to the expected one is
never taken by the thread, and a reply the thread takes is one that passed every check of
the line before (see :class:`drivers.modbus.line.ModbusLine`, "Strict replies").
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from drivers.errors import FrameError
from drivers.modbus import codec
from drivers.modbus.codec import Request

__all__ = ["QuietPlan", "QuietRun", "Resume", "read_quiet"]


@dataclass(frozen=True, slots=True)
class QuietPlan:
    """What one cycle of a quiet line reads: per transaction, in order, the request, its
    frame on the wire, the reply expected and the request's transmission time."""

    requests: tuple[Request, ...]
    frames: tuple[bytes, ...]
    replies: tuple[bytes, ...]
    tx_times: tuple[float, ...]


@dataclass(slots=True)
class Resume:
    """A transaction the thread sent whose reply was not the expected one: the loop goes
    on with it from where the thread stopped."""

    index: int
    request: Request
    frame: bytes
    sent_at: float
    rx: bytes
    rx_at: float


@dataclass(slots=True)
class QuietRun:
    """How a quiet run ended. ``cycles``: whole cycles read unchanged; ``index``: the
    transaction of the cycle under way the loop goes on with (0: at a cycle's start, not
    begun); ``next_start``: the start time of that cycle; ``read_at``: per transaction of
    the plan, when its last unchanged reply came in (0.0: none in this run); ``reason``:
    ``budget``, ``waiting``, ``changed``, ``input`` or ``stopped``."""

    cycles: int
    index: int
    next_start: float
    read_at: list[float]
    counts: list[int]
    reason: str
    last_rx: float
    last_sent_at: float
    resume: Resume | None = field(default=None)


def read_quiet(
    fd: int,
    plan: QuietPlan,
    *,
    gap_s: float,
    timeout_s: float,
    last_rx: float,
    next_start: float,
    interval_s: float,
    until: float,
    stop: threading.Event,
    on_cycle: Callable[[float], None],
) -> QuietRun:
    """Read ``plan`` cycle after cycle on the descriptor ``fd`` (non-blocking), every
    ``interval_s`` from ``next_start``, until a reply is not the expected one, ``stop`` is
    set, input arrives unasked, or a cycle would start after ``until`` (monotonic).
    ``on_cycle(t)`` is called after each whole cycle with the time of its last reply.
    Blocking calls only (``poll``, ``sleep``, an event's wait): the loop's thread runs
    meanwhile. Bounded: it stops at ``until`` at the latest, one transaction's timeout on."""
    watch = select.poll()
    watch.register(fd, select.POLLIN | select.POLLPRI)
    mono = time.monotonic
    n = len(plan.frames)
    read_at = [0.0] * n
    counts = [0] * n
    cycles = 0
    index = 0
    last_sent = 0.0
    requests: Sequence[Request] = plan.requests

    def end(reason: str, resume: Resume | None = None) -> QuietRun:
        return QuietRun(cycles, index, next_start, read_at, counts, reason, last_rx,
                        last_sent, resume)

    while True:
        if index == 0:
            now = mono()
            if now >= until:
                return end("budget")
            delay = next_start - now
            if delay > 0 and stop.wait(delay):
                return end("waiting")
        if stop.is_set():
            return end("waiting")
        if watch.poll(0):
            # Bytes nobody asked for (noise, a reply later than its window): the loop's
            # reader counts and drains them, and the line settles before its next request.
            return end("input")
        frame = plan.frames[index]
        expected = plan.replies[index]
        wait = last_rx + gap_s - mono()
        if wait > 0:
            time.sleep(wait)
            if stop.is_set():
                # Asked for during the silent interval: the caller goes first, rather than
                # after one more transaction.
                return end("waiting")
        try:
            sent = os.write(fd, frame)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            # The port is gone: the loop's reader and its next write report it.
            return end("input")
        if sent != len(frame):
            # Not all of it left (a full output queue). A part of a frame may be on the
            # wire: the loop resumes the transaction, writing nothing more, so it ends as a
            # timeout with its late window, exactly as a lost request does.
            last_sent = sent_at = mono()
            return end("changed", Resume(index, requests[index], frame, sent_at, b"", last_rx))
        last_sent = sent_at = mono()
        deadline = sent_at + timeout_s + plan.tx_times[index]
        rx = b""
        need: int | None = len(expected)
        while need is None or len(rx) < need:
            left = deadline - mono()
            if left <= 0 or not watch.poll(left * 1000):
                if left <= 0 or mono() >= deadline:
                    break
                continue
            try:
                data = os.read(fd, 1024)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                break  # gone: the loop's reader reports it
            if not data:
                break  # hung up (or flushed meanwhile): the loop's reader tells which
            rx += data
            last_rx = mono()
            if not expected.startswith(rx):
                # Not the expected reply: read it whole when its head tells its length,
                # so the loop gets the complete frame.
                try:
                    need = codec.rtu_reply_length(requests[index], rx)
                except FrameError:
                    break
        if rx != expected:
            return end("changed", Resume(index, requests[index], frame, sent_at, rx, last_rx))
        read_at[index] = last_rx
        counts[index] += 1
        index += 1
        if index == n:
            index = 0
            cycles += 1
            on_cycle(last_rx)
            next_start += interval_s
            now = mono()
            if next_start < now:
                next_start = now  # overran: start again now, no catching up (as the poller)
