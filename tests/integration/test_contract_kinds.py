"""The contract as an integrator meets it, against a running daemon: the clock read before
the first command, every event checked against the schema of its kind, every ok reply
against the schema of its command's result, and refusals that name their command."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from controller.contract.events import EVENT_KINDS
from controller.contract.results import RESULTS
from controller.security.signing import sign_command
from tests.support.lane import running_lane, wait_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SCHEMAS = Path(__file__).resolve().parents[2] / "controller" / "schemas"


def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


async def test_first_command_from_get_clock_and_every_kind_matches_its_schema(
        tmp_path: Path) -> None:
    overrides = {"timing.compartment_cooldown_s": "5"}
    async with running_lane(tmp_path, overrides=overrides) as (rig, dispatch):
        sent: dict[str, str] = {}  # command id -> type
        replies: list[dict[str, Any]] = []

        async def raw(payload: bytes, command_id: str, type_: str) -> dict[str, Any]:
            sent[command_id] = type_
            reply = await dispatch.send(payload, command_id)
            replies.append(reply)
            return reply

        def signed(command: dict[str, Any]) -> bytes:
            assert dispatch.key is not None
            return json.dumps(sign_command(command, dispatch.key, dispatch.key_id)).encode()

        # The retained status's clock is as old as the status: its deadline may have passed.
        # get_clock needs none and answers with the clock now.
        query = {"id": "clk-1", "type": "get_clock", "site": rig.site, "cabinet": rig.cabinet}
        clock = await raw(json.dumps(query).encode(), "clk-1", "get_clock")
        assert clock["ok"], clock
        assert clock["result"]["boot_id"] == clock["cabinet_clock"]["boot_id"]
        again = await raw(json.dumps(query).encode(), "clk-1", "get_clock")  # claims no id
        assert again["ok"], again
        assert again["result"]["uptime_ms"] >= clock["result"]["uptime_ms"]
        elsewhere = dict(query, id="clk-2", cabinet="cab-99")
        refused = await raw(json.dumps(elsewhere).encode(), "clk-2", "get_clock")
        assert (refused["id"], refused["error"]["code"]) == ("clk-2", "wrong_cabinet")
        expires = {"boot_id": clock["result"]["boot_id"],
                   "uptime_ms": clock["result"]["uptime_ms"] + 5000}
        first = {"id": "c-first", "type": "assign", "site": rig.site, "cabinet": rig.cabinet,
                 "expires": expires,
                 "args": {"order_id": "o-k1", "size": "M", "zone": "ambient",
                          "pool": "parcel"}}
        assigned = await raw(signed(first), "c-first", "assign")
        assert assigned["ok"], assigned
        cid = assigned["result"]["compartment"]

        async def command(type_: str, args: dict[str, Any], *, sign: bool = True
                          ) -> dict[str, Any]:
            built = dispatch.build(type_, args)
            return await raw(dispatch.encode(built, sign=sign), built["id"], type_)

        assert (await command("open", {"compartment": cid, "reason": "deposit"}))["ok"]
        await rig.control.acall("pull", compartment=cid)
        await wait_event(dispatch, "door_opened", cid)
        await rig.control.acall("place_parcel", compartment=cid)
        await rig.control.acall("close", compartment=cid)
        await wait_event(dispatch, "compartment_loaded", cid)
        # The lock's cooldown: rate_limited, with the wait in a field.
        cooled = await command("open", {"compartment": cid, "reason": "collect"})
        assert cooled["error"]["code"] == "rate_limited", cooled
        assert 0 < cooled["error"]["retry_after_s"] <= 5
        released = await command("release", {"compartment": cid})
        assert released["ok"], released
        assert (await command("block", {"compartment": "A03", "reason": "jammed"}))["ok"]
        assert (await command("unblock", {"compartment": "A03", "reason": "fixed"}))["ok"]
        assert (await command("get_state", {}, sign=False))["ok"]
        assert (await command("revoke_grants", {"serial": 1, "revoked": []}))["ok"]
        lockout = await command("clear_lane_lockout", {"lane": "lane-1", "reason": "test"})
        await rig.control.acall("force_open", compartment="A02")
        await wait_event(dispatch, "alarm_raised", "A02")
        await rig.control.acall("close", compartment="A02")
        await wait_event(dispatch, "alarm_cleared", "A02")

        # Refusals name their command whenever its id can be read.
        unknown = dict(dispatch.build("teleport", {}), id="c-unknown")
        refused = await raw(json.dumps(unknown).encode(), "c-unknown", "teleport")
        assert (refused["id"], refused["error"]["code"]) == ("c-unknown", "unknown_command")
        twice = b'{"id":"c-dup","type":"get_state","type":"get_state"}'
        refused = await raw(twice, "c-dup", "get_state")
        assert (refused["id"], refused["error"]["code"]) == ("c-dup", "bad_json")
        huge = dict(dispatch.build("get_state", {}), id="c-huge", pad="x" * 20_000)
        refused = await raw(json.dumps(huge).encode(), "c-huge", "get_state")
        assert (refused["id"], refused["error"]["code"]) == ("c-huge", "too_large")

        await asyncio.sleep(0)  # every reply awaited above; events were awaited by kind
        reply_schema = _validator("reply")
        results = {name: _validator(f"results/{name}") for name in RESULTS}
        for reply in replies:
            errors = [e.message for e in reply_schema.iter_errors(reply)]
            assert not errors, (reply, errors)
            if reply["ok"]:
                type_ = sent[reply["id"]]
                errors = [e.message for e in results[type_].iter_errors(reply["result"])]
                assert not errors, (type_, reply["result"], errors)
        assert lockout["ok"] or lockout["error"]["code"] == "invalid_field", lockout

        kinds = {name: _validator(f"events/{name}") for name in EVENT_KINDS}
        seen: set[str] = set()
        for event in dispatch.events():
            kind = event["kind"]
            assert kind in kinds, f"event kind {kind} has no schema: {event}"
            errors = [e.message for e in kinds[kind].iter_errors(event)]
            assert not errors, (event, errors)
            seen.add(kind)
        assert {"daemon_started", "compartment_assigned", "open_requested",
                "unlock_pulse_sent", "unlock_pulse_acked", "door_opened", "door_closed",
                "compartment_loaded", "order_released", "compartment_blocked",
                "compartment_unblocked", "alarm_raised", "alarm_cleared"} <= seen, seen
