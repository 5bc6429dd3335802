"""Shared pieces of the lane benchmarks: the rig, a persistent subscriber, statistics.

Every benchmark starts its own broker, redis-server, simulator and daemon through
:class:`controller.lab.rig.LaneRig` (free loopback ports, one temporary directory, every
process stopped by its pid on the way out), so nothing here touches a network beyond
127.0.0.1.
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from controller.contract.topics import CabinetTopics
from controller.lab.rig import LaneRig

__all__ = [
    "CpuBurners",
    "EventCollector",
    "ScratchVenvError",
    "cpu_ms",
    "machine",
    "pct",
    "scratch_venv",
    "stats_line",
    "topics_of",
]


def machine() -> str:
    """`nproc`, `uname -m`, Python and the date, for the header of every benchmark."""
    try:
        cpu = subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        cpu = str(os.cpu_count())
    return (f"machine: {cpu} cores ({platform.machine()}), Python {platform.python_version()}, "
            f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}")


def installed_bytecode() -> str:
    """Compile the project's modules, as ``pip install`` does on a cabinet, so that the
    processes this benchmark starts read bytecode instead of compiling every module at each
    import (which costs CPU at start and leaves about 2 MB more in the heap). A checkout run
    with ``PYTHONDONTWRITEBYTECODE`` never writes it. The files go to ``__pycache__`` beside
    the sources (ignored by git); the libraries were compiled when they were installed.
    Returns a line for the benchmark's header."""
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    *(str(root / part) for part in ("controller", "drivers", "simulator"))],
                   check=True, stdout=subprocess.DEVNULL, env=env, timeout=300)
    return "bytecode: the project's modules compiled beforehand, as pip compiles them on a cabinet"


def pct(samples: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``samples``."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[rank]


def stats_line(name: str, samples_ms: Sequence[float], width: int = 34) -> str:
    if not samples_ms:
        return f"{name:<{width}} n=0"
    return (f"{name:<{width}} n={len(samples_ms):>5}  min {min(samples_ms):7.2f}  "
            f"p50 {statistics.median(samples_ms):7.2f}  p99 {pct(samples_ms, 99):7.2f}  "
            f"max {max(samples_ms):7.2f} ms")


def task_cpu_ms(pid: int) -> dict[str, tuple[str, float]]:
    """Per thread of ``pid`` alive now: thread id -> (its name, its CPU time so far in
    ms), from ``/proc/PID/task/*/schedstat``; empty where the kernel has no schedstat."""
    out: dict[str, tuple[str, float]] = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as f:
                ns = int(f.read().split()[0])
            with open(f"/proc/{pid}/task/{tid}/comm", encoding="utf-8") as f:
                name = f.read().strip()
        except OSError:
            continue
        out[tid] = (name, ns / 1e6)
    return out


def cpu_ms(pid: int | None) -> float:
    """CPU time the process ``pid`` has used so far (all its threads), in milliseconds;
    NaN if it cannot be read. From ``/proc/PID/task/*/schedstat`` (time on a CPU, in ns),
    or, where the kernel has no schedstat, from ``/proc/PID/stat`` (utime + stime, in
    clock ticks of 10 ms: too coarse for a short window). The schedstat sum is over the
    threads alive now: a thread that ended between two readings takes its time with it
    (compare :func:`task_cpu_ms` at both ends; the daemon's threads live as long as it)."""
    if pid is None:
        return float("nan")
    if os.path.exists(f"/proc/{pid}/schedstat"):
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return float("nan")
        total_ns = 0
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as f:
                    total_ns += int(f.read().split()[0])
            except OSError:
                continue  # a thread that ended meanwhile
        return total_ns / 1e6
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    # After "pid (comm)": state is field 3; utime and stime are fields 14 and 15.
    ticks = int(fields[11]) + int(fields[12])
    return ticks * 1000.0 / os.sysconf("SC_CLK_TCK")


class ScratchVenvError(RuntimeError):
    """A benchmark's own virtual environment could not be made."""


def scratch_venv(venv: Path, requirements: Sequence[str], *, no_deps: bool = False) -> Path:
    """The interpreter of ``venv``, a virtual environment of a benchmark's own (never the
    project's) holding exactly ``requirements``: made and installed the first time, reused
    while its marker file lists the same requirements. Raises ScratchVenvError."""
    python = venv / "bin" / "python"
    marker = venv / ".requirements"
    wanted = "\n".join(requirements)
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", *(["--no-deps"] if no_deps else []),
         "--disable-pip-version-check", *requirements],
    ]
    for argv in steps:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ScratchVenvError(f"{argv[0]} {' '.join(argv[1:4])}: {exc}") from exc
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise ScratchVenvError(f"{' '.join(argv[:6])} ... failed: {' / '.join(tail)}")
    marker.write_text(wanted)
    return python


class CpuBurners:
    """``count`` processes that burn CPU in a tight loop beside the lane (the "two busy
    processes" of a loaded cabinet computer), stopped by their pid on the way out."""

    def __init__(self, count: int) -> None:
        self.count = max(0, count)
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> CpuBurners:
        for _ in range(self.count):
            self._procs.append(subprocess.Popen(
                [sys.executable, "-c", "while True:\n    pass"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(5)
        self._procs.clear()


def topics_of(rig: LaneRig) -> CabinetTopics:
    return CabinetTopics(rig.topic_root, rig.site, rig.cabinet)


class EventCollector:
    """A dispatch-side subscriber to ``events`` with a persistent session (MQTT 5,
    clean_start false, a session expiry), on paho's network thread: it keeps its session
    across a broker restart and reconnects by itself. Records every message with the
    monotonic time it arrived."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.topic = topic
        self.received: list[tuple[float, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.connects = 0
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-events-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(1, 1)
        self._host, self._port = host, port

    def start(self, timeout_s: float = 10.0) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self._client.connect(self._host, self._port, keepalive=10, clean_start=False,
                             properties=props)
        self._client.loop_start()
        if not self._subscribed.wait(timeout_s):
            raise TimeoutError("the event subscriber did not subscribe")

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        self.connects += 1
        if not flags.session_present:
            client.subscribe(self.topic, qos=1)

        else:
            self._subscribed.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        at = time.monotonic()
        try:
            payload = json.loads(message.payload)
        except ValueError:
            return
        with self._lock:
            self.received.append((at, payload))

    def snapshot(self) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            return list(self.received)
