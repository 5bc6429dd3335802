"""The daemon against the simulator over a pty, a real mosquitto and a real redis-server.

Every process is started by the test (controller.lab.rig.LaneRig) and stopped by pid.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.support.lane import (
    open_when_ready,
    pulses,
    running_lane,
    truth,
    wait_event,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_assign_deposit_collect_events_in_order(tmp_path: Path) -> None:
    # A short cooldown: the customer comes back one second after the courier left.
    async with running_lane(tmp_path, overrides={"timing.compartment_cooldown_s": "0.2"}) as (
        rig, dispatch,
    ):
        reply = await dispatch.command(
            "assign", {"order_id": "o-100", "size": "M", "zone": "chilled", "pool": "grocery"})
        assert reply["ok"], reply
        cid = reply["result"]["compartment"]
        assert cid

        # Deposit: remote open, the courier pulls, puts the parcel in, closes.
        mark = len(dispatch.messages)
        reply = await dispatch.command("open", {"compartment": cid, "reason": "deposit"})
        assert reply["ok"], reply
        assert reply["result"]["pulse"]["accepted"] is True
        await rig.control.acall("pull", compartment=cid)
        await wait_event(dispatch, "door_opened", cid, start=mark)
        await rig.control.acall("place_parcel", compartment=cid)
        await rig.control.acall("close", compartment=cid)
        loaded = await wait_event(dispatch, "compartment_loaded", cid, start=mark)
        assert loaded["data"]["order"] == "o-100"

        # Collection: the customer's app asks dispatch, dispatch opens remotely.
        mark = len(dispatch.messages)
        # As soon as the lock takes it (the deposit's 0.7 s pulse over, the cooldown past).
        reply = await open_when_ready(dispatch, cid, "customer_app")
        assert reply["ok"], reply
        await rig.control.acall("pull", compartment=cid)
        await wait_event(dispatch, "door_opened", cid, start=mark)
        await rig.control.acall("remove_parcel", compartment=cid)
        await rig.control.acall("close", compartment=cid)
        await wait_event(dispatch, "compartment_freed", cid, start=mark)

        events = dispatch.events()
        kinds = [e["kind"] for e in events if e.get("compartment") == cid]
        # The story of one compartment, in the order it happened.
        expected = ["compartment_assigned", "open_requested", "unlock_pulse_sent",
                    "unlock_pulse_acked", "door_opened", "door_closed", "compartment_loaded",
                    "open_requested", "unlock_pulse_sent", "unlock_pulse_acked", "door_opened",
                    "door_closed", "compartment_collected", "compartment_freed"]
        assert kinds == expected
        seqs = [e["seq"] for e in events]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "gap or reorder in seq"
        assert len({e["id"] for e in events}) == len(events)
        # Ground truth: two pulses reached the board for this compartment, two openings.
        assert len(pulses(rig, cid)) == 2
        assert len(truth(rig, "door_opened", cid)) == 2

        # The retained state says the compartment is free again.
        state = await dispatch.command("get_state", sign=False)
        comp = next(c for c in state["result"]["compartments"] if c["id"] == cid)
        assert comp["state"] == "free"


async def test_repeated_command_id_acts_once(tmp_path: Path) -> None:
    async with running_lane(tmp_path) as (rig, dispatch):
        command = dispatch.build("open", {"compartment": "A01", "reason": "maintenance"})
        payload = dispatch.encode(command)
        first = await dispatch.send(payload, command["id"])
        assert first["ok"], first
        again = await dispatch.send(payload, command["id"])
        assert again == first  # the first reply, byte for byte the same content
        # A reply comes after the pulse it reports: had the repeat acted, its pulse would be
        # on the board already. Wait only for the simulator to list the first.
        await wait_until(lambda: _some(pulses(rig, "A01")), "the first pulse listed")
        assert len(pulses(rig, "A01")) == 1


async def test_forced_door_raises_alarm_and_clears(tmp_path: Path) -> None:
    async with running_lane(tmp_path) as (rig, dispatch):
        mark = len(dispatch.messages)
        await rig.control.acall("force_open", compartment="A02")
        raised = await wait_event(dispatch, "alarm_raised", "A02", start=mark)
        assert raised["data"]["alarm"] == "forced_open"
        opened = await wait_event(dispatch, "door_opened", "A02", start=mark)
        assert opened["data"]["authorised"] is False
        await rig.control.acall("close", compartment="A02")
        cleared = await wait_event(dispatch, "alarm_cleared", "A02", start=mark)
        assert cleared["data"]["alarm"] == "forced_open"


async def test_silent_board_makes_its_doors_unknown_not_closed(tmp_path: Path) -> None:
    async with running_lane(tmp_path) as (rig, dispatch):
        mark = len(dispatch.messages)
        await rig.control.acall("fault_set", kind="silent", board="locks-b")
        raised = await wait_event(dispatch, "alarm_raised", None, start=mark, timeout_s=15)
        assert raised["data"]["alarm"] in ("board_offline", "sensor_unknown")

        async def offline() -> dict[str, Any] | None:
            state = await dispatch.command("get_state", sign=False)
            boards = {b["name"]: b["online"] for b in state["result"]["boards"]}
            return state if boards["locks-b"] is False else None

        state = await wait_until(offline, "locks-b reported offline in the state")
        boards = {b["name"]: b["online"] for b in state["result"]["boards"]}
        assert boards["locks-a"] is True  # the other boards keep answering
        raw = tomllib.loads(rig.config_path.read_text())
        wired = {(c["id"], signal) for c in raw["compartments"]
                 for signal in ("door", "latch", "occupancy")
                 if c.get(signal, {}).get("board") == "locks-b"}
        assert wired
        comps = {c["id"]: c for c in state["result"]["compartments"]}
        for cid, signal in wired:
            # Never "closed" or "empty": unknown.
            assert comps[cid][signal] == "unknown", (cid, signal, comps[cid])
        await rig.control.acall("fault_clear", kind="silent", board="locks-b")
        await wait_event(dispatch, "alarm_cleared", None, start=mark, timeout_s=15)


async def _some(items: list[Any]) -> list[Any] | None:
    return items or None
