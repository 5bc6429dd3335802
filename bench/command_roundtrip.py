"""Door command round trip: dispatch publishes a signed "open", the reply says the board
accepted the pulse. p50/p99, split into the line's share and the software's.

Starts a whole lane on loopback (``controller.lab.rig.LaneRig``: mosquitto, redis-server with
appendfsync always, ``locker-sim`` with line-timing emulation at 19200 baud, the daemon),
then, as dispatch (``DispatchClient``, MQTT 5, Ed25519-signed commands), sends ``--count``
"open" commands with reason "maintenance" (a staff open, allowed in every compartment
state), cycling through the demo cabinet's 12 compartments, one at a time, at most one
every ``--interval`` seconds.

Timing is measured from the publish of the already-signed command to the arrival of its
reply. The reply carries ``result.pulse.board_ms``: from sending the pulse frame to the
board's acknowledgement, i.e. the line (including the wait for a poll already on the
wire). Software share = round trip - board_ms: broker hops, signature check, the store's
one durable write before the pulse (the claim with the pulse intent: one fsync), the
reply.

Unlock limits are raised for the benchmark, and the output says so: the demo cabinet's
defaults (cooldown 2 s, 6 pulses/min per compartment, one solenoid at a time with a
0.3 s gap after a 0.7 s pulse) would refuse or delay a command loop; the power budget
wait is not what is measured here.

Phase 1 polls at 10 Hz (the default). Phase 2 saturates the line with back-to-back polls
(``poll_interval_s`` at its floor of 0.01 s, below the cycle's wire time) to show that a
door command waits for at most the one transaction already on the wire, never a whole
poll cycle: the line gives writes priority.

Phase 1 ends with ``--get-state`` unsigned ``get_state`` queries, back to back: a read
that changes nothing and writes nothing, so its round trip is broker hops and the
snapshot alone. The daemon's CPU time (``/proc/PID/stat``) is printed per command and
per query, and the store's transactions per command (the redis-server's ``EXEC`` count,
from ``INFO commandstats``: with appendfsync always, one fsync each).

    .venv/bin/python bench/command_roundtrip.py [--count 1000] [--saturated-count 200]
        [--get-state 500] [--busy 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._lane import CpuBurners, cpu_ms, machine, pct, stats_line, topics_of
from controller.dispatch import DispatchClient
from controller.lab.rig import LaneRig
from drivers.modbus.registers import (
    READ_REQUEST_LEN,
    read_bits_reply_len,
    transaction_time,
)

COMPARTMENTS = ["A01", "A02", "A03", "A04", "A05", "A06",
                "B01", "B02", "B03", "B04", "B05", "B06"]
BAUD = 19200
#: Boards the poller reads each cycle in deploy/sim-cabinet.toml (locks-a, locks-b, io-c,
#: 16 inputs each); the temperature probe is read every 10 s, outside the cycle.
POLLED_BOARDS = 3
OVERRIDES = {
    "timing.compartment_cooldown_s": "0",
    "timing.compartment_max_pulses_per_minute": "60",
    "timing.pulse_gap_s": "0",
    "timing.max_concurrent_pulses": "16",
}


async def _phase(poll_interval: float, count: int, interval: float,
                 queries: int = 0) -> dict[str, Any]:
    overrides = {**OVERRIDES, "timing.poll_interval_s": str(poll_interval)}
    with tempfile.TemporaryDirectory(prefix="bench-cmd-") as tmp:
        rig = LaneRig(Path(tmp), overrides=overrides)
        with rig:
            async with DispatchClient("127.0.0.1", rig.mqtt_port, topics_of(rig), key=rig.key,
                                      key_id=rig.key_id) as dispatch:
                await dispatch.wait_online(30)
                await asyncio.sleep(1.0)  # start-up events out of the way
                # The line's own cadence, without commands: polls per second on the bus.
                before = await rig.control.acall("stats")
                t0 = time.monotonic()
                idle_cpu = cpu_ms(rig.daemon.pid)
                await asyncio.sleep(2.0)
                idle_cpu = (cpu_ms(rig.daemon.pid) - idle_cpu) / (time.monotonic() - t0)
                after = await rig.control.acall("stats")
                polls_per_s = (after["rs485-0"]["requests"] - before["rs485-0"]["requests"]) / (
                    time.monotonic() - t0)
                round_trip: list[float] = []
                board: list[float] = []
                software: list[float] = []
                refused: dict[str, int] = {}
                cpu_before = cpu_ms(rig.daemon.pid)
                execs_before = await _execs(rig.redis_port)
                cmd_t0 = time.monotonic()
                for n in range(count):
                    started = time.monotonic()
                    cid = COMPARTMENTS[n % len(COMPARTMENTS)]
                    command = dispatch.build("open", {"compartment": cid, "reason": "maintenance"})
                    payload = dispatch.encode(command)
                    t_send = time.monotonic()
                    reply = await dispatch.send(payload, command["id"], timeout_s=15)
                    rt = (time.monotonic() - t_send) * 1000
                    if reply.get("ok"):
                        b = float(reply["result"]["pulse"]["board_ms"])
                        round_trip.append(rt)
                        board.append(b)
                        software.append(rt - b)
                    else:
                        code = str((reply.get("error") or {}).get("code"))
                        refused[code] = refused.get(code, 0) + 1
                    pause = started + interval - time.monotonic()
                    if pause > 0:
                        await asyncio.sleep(pause)
                cpu_cmd = cpu_ms(rig.daemon.pid) - cpu_before
                cmd_s = time.monotonic() - cmd_t0
                execs = await _execs(rig.redis_port) - execs_before
                polled = await _execs(rig.redis_port)
                await asyncio.sleep(1.0)
                idle_execs = (await _execs(rig.redis_port) - polled) * cmd_s
                # get_state: a read, unsigned, back to back (what a dispatch dashboard does).
                state_rt: list[float] = []
                cpu_before = cpu_ms(rig.daemon.pid)
                query_t0 = time.monotonic()
                for _ in range(queries):
                    command = dispatch.build("get_state", {})
                    payload = dispatch.encode(command, sign=False)
                    t_send = time.monotonic()
                    reply = await dispatch.send(payload, command["id"], timeout_s=15)
                    if reply.get("ok"):
                        state_rt.append((time.monotonic() - t_send) * 1000)
                cpu_query = cpu_ms(rig.daemon.pid) - cpu_before
                query_s = time.monotonic() - query_t0
        return {"poll_interval": poll_interval, "polls_per_s": polls_per_s,
                "round_trip": round_trip, "board": board, "software": software,
                "refused": refused, "cpu_cmd": cpu_cmd, "count": count,
                "state_rt": state_rt, "cpu_query": cpu_query, "queries": queries,
                "idle_cpu": idle_cpu, "cmd_s": cmd_s, "query_s": query_s,
                "execs": execs, "idle_execs": idle_execs}


async def _execs(port: int) -> int:
    """Transactions (``EXEC``) the lane's redis-server has run so far: with appendfsync
    always, each one that wrote is one fsync."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"INFO commandstats\r\n")
        await writer.drain()
        header = await reader.readline()  # $<length>
        body = await reader.readexactly(int(header[1:]) + 2)
    finally:
        writer.close()
        await writer.wait_closed()
    for line in body.decode().splitlines():
        if line.startswith("cmdstat_exec:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def _report(title: str, r: dict[str, Any]) -> None:
    read_t = transaction_time(READ_REQUEST_LEN, read_bits_reply_len(16), BAUD) * 1000
    write_t = transaction_time(8, 8, BAUD) * 1000
    cycle_wire = POLLED_BOARDS * read_t
    period = POLLED_BOARDS / r["polls_per_s"] * 1000 if r["polls_per_s"] else float("nan")
    print(f"\n== {title}: timing.poll_interval_s = {r['poll_interval']}")
    print(f"poll cycle: {POLLED_BOARDS} boards x {read_t:.2f} ms = {cycle_wire:.2f} ms on the "
          f"wire; measured {r['polls_per_s']:.1f} polls/s = one cycle every {period:.1f} ms")
    ok = len(r["round_trip"])
    print(f"commands: {ok} accepted, refused: {r['refused'] or 'none'}")
    print(stats_line("round trip (publish -> reply)", r["round_trip"]))
    print(stats_line("board_ms (pulse frame -> ack)", r["board"]))
    print(stats_line("software = round trip - board_ms", r["software"]))
    if r["board"]:
        bound = read_t + write_t
        over = sum(1 for b in r["board"] if b > bound)
        over_cycle = sum(1 for b in r["board"] if b > cycle_wire + write_t)
        print(f"line: flash write alone {write_t:.2f} ms (transaction_time(8, 8, {BAUD})); "
              f"+ one poll already on the wire = {bound:.2f} ms")
        print(f"board_ms > {bound:.2f} ms (write + one read): {over} of {ok}; "
              f"> {cycle_wire + write_t:.2f} ms (write + a whole cycle): {over_cycle} of {ok}; "
              f"mean {statistics.fmean(r['board']):.2f} ms, p99 {pct(r['board'], 99):.2f} ms")
    idle = r["idle_cpu"]
    print(f"daemon CPU while only polling: {idle:.1f} CPU-ms per second")
    if r["count"]:
        above = r["cpu_cmd"] - idle * r["cmd_s"]
        print(f"daemon CPU: {r['cpu_cmd']:.0f} ms over {r['count']} commands in "
              f"{r['cmd_s']:.1f} s = {r['cpu_cmd'] / r['count']:.1f} CPU-ms per command, "
              f"{above / r['count']:.1f} above the polling")
        print(f"store transactions (redis EXEC, one fsync each when it writes): "
              f"{r['execs']} over {r['count']} commands = "
              f"{r['execs'] / r['count']:.2f} per command "
              f"({r['idle_execs'] / r['count']:.2f} of them at the idle rate, without commands)")
    if r["queries"]:
        above = r["cpu_query"] - idle * r["query_s"]
        print(stats_line("get_state round trip", r["state_rt"]))
        print(f"daemon CPU: {r['cpu_query']:.0f} ms over {r['queries']} get_state in "
              f"{r['query_s']:.1f} s = {r['cpu_query'] / r['queries']:.2f} CPU-ms per query, "
              f"{above / r['queries']:.2f} above the polling")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=1000,
                        help="commands at 10 Hz polling (1..5000)")
    parser.add_argument("--saturated-count", type=int, default=200,
                        help="commands on a saturated line (0..5000; 0 skips the phase)")
    parser.add_argument("--interval", type=float, default=0.1,
                        help="least seconds between two command starts (>= 0.085: at most "
                             "60 pulses/min per compartment over 12 compartments)")
    parser.add_argument("--get-state", type=int, default=500,
                        help="get_state queries after the opens of the 10 Hz phase (0..20000)")
    parser.add_argument("--busy", type=int, default=0,
                        help="CPU-burning processes running beside the lane (0..8)")
    args = parser.parse_args(argv)
    count = max(1, min(args.count, 5000))
    queries = max(0, min(args.get_state, 20_000))
    busy = max(0, min(args.busy, 8))
    saturated = max(0, min(args.saturated_count, 5000))
    interval = max(args.interval, 0.085)
    print(machine())
    print("lane: mosquitto + redis-server (appendfsync always) + locker-sim "
          f"(line timing emulated, {BAUD} baud, deploy/sim-cabinet.toml) + locker-controller, "
          "all on 127.0.0.1")
    print("benchmark overrides (the demo defaults would refuse or delay a command loop): "
          + ", ".join(f"{k}={v}" for k, v in OVERRIDES.items()))
    print(f"commands: signed 'open', reason 'maintenance', cycling over {len(COMPARTMENTS)} "
          f"compartments, one at a time, one start every >= {interval * 1000:.0f} ms")
    print(f"busy processes beside the lane: {busy} (each a Python loop burning one core)")
    phases = [("10 Hz polling", 0.1, count, queries)]
    if saturated:
        phases.append(("saturated line (back-to-back polls)", 0.01, saturated, 0))
    with CpuBurners(busy):
        for title, poll, n, q in phases:
            _report(title, asyncio.run(_phase(poll, n, interval, q)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
