"""Pickup codes that must not be issued, refused by a running cabinet (daemon, simulator,
mosquitto, redis-server: ``LaneRig``, a clean store for each test):

- a code that is a live code of another order here: the ``assign`` is refused with a
  structured error and changes nothing; the code still opens the first order's door, and
  only that one;
- a trivial code (``0000000000``, ``0123456789``, ``9876543210``, ``1122334455``, ...):
  refused, nothing assigned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.mqtt.dispatch import DispatchClient
from tests.support.lane import pulses, running_lane, wait_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

OVERRIDES = {"timing.compartment_cooldown_s": "0.2"}


async def _assign(dispatch: DispatchClient, order: str, codes: list[tuple[str, str]],
                  **args: Any) -> dict[str, Any]:
    return await dispatch.command("assign", {
        "order_id": order, "size": "S", "zone": "ambient", "pool": "parcel", **args,
        "codes": dispatch.seal_codes(order, codes)})


async def _held(dispatch: DispatchClient) -> dict[str, str]:
    state = await dispatch.command("get_state", sign=False)
    return {c["order_id"]: c["id"] for c in state["result"]["compartments"]
            if c.get("order_id")}


async def test_a_code_of_another_live_order_is_refused_and_changes_nothing(
        tmp_path: Path) -> None:
    async with running_lane(tmp_path, overrides=OVERRIDES) as (rig, dispatch):
        code = "DEP7QRCODE4X9T2K8"
        first = await _assign(dispatch, "o-first", [("deposit", code)])
        assert first["ok"], first
        cid = first["result"]["compartment"]

        for order, purpose in (("o-second", "deposit"), ("o-third", "collect")):
            clash = await _assign(dispatch, order, [("collect", "5830019274"),
                                                    (purpose, code)])
            assert not clash["ok"], clash
            assert clash["error"]["code"] == "invalid_field", clash
            assert clash["error"]["field"] == "args.codes[1]"
            assert "another order" in clash["error"]["message"]
        assert await _held(dispatch) == {"o-first": cid}

        # The code still opens the first order's compartment, and nothing else.
        mark = len(dispatch.messages)
        await rig.control.acall("scan", code=code)
        accepted = await wait_event(dispatch, "code_accepted", None, start=mark)
        assert accepted["compartment"] == cid
        assert accepted["data"]["order"] == "o-first"
        await wait_event(dispatch, "unlock_pulse_acked", cid, start=mark)
        assert len(pulses(rig, cid)) == 1

        # The refused orders' other code opens nothing: it was never kept.
        mark = len(dispatch.messages)
        await rig.control.acall("scan", code="5830019274")
        rejected = await wait_event(dispatch, "code_rejected", None, start=mark)
        assert rejected["data"]["reason"] == "wrong_code"


@pytest.mark.parametrize("weak", ["0000000000", "0123456789", "9876543210", "1212121212",
                                  "AAAAAAAAAAAAAAAA", "1122334455"])
async def test_a_trivial_code_is_refused_at_assign(tmp_path: Path, weak: str) -> None:
    async with running_lane(tmp_path, overrides=OVERRIDES) as (_rig, dispatch):
        reply = await _assign(dispatch, "o-weak", [("deposit", "DEP7QRCODE4X9T2K8"),
                                                   ("collect", weak)])
        assert not reply["ok"], reply
        assert reply["error"]["code"] == "invalid_field", reply
        assert reply["error"]["field"] == "args.codes[1]"
        assert "trivial" in reply["error"]["message"]
        assert await _held(dispatch) == {}
        # (control) the same order with a random code is accepted.
        good = await _assign(dispatch, "o-weak", [("deposit", "DEP7QRCODE4X9T2K8"),
                                                  ("collect", "5830019274")])
        assert good["ok"], good
