"""Bad input of every kind through the broker: each gets its structured error and changes
nothing (no pulse on the wire, no event, no state change)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from controller.mqtt.dispatch import DispatchClient
from tests.support.lane import pulses, running_lane, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _strip(state: dict[str, Any]) -> dict[str, Any]:
    """The parts of a state snapshot that a refused command must not change."""
    return {"compartments": state["compartments"], "alarms": state.get("alarms", [])}


async def _raw(dispatch: DispatchClient, payload: bytes) -> dict[str, Any]:
    return await dispatch.send(payload, f"raw-{uuid.uuid4().hex[:12]}")


async def test_every_bad_input_is_refused_with_a_structured_error(tmp_path: Path) -> None:
    async with running_lane(tmp_path) as (rig, dispatch):
        async def settled() -> dict[str, Any] | None:
            # The start-up reports are out (the daemon's, and the rig's scanner connected in
            # the background), the outbox empty.
            state = (await dispatch.command("get_state", sign=False))["result"]
            kinds = {e["kind"] for e in dispatch.events()}
            started = {"daemon_started", "scanner_connected"} <= kinds
            return state if started and state["outbox_depth"] == 0 else None

        before = await wait_until(settled, "the start-up events delivered")
        events_before = len(dispatch.events())
        pulses_before = sum(len(pulses(rig, c)) for c in ("A01", "B01"))

        good = dispatch.build("open", {"compartment": "A01", "reason": "maintenance"})
        cases: list[tuple[str, bytes, str, str | None]] = [
            ("not json", b"{open A01", "bad_json", None),
            ("not an object", b"[1, 2, 3]", "bad_json", None),
            ("not utf-8", b"\xff\xfe\x00", "bad_json", None),
            ("unknown command", json.dumps({**good, "type": "explode"}).encode(),
             "unknown_command", "type"),
            ("wrong type", json.dumps({**good, "args": {"compartment": 7,
                                                         "reason": "maintenance"}}).encode(),
             "invalid_field", "args.compartment"),
            ("unknown field", json.dumps({**good, "extra": 1}).encode(), "invalid_field",
             "extra"),
            ("oversized", json.dumps({**good, "pad": "x" * 40_000}).encode(), "too_large",
             None),
            ("unsigned open", dispatch.encode(good, sign=False), "unauthenticated", None),
        ]
        for name, payload, code, field in cases:
            reply = await _raw(dispatch, payload)
            assert reply["ok"] is False, name
            assert reply["error"]["code"] == code, (name, reply)
            if field is not None:
                assert reply["error"].get("field") == field, (name, reply)
            assert reply["error"]["message"], name

        # Signed but semantically wrong: unknown compartment, wrong cabinet, expired.
        unknown = await dispatch.command("open", {"compartment": "Z99", "reason": "staff"})
        assert unknown["error"]["code"] == "unknown_compartment"
        assert unknown["error"]["field"] == "args.compartment"
        other = dispatch.build("open", {"compartment": "A01", "reason": "staff"})
        other["cabinet"] = "cab-elsewhere"
        reply = await dispatch.send(dispatch.encode(other), other["id"])
        assert reply["error"]["code"] == "wrong_cabinet"
        expired = dispatch.build("open", {"compartment": "A01", "reason": "staff"})
        expired["expires"]["uptime_ms"] = 1
        reply = await dispatch.send(dispatch.encode(expired), expired["id"])
        assert reply["error"]["code"] == "expired"
        # An open on a compartment that holds no order, for a customer: wrong state.
        reply = await dispatch.command("open", {"compartment": "A01", "reason": "collect"})
        assert reply["ok"] is False
        assert reply["error"]["code"] == "conflict"

        # Nothing to wait for: a command acts before its reply, so whatever a refused one
        # changed would show now.
        after = (await dispatch.command("get_state", sign=False))["result"]
        assert _strip(after) == _strip(before)
        assert sum(len(pulses(rig, c)) for c in ("A01", "B01")) == pulses_before
        new_events = dispatch.events()[events_before:]
        assert new_events == [], new_events

        # The cabinet still works after all that.
        ok = await dispatch.command("open", {"compartment": "A01", "reason": "maintenance"})
        assert ok["ok"], ok
