"""A small fleet keeps the report's promises: every command answered, every event once.

Five cabinets (the real daemon on in-memory boards, sharing one interpreter) against one
mosquitto and one redis-server, dispatch on the SDK with persistent sessions; the broker
restarts once and one cabinet's sensor board goes silent a while.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from controller.lab.fleet import FleetOptions, run_fleet
from tests.support.services import sigint_as_a_terminal

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("protocol", "cabinets", "down_s"), [(5, 5, 0.0), (311, 3, 0.5)])
async def test_fleet_report_keeps_its_promises(
    tmp_path: Path, protocol: int, cabinets: int, down_s: float,
) -> None:
    report = await run_fleet(FleetOptions(
        cabinets=cabinets, rounds=1, think_s=1.0, poll_s=0.5, protocol=protocol,
        broker_restart=True, broker_down_s=down_s, silent_boards=1, silent_for_s=3.0,
        drain_timeout_s=90.0, workdir=tmp_path))
    s = report.summary
    # The outage is measured from the stop to the broker accepting connections again.
    assert s["broker_outage_s"] >= down_s
    assert s["commands_started_during_outage"] >= 0
    assert s["cabinets"] == cabinets
    assert s["commands_sent"] >= 2 * cabinets  # an assign and an open at least each
    assert s["commands_answered"] == s["commands_sent"]
    assert s["commands_unanswered"] == 0
    assert s["events_expected"] > 0
    assert s["events_unique"] == s["events_expected"]
    assert s["events_missing"] == 0
    assert s["latency_p50_s"] is not None
    assert report.promises_kept
    rows = {row["cabinet"]: row for row in report.cabinets}
    # Every dispatch client lived through the broker restart.
    assert all(row["reconnects"] >= 1 for row in rows.values()), rows
    # Dispatch saw the silent board: its cabinet raised board_offline (the first cabinet).
    first = rows["cab-0001"]
    assert first["alarms"].get("board_offline", [0, 0])[0] >= 1, first
    assert report.summary["alarms_raised"].get("board_offline", 0) >= 1
    healthy = [row for row in rows.values() if not row["problems"]]
    assert healthy, rows
    assert all(row["refused"] == {} for row in healthy)
    assert set(report.as_dict()) == {"options", "summary", "cabinets", "promises_kept"}


def test_locker_sim_fleet_passes_its_options_to_the_fleet() -> None:
    result = subprocess.run([sys.executable, "-m", "simulator.cli", "fleet", "--help"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "--cabinets" in result.stdout
    assert "controller.lab.fleet run" in result.stdout


async def test_fleet_against_a_broker_it_did_not_start(tmp_path: Path) -> None:
    """``--broker HOST:PORT``: the way to run the fleet against a cluster."""
    import asyncio

    from controller.lab.rig import _Proc, free_port, mosquitto_argv

    (tmp_path / "broker").mkdir()
    port = free_port()
    broker = _Proc("mosquitto", mosquitto_argv(tmp_path / "broker", port),
                   tmp_path / "broker" / "mosquitto.log", port)
    await asyncio.to_thread(broker.start)
    try:
        report = await run_fleet(FleetOptions(
            cabinets=2, rounds=1, think_s=1.0, poll_s=0.5, silent_boards=0,
            drain_timeout_s=60.0, workdir=tmp_path / "fleet", broker=f"127.0.0.1:{port}"))
    finally:
        await asyncio.to_thread(broker.stop)
    assert report.promises_kept
    assert report.summary["commands_ok"] == report.summary["commands_sent"]
    assert all(row["reconnects"] == 0 for row in report.cabinets)


@pytest.mark.parametrize(("sig", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_ctrl_c_stops_the_fleet_and_everything_it_started(
    tmp_path: Path, sig: str, code: int
) -> None:
    """Ctrl-C (or SIGTERM) on ``locker-sim fleet``: the fleet stops its hosts, broker and
    store (they run in sessions of their own, so nothing else would), and the command
    ends with 130 (143 after SIGTERM)."""
    import os
    import signal
    import time

    workdir = tmp_path / "fleet"
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", "fleet", "--cabinets", "2", "--rounds", "1",
         "--workdir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=sigint_as_a_terminal)  # even when this suite runs as a background job
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # bounded: the fleet ends by itself within minutes
            if "scenario running" in line:
                break
        # SIGINT: what the terminal sends to the foreground command; SIGTERM: `kill`.
        proc.send_signal(getattr(signal, sig))
        assert proc.wait(180) == code
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def ours() -> list[str]:
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                continue
            if str(workdir).encode() in cmdline or cwd.startswith(str(workdir)):
                found.append(f"{pid}: {cmdline.decode(errors='replace')}")
        return found

    deadline = time.monotonic() + 30
    while ours() and time.monotonic() < deadline:  # bounded by the deadline
        time.sleep(0.2)
    assert ours() == []
