"""The daemon's footprint: resident memory and CPU while it polls 4 boards of 16 channels,
at 10 Hz and at a 10 ms poll (the line's own pace).

Writes a cabinet config for the benchmark in a temporary directory (4 Waveshare-style
relay boards, 16 outputs and 16 inputs each, on one RS-485 line at 19200 baud; 64
compartments, each with its lock and door switch; one ambient zone), starts a whole lane
on loopback with it (``controller.lab.rig.LaneRig``: mosquitto, redis-server with appendfsync
always, ``locker-sim`` with line-timing emulation, the daemon), lets it settle, then over
``--window`` seconds reads the daemon's ``/proc/PID/status`` (VmRSS every second, VmHWM at
the end) and its time on a CPU at both ends of the window (all threads, in ns:
:func:`bench._lane.cpu_ms`), as % of one core and as CPU-milliseconds per poll transaction
(the transactions counted by the simulator), and the wake-ups (context switches) per
transaction. Nothing happens on the lane meanwhile: this is the idle cost of polling.
``--poll`` picks the poll periods (default 0.1 and 0.01 s); ``--pin CORE`` pins the daemon
and the simulator to one core
(``os.sched_setaffinity``, as ``taskset`` does).

``--profile SECONDS`` adds a second look: py-spy (if installed) samples the daemon for
that long (``--profile-rate`` times a second, 250 by default) and the functions holding
the CPU are printed, by own time and by time including callees. It samples only while
the daemon holds the GIL (``--gil``): without it py-spy counts the nanosleep of the line's
silent interval as work, though it costs no CPU.

    .venv/bin/python bench/daemon_footprint.py [--window 60] [--settle 10] [--profile 20]
        [--poll 0.1 --poll 0.01] [--pin CORE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._lane import cpu_ms, installed_bytecode, machine, task_cpu_ms, topics_of
from bench.memory_floor import probe
from controller.dispatch import DispatchClient
from controller.lab.rig import LaneRig
from drivers.modbus.registers import (
    READ_REQUEST_LEN,
    read_bits_reply_len,
    transaction_time,
)

BOARDS = 4
CHANNELS = 16
BAUD = 19200
RSS_TARGET_MB = 40.0
CPU_TARGET = 1.0
CPU_MS_PER_TX_TARGET = 0.2


def cabinet_template() -> str:
    """The benchmark's cabinet: 4 x (16 in / 16 out) Waveshare boards, 64 compartments."""
    out = [
        "# Benchmark cabinet: 4 Waveshare relay boards (16 in / 16 out), 64 compartments.",
        "[cabinet]", 'site = "bench"', 'id = "cab-bench"', "",
        "[mqtt]", 'host = "127.0.0.1"', "port = 1883", 'topic_root = "lockers/v1"',
        "protocol = 5", "",
        "[redis]", 'url = "memory://"', "",
        "[timing]", "poll_interval_s = 0.1", "", "[tenants.parcel]",
        'expiry_s = "5d"', "",
        "[security]", "require_signed_commands = false", "",
        "[log]", 'level = "info"', 'format = "text"', "",
        "[[buses]]", 'name = "rs485-0"', 'kind = "rtu"', 'port = "/tmp/locker-bench/ttyLOCKER0"',
        f"baudrate = {BAUD}", "",
        "[[zones]]", 'name = "ambient"', 'kind = "ambient"', "",
    ]
    for b in range(BOARDS):
        out += ["[[boards]]", f'name = "locks-{b}"', 'bus = "rs485-0"', f"address = {b + 1}",
                'profile = "waveshare_relay"', f"outputs = {CHANNELS}", f"inputs = {CHANNELS}",
                ""]
    for b in range(BOARDS):
        for ch in range(CHANNELS):
            out += ["[[compartments]]", f'id = "{chr(ord("A") + b)}{ch + 1:02d}"', 'size = "M"',
                    'zone = "ambient"', 'pool = "parcel"',
                    f'lock = {{ board = "locks-{b}", channel = {ch} }}',
                    f'door = {{ board = "locks-{b}", channel = {ch}, active = "high" }}', ""]
    return "\n".join(out)


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid``, in kB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                values[key] = int(rest.split()[0])
    return values


def bench_rig(workdir: Path, poll_s: float) -> LaneRig:
    """A lane (not started) in ``workdir`` with the benchmark's cabinet, polled every
    ``poll_s``."""
    template = workdir / "bench-cabinet.toml"
    template.write_text(cabinet_template().replace(
        "poll_interval_s = 0.1", f"poll_interval_s = {poll_s}"))
    return LaneRig(workdir / "lane", template=template)


_IMPORTS = [
    ("asyncio (with ssl)", "asyncio"), ("msgspec", "msgspec"),
    ("controller.settings (models)", "controller.settings"),
    ("controller.contract.messages", "controller.contract.messages"),
    ("paho-mqtt + aiomqtt", "aiomqtt"),
    ("controller.store (its own Redis client)", "controller.store"),
    ("controller.daemon (the rest)", "controller.daemon"),
    ("Modbus backend", "drivers.modbus.boards"),
]


