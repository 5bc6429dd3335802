"""What the sensors decided survives a SIGKILL of the daemon: a deposit confirmed by the
door closing is still "loaded" after a restart, and a restart while a customer holds the
door open is neither a forced open nor a lost collection."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.lane import running_lane, wait_compartment, wait_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_loaded_survives_a_kill_and_a_restart_mid_collection(tmp_path: Path) -> None:
    overrides = {"timing.compartment_cooldown_s": "0.2"}
    async with running_lane(tmp_path, overrides=overrides) as (rig, dispatch):
        reply = await dispatch.command(
            "assign", {"order_id": "o-r1", "size": "M", "zone": "ambient", "pool": "parcel"})
        cid = reply["result"]["compartment"]
        assert (await dispatch.command("open", {"compartment": cid, "reason": "deposit"}))["ok"]
        await rig.control.acall("pull", compartment=cid)
        await wait_event(dispatch, "door_opened", cid)
        await rig.control.acall("place_parcel", compartment=cid)
        # The daemon has seen the parcel before the door shuts on it.
        await wait_compartment(dispatch, cid, lambda c: c.get("occupancy") == "occupied",
                               "parcel seen")
        await rig.control.acall("close", compartment=cid)
        await wait_event(dispatch, "compartment_loaded", cid)

        await asyncio.to_thread(rig.daemon.kill)
        mark = len(dispatch.messages)
        rig.daemon.start(wait_port=False)
        await dispatch.wait_for(lambda m: m.channel == "status"
                                and m.payload.get("state") == "online", 30, start=mark)
        state = (await dispatch.command("get_state", sign=False))["result"]
        comp = next(c for c in state["compartments"] if c["id"] == cid)
        assert comp["state"] == "loaded", comp
        assert comp["order_id"] == "o-r1"

        # The customer opens; the daemon dies while the door stands open.
        reply = await dispatch.command("open", {"compartment": cid, "reason": "customer_app"})
        assert reply["ok"], reply
        await rig.control.acall("pull", compartment=cid)
        await wait_event(dispatch, "door_opened", cid, start=mark)
        await wait_compartment(dispatch, cid, lambda c: c.get("door") == "open",
                               "door open")
        await asyncio.to_thread(rig.daemon.kill)
        mark = len(dispatch.messages)
        rig.daemon.start(wait_port=False)
        await dispatch.wait_for(lambda m: m.channel == "status"
                                and m.payload.get("state") == "online", 30, start=mark)
        await rig.control.acall("remove_parcel", compartment=cid)
        # The daemon has seen the compartment empty before the door shuts.
        await wait_compartment(dispatch, cid, lambda c: c.get("occupancy") == "empty",
                               "parcel taken")
        await rig.control.acall("close", compartment=cid)
        await wait_event(dispatch, "compartment_freed", cid, start=mark)
        forced = [e for e in dispatch.events() if e.get("compartment") == cid
                  and e["kind"] == "alarm_raised" and e["data"].get("alarm") == "forced_open"]
        assert forced == [], forced
