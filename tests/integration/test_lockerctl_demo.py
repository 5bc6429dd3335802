"""``lockerctl demo`` as the README runs it: a subprocess, bounded, checked by its output.

The demo starts mosquitto, redis-server, the simulator and the daemon, plays the lane
scenario and checks its own outcome; here we check it says so, shows the traffic a
dispatch sees, and leaves no process and (without ``--keep``) no directory behind.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.lab.rig import free_port

pytestmark = pytest.mark.integration

LOCKERCTL = Path(sys.executable).parent / "lockerctl"


def run_demo(*extra: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], float]:
    argv = [str(LOCKERCTL)] if LOCKERCTL.exists() else [
        sys.executable, "-m", "controller.tools.lockerctl"]
    started = time.monotonic()
    # A wide console, so that no line we look for is wrapped.
    env = {**os.environ, "COLUMNS": "240", "NO_COLOR": "1", "TERM": "dumb"}
    proc = subprocess.run([*argv, "demo", *extra], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)
    return proc, time.monotonic() - started


def pids(output: str) -> dict[str, int]:
    found = {name: int(pid) for name, pid in
             re.findall(r"(mosquitto|redis-server|simulator) pid (\d+)", output)}
    daemon = re.search(r"daemon started, pid (\d+)", output)
    if daemon:
        found["daemon"] = int(daemon.group(1))
    return found


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie of another parent would still answer; ours are reaped by the demo.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" in status.read_text()


def test_demo_plays_the_lane_and_checks_itself() -> None:
    proc, elapsed = run_demo()
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-2000:]
    assert elapsed < 90, f"the demo took {elapsed:.1f} s"
    assert "demo ok" in out
    assert "Traceback" not in out + proc.stderr
    # What dispatch sees: presence, commands and replies, events, state, the refusal.
    assert re.search(r"status\s+online boot \w{8}", out)
    assert re.search(r"cmd\s+-> c-\w+ assign order_id=g-1001 size=M zone=chilled "
                     r"pool=grocery \[signed\]", out)
    assert re.search(r"event\s+#\d+ compartment_loaded B\d\d confirmed=True", out)
    assert re.search(r"event\s+#\d+ compartment_collected B\d\d confirmed=True "
                     r"order=p-2002", out)
    assert re.search(r"reply\s+<- c-\w+ REFUSED unauthenticated", out)
    assert re.search(r"reply\s+<- c-\w+ REFUSED unknown_compartment", out)
    assert re.search(r"state\s+rev \d+: .*loaded order p-2002", out)
    assert re.search(r"events gap-free\s+seq 1\.\.\d+", out)
    assert "offline status published" in out
    assert re.search(r"checks\s+│?\s*(\d+)/\1 passed", out)
    # Every process it started is stopped, and its work directory is removed.
    started = pids(out)
    assert set(started) == {"mosquitto", "redis-server", "simulator", "daemon"} or \
        set(started) == {"mosquitto", "simulator", "daemon"}, started
    for name, pid in started.items():
        assert gone(pid), f"{name} (pid {pid}) still running"
    workdir = re.search(r"work dir (\S+)", out)
    assert workdir is not None
    assert not Path(workdir.group(1)).exists()


def test_demo_into_a_file_keeps_its_lines_short(tmp_path: Path) -> None:
    """Into a file (no terminal, no COLUMNS): data lines are never cut, but rules, panels
    and tables are laid out at a fixed width, not the unbounded width of a data line."""
    argv = [str(LOCKERCTL)] if LOCKERCTL.exists() else [
        sys.executable, "-m", "controller.tools.lockerctl"]
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    out = tmp_path / "demo.txt"
    with out.open("w") as sink:
        proc = subprocess.run([*argv, "demo", "--no-timing"], stdout=sink,
                              stderr=subprocess.PIPE, text=True, timeout=120, env=env,
                              check=False)
    text = out.read_text()
    assert proc.returncode == 0, text[-4000:] + proc.stderr[-2000:]
    lines = text.splitlines()
    longest = max(lines, key=len)
    assert len(longest) <= 400, f"{len(longest)} characters: {longest[:120]}"
    assert any(line.startswith("The cabinet starts ─") for line in lines)
    assert len(text) < 200_000, f"{len(text)} bytes"


def test_demo_keep_and_fixed_broker_port() -> None:
    port = free_port()
    proc, _ = run_demo("--keep", "--no-timing", "--broker-port", str(port))
    out = proc.stdout
    workdir = re.search(r"work directory kept: (\S+)", out)
    try:
        assert proc.returncode == 0, out[-4000:] + proc.stderr[-2000:]
        assert f"127.0.0.1:{port}" in out
        assert "no line timing" in out
        assert workdir is not None
        kept = Path(workdir.group(1))
        assert (kept / "cabinet.toml").is_file()
        assert "connected to 127.0.0.1" in (kept / "daemon.log").read_text()
    finally:
        if workdir is not None:
            shutil.rmtree(workdir.group(1), ignore_errors=True)


def test_demo_rejects_a_privileged_broker_port() -> None:
    proc, _ = run_demo("--broker-port", "80", timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "lockerctl demo: --broker-port must be in 1024..65535"