def _import_costs() -> list[tuple[str, float]]:
    """RSS of a fresh interpreter, then as the daemon's imports load in order (MB)."""
    rows = probe(sys.executable, [(label, f"import {name}") for label, name in _IMPORTS])
    return [("bare interpreter" if label == "interpreter" else label, values["VmRSS"])
            for label, values in rows]


def _py_spy() -> str | None:
    for candidate in (Path(sys.executable).parent / "py-spy", shutil.which("py-spy")):
        if candidate and os.path.exists(candidate):
            return str(candidate)
    return None


def _profile(pid: int, seconds: int, rate: int, workdir: Path) -> None:
    spy = _py_spy()
    if spy is None:
        print("\nprofile: py-spy is not installed (pip install py-spy); skipped")
        return
    raw = workdir / "profile.txt"
    proc = subprocess.run(
        [spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(rate),
         "--format", "raw", "--output", str(raw), "--nonblocking", "--gil"],
        capture_output=True, text=True, timeout=seconds + 60, check=False)
    if proc.returncode != 0 or not raw.exists():
        print(f"\nprofile: py-spy failed: {proc.stderr.strip()[-500:]}")
        return
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_short(f) for f in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    print(f"\nprofile (py-spy --gil, {seconds} s at {rate} Hz: samples of the thread holding "
          f"the GIL, so a wait in epoll or time.sleep is not counted; time in the kernel "
          f"is not seen either): {total} samples = "
          f"{total / rate / seconds * 100:.2f} % of one core")
    print("  own time:")
    for frame, count in own.most_common(12):
        print(f"    {count / total * 100:5.1f} %  {frame}")
    print("  including callees:")
    for frame, count in inclusive.most_common(20):
        print(f"    {count / total * 100:5.1f} %  {frame}")


