"""Offline collection: code entered at the lane to latch pulse, with the broker down.

The daemon runs in this process (``controller.daemon.Daemon``, the production wiring)
against ``locker-sim run`` in a child process (the demo cabinet of
``deploy/sim-cabinet.toml``, Modbus RTU on a pty with the line timing of 19200 baud), with
its store in memory and its broker port pointing at nothing: the broker is down for the
whole run. Orders are assigned by the daemon's own command handler (unsigned commands: a
lab config), each with a QR deposit code and a keypad collect code sealed to the cabinet's
code key, as dispatch sends them. Each round fills every usable compartment (deposit by
code, parcel in, door closed) and then collects them all by code; only collections are
timed, from ``LaneService.enter_code`` to the lock board's acknowledgement of the pulse.
A typed code costs one verifier (scrypt n = 16384, r = 8, p = 1 under an HMAC) and one
lookup whatever the number of orders (``bench.code_check`` measures that alone).

    .venv/bin/python -m bench.offline_collection [--collections 1000]

Prints p50/p90/p99/max; the simulator is stopped by its pid on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench._lane import machine, pct
from controller.daemon import Daemon
from controller.domain.codes import is_trivial
from controller.domain.compartment import CompartmentState
from controller.lab.rig import (
    DEFAULT_TEMPLATE,
    SimControl,
    _script,
    _set_key,
    free_port,
    wait_for_port,
)
from controller.security.codes import seal_code
from controller.settings import load_settings

#: Compartments of the demo cabinet used by the run (B02 starts with a stray parcel).
PLAN = [("A01", "grocery", "chilled", "M"), ("A02", "grocery", "chilled", "M"),
        ("A03", "grocery", "frozen", "L"), ("A04", "grocery", "frozen", "L"),
        ("A05", "grocery", "ambient", "XL"), ("A06", "shop", "ambient", "S"),
        ("B01", "parcel", "ambient", "S"), ("B03", "parcel", "ambient", "M"),
        ("B04", "parcel", "ambient", "M"), ("B05", "shop", "chilled", "M"),
        ("B06", "shop", "ambient", "L")]


def write_config(workdir: Path, lane_port: int, control_port: int) -> Path:
    text = DEFAULT_TEMPLATE.read_text()
    text = text.replace('"/tmp/locker-sim/ttyLOCKER0"', f'"{workdir / "ttyLOCKER0"}"')
    text = text.replace('"/tmp/locker-sim/ttyScanner"', f'"{workdir / "ttyScanner"}"')
    text = _set_key(text, "lane", "options", f"{{ port = {lane_port} }}")
    # A thousand door openings in twenty minutes would warm the chilled zone out of its
    # range (and rightly close it to new orders): not what is measured here.
    text = text.replace("tau_door_open_s = 240.0", "tau_door_open_s = 1.0e9")
    text = _set_key(text, "mqtt", "port", str(free_port()))  # nothing listens: broker down
    text = _set_key(text, "mqtt", "reconnect_max_s", "2")
    text = _set_key(text, "timing", "poll_interval_s", "0.05")
    text = _set_key(text, "timing", "pulse_s", "0.3")
    text = _set_key(text, "timing", "compartment_cooldown_s", "0.1")
    text = _set_key(text, "timing", "compartment_max_pulses_per_minute", "60")
    text = _set_key(text, "timing", "pulse_gap_s", "0.05")
    text = _set_key(text, "log", "level", '"warning"')
    text = _set_key(text, "security", "code_key_file", '"code.key"')  # beside the config
    path = workdir / "cabinet.toml"
    path.write_text(text)
    return path



def _keypad_code(n: int) -> str:
    """Order ``n``'s keypad code: spread out, and the next one up where the trivial-code
    rule would refuse it at assignment (about 1 in 100 is)."""
    value = 4083920000 + n * 7919
    for step in range(1000):
        if not is_trivial(f"{value + step}"):
            return f"{value + step}"
    raise RuntimeError(f"no keypad code near {value}")


class Bench:
    def __init__(self, daemon: Daemon, control: SimControl) -> None:
        self.daemon = daemon
        self.control = control
        self.n = 0

    async def command(self, type_: str, args: dict[str, Any]) -> dict[str, Any]:
        clock = self.daemon.cabinet_clock()
        payload = {"id": f"b-{uuid.uuid4().hex[:16]}", "type": type_,
                   "cabinet": self.daemon.settings.cabinet.id,
                   "expires": {"boot_id": clock.boot_id, "uptime_ms": clock.uptime_ms + 10_000},
                   "args": args}
        reply: dict[str, Any] = json.loads(await self.daemon.commands.handle(
            json.dumps(payload).encode()))
        if not reply.get("ok"):
            raise RuntimeError(f"{type_} refused: {reply}")
        return reply

    def seal(self, order: str, codes: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """``assign.codes`` as dispatch builds them, sealed to this cabinet's code key."""
        key = self.daemon.lane.codes.key.public_bytes
        return [seal_code(key, self.daemon.settings.cabinet.id, order, f"{purpose}-{i}",
                          purpose, code) for i, (purpose, code) in enumerate(codes)]

    async def until(self, predicate: Any, what: str, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(what)
            await asyncio.sleep(0.01)

    def phase(self, cid: str) -> CompartmentState:
        return self.daemon.model.compartments.get(cid).phase

    async def door_cycle(self, cid: str, code: str, parcel: str) -> float | None:
        """Hand on the handle, code entered, door opens, parcel in/out, door closed.
        Returns the code-to-pulse latency (seconds)."""
        await self.control.acall("pull_when_released", compartment=cid)
        result = await self.daemon.lane.enter_code(code)
        if not result.accepted or result.reason is not None:
            raise RuntimeError(f"{cid}: code refused: {result}")
        door = self.daemon.model
        await self.until(lambda: door.door_state(cid).value in ("open", "ajar"), f"{cid} open")
        await self.control.acall(parcel, compartment=cid)
        await asyncio.sleep(0.12)  # the occupancy poll sees the parcel
        await self.control.acall("close", compartment=cid)
        return result.latency_s

    async def round(self, collections: int) -> list[float]:
        codes: dict[str, str] = {}
        for cid, pool, zone, size in PLAN:
            self.n += 1
            order = f"bench-{self.n}"
            deposit, collect = f"DEP{self.n:05d}QRCODE9876", _keypad_code(self.n)
            await self.command("assign", {"order_id": order, "size": size, "zone": zone,
                                          "pool": pool, "compartment": cid,
                                          "codes": self.seal(order, [("deposit", deposit),
                                                                     ("collect", collect)])})
            codes[cid] = collect
            await self.door_cycle(cid, deposit, "place_parcel")
            await self.until(lambda cid=cid: self.phase(cid) is CompartmentState.LOADED,
                             f"{cid} loaded")
        latencies = []
        for cid, *_ in PLAN[:collections]:
            latency = await self.door_cycle(cid, codes[cid], "remove_parcel")
            assert latency is not None
            latencies.append(latency)
            await self.until(lambda cid=cid: self.phase(cid) is CompartmentState.FREE,
                             f"{cid} free")
        return latencies


def start_simulator(config: Path, control_port: int, workdir: Path) -> subprocess.Popen[bytes]:
    with open(workdir / "sim.log", "wb") as log:
        sim = subprocess.Popen([*_script("locker-sim"), "run", "--config", str(config),
                                "--control-port", str(control_port), "--json"],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for_port(control_port, 15, sim)
    return sim


async def run(collections: int, workdir: Path) -> list[float]:
    lane_port, control_port = free_port(), free_port()
    config = write_config(workdir, lane_port, control_port)
    sim = await asyncio.to_thread(start_simulator, config, control_port, workdir)
    try:
        settings = load_settings(config)
        daemon = Daemon(settings, ready_timeout_s=0.5)
        task = asyncio.get_running_loop().create_task(daemon.run())
        await asyncio.wait_for(daemon.ready.wait(), 20)
        bench = Bench(daemon, SimControl(control_port))
        samples: list[float] = []
        try:
            while len(samples) < collections:  # bounded: each round adds >= 1 sample
                left = collections - len(samples)
                samples += await bench.round(min(left, len(PLAN)))
                print(f"  {len(samples)}/{collections} collections", file=sys.stderr)
        finally:
            daemon.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 15)
        assert daemon.link is not None
        assert not daemon.link.snapshot().connected, "the broker was meant to be down"
        return samples
    finally:
        if sim.poll() is None:
            sim.send_signal(signal.SIGTERM)
            try:
                sim.wait(10)
            except subprocess.TimeoutExpired:
                sim.kill()
                sim.wait(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collections", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="offline-collection-") as tmp:
        started = time.monotonic()
        samples = asyncio.run(run(args.collections, Path(tmp)))
        wall = time.monotonic() - started
    ms = [s * 1000 for s in samples]
    print(machine())
    print(f"offline collections: {len(ms)} in {wall:.0f} s (broker down, sealed codes, one "
          f"verifier per code: scrypt n=16384 r=8 p=1 + HMAC, {len(PLAN)} orders held)")
    print(f"code entered -> latch pulse acked: p50 {pct(ms, 50):.1f} ms  p90 {pct(ms, 90):.1f} ms"
          f"  p99 {pct(ms, 99):.1f} ms  max {max(ms):.1f} ms")
    return 0 if pct(ms, 99) < 300 else 1


if __name__ == "__main__":
    sys.exit(main())
