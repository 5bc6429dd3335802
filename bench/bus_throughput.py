"""Polls per second of one board on one RS-485 line, against the physical maximum.

Runs the cabinet simulator with line-timing emulation on a pty (one Waveshare-style
board, 16 inputs) in a child process, as ``locker-sim`` runs beside the daemon, and the
production driver (ModbusLine + WaveshareRelayBoard) here, polling "read 16 discrete
inputs" back to back. Prints the measured rate next to
1 / registers.transaction_time(8, read_bits_reply_len(16), baud), the rate the wire
allows (request, silent interval, reply, silent interval), and the CPU time of the
polling process per transaction (``time.process_time``: the driver's own cost, without
the poller and the model of the daemon).

``--in-process`` runs the simulator in this process instead: both sides then share one
GIL and the simulator's sub-millisecond timers suffer; the figure is lower and noisier.

    .venv/bin/python bench/bus_throughput.py [--baud 19200] [--polls 500] [--in-process]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import time
from typing import Any

from drivers.modbus.boards import WaveshareRelayBoard
from drivers.modbus.line import ModbusLine
from drivers.modbus.registers import READ_REQUEST_LEN, read_bits_reply_len, transaction_time


def _config(baud: int) -> dict[str, Any]:
    return {
        "cabinet": {"site": "bench", "id": "cab-bench"},
        "buses": [{"name": "rs485-0", "kind": "rtu", "port": "/nonexistent/ttyBENCH",
                   "baudrate": baud}],
        "boards": [{"name": "locks", "bus": "rs485-0", "address": 1,
                    "profile": "waveshare_relay", "outputs": 16, "inputs": 16}],
    }


def _serve(baud: int, conn: multiprocessing.connection.Connection) -> None:
    """Child process: run the simulator until the parent says stop."""
    from simulator.cabinet import SimCabinet
    from simulator.config import parse_config

    async def serve() -> None:
        cab = SimCabinet(parse_config(_config(baud)), emulate_timing=True, make_links=False)
        async with cab:
            conn.send(cab.serial_path("rs485-0"))
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            conn.send(cab.stats("rs485-0").gap_violations)

    asyncio.run(serve())


#: CPU of this process (the line, the board driver, the event loop) during the polls.
_cpu: dict[str, float] = {}


async def _poll(port: str, baud: int, polls: int) -> tuple[float, str]:
    async with ModbusLine("rs485-0", port=port, baudrate=baud) as line:
        board = WaveshareRelayBoard(line, 1, outputs=16, inputs=16)
        for _ in range(20):  # warm up
            await board.read_inputs()
        start, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(polls):
            await board.read_inputs()
        elapsed = time.perf_counter() - start
        _cpu["ms_per_poll"] = (time.process_time() - cpu0) * 1000 / polls
    s = line.stats()
    return polls / elapsed, f"{s.ok} ok, {s.timeouts} timeouts, {s.frame_errors} frame errors"


async def _in_process(baud: int, polls: int) -> tuple[float, str, int]:
    from simulator.cabinet import SimCabinet
    from simulator.config import parse_config

    cab = SimCabinet(parse_config(_config(baud)), emulate_timing=True, make_links=False)
    async with cab:
        rate, line = await _poll(cab.serial_path("rs485-0"), baud, polls)
        return rate, line, cab.stats("rs485-0").gap_violations


def _child_process(baud: int, polls: int) -> tuple[float, str, int]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(baud, child), daemon=True)
    proc.start()
    try:
        if not parent.poll(30):
            raise RuntimeError("the simulator did not start within 30 s")
        port = parent.recv()
        rate, line = asyncio.run(_poll(port, baud, polls))
        parent.send("stop")
        violations = parent.recv() if parent.poll(10) else -1
        return rate, line, violations
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.terminate()  # by its pid, through the Process handle
            proc.join(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--baud", type=int, default=19200)
    parser.add_argument("--polls", type=int, default=500)
    parser.add_argument("--in-process", action="store_true")
    args = parser.parse_args()
    if args.in_process:
        rate, line, violations = asyncio.run(_in_process(args.baud, args.polls))
    else:
        rate, line, violations = _child_process(args.baud, args.polls)
    t_min = transaction_time(READ_REQUEST_LEN, read_bits_reply_len(16), args.baud)
    maximum = 1 / t_min
    where = "in this process" if args.in_process else "in a child process"
    print(f"line: {line}; simulator ({where}): {violations} gap violations")
    print(f"read 16 discrete inputs at {args.baud} baud: {rate:.1f} polls/s, "
          f"theoretical max {maximum:.1f} polls/s ({t_min * 1000:.2f} ms/transaction): "
          f"{rate / maximum * 100:.1f} %")
    if not args.in_process:
        print(f"CPU of the polling process (line, board driver, event loop): "
              f"{_cpu['ms_per_poll']:.3f} ms per poll transaction")


if __name__ == "__main__":
    main()
