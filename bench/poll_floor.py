"""The floor of a poll transaction's CPU in Python: what each process model costs.

The footprint target (<= 0.2 CPU-ms per poll transaction, < 1 % of a core at 4 boards x
10 Hz) is missed by the daemon. This benchmark asks how much of that is the product and
how much the way the line is driven, by polling the same simulated line several ways,
one after the other in one run, in alternating rounds (so the machine's drift hits all):

- ``daemon``: the real ``locker-controller``, its whole process (the line, the board
  drivers, the cabinet model, the MQTT link, the store, its timers);
- ``asyncio``: a bare poller with the line's mechanics and nothing else: one event loop,
  the descriptor watched with ``add_reader``, a future per reply and a timeout timer per
  request, the silent interval slept with ``time.sleep``, the reply's CRC checked (the
  daemon's own frames and CRC code) and compared with the last one;
- ``uvloop`` (only when uvloop is installed; not a dependency of the daemon): the
  ``asyncio`` poller on uvloop's event loop, libuv underneath;
- ``thread``: the same reads made by a thread with blocking I/O (``poll`` on the
  descriptor), an idle event loop beside it that is handed a board's reply only when it
  changed (``call_soon_threadsafe``): the shape of a line thread that serves the loop
  changes only.

The cabinet is :mod:`bench.daemon_footprint`'s (4 Waveshare boards x 16 inputs, one
RS-485 line at 19200 baud, ``locker-sim`` emulating the line's timing), polled every
``--poll`` s. Each figure is the time on a CPU of the poller's process (all its threads,
:func:`bench._lane.cpu_ms`) over ``--window`` s divided by the poll
transactions the simulator counted meanwhile. The bare pollers run in a child process of
their own, so their interpreter and imports are charged the same way. Nothing happens on
the lane: this is the idle cost of polling.

    .venv/bin/python bench/poll_floor.py [--rounds 3] [--window 20] [--settle 5]
        [--poll 0.1] [--pin CORE]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._lane import cpu_ms, installed_bytecode, machine
from bench.daemon_footprint import (
    BAUD,
    BOARDS,
    CHANNELS,
    _pin,
    _wait_online,
    _wakeups,
    bench_rig,
)
from controller.lab.rig import LaneRig
from drivers.modbus.codec import encode_rtu, read_request, rtu_crc_ok
from drivers.modbus.registers import read_bits_reply_len, silent_interval

# -- the bare pollers (run as ``python bench/poll_floor.py --child MODE PORT POLL S``) --

_GAP_S = silent_interval(BAUD)
_TIMEOUT_S = 0.2
# The daemon's own frames and CRC check (table driven): only the way of waiting differs.
_REQUESTS = [encode_rtu(read_request(unit, 0x02, 0, CHANNELS)) for unit in
             range(1, BOARDS + 1)]
_REPLY_LEN = read_bits_reply_len(CHANNELS)


def _sleep_until(target: float) -> None:
    remaining = target - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


def _open(port: str) -> Any:
    """The port, opened the daemon's way: pyserial sets the line up, then raw os calls on
    its descriptor (set non-blocking here). Keep the object while the descriptor is used."""
    import serial

    ser = serial.Serial(port=port, baudrate=BAUD, timeout=0, write_timeout=0)
    os.set_blocking(ser.fileno(), False)
    ser.reset_input_buffer()
    return ser


async def _asyncio_poller(port: str, poll_s: float, seconds: float) -> int:
    loop = asyncio.get_running_loop()
    ser = _open(port)
    fd: int = ser.fileno()
    rx = bytearray()
    waiter: list[asyncio.Future[bytes] | None] = [None]
    last_rx = [0.0]

    def readable() -> None:
        try:
            data = os.read(fd, 1024)
        except (BlockingIOError, InterruptedError):
            return
        last_rx[0] = time.monotonic()
        fut = waiter[0]
        if fut is None or fut.done():
            return
        rx.extend(data)
        if len(rx) >= _REPLY_LEN:
            frame = bytes(rx[:_REPLY_LEN])
            del rx[:]
            fut.set_result(frame)

    def expire(fut: asyncio.Future[bytes]) -> None:
        if not fut.done():
            fut.set_exception(TimeoutError())

    loop.add_reader(fd, readable)
    last: dict[int, bytes] = {}
    tx = 0
    end = time.monotonic() + seconds
    next_start = loop.time()
    while time.monotonic() < end:
        for unit, adu in enumerate(_REQUESTS, 1):
            _sleep_until(last_rx[0] + _GAP_S)  # blocks the loop, as the line does
            fut: asyncio.Future[bytes] = loop.create_future()
            waiter[0] = fut
            os.write(fd, adu)
            timer = loop.call_later(_TIMEOUT_S, expire, fut)
            try:
                frame = await fut
            except TimeoutError:
                continue
            finally:
                timer.cancel()
                waiter[0] = None
            tx += 1
            if rtu_crc_ok(frame) and last.get(unit) != frame:
                last[unit] = frame
        next_start += poll_s
        await asyncio.sleep(max(0.0, next_start - loop.time()))
    loop.remove_reader(fd)
    ser.close()
    return tx


def _thread_poller(port: str, poll_s: float, seconds: float) -> int:
    ser = _open(port)
    fd: int = ser.fileno()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    changes: list[tuple[int, bytes]] = []
    count = [0]

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def deliver(unit: int, frame: bytes) -> None:
            changes.append((unit, frame))

        def run() -> None:
            last: dict[int, bytes] = {}
            last_rx = 0.0
            end = time.monotonic() + seconds
            next_start = time.monotonic()
            while time.monotonic() < end:
                for unit, adu in enumerate(_REQUESTS, 1):
                    _sleep_until(last_rx + _GAP_S)
                    os.write(fd, adu)
                    rx = b""
                    deadline = time.monotonic() + _TIMEOUT_S
                    while len(rx) < _REPLY_LEN:
                        wait = deadline - time.monotonic()
                        if wait <= 0 or not poller.poll(wait * 1000):
                            break
                        try:
                            rx += os.read(fd, 1024)
                        except (BlockingIOError, InterruptedError):
                            continue
                    last_rx = time.monotonic()
                    if len(rx) < _REPLY_LEN:
                        continue
                    count[0] += 1
                    frame = rx[:_REPLY_LEN]
                    if rtu_crc_ok(frame) and last.get(unit) != frame:
                        last[unit] = frame
                        loop.call_soon_threadsafe(deliver, unit, frame)
                next_start += poll_s
                time.sleep(max(0.0, next_start - time.monotonic()))
            loop.call_soon_threadsafe(done.set_result, None)

        worker = threading.Thread(target=run, name="line", daemon=True)
        worker.start()
        await done
        worker.join(5)

    asyncio.run(serve())
    ser.close()
    return count[0]


def _child(mode: str, port: str, poll_s: float, seconds: float) -> int:
    if mode == "asyncio":
        tx = asyncio.run(_asyncio_poller(port, poll_s, seconds))
    elif mode == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            tx = runner.run(_asyncio_poller(port, poll_s, seconds))
    else:
        tx = _thread_poller(port, poll_s, seconds)
    print(f"transactions {tx}", flush=True)
    return 0


# -- the run --------------------------------------------------------------------------


def _measure(pid: int, rig: LaneRig, window: float) -> tuple[float, float, int]:
    """CPU-ms per transaction, wake-ups per transaction, transactions, over ``window``."""
    stats0 = rig.control.call("stats")["rs485-0"]["requests"]
    cpu0, wake0 = cpu_ms(pid), _wakeups(pid)
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    cpu1, wake1 = cpu_ms(pid), _wakeups(pid)
    stats1 = rig.control.call("stats")["rs485-0"]["requests"]
    tx = max(1, stats1 - stats0)
    return (cpu1 - cpu0) / tx, (wake1 - wake0) / tx, tx


def _wait_polling(rig: LaneRig, timeout_s: float = 15.0) -> None:
    """Until the simulator sees requests (the child has opened the line)."""
    first = rig.control.call("stats")["rs485-0"]["requests"]
    deadline = time.monotonic() + timeout_s
    while rig.control.call("stats")["rs485-0"]["requests"] <= first:
        if time.monotonic() > deadline:
            raise RuntimeError("the poller sent nothing")
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three (1..20)")
    parser.add_argument("--window", type=float, default=20.0, help="measured s (1..300)")
    parser.add_argument("--settle", type=float, default=5.0, help="s before (0..60)")
    parser.add_argument("--poll", type=float, default=0.1, help="poll period s (0.01..1)")
    parser.add_argument("--pin", type=int, default=None, metavar="CORE")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "PORT", "POLL", "SECONDS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, port, poll, seconds = args.child
        return _child(mode, port, float(poll), float(seconds))
    if not (1 <= args.rounds <= 20 and 1 <= args.window <= 300 and 0 <= args.settle <= 60
            and 0.01 <= args.poll <= 1):
        parser.error("out of range")
    print(machine())
    print(f"line: {BOARDS} boards x {CHANNELS} inputs at {BAUD} baud, polled every "
          f"{args.poll * 1000:.0f} ms; window {args.window:g} s after {args.settle:g} s, "
          f"{args.rounds} round(s); pinned to core: "
          f"{args.pin if args.pin is not None else 'no'}")
    results: dict[str, list[tuple[float, float]]] = {"daemon": [], "asyncio": [], "thread": []}
    if importlib.util.find_spec("uvloop") is not None:
        results["uvloop"] = []
    else:
        print("uvloop is not installed: no row for the asyncio poller on uvloop "
              "(pip install uvloop for it; the daemon does not use it)")
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        print(installed_bytecode())
        rig = bench_rig(Path(tmp), args.poll)
        port = str(rig.workdir / "ttyLOCKER0")
        try:
            rig.start(daemon=False)
            _pin(rig.sim.pid, args.pin)
            for n in range(args.rounds):
                for mode in results:
                    if mode == "daemon":
                        rig.daemon.start(wait_port=False)
                        asyncio.run(_wait_online(rig))
                        pid = rig.daemon.pid
                        assert pid is not None
                        _pin(pid, args.pin)
                        time.sleep(args.settle)
                        per_tx, wakes, tx = _measure(pid, rig, args.window)
                        rig.daemon.stop()
                    else:
                        seconds = args.settle + args.window + 5
                        child = subprocess.Popen(
                            [sys.executable, __file__, "--child", mode, port,
                             str(args.poll), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
                        try:
                            _pin(child.pid, args.pin)
                            _wait_polling(rig)
                            time.sleep(args.settle)
                            per_tx, wakes, tx = _measure(child.pid, rig, args.window)
                            out, _ = child.communicate(timeout=seconds + 30)
                        finally:
                            if child.poll() is None:
                                child.kill()
                                child.wait(10)
                        if child.returncode != 0 or "transactions" not in out:
                            raise RuntimeError(f"{mode} poller failed: {out!r}")
                    results[mode].append((per_tx, wakes))
                    print(f"round {n + 1} {mode:<8} {per_tx:6.3f} CPU-ms per transaction, "
                          f"{wakes:4.2f} wake-ups per transaction ({tx} transactions)",
                          flush=True)
        finally:
            rig.close()
    print(f"\n{'poller':<8} {'CPU-ms per tx (median)':>24} {'min':>7} {'max':>7} "
          f"{'wake-ups/tx':>12} {'% of a core at this poll':>26}")
    rate = BOARDS / max(args.poll, BOARDS * 0.0126)
    for mode, rows in results.items():
        cpu = [r[0] for r in rows]
        med = statistics.median(cpu)
        print(f"{mode:<8} {med:>24.3f} {min(cpu):>7.3f} {max(cpu):>7.3f} "
              f"{statistics.median(r[1] for r in rows):>12.2f} {med * rate / 10:>25.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
