"""Every message the running daemon sends (status, state, events, telemetry, replies)
validates against the committed JSON Schemas of the MQTT contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.support.lane import running_lane, wait_compartment, wait_event, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SCHEMAS = Path(__file__).resolve().parents[2] / "controller" / "schemas"
SCHEMA_OF = {"status": "status", "state": "state", "events": "event",
             "telemetry": "telemetry", "reply": "reply"}


def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


async def test_every_message_sent_validates_against_its_schema(tmp_path: Path) -> None:
    validators = {channel: _validator(name) for channel, name in SCHEMA_OF.items()}
    overrides = {"timing.telemetry_interval_s": "1", "timing.compartment_cooldown_s": "0.2"}
    async with running_lane(tmp_path, overrides=overrides) as (rig, dispatch):
        reply = await dispatch.command(
            "assign", {"order_id": "o-c1", "size": "M", "zone": "ambient", "pool": "parcel"})
        cid = reply["result"]["compartment"]
        await dispatch.command("open", {"compartment": cid, "reason": "deposit"})
        await rig.control.acall("pull", compartment=cid)
        await wait_event(dispatch, "door_opened", cid)
        await rig.control.acall("place_parcel", compartment=cid)
        await wait_compartment(dispatch, cid, lambda c: c.get("occupancy") == "occupied",
                               "parcel seen")
        await rig.control.acall("close", compartment=cid)
        await wait_event(dispatch, "compartment_loaded", cid)
        await dispatch.command("open", {"compartment": "Z99", "reason": "staff"})  # refusal
        await dispatch.command("get_state", sign=False)
        await rig.control.acall("force_open", compartment="A02")
        await wait_event(dispatch, "alarm_raised", "A02")
        await rig.control.acall("close", compartment="A02")
        await dispatch.wait_for(lambda m: m.channel == "telemetry", 10)

        async def every_channel() -> bool | None:
            return {m.channel for m in dispatch.messages} >= set(SCHEMA_OF) or None

        await wait_until(every_channel, "a message on every channel")

        seen: dict[str, int] = {}
        for message in dispatch.messages:
            channel = message.channel
            if channel not in validators:
                continue
            errors = sorted(validators[channel].iter_errors(message.payload), key=str)
            assert not errors, (channel, message.payload, [e.message for e in errors[:3]])
            seen[channel] = seen.get(channel, 0) + 1
        assert set(seen) == set(SCHEMA_OF), seen
        kinds: set[Any] = {m.payload["kind"] for m in dispatch.messages
                           if m.channel == "events"}
        assert {"door_opened", "alarm_raised", "compartment_loaded"} <= kinds
