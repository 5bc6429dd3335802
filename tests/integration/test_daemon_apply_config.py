"""apply_config from dispatch: refused with the key at fault and nothing changed, or
validated whole, stored, and applied by a restart that keeps it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.lane import pulses, running_lane

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_apply_config_refusals_then_apply_and_restart(tmp_path: Path) -> None:
    async with running_lane(tmp_path) as (rig, dispatch):
        status = await dispatch.wait_online()
        first_hash = status["config_hash"]

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

        reply = await dispatch.command("apply_config", {
            "config": {"timing": {"pulse_s": 0.4}}, "base_hash": first_hash})
        assert reply["ok"], reply
        assert reply["result"]["restart"] is True
        new_hash = reply["result"]["config_hash"]
        assert new_hash != first_hash
        assert rig.daemon.proc is not None
        assert await asyncio.to_thread(rig.daemon.proc.wait, 20) == 0

        # Under systemd, Restart=always brings it back; here the test does.
        mark = len(dispatch.messages)
        rig.daemon.start(wait_port=False)
        online = await dispatch.wait_for(
            lambda m: m.channel == "status" and m.payload.get("state") == "online"
            and m.payload.get("config_hash") == new_hash, 30, start=mark)
        assert online.payload["boot_id"] != status["boot_id"]
        reply = await dispatch.command("open", {"compartment": "A01", "reason": "staff"})
        assert reply["ok"], reply
        assert reply["result"]["pulse"]["duration_s"] == pytest.approx(0.4)
        await asyncio.sleep(0.2)
        assert pulses(rig, "A01")[-1]["detail"]["duration_s"] == pytest.approx(0.4)
