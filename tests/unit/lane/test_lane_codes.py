"""Codes at the lane: found by their keyed verifier, single use, marked used before the
pulse, never in clear anywhere; tenants, expiry, reopen grace."""

from __future__ import annotations

import json
import logging

import pytest

from tests.unit.lane.harness import Lane, issued

pytestmark = pytest.mark.timeout(30)


async def test_collect_code_opens_its_compartment_and_frees_it(
    lane: Lane, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cid = await lane.deposit("o-1", "grocery", deposit_code="D1111QRCODE9876X",
                                               collect_code="4815162342")
    lane.unlock.watch = [("o-1", "collect-1")]
    result = await lane.lane.enter_code("481 516 2342")  # spaces are ignored
    assert result.accepted
    assert result.compartment == cid
    assert result.purpose == "collect"
    assert result.latency_s is not None
    # Marked used in the store before the pulse went out.
    assert lane.unlock.pulsed[-1][0] == cid
    assert lane.unlock.pulsed[-1][1]["o-1/collect-1"] is not None
    await lane.take_out(cid)
    assert lane.model.compartments.get(cid).phase.value == "free"
    kinds = [e.kind for e in lane.events if e.compartment == cid]
    assert kinds.count("code_accepted") == 2  # deposit, then collection
    assert "compartment_collected" in kinds
    assert "compartment_freed" in kinds
    accepted = lane.kinds("code_accepted")[-1]
    assert accepted.data["order"] == "o-1"
    assert accepted.data["reopen"] is False
    # Never in clear: events, outbox, audit log, logs.
    outbox = json.dumps([e.data for e in await lane.store.pending(1000)])
    audit = json.dumps([a.details for a in await lane.store.audit_log(1000)])
    for text in (json.dumps([e.data for e in lane.events]), outbox, audit, caplog.text):
        assert "4815162342" not in text
        assert "481 516 2342" not in text
        assert "D1111QRCODE9876X" not in text


async def test_a_used_code_is_refused_after_the_grace_and_reopens_within_it(lane: Lane) -> None:
    cid = await lane.deposit("o-2", "parcel", deposit_code="D2222QRCODE9876X",
                                              collect_code="C2222QRCODE9876X")
    assert (await lane.lane.enter_code("C2222QRCODE9876X")).accepted
    await lane.take_out(cid)
    lane.advance(1.0)
    again = await lane.lane.enter_code("C2222QRCODE9876X")
    assert again.accepted
    assert again.reopen
    assert again.compartment == cid
    lane.doors[cid].pull()
    await lane.poll()
    lane.doors[cid].close()
    await lane.poll()
    lane.advance(31.0)  # parcel grace is 30 s
    late = await lane.lane.enter_code("C2222QRCODE9876X")
    assert not late.accepted
    assert late.reason in ("code_used", "wrong_code")
    pulses_before = len(lane.board.pulses(1))
    assert len(lane.board.pulses(1)) == pulses_before


async def test_deposit_code_does_not_collect_and_collect_code_does_not_deposit(
    lane: Lane,
) -> None:
    cid = await lane.assign("o-3", "shop", codes=[issued("D3333QRCODE9876X", "deposit"),
                                                 issued("C3333QRCODE9876X", "collect")])
    refused = await lane.lane.enter_code("C3333QRCODE9876X")
    assert not refused.accepted
    assert refused.reason == "wrong_state"
    assert lane.board.pulses() == []
    assert (await lane.lane.enter_code("D3333QRCODE9876X")).accepted
    await lane.put_in(cid)
    lane.advance(0.5)
    assert (await lane.lane.enter_code("C3333QRCODE9876X")).accepted


async def test_expired_order_is_staff_only_and_not_a_wrong_code(lane: Lane) -> None:
    cid = await lane.deposit("o-4", "grocery", deposit_code="D4444QRCODE9876X",
                                               collect_code="C4444QRCODE9876X")
    lane.advance(4000)  # past the 1 h order expiry used by the harness
    await lane.poll()
    lane.model.tick(lane.now())
    refused = await lane.lane.enter_code("C4444QRCODE9876X")
    assert not refused.accepted
    assert refused.reason == "staff_only"
    assert refused.compartment == cid
    assert (await lane.lane.checker._budget("keypad")).wrong_total == 0


async def test_codes_of_another_tenant_never_open(lane: Lane) -> None:
    await lane.deposit("o-5", "parcel", deposit_code="D5555QRCODE9876X",
                                        collect_code="C5555QRCODE9876X")
    await lane.deposit("o-6", "shop", deposit_code="D6666QRCODE9876X",
                                      collect_code="C6666QRCODE9876X")
    # The shop's code named with the carrier's order: the code must lead to that order.
    refused = await lane.lane.enter_code("o-5:C6666QRCODE9876X")
    assert not refused.accepted
    assert refused.reason == "wrong_code"
    ok = await lane.lane.enter_code("o-6:C6666QRCODE9876X")
    assert ok.accepted
    assert ok.order_id == "o-6"
    assert lane.model.compartments.get(ok.compartment or "").spec.pool == "shop"


async def test_malformed_input_is_a_wrong_code(lane: Lane) -> None:
    result = await lane.lane.enter_code("x")
    assert not result.accepted
    assert result.reason == "wrong_code"
    assert lane.board.pulses() == []
