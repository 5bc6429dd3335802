"""The daemon beside a generic Modbus-to-MQTT bridge: the same simulated door, the same
poll period, the same broker, in one run.

The peer is spicierModbus2mqtt (github.com/mbs38/spicierModbus2mqtt), published on PyPI
as ``modbus2mqtt``; the benchmark installs a pinned version (:data:`PEER_REQUIREMENTS`)
into a virtual environment of its own, under ``--venv-dir`` (default: a cache directory
of the user, reused by later runs). Its package metadata asks for ``serial``, a PyPI
package unrelated to pyserial that would shadow it, so every requirement is installed
with ``--no-deps`` and pyserial is named instead. When the peer cannot be installed
(no network) the benchmark says so and exits 2; it never prints figures it did not
measure. ``--skip-peer`` measures the daemon alone (no network needed).

The lane (``controller.lab.rig.LaneRig``, everything on 127.0.0.1): a mosquitto, a
redis-server (append-only, fsync always, as in production) and ``locker-sim`` serving
one Waveshare-style relay board (16 inputs, 16 outputs, unit 1) as a Modbus TCP gateway
on a loopback port, with line-timing emulation at 19200 baud (a read of 16 inputs takes
12.6 ms, as on the wire). Both the daemon and the peer talk Modbus TCP to that gateway
(the same transport for both), one after the other, alone on the lane:

1. **idle** (``--window`` seconds after ``--settle``): CPU of the process (its time
   on a CPU, :func:`bench._lane.cpu_ms`) as % of one core and per poll transaction (the
   simulator's request count for the bus), and its RSS (VmRSS);
2. **latency** (``--changes`` door movements): the simulator forces door A01 open and
   closes it again at random phases of the poll; timed from the simulator's ground truth
   (the ``truth`` op, CLOCK_MONOTONIC) to the arrival of the first MQTT message that
   reports it: the daemon's ``door_opened``/``door_closed`` event (QoS 1, committed to
   its outbox first), the peer's ``modbus/door/state/a01`` value. The door debounce and
   the flapping rule are off for the daemon (the peer has neither: with the rule on, a
   door moved every 0.05-0.25 s is rightly reported as a flapping sensor, not as moves).

Then the ratios daemon / peer. ``--busy N`` runs N processes burning CPU beside it all;
``--pin CORE`` pins the measured process, the simulator and the burners to one core.

    .venv/bin/python bench/side_by_side.py [--poll 0.01] [--window 30] [--changes 40]
        [--busy 2] [--pin 0] [--skip-peer] [--venv-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench._lane import (
    EventCollector,
    ScratchVenvError,
    cpu_ms,
    installed_bytecode,
    machine,
    pct,
    scratch_venv,
    topics_of,
)
from bench.daemon_footprint import _status, _wait_online
from controller.lab.rig import LaneRig, free_port

__all__ = ["PEER_REQUIREMENTS", "main"]

#: The peer and its dependencies, pinned. modbus2mqtt 0.73 is spicierModbus2mqtt's
#: release of 2025-02 on PyPI; it calls pymodbus with ``slave=``, which pymodbus 3.8 has.
PEER_REQUIREMENTS = ("modbus2mqtt==0.73", "pymodbus==3.8.6", "paho-mqtt==2.1.0", "pyserial==3.5")
PEER_TOPIC = "modbus"
COMPARTMENT = "A01"
CHANNELS = 16
BAUD = 19200


def cabinet_template(gateway_port: int, poll_s: float) -> str:
    """One Waveshare board (16 in / 16 out) behind a Modbus TCP gateway, 16 compartments."""
    out = [
        "# Side-by-side benchmark: one Waveshare relay board behind a Modbus TCP gateway.",
        "[cabinet]", 'site = "bench"', 'id = "cab-side"', "",
        "[mqtt]", 'host = "127.0.0.1"', "port = 1883", 'topic_root = "lockers/v1"',
        "protocol = 5", "",
        "[redis]", 'url = "memory://"', "",
        "[timing]", f"poll_interval_s = {poll_s}", "door_debounce_s = 0",
        "flapping_changes = 0", "",
        "[tenants.parcel]", 'expiry_s = "5d"', "",
        "[security]", "require_signed_commands = false", "",
        "[log]", 'level = "warning"', 'format = "text"', "",
        "[[buses]]", 'name = "rs485-0"', 'kind = "tcp"', 'host = "127.0.0.1"',
        f"tcp_port = {gateway_port}", "",
        "[[zones]]", 'name = "ambient"', 'kind = "ambient"', "",
        "[[boards]]", 'name = "locks-0"', 'bus = "rs485-0"', "address = 1",
        'profile = "waveshare_relay"', f"outputs = {CHANNELS}", f"inputs = {CHANNELS}", "",
    ]
    for ch in range(CHANNELS):
        out += ["[[compartments]]", f'id = "A{ch + 1:02d}"', 'size = "M"', 'zone = "ambient"',
                'pool = "parcel"', f'lock = {{ board = "locks-0", channel = {ch} }}',
                f'door = {{ board = "locks-0", channel = {ch}, active = "high" }}', ""]
    return "\n".join(out)


def peer_config(poll_s: float) -> str:
    """spicierModbus2mqtt's CSV: one poller of the 16 inputs, one reference per door."""
    rows = ["type,topic,col2,col3,col4,col5,col6",
            f"poll,door,1,0,{CHANNELS},input_status,{poll_s}"]
    rows += [f"ref,a{ch + 1:02d},{ch},r,bool,," for ch in range(CHANNELS)]
    return "\n".join(rows) + "\n"


