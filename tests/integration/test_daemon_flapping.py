"""A door switch that flaps, through the whole lane: the simulator's ``flapping`` fault on a
pty, the production Modbus driver, the real poller and outbox, a real mosquitto and
redis-server. The daemon runs its shipped debounce and flapping defaults."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.lane import running_lane, truth, wait_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CID = "A01"
DOOR_EVENTS = ("door_opened", "door_closed")


def flapping_alarms(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] in ("alarm_raised", "alarm_cleared")
            and e["data"].get("alarm") == "sensor_flapping"]


async def test_a_shut_door_flapping_every_200ms_for_5s_is_one_alarm_and_no_door_event(
    tmp_path: Path,
) -> None:
    async with running_lane(tmp_path) as (rig, dispatch):
        state = await dispatch.command("get_state", sign=False)
        a01 = next(c for c in state["result"]["compartments"] if c["id"] == CID)
        assert a01["door"] == "closed", a01
        mark = len(dispatch.messages)

        await rig.control.acall("fault_set", kind="flapping", compartment=CID, signal="door",
                                period_s=0.2)
        flap_start = time.monotonic()
        raised = await wait_event(dispatch, "alarm_raised", CID, timeout_s=5.0, start=mark)
        assert raised["data"]["alarm"] == "sensor_flapping", raised
        # While it flaps: the door reads unknown and the state lists the alarm.
        state = await dispatch.command("get_state", sign=False)
        a01 = next(c for c in state["result"]["compartments"] if c["id"] == CID)
        assert a01["door"] == "unknown", a01
        assert {"kind": "sensor_flapping", "compartment": CID} in [
            {k: a[k] for k in ("kind", "compartment") if k in a}
            for a in state["result"]["alarms"]]
        # The fault lasts its 5 s (the scenario's length, not a wait for the daemon).
        await asyncio.sleep(max(0.0, 5.0 - (time.monotonic() - flap_start)))
        await rig.control.acall("fault_clear", kind="flapping", compartment=CID, signal="door")

        cleared = await dispatch.wait_for(
            lambda m: m.channel == "events" and m.payload.get("kind") == "alarm_cleared"
            and m.payload["data"].get("alarm") == "sensor_flapping", 15.0, start=mark)
        events = [m.payload for m in dispatch.messages[mark:] if m.channel == "events"]
        ours = [e for e in events if e.get("compartment") == CID]
        assert [e for e in ours if e["kind"] in DOOR_EVENTS] == []
        assert [e for e in events if e["data"].get("alarm") == "forced_open"] == []
        alarms = flapping_alarms(events)
        assert [(e["kind"], e["compartment"]) for e in alarms] == [
            ("alarm_raised", CID), ("alarm_cleared", CID)]
        for alarm in alarms:
            assert alarm["data"]["signal"] == "door"
            assert alarm["data"]["board"] == "locks-a"
            assert alarm["data"]["channel"] == 0
        assert raised["data"]["changes"] > 8
        assert cleared.payload["data"]["active_s"] >= 5.0
        # The ground truth: the door itself never moved.
        assert truth(rig, "door_opened", CID) == []

        # After the incident the door is trusted again: a real opening is reported.
        state = await dispatch.command("get_state", sign=False)
        a01 = next(c for c in state["result"]["compartments"] if c["id"] == CID)
        assert a01["door"] == "closed", a01
        assert "sensor_flapping" not in [a["kind"] for a in state["result"]["alarms"]]
        mark = len(dispatch.messages)
        reply = await dispatch.command("open", {"compartment": CID, "reason": "maintenance"})
        assert reply["ok"], reply
        await rig.control.acall("pull", compartment=CID)
        opened = await wait_event(dispatch, "door_opened", CID, start=mark)
        assert opened["data"]["authorised"] is True
        await rig.control.acall("close", compartment=CID)
        await wait_event(dispatch, "door_closed", CID, start=mark)
        events = [m.payload for m in dispatch.messages[mark:] if m.channel == "events"]
        assert [e["kind"] for e in events if e["kind"] in DOOR_EVENTS
                and e.get("compartment") == CID] == ["door_opened", "door_closed"]
        assert flapping_alarms(events) == []
