"""The events of a lane and of a cabinet in trouble, each checked against the schema of its
kind: codes accepted and refused, a guesser and the lockout cleared, a collection, the
lane's inputs, a door left open, a zone out of range, a dead board and a flapping sensor."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from controller.contract.events import ALARMS, EVENT_KINDS
from controller.lab.rig import LaneRig
from controller.mqtt.dispatch import DispatchClient
from tests.integration.test_lane_day import template
from tests.support.lane import running_lane, wait_event, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SCHEMAS = Path(__file__).resolve().parents[2] / "controller" / "schemas"
OVERRIDES = {
    "timing.pulse_s": "0.3",
    "timing.compartment_cooldown_s": "0.2",
    "timing.ajar_after_s": '"2s"',
    "security.code_max_attempts": "3",
    "security.code_lockout_s": '"60s"',
}


def _validators() -> dict[str, jsonschema.protocols.Validator]:
    out = {}
    for kind in EVENT_KINDS:
        schema = json.loads((SCHEMAS / "events" / f"{kind}.json").read_text())
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        out[kind] = cls(schema)
    return out


def _alarm(dispatch: DispatchClient, kind: str, alarm: str, start: int) -> Callable[
        [], Awaitable[dict[str, Any] | None]]:
    async def check() -> dict[str, Any] | None:
        return next((m.payload for m in dispatch.messages[start:]
                     if m.channel == "events" and m.payload["kind"] == kind
                     and m.payload["data"].get("alarm") == alarm), None)
    return check


async def test_lane_and_fault_events_match_the_schema_of_their_kind(tmp_path: Path) -> None:
    async with running_lane(tmp_path, template=template(tmp_path),
                            overrides=OVERRIDES) as (rig, dispatch):
        await _run(rig, dispatch)
        _check(dispatch)


async def _run(rig: LaneRig, dispatch: DispatchClient) -> None:
    ctl = rig.control

    async def door_open(cid: str) -> bool | None:
        return (await ctl.acall("state"))["compartments"][cid]["door_open"] or None

    deposit, collect = "D001X01QRCODE1234", "7030500837"
    reply = await dispatch.command("assign", {
        "order_id": "k-1", "size": "XL", "zone": "ambient", "pool": "grocery",
        "compartment": "A05",
        "codes": dispatch.seal_codes("k-1", [("deposit", deposit), ("collect", collect)])})
    assert reply["ok"], reply
    for code, step in ((deposit, "place_parcel"), (collect, "remove_parcel")):
        await ctl.acall("pull_when_released", compartment="A05")
        start = len(dispatch.messages)
        await ctl.acall("scan", code=code)
        await wait_until(lambda: door_open("A05"), "A05 open")
        await ctl.acall(step, compartment="A05")
        # The daemon has seen the door open before it closes: a door closed again within
        # a poll on a loaded machine would be a movement nobody saw.
        await wait_event(dispatch, "door_opened", "A05", timeout_s=30, start=start)
        await ctl.acall("close", compartment="A05")
        await wait_event(dispatch, "door_closed", "A05", start=len(dispatch.messages) - 1)
        await asyncio.sleep(0.3)  # the lock's cooldown
    await wait_event(dispatch, "compartment_collected", "A05")

    # A guesser spends the scanner's budget; a refusal of the same second is coalesced.
    mark = len(dispatch.messages)
    # All at once: on a loaded machine, one after the other could span more than a second.
    await asyncio.gather(*(ctl.acall("scan", code=wrong) for wrong in (
        "1111111111", "2222222222", "3333333333", "4444444444")))
    await wait_until(_alarm(dispatch, "alarm_raised", "code_guessing", mark), "guessing")
    await wait_event(dispatch, "code_rejections_coalesced", None, start=mark)
    cleared = await dispatch.command("clear_lane_lockout", {"lane": "lane-1",
                                                            "reason": "contract"})
    assert cleared["ok"], cleared
    await wait_until(_alarm(dispatch, "alarm_cleared", "code_guessing", mark), "cleared")

    # The lane's inputs.
    for op in ("vehicle_arrive", "help_press", "tamper_open", "mains_lose"):
        await ctl.acall(op)
    await wait_until(_alarm(dispatch, "alarm_raised", "power_fail", mark), "mains lost")
    for op in ("help_release", "tamper_close", "mains_restore", "vehicle_leave"):
        await ctl.acall(op)
    await wait_until(_alarm(dispatch, "alarm_cleared", "power_fail", mark), "mains back")
    await wait_event(dispatch, "vehicle_left", None, start=mark)

    # A door left open; a warm zone; a dead board; a flapping door.
    opened = await dispatch.command("open", {"compartment": "B01", "reason": "staff"})
    assert opened["ok"], opened
    await ctl.acall("pull", compartment="B01")
    await wait_until(_alarm(dispatch, "alarm_raised", "door_ajar", mark), "ajar")
    await ctl.acall("close", compartment="B01")
    await ctl.acall("fault_set", kind="compressor_failure", zone="chilled")
    await wait_until(_alarm(dispatch, "alarm_raised", "temperature", mark), "warm", 30)
    await ctl.acall("fault_clear", kind="compressor_failure", zone="chilled")
    await ctl.acall("set_temperature", zone="chilled", value_c=3.0)
    await wait_until(_alarm(dispatch, "alarm_cleared", "temperature", mark), "cold", 30)
    await ctl.acall("fault_set", kind="silent", board="locks-b")
    await wait_until(_alarm(dispatch, "alarm_raised", "board_offline", mark), "offline", 15)
    await ctl.acall("fault_clear", kind="silent", board="locks-b")
    await wait_until(_alarm(dispatch, "alarm_cleared", "board_offline", mark), "online", 15)
    await ctl.acall("fault_set", kind="flapping", compartment="A01", signal="door",
                    period_s=0.2)
    await wait_until(_alarm(dispatch, "alarm_raised", "sensor_flapping", mark), "flapping")
    await ctl.acall("fault_clear", kind="flapping", compartment="A01", signal="door")
    await wait_until(_alarm(dispatch, "alarm_cleared", "sensor_flapping", mark), "steady",
                     15)


def _check(dispatch: DispatchClient) -> None:
    validators = _validators()
    kinds: set[str] = set()
    alarms: set[str] = set()
    for event in dispatch.events():
        kind = event["kind"]
        assert kind in validators, f"event kind {kind} has no schema: {event}"
        errors = [e.message for e in validators[kind].iter_errors(event)]
        assert not errors, (event, errors)
        kinds.add(kind)
        if kind in ("alarm_raised", "alarm_cleared"):
            alarms.add(event["data"]["alarm"])
    assert {"code_accepted", "code_rejected", "code_rejections_coalesced",
            "compartment_collected", "compartment_freed", "vehicle_arrived", "vehicle_left",
            "help_requested"} <= kinds, kinds
    assert {"code_guessing", "tamper", "power_fail", "door_ajar", "temperature",
            "board_offline", "sensor_flapping"} <= alarms <= set(ALARMS), alarms
