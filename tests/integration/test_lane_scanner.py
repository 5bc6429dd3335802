"""A code shown to the simulated scanner (a pty) collects an order through the daemon;
the lane's inputs raise and clear their alarms; all of it reaches dispatch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.lane import (
    pulses,
    running_lane,
    wait_compartment,
    wait_event,
    wait_lock_idle,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_scanned_code_collects_and_lane_alarms(tmp_path: Path) -> None:
    # No cooldown: the collection follows the deposit as soon as the deposit's pulse ended.
    overrides = {"timing.compartment_cooldown_s": "0"}
    async with running_lane(tmp_path, overrides=overrides) as (rig, dispatch):
        lane = await rig.control.acall("lane")
        assert lane["light"] == "idle", lane
        reply = await dispatch.command("assign", {
            "order_id": "o-scan", "size": "S", "zone": "ambient", "pool": "parcel",
            "codes": dispatch.seal_codes("o-scan", [("deposit", "DEP123QRCODE45678"),
                                                    ("collect", "7712040815")])})
        assert reply["ok"], reply
        cid = reply["result"]["compartment"]
        mark = len(dispatch.messages)
        await rig.control.acall("scan", code="DEP123QRCODE45678")
        await wait_event(dispatch, "code_accepted", cid, start=mark)
        await rig.control.acall("pull_when_released", compartment=cid)
        await wait_event(dispatch, "door_opened", cid, start=mark)
        await rig.control.acall("place_parcel", compartment=cid)
        # The daemon has seen the parcel before the door shuts on it.
        await wait_compartment(dispatch, cid, lambda c: c.get("occupancy") == "occupied",
                               "parcel seen")
        await rig.control.acall("close", compartment=cid)
        await wait_event(dispatch, "compartment_loaded", cid, start=mark)
        await wait_lock_idle(rig, cid)  # the deposit's 0.7 s pulse is over

        mark = len(dispatch.messages)
        await rig.control.acall("scan", code="0000000000")
        rejected = await wait_event(dispatch, "code_rejected", None, start=mark)
        assert rejected["data"]["reason"] == "wrong_code"
        await rig.control.acall("scan", code="7712040815")
        accepted = await wait_event(dispatch, "code_accepted", cid, start=mark)
        assert accepted["data"]["purpose"] == "collect"
        assert "7712040815" not in str(dispatch.events())
        await rig.control.acall("pull_when_released", compartment=cid)
        await wait_event(dispatch, "door_opened", cid, start=mark)
        await rig.control.acall("remove_parcel", compartment=cid)
        await wait_compartment(dispatch, cid, lambda c: c.get("occupancy") == "empty",
                               "parcel taken")
        await rig.control.acall("close", compartment=cid)
        await wait_event(dispatch, "compartment_freed", cid, start=mark)
        assert len(pulses(rig, cid)) == 2
        lane = await rig.control.acall("lane")
        assert lane["buzzes"] >= 1

        mark = len(dispatch.messages)
        await rig.control.acall("tamper_open")
        raised = await wait_event(dispatch, "alarm_raised", None, start=mark)
        assert raised["data"]["alarm"] == "tamper"
        await wait_until(lambda: _light(rig, "fault"), "lane light fault")
        await rig.control.acall("tamper_close")
        cleared = await wait_event(dispatch, "alarm_cleared", None, start=mark)
        assert cleared["data"]["alarm"] == "tamper"
        await rig.control.acall("help_press")
        await wait_event(dispatch, "help_requested", None, start=mark)
        await rig.control.acall("vehicle_arrive")
        await wait_event(dispatch, "vehicle_arrived", None, start=mark)
        state = await dispatch.command("get_state", sign=False)
        assert state["result"]["lane"]["vehicle_present"] is True


async def _light(rig: Any, wanted: str) -> bool | None:
    """The simulated lane light shows ``wanted`` (the outputs the daemon drives)."""
    return True if (await rig.control.acall("lane"))["light"] == wanted else None
