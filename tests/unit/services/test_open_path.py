"""The one door-open sequence, from the command side: a refusal before the pulse leaves no
trace in the model (no pending open holding an order back), and writes before acting."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from controller.domain.cabinet_model import Now
from controller.store.errors import StoreUnavailable
from tests.unit.services.conftest import Core


async def _reserve(core: Core, order_id: str, *, expires_in_s: float) -> str:
    spec = next(c for c in core.settings.compartments if c.pool == "parcel")
    expires_at = datetime.fromtimestamp(time.time() + expires_in_s, UTC).isoformat()
    reply = await core.send(core.command("assign", {
        "order_id": order_id, "size": spec.size, "zone": spec.zone, "pool": "parcel",
        "expires_at": expires_at}))
    assert reply["ok"], reply
    return str(reply["result"]["compartment"])


def _later(seconds: float) -> Now:
    return Now(time.monotonic() + seconds, time.time() + seconds)


async def test_an_open_refused_by_the_power_budget_leaves_no_pending_open(core: Core) -> None:
    cid = await _reserve(core, "o-budget", expires_in_s=2.0)
    # Another door's long pulse holds the power budget beyond the command's deadline.
    other = next(c.id for c in core.settings.compartments if c.id != cid)
    core.policy.started(other, time.monotonic(), duration_s=2.0)
    before = len(await core.events())
    cmd = core.command("open", {"compartment": cid, "reason": "deposit"}, ttl_ms=300)
    reply = await core.send(cmd)
    assert reply["ok"] is False
    assert reply["error"]["code"] == "busy", reply
    compartment = core.model.compartments.get(cid)
    assert compartment.pending_open is None
    # Nothing was written for it: no event, no pulse intent, no pulse.
    assert len(await core.events()) == before
    record = await core.store.get_command(cmd["id"])
    assert record is not None
    assert not record.may_have_pulsed(cid)
    lock = core.settings.compartment(cid).lock
    assert core.board(lock.board).pulses(lock.channel) == []
    # The order expires on time: no declared open holds it back.
    expired = [e for e in core.model.tick(_later(5.0)) if e.kind.value == "order_expired"]
    assert [e.compartment for e in expired] == [cid]


async def test_an_open_whose_intent_cannot_be_written_leaves_no_pending_open(
    core: Core,
) -> None:
    cid = await _reserve(core, "o-intent", expires_in_s=3600.0)
    real = core.store.begin_command

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("redis restarting", op="begin_command")

    # An open's pulse intent goes into its claim: the claim is the write that fails.
    core.store.begin_command = down  # type: ignore[method-assign]
    before = len(await core.events())
    reply = await core.send(core.command("open", {"compartment": cid, "reason": "deposit"}))
    core.store.begin_command = real  # type: ignore[method-assign]
    assert reply["ok"] is False
    assert reply["error"]["code"] == "busy", reply
    assert core.model.compartments.get(cid).pending_open is None
    assert len(await core.events()) == before
    lock = core.settings.compartment(cid).lock
    assert core.board(lock.board).pulses(lock.channel) == []


async def test_the_intent_and_the_state_are_written_before_the_pulse(core: Core) -> None:
    cid = await _reserve(core, "o-order", expires_in_s=3600.0)
    lock = core.settings.compartment(cid).lock
    board = core.board(lock.board)
    seen: dict[str, Any] = {}
    real_pulse = board.pulse

    async def spying_pulse(channel: int, duration_s: float | None = None) -> Any:
        record = await core.store.get_command(cmd["id"])
        seen["intent"] = record is not None and record.may_have_pulsed(cid)
        seen["kinds"] = [e["kind"] for e in await core.events()]
        return await real_pulse(channel, duration_s)

    board.pulse = spying_pulse  # type: ignore[method-assign]
    cmd = core.command("open", {"compartment": cid, "reason": "deposit"})
    reply = await core.send(cmd)
    assert reply["ok"], reply
    assert seen["intent"] is True
    assert "open_requested" in seen["kinds"]
    assert core.model.compartments.get(cid).pending_open is not None
