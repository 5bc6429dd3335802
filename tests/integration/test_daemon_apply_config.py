"""apply_config from dispatch: refused with the key at fault and nothing changed, or
validated whole, stored, and applied by a restart that happens every time, within seconds:
re-exec in place in a foreground run, exit code 75 for systemd to restart under systemd.
Either way SIGTERM still ends the daemon."""

from __future__ import annotations

import asyncio
import configparser
import os
import signal
import time
from pathlib import Path

import pytest

from controller.restart import EXIT_RESTART
from tests.support.lane import pulses, running_lane

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
#: "Within seconds": from the accepted reply to the new boot online.
RESTART_LIMIT_S = 10.0


def _daemons_with(config: Path) -> list[int]:
    """Process ids whose command line names this config (the daemon, old or new)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(config).encode() in cmdline and any(b"locker-controller" in a
                                                   or b"controller.daemon" in a
                                                   for a in cmdline):
            found.append(int(entry.name))
    return found


async def test_refusals_then_apply_restarts_in_place_and_sigterm_still_stops(
    tmp_path: Path,
) -> None:
    async with running_lane(tmp_path) as (rig, dispatch):
        status = await dispatch.wait_online()
        first_hash = status["config_hash"]
        assert rig.daemon.proc is not None
        pid = rig.daemon.proc.pid

        reply = await dispatch.command("apply_config", {"config": {"redis": {"url": "x"}}})
        assert reply["error"]["code"] == "invalid_config"
        assert reply["error"]["field"] == "args.config.redis"
        reply = await dispatch.command("apply_config",
                                       {"config": {"timing": {"pulse_s": -1}}})
        assert reply["error"]["code"] == "invalid_config"
        assert reply["error"]["field"] == "args.config.timing.pulse_s"
        reply = await dispatch.command("apply_config", {
            "config": {"timing": {"pulse_s": 0.4}}, "base_hash": "0" * 64})
        assert reply["error"]["code"] == "conflict"
        unsigned = await dispatch.command(
            "apply_config", {"config": {"timing": {"pulse_s": 0.4}}}, sign=False)
        assert unsigned["error"]["code"] == "unauthenticated"
        assert rig.daemon.running()  # nothing of that restarted anything

        mark = len(dispatch.messages)
        reply = await dispatch.command("apply_config", {
            "config": {"timing": {"pulse_s": 0.4}}, "base_hash": first_hash})
        accepted_at = time.monotonic()
        assert reply["ok"], reply
        assert reply["result"]["restart"] is True
        new_hash = reply["result"]["config_hash"]
        assert new_hash != first_hash

        online = await dispatch.wait_for(
            lambda m: m.channel == "status" and m.payload.get("state") == "online"
            and m.payload.get("boot_id") != status["boot_id"], RESTART_LIMIT_S, start=mark)
        took = time.monotonic() - accepted_at
        print(f"apply_config -> new boot online in {took:.2f}s (foreground, re-exec)")
        assert online.payload["config_hash"] == new_hash
        # The old boot said goodbye before the new one said hello: a clean stop, not a kill.
        statuses = [(m.payload["boot_id"], m.payload["state"]) for m in dispatch.messages[mark:]
                    if m.channel == "status"]
        assert (status["boot_id"], "offline") in statuses
        assert statuses.index((status["boot_id"], "offline")) < statuses.index(
            (online.payload["boot_id"], "online"))
        # Re-executed in place: the same process, the old image gone, no second daemon.
        assert rig.daemon.running()
        assert rig.daemon.proc.pid == pid
        assert _daemons_with(rig.config_path) == [pid]

        reply = await dispatch.command("open", {"compartment": "A01", "reason": "staff"})
        assert reply["ok"], reply
        assert reply["result"]["pulse"]["duration_s"] == pytest.approx(0.4)
        deadline = time.monotonic() + 5
        while not pulses(rig, "A01"):  # bounded: the simulator records the pulse at once
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert pulses(rig, "A01")[-1]["detail"]["duration_s"] == pytest.approx(0.4)

        # SIGTERM ends the new image as it ended the old one.
        mark = len(dispatch.messages)
        rig.daemon.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(rig.daemon.proc.wait, 15) == 0, rig.logs()
        await dispatch.wait_for(
            lambda m: m.channel == "status" and m.payload.get("state") == "offline"
            and m.payload.get("boot_id") == online.payload["boot_id"], 5, start=mark)
        assert _daemons_with(rig.config_path) == []


def test_the_unit_restarts_on_the_restart_exit_code() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(ROOT / "deploy" / "systemd" / "locker-controller.service")
    service = unit["Service"]
    assert service.get("Restart") in ("always", "on-failure")
    assert str(EXIT_RESTART) not in service.get("RestartPreventExitStatus", "").split()
    assert float(service.get("RestartSec", "0")) <= 5


async def test_under_systemd_apply_exits_75_within_seconds(tmp_path: Path) -> None:
    async with running_lane(tmp_path) as (rig, dispatch):
        status = await dispatch.wait_online()
        # As systemd would run it: restart by exit code, not in place.
        await asyncio.to_thread(rig.daemon.stop)
        rig.daemon.env = {"INVOCATION_ID": "0123456789abcdef0123456789abcdef"}
        mark = len(dispatch.messages)
        rig.daemon.start(wait_port=False)
        await dispatch.wait_for(
            lambda m: m.channel == "status" and m.payload.get("state") == "online"
            and m.payload.get("boot_id") != status["boot_id"], 30, start=mark)
        second = dispatch.messages[-1]
        assert rig.daemon.proc is not None

        reply = await dispatch.command("apply_config", {"config": {"timing": {"pulse_s": 0.5}}})
        accepted_at = time.monotonic()
        assert reply["ok"], reply
        code = await asyncio.to_thread(rig.daemon.proc.wait, RESTART_LIMIT_S)
        print(f"apply_config -> exit {code} in {time.monotonic() - accepted_at:.2f}s (systemd)")
        assert code == EXIT_RESTART, rig.logs()
        assert _daemons_with(rig.config_path) == []

        # systemd's part (Restart=always): start it again; the change is in force.
        mark = len(dispatch.messages)
        rig.daemon.start(wait_port=False)
        online = await dispatch.wait_for(
            lambda m: m.channel == "status" and m.payload.get("state") == "online", 30,
            start=mark)
        assert online.payload["boot_id"] != second.payload["boot_id"]
        assert online.payload["config_hash"] == reply["result"]["config_hash"]
        assert os.getpid() not in _daemons_with(rig.config_path)