# -- the peer's environment ----------------------------------------------------------


def default_venv_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "locker-controller-bench" / "spicier-modbus2mqtt-0.73"


PeerUnavailable = ScratchVenvError  # the peer could not be installed


def install_peer(venv: Path) -> Path:
    """The peer's console script in ``venv``, installed there first if needed."""
    scratch_venv(venv, PEER_REQUIREMENTS, no_deps=True)
    return venv / "bin" / "modbus2mqtt"


# -- measuring --------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    tx_per_s: float = 0.0
    cpu_pct: float = 0.0
    cpu_ms_per_tx: float = 0.0
    rss_mb: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    missed: int = 0

    def p(self, q: float) -> float:
        return pct(self.latencies_ms, q) if self.latencies_ms else float("nan")


def _pin(pid: int | None, core: int | None) -> None:
    if pid is not None and core is not None:
        with suppress(OSError):
            os.sched_setaffinity(pid, {core})


@contextmanager
def burners(count: int, core: int | None) -> Iterator[None]:
    """``count`` processes burning CPU for the duration (on ``core`` if given)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"],
                              start_new_session=True) for _ in range(count)]
    for proc in procs:
        _pin(proc.pid, core)
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(10)


def _requests(rig: LaneRig) -> int:
    return int(rig.control.call("stats")["rs485-0"]["requests"])


def measure_idle(rig: LaneRig, pid: int, result: Result, settle: float, window: float) -> None:
    time.sleep(settle)
    n0, cpu0, t0 = _requests(rig), cpu_ms(pid), time.monotonic()
    time.sleep(window)
    n1, cpu1, t1 = _requests(rig), cpu_ms(pid), time.monotonic()
    cpu_s = (cpu1 - cpu0) / 1000
    wall = t1 - t0
    tx = max(1, n1 - n0)
    result.tx_per_s = (n1 - n0) / wall
    result.cpu_pct = cpu_s / wall * 100
    result.cpu_ms_per_tx = cpu_s * 1000 / tx
    result.rss_mb = _status(pid)["VmRSS"] / 1024


def _truth_at(rig: LaneRig, kind: str, since: float) -> float | None:
    reply = rig.control.call("truth", kind=kind, compartment=COMPARTMENT, since=since, limit=1)
    events = reply["events"]
    return float(events[-1]["at"]) if events else None


class PeerWatcher:
    """The peer's state topic of door A01: every message with its arrival time."""

    def __init__(self, port: int) -> None:
        self.topic = f"{PEER_TOPIC}/door/state/{COMPARTMENT.lower()}"
        self.received: list[tuple[float, bytes]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-side-peer")
        self._client.on_connect = lambda c, *_: c.subscribe(self.topic, qos=1)
        self._client.on_subscribe = lambda *_: self._ready.set()
        self._client.on_message = self._on_message
        self._port = port

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append((time.monotonic(), bytes(message.payload)))

    def start(self) -> None:
        self._client.connect("127.0.0.1", self._port, keepalive=10)
        self._client.loop_start()
        if not self._ready.wait(10):
            raise TimeoutError("the peer's watcher did not subscribe")

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def first_after(self, start: int) -> float | None:
        with self._lock:
            return self.received[start][0] if len(self.received) > start else None


def measure_latency(rig: LaneRig, result: Result, changes: int, seed: int,
                    arrivals: Any, wait_s: float = 5.0) -> None:
    """``changes`` door movements of A01; ``arrivals(start)`` gives the arrival time of
    the first report after the ``start``-th message, or None (``arrivals.count()``)."""
    rng = random.Random(seed)
    for n in range(changes):
        kind = "door_opened" if n % 2 == 0 else "door_closed"
        time.sleep(rng.uniform(0.05, 0.25))  # a random phase of the poll
        start = arrivals.count()
        since = time.monotonic()
        rig.control.call("force_open" if kind == "door_opened" else "close",
                         compartment=COMPARTMENT)
        deadline = time.monotonic() + wait_s
        got = None
        while got is None and time.monotonic() < deadline:
            got = arrivals.first_after(start, kind)
            if got is None:
                time.sleep(0.002)
        # The world records a door forced open (no latch released) as "door_forced".
        at = _truth_at(rig, "door_forced" if kind == "door_opened" else kind, since)
        if got is None or at is None:
            result.missed += 1
        else:
            result.latencies_ms.append((got - at) * 1000)


class _DaemonArrivals:
    def __init__(self, collector: EventCollector) -> None:
        self._c = collector

    def count(self) -> int:
        return len(self._c.snapshot())

    def first_after(self, start: int, kind: str) -> float | None:
        for at, payload in self._c.snapshot()[start:]:
            if payload.get("kind") == kind and payload.get("compartment") == COMPARTMENT:
                return at
        return None


class _PeerArrivals:
    def __init__(self, watcher: PeerWatcher) -> None:
        self._w = watcher

    def count(self) -> int:
        return self._w.count()

    def first_after(self, start: int, kind: str) -> float | None:
        return self._w.first_after(start)


def run_daemon(rig: LaneRig, args: argparse.Namespace) -> Result:
    result = Result("daemon")
    collector = EventCollector("127.0.0.1", rig.mqtt_port, topics_of(rig).events)
    collector.start()
    rig.daemon.start(wait_port=False)
    try:
        asyncio.run(_wait_online(rig))
        pid = rig.daemon.pid
        assert pid is not None
        _pin(pid, args.pin)
        measure_idle(rig, pid, result, args.settle, args.window)
        measure_latency(rig, result, args.changes, args.seed, _DaemonArrivals(collector))
    finally:
        rig.daemon.stop()
        collector.stop()
    return result


def run_peer(rig: LaneRig, script: Path, gateway_port: int, workdir: Path,
             args: argparse.Namespace) -> Result:
    result = Result("spicierModbus2mqtt")
    config = workdir / "peer.csv"
    config.write_text(peer_config(args.poll))
    watcher = PeerWatcher(rig.mqtt_port)
    watcher.start()
    log = open(workdir / "peer.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(script), "--mqtt-host", "127.0.0.1", "--mqtt-port", str(rig.mqtt_port),
         "--mqtt-topic", PEER_TOPIC, "--tcp", "127.0.0.1", "--tcp-port", str(gateway_port),
         "--config", str(config), "--verbosity", "1", "--set-loop-break", str(args.poll)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _pin(proc.pid, args.pin)
        deadline = time.monotonic() + 30
        while watcher.count() == 0:  # its first reading, published once connected
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the peer did not publish: "
                                   + (workdir / "peer.log").read_text(errors="replace")[-2000:])
            time.sleep(0.05)
        measure_idle(rig, proc.pid, result, args.settle, args.window)
        measure_latency(rig, result, args.changes, args.seed, _PeerArrivals(watcher))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # its only clean stop
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()
        watcher.stop()
    return result


# -- report -----------------------------------------------------------------------------


def _row(r: Result) -> str:
    return (f"{r.name:<20} {r.tx_per_s:7.1f} {r.cpu_pct:8.2f} % {r.cpu_ms_per_tx:9.3f} "
            f"{r.rss_mb:8.1f} MB {r.p(50):8.1f} {r.p(99):8.1f} ms  n={len(r.latencies_ms)} "
            f"missed={r.missed}")


def report(results: list[Result]) -> None:
    print(f"\n{'':<20} {'tx/s':>7} {'CPU':>10} {'CPU-ms/tx':>9} {'RSS':>11} "
          f"{'p50':>8} {'p99':>8}    door change -> MQTT")
    for r in results:
        print(_row(r))
    if len(results) == 2:
        d, p = results
        print("\nratios daemon / peer:")
        for label, a, b in (
            ("CPU % of a core", d.cpu_pct, p.cpu_pct),
            ("CPU-ms per poll transaction", d.cpu_ms_per_tx, p.cpu_ms_per_tx),
            ("RSS", d.rss_mb, p.rss_mb),
            ("latency p50", d.p(50), p.p(50)),
            ("latency p99", d.p(99), p.p(99)),
        ):
            print(f"  {label:<30} {a / b if b else float('nan'):6.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--poll", type=float, default=0.01,
                        help="poll period of both, seconds (0.01..1; default 0.01)")
    parser.add_argument("--window", type=float, default=30.0, help="idle seconds measured")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before the window")
    parser.add_argument("--changes", type=int, default=40, help="door movements timed (2..1000)")
    parser.add_argument("--busy", type=int, default=0, help="CPU-burning processes beside it")
    parser.add_argument("--pin", type=int, default=None, metavar="CORE",
                        help="pin the measured process, the simulator and the burners")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-peer", action="store_true", help="the daemon alone (no network)")
    parser.add_argument("--venv-dir", type=Path, default=None,
                        help=f"the peer's virtual environment (default {default_venv_dir()})")
    args = parser.parse_args(argv)
    args.poll = max(0.01, min(args.poll, 1.0))
    args.window = max(1.0, min(args.window, 600.0))
    args.settle = max(0.0, min(args.settle, 120.0))
    args.changes = max(2, min(args.changes, 1000))
    args.busy = max(0, min(args.busy, 8))
    if args.pin is not None and args.pin not in os.sched_getaffinity(0):
        parser.error(f"--pin {args.pin}: no such core available")

    print(machine())
    script = None
    if not args.skip_peer:
        venv = args.venv_dir or default_venv_dir()
        print(f"peer: spicierModbus2mqtt ({', '.join(PEER_REQUIREMENTS)}) in {venv}")
        try:
            script = install_peer(venv)
        except PeerUnavailable as exc:
            print(f"the peer cannot be installed, no figures: {exc}", file=sys.stderr)
            return 2
    print(f"poll every {args.poll * 1000:.0f} ms; one Waveshare board (16 inputs) behind a "
          f"Modbus TCP gateway on loopback, line timing emulated at {BAUD} baud; idle window "
          f"{args.window:.0f} s, then {args.changes} door movements; busy burners: {args.busy}; "
          f"pinned to core: {args.pin if args.pin is not None else 'no'}")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-side-") as tmp:
        workdir = Path(tmp)
        print(installed_bytecode())
        gateway_port = free_port()
        template = workdir / "side-cabinet.toml"
        template.write_text(cabinet_template(gateway_port, args.poll))
        rig = LaneRig(workdir / "lane", template=template)
        try:
            rig.start(daemon=False)
            _pin(rig.sim.pid, args.pin)
            with burners(args.busy, args.pin):
                results.append(run_daemon(rig, args))
                if script is not None:
                    results.append(run_peer(rig, script, gateway_port, workdir, args))
        finally:
            rig.close()
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
