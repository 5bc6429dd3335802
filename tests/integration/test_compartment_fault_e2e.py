"""A compartment's fault as a field technician meets it, on a running cabinet (daemon,
simulator, mosquitto, redis-server): pulses that no door opening follows put the
compartment in fault, which refuses customers' use of it and survives a restart; the
signed ``clear_fault`` command ends it, and the compartment is assigned again."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from controller.dispatch import DispatchClient
from tests.integration.test_security_e2e import refused
from tests.support.lane import open_when_ready, restart_daemon, running_lane, wait_compartment

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

# No-one pulls the door in these tests: each pulse ends as open_not_detected after 0.5 s.
OVERRIDES = {
    "timing.open_detect_timeout_s": "0.5",
    "timing.compartment_cooldown_s": "0",
    "timing.compartment_max_pulses_per_minute": "60",
}


def _alarm(dispatch: DispatchClient, kind: str, compartment: str, start: int) -> Any:
    return dispatch.wait_for(
        lambda m: m.channel == "events" and m.payload.get("kind") == kind
        and m.payload.get("compartment") == compartment
        and m.payload.get("data", {}).get("alarm") == "compartment_fault", 20, start=start)


async def _not_detected(dispatch: DispatchClient, compartment: str) -> None:
    """A staff open of ``compartment`` that no door opening follows, to its verdict."""
    start = len(dispatch.messages)
    reply = await open_when_ready(dispatch, compartment, "staff")
    assert reply["ok"], reply
    await dispatch.wait_for(
        lambda m: m.channel == "events" and m.payload.get("kind") == "open_not_detected"
        and m.payload.get("compartment") == compartment, 10, start=start)


async def _fault(dispatch: DispatchClient, compartment: str) -> dict[str, Any]:
    """Staff opens of ``compartment`` until its fault is raised (3 by default)."""
    start = len(dispatch.messages)
    for _ in range(3):
        await _not_detected(dispatch, compartment)
    raised = (await _alarm(dispatch, "alarm_raised", compartment, start)).payload
    await wait_compartment(dispatch, compartment, lambda c: c["state"] == "fault", "in fault")
    return raised


def _wall(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _fault_alarms(reply: dict[str, Any]) -> list[str]:
    """The ``since`` of A03's compartment_fault in a get_state reply's alarm list."""
    assert reply["ok"], reply
    return [a["since"] for a in reply["result"]["alarms"]
            if a["kind"] == "compartment_fault" and a.get("compartment") == "A03"]


async def test_a_fault_refuses_customers_survives_a_restart_and_clear_fault_ends_it(
        tmp_path: Path) -> None:
    async with running_lane(tmp_path, overrides=OVERRIDES, emulate_timing=False) as (
            rig, dispatch):
        raised = await _fault(dispatch, "A03")
        assert raised["data"]["reason"] == "open_not_detected"
        assert raised["data"]["count"] == 3

        def assign(order: str) -> dict[str, Any]:
            return {"order_id": order, "size": "L", "zone": "frozen", "pool": "grocery",
                    "compartment": "A03"}  # A03 of the simulated cabinet

        refusal = refused(await dispatch.command("assign", assign("o-f1")), "hardware")
        assert refusal.error is not None
        assert refusal.error.message.startswith("compartment_fault"), refusal

        # Stored: still in fault after a restart, its alarm still listed (since its raise),
        # and not raised again.
        start = await restart_daemon(rig, dispatch)
        await wait_compartment(dispatch, "A03", lambda c: c["state"] == "fault",
                               "in fault after the restart")
        listed = _fault_alarms(await dispatch.command("get_state", sign=False))
        assert len(listed) == 1, listed
        # The event's time is to the millisecond, the state's to the microsecond.
        assert abs(_wall(listed[0]) - _wall(raised["at"])) < 0.001, (listed, raised)
        assert not [m for m in dispatch.messages[start:] if m.channel == "events"
                    and m.payload.get("kind") == "alarm_raised"]

        # Unsigned: refused, nothing changes. Not in fault: conflict.
        refused(await dispatch.command("clear_fault", {"compartment": "A03", "reason": "x"},
                                       sign=False), "unauthenticated")
        refused(await dispatch.command("clear_fault", {"compartment": "A04", "reason": "x"}),
                "conflict")
        refused(await dispatch.command("clear_fault", {"compartment": "Z99", "reason": "x"}),
                "unknown_compartment")
        await wait_compartment(dispatch, "A03", lambda c: c["state"] == "fault", "in fault")

        start = len(dispatch.messages)
        reply = await dispatch.command("clear_fault",
                                       {"compartment": "A03", "reason": "latch replaced"})
        assert reply["ok"], reply
        assert reply["result"] == {"compartment": "A03", "cleared": True}
        await _alarm(dispatch, "alarm_cleared", "A03", start)
        await wait_compartment(dispatch, "A03", lambda c: c["state"] == "free", "free again")
        assert _fault_alarms(await dispatch.command("get_state", sign=False)) == []
        again = await dispatch.command("clear_fault", {"compartment": "A03", "reason": "x"})
        refused(again, "conflict")

        # The count starts from zero: one more pulse that no opening follows is no fault
        # (without the reset it would be the fourth in a row).
        await _not_detected(dispatch, "A03")
        state = await wait_compartment(dispatch, "A03", lambda c: True, "read")
        assert state["state"] == "free", state

        await restart_daemon(rig, dispatch)
        await wait_compartment(dispatch, "A03", lambda c: c["state"] == "free",
                               "free after the restart")
        assigned = await dispatch.command("assign", assign("o-f2"))
        assert assigned["ok"], assigned
        assert assigned["result"]["compartment"] == "A03"
