"""A stop is bounded even when the event loop is stuck: the shutdown deadline (a thread)
writes every thread's stack and ends the process, or restarts it when a restart was asked
for (exit 75 under systemd, re-exec in place otherwise)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from controller.restart import EXIT_RESTART, EXIT_STOP_TIMEOUT, restart_mode

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

REPO = Path(__file__).resolve().parents[2]


def _run(script: str, tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    path = tmp_path / "stuck.py"
    path.write_text(textwrap.dedent(script))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(path), str(tmp_path)], capture_output=True, text=True, timeout=30,
        env={**os.environ, "PYTHONPATH": str(REPO), **env}, check=False)
    return done, time.monotonic() - started


STUCK = """
    import sys, time
    from pathlib import Path
    from controller.restart import ShutdownDeadline, restart_now
    runs = Path(sys.argv[1]) / "runs"
    with runs.open("a") as f:
        f.write(f"{__import__('os').getpid()}\\n")
    if len(runs.read_text().split()) > 1:
        sys.exit(0)  # the restarted image: up, and done
    MODE = "{mode}"
    deadline = ShutdownDeadline(1.0, (lambda: restart_now(MODE)) if MODE else None)
    deadline.arm()
    while True:  # a main thread that never returns (bounded by the deadline)
        time.sleep(0.05)
"""


def test_a_stuck_stop_ends_with_its_stacks_on_stderr(tmp_path: Path) -> None:
    done, took = _run(STUCK.replace("{mode}", ""), tmp_path)
    assert done.returncode == EXIT_STOP_TIMEOUT, done.stderr
    assert took < 10
    assert "shutdown did not finish within 1 s" in done.stderr
    assert "time.sleep" in done.stderr or "stuck.py" in done.stderr  # where it hung


def test_a_stuck_restart_under_systemd_exits_75(tmp_path: Path) -> None:
    done, took = _run(STUCK.replace("{mode}", "exit"), tmp_path)
    assert done.returncode == EXIT_RESTART, done.stderr
    assert took < 10


def test_a_stuck_restart_in_the_foreground_re_executes_in_place(tmp_path: Path) -> None:
    done, took = _run(STUCK.replace("{mode}", "exec"), tmp_path)
    assert done.returncode == 0, done.stderr
    pids = (tmp_path / "runs").read_text().split()
    assert len(pids) == 2
    assert pids[0] == pids[1]  # the same process, a new image
    assert took < 10


def test_restart_mode_follows_systemd() -> None:
    assert restart_mode({}) == "exec"
    assert restart_mode({"INVOCATION_ID": "abc"}) == "exit"
    assert restart_mode({"NOTIFY_SOCKET": "/run/systemd/notify"}) == "exit"
    assert restart_mode({"INVOCATION_ID": "abc", "LOCKER_RESTART": "exec"}) == "exec"
    assert restart_mode({"INVOCATION_ID": ""}) == "exec"
