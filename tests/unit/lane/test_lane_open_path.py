"""The one door-open sequence, from the lane: a code refused before the pulse is not used
up and leaves no declared open behind; a failure after the write is told as it is."""

from __future__ import annotations

from typing import Any

import pytest

from controller.store.errors import StoreUnavailable
from tests.support.ack_lost import AckLost
from tests.unit.lane.harness import Lane

pytestmark = pytest.mark.timeout(30)


async def test_a_code_refused_by_the_power_budget_is_not_used_up(lane: Lane) -> None:
    cid = await lane.deposit("o-pb", "parcel", deposit_code="D3131QRCODE9876X",
                                               collect_code="C3131QRCODE9876X")
    # Another door's pulse holds the power budget past what the lane waits for.
    lane.lane.pulse_wait_s = 0.05
    other = "C01" if cid != "C01" else "A02"
    lane.policy.started(other, lane.now().mono, duration_s=2.0)
    pulses = len(lane.board.pulses())
    refused = await lane.lane.enter_code("C3131QRCODE9876X")
    assert not refused.accepted
    assert refused.reason == "power_budget"
    assert lane.model.compartments.get(cid).pending_open is None
    assert await lane.store.code_used_at("o-pb", "collect-1") is None
    assert len(lane.board.pulses()) == pulses
    assert lane.kinds("code_rejected")[-1].data["reason"] == "power_budget"
    # The budget frees up: the same code opens the door, once.
    lane.advance(5.0)
    lane.lane.pulse_wait_s = 10.0
    result = await lane.lane.enter_code("C3131QRCODE9876X")
    assert result.accepted, result
    assert result.reason is None
    assert len(lane.board.pulses()) == pulses + 1


async def test_a_store_down_while_marking_the_code_leaves_no_declared_open(lane: Lane) -> None:
    cid = await lane.deposit("o-sd", "parcel", deposit_code="D4141QRCODE9876X",
                                               collect_code="C4141QRCODE9876X")
    real = lane.store.mark_code_used

    async def down(*args: Any, **kwargs: Any) -> bool:
        raise StoreUnavailable("redis restarting", op="mark_code_used")

    lane.store.mark_code_used = down  # type: ignore[method-assign]
    pulses = len(lane.board.pulses())
    refused = await lane.lane.enter_code("C4141QRCODE9876X")
    lane.store.mark_code_used = real  # type: ignore[method-assign]
    assert not refused.accepted
    assert refused.reason == "store_unavailable"
    assert lane.model.compartments.get(cid).pending_open is None
    assert len(lane.board.pulses()) == pulses
    assert "code_accepted" not in [e.kind for e in lane.events if e.compartment == cid][-1:]
    assert (await lane.lane.enter_code("C4141QRCODE9876X")).accepted


async def test_a_pulse_the_board_did_not_make_keeps_the_code_usable(lane: Lane) -> None:
    cid = await lane.deposit("o-hw", "grocery", deposit_code="D5151QRCODE9876X",
                                                collect_code="C5151QRCODE9876X")
    lane.board.inject("rejected", op="pulse")
    failed = await lane.lane.enter_code("C5151QRCODE9876X")
    assert failed.accepted
    assert failed.reason is not None
    assert failed.reason.startswith("pulse_failed")
    assert lane.model.compartments.get(cid).pending_open is None
    lane.advance(1.0)
    again = await lane.lane.enter_code("C5151QRCODE9876X")  # within the reopen grace
    assert again.accepted, again
    assert again.reason is None


async def test_an_unconfirmed_pulse_keeps_the_code_used_and_the_opening_authorised(
    lane: Lane,
) -> None:
    cid = await lane.deposit("o-uc", "grocery", deposit_code="D6161QRCODE9876X",
                                                collect_code="C6161QRCODE9876X")
    double = AckLost(lane.board, acts=True)
    lane.hardware.lock_boards["locks"] = double  # type: ignore[assignment]
    result = await lane.lane.enter_code("C6161QRCODE9876X")
    assert result.accepted
    assert result.reason == "pulse_unconfirmed"
    assert await lane.store.code_used_at("o-uc", "collect-1") is not None
    assert lane.lane.light == "busy"  # pull the door
    assert lane.kinds("unlock_pulse_unconfirmed")[-1].compartment == cid
    # The lock was in fact released: the customer pulls the door, takes the bag.
    await lane.take_out(cid)
    assert lane.alarms("forced_open") == []
    opened = [e for e in lane.kinds("door_opened") if e.compartment == cid][-1]
    assert opened.data["authorised"] is True
    assert lane.model.compartments.get(cid).phase.value == "free"
    assert double.frames == 1