def _short(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``, lines merged."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    tail = "/".join(parts[-2:]) if parts else path
    return f"{name} ({tail})"


async def _wait_online(rig: LaneRig) -> None:
    async with DispatchClient("127.0.0.1", rig.mqtt_port, topics_of(rig)) as dispatch:
        await dispatch.wait_online(30)


def _wakeups(pid: int) -> int:
    """Context switches of every thread of ``pid`` so far: each is a wake-up, and on a
    small CPU a wake-up costs more than the Python that runs after it."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
    return total


def _mappings(pid: int, top: int = 6) -> list[tuple[str, float]]:
    """The largest resident mappings of ``pid`` (MB): shared libraries by file, the rest
    as ``[heap]`` and ``[anonymous]`` (the Python objects: code, classes, data)."""
    sizes: dict[str, int] = {}
    name = "[anonymous]"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(maxsplit=5)
            if len(head) >= 5 and "-" in head[0] and ":" not in head[0]:
                name = head[5].strip() if len(head) > 5 and head[5].strip() else "[anonymous]"
                name = name.rsplit("/", 1)[-1]
            elif line.startswith("Rss:"):
                sizes[name] = sizes.get(name, 0) + int(line.split()[1])
    ranked = sorted(sizes.items(), key=lambda kv: -kv[1])[:top]
    return [(n, kb / 1024) for n, kb in ranked]


def _pin(pid: int | None, core: int | None) -> None:
    if pid is not None and core is not None:
        os.sched_setaffinity(pid, {core})


def _measure(poll_s: float, window: float, settle: float, profile: int, profile_rate: int,
             pin: int | None) -> None:
    """One lane polled every ``poll_s``: RSS, CPU % of a core, CPU-ms per transaction."""
    label = f"poll every {poll_s * 1000:.0f} ms" + (" (10 Hz)" if poll_s == 0.1 else "")
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmp:
        workdir = Path(tmp)
        rig = bench_rig(workdir, poll_s)
        with rig:
            asyncio.run(_wait_online(rig))
            pid = rig.daemon.pid
            assert pid is not None
            _pin(pid, pin)
            _pin(rig.sim.pid, pin)
            time.sleep(settle)
            stats0 = rig.control.call("stats")["rs485-0"]["requests"]
            tasks0 = task_cpu_ms(pid)
            cpu0, wake0, t0 = cpu_ms(pid), _wakeups(pid), time.monotonic()
            rss: list[int] = []
            deadline = t0 + window
            while time.monotonic() < deadline:
                rss.append(_status(pid)["VmRSS"])
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            cpu1, wake1, t1 = cpu_ms(pid), _wakeups(pid), time.monotonic()
            tasks1 = task_cpu_ms(pid)
            stats1 = rig.control.call("stats")["rs485-0"]["requests"]
            status = _status(pid)
            rss.append(status["VmRSS"])
            wall = t1 - t0
            cpu_s = (cpu1 - cpu0) / 1000
            cpu = cpu_s / wall * 100
            tx = max(1, stats1 - stats0)
            polls = (stats1 - stats0) / wall
            per_tx = cpu_s * 1000 / tx
            rss_mb = [k / 1024 for k in rss]
            hwm_mb = status["VmHWM"] / 1024
            print(f"\n== {label}: window {wall:.1f} s after {settle:.0f} s of settling; "
                  f"daemon pid {pid}; pinned to core: {pin if pin is not None else 'no'}")
            print(f"poll transactions on the line: {polls:.1f}/s ({polls / BOARDS:.2f} cycles/s)")
            print(f"{'figure':<32} {'value':>10}  {'target':>10}  verdict")
            print(f"{'RSS (VmRSS) at the end':<32} {rss_mb[-1]:>7.1f} MB  {'< 40 MB':>10}  "
                  f"{'met' if rss_mb[-1] < RSS_TARGET_MB else 'MISSED'}")
            print(f"{'RSS max over the window':<32} {max(rss_mb):>7.1f} MB")
            print(f"{'peak RSS (VmHWM)':<32} {hwm_mb:>7.1f} MB  {'< 40 MB':>10}  "
                  f"{'met' if hwm_mb < RSS_TARGET_MB else 'MISSED'}")
            print(f"{'  of which anonymous (RssAnon)':<32} {status['RssAnon'] / 1024:>7.1f} MB   "
                  f"file-backed (RssFile, shared libraries) {status['RssFile'] / 1024:.1f} MB")
            print("  largest resident mappings: " + ", ".join(
                f"{n} {mb:.1f} MB" for n, mb in _mappings(pid)))
            cpu_target = f"< {CPU_TARGET:g} %" if poll_s == 0.1 else "-"
            cpu_verdict = ("met" if cpu < CPU_TARGET else "MISSED") if poll_s == 0.1 else ""
            print(f"{'CPU (time on a CPU / wall)':<32} {cpu:>8.2f} %  {cpu_target:>10}  "
                  f"{cpu_verdict}   (% of one core)")
            print(f"{'CPU per poll transaction':<32} {per_tx:>7.3f} ms  {'<= 0.2 ms':>10}  "
                  f"{'met' if per_tx <= CPU_MS_PER_TX_TARGET else 'MISSED'}")
            print(f"{'wake-ups per poll transaction':<32} {(wake1 - wake0) / tx:>10.2f}   "
                  f"(context switches of the daemon's threads)")
            for tid, (name, ms) in sorted(tasks1.items(), key=lambda kv: int(kv[0])):
                spent = ms - tasks0.get(tid, (name, 0.0))[1]  # (a thread started in it: all)
                if spent > 0:
                    role = "main thread (the loop)" if tid == str(pid) else f"thread {tid}"
                    print(f"  {role:<30} {spent / tx:>7.3f} ms per transaction")
            ended = set(tasks0) - set(tasks1)
            if ended:
                print(f"  WARNING: {len(ended)} thread(s) ended in the window; their CPU is "
                      f"not in the figures above")
            if profile:
                _profile(pid, profile, profile_rate, workdir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "\n").splitlines()[0])
    parser.add_argument("--window", type=float, default=60.0, help="measured seconds (1..600)")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before (0..120)")
    parser.add_argument("--profile", type=int, default=20,
                        help="seconds of py-spy sampling after each window (0: none; max 120)")
    parser.add_argument("--profile-rate", type=int, default=250,
                        help="py-spy samples per second (50..2000): the daemon holds the GIL "
                             "about 1 %% of the time at 10 Hz, so a fine profile needs more")
    parser.add_argument("--poll", type=float, action="append", default=None,
                        help="poll period(s) to measure, seconds (repeatable; default 0.1 "
                             "and 0.01)")
    parser.add_argument("--pin", type=int, default=None, metavar="CORE",
                        help="pin the daemon and the simulator to this core")
    args = parser.parse_args(argv)
    window = max(1.0, min(args.window, 600.0))
    settle = max(0.0, min(args.settle, 120.0))
    profile = max(0, min(args.profile, 120))
    args.profile_rate = max(50, min(args.profile_rate, 2000))
    polls = [max(0.01, min(p, 1.0)) for p in (args.poll or [0.1, 0.01])][:4]
    if args.pin is not None and args.pin not in os.sched_getaffinity(0):
        parser.error(f"--pin {args.pin}: no such core available")
    read_t = transaction_time(READ_REQUEST_LEN, read_bits_reply_len(CHANNELS), BAUD)
    print(machine())
    print(f"cabinet: {BOARDS} Waveshare boards x {CHANNELS} in / {CHANNELS} out on one line at "
          f"{BAUD} baud, {BOARDS * CHANNELS} compartments; {BOARDS} x "
          f"{read_t * 1000:.2f} ms = {BOARDS * read_t * 1000:.1f} ms of wire per poll cycle")
    print("lane: mosquitto + redis-server (appendfsync always) + locker-sim (line timing "
          "emulated) + locker-controller, on 127.0.0.1; nothing happens on the lane")
    print(installed_bytecode())
    for poll_s in polls:
        _measure(poll_s, window, settle, profile, args.profile_rate, args.pin)
    rows = _import_costs()
    print("\nRSS of the imports alone (a fresh interpreter importing what the daemon imports):")
    previous = 0.0
    for label, mb in rows:
        print(f"  {label:<32} {mb:6.1f} MB  (+{mb - previous:4.1f})")
        previous = mb
    return 0


if __name__ == "__main__":
    sys.exit(main())
