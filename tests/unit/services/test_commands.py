"""CommandService on fake boards: write before acting, idempotency, structured refusals."""

from __future__ import annotations

import asyncio
import json
import time

from controller.contract.messages import decode_command
from controller.daemon import Daemon
from controller.services.commands import _digest
from tests.unit.services.conftest import Core


async def test_signed_open_pulses_once_and_records_before_acting(core: Core) -> None:
    cmd = core.command("open", {"compartment": "A01", "reason": "maintenance"})
    reply = await core.send(cmd)
    assert reply["ok"], reply
    assert reply["result"]["pulse"]["timed_by"] == "board"
    lock = core.settings.compartment("A01").lock
    core.board(lock.board).assert_pulsed(lock.channel, times=1)
    record = await core.store.get_command(cmd["id"])
    assert record is not None
    assert record.finished
    assert record.may_have_pulsed("A01")
    kinds = [e["kind"] for e in await core.events()]
    assert kinds == ["open_requested", "unlock_pulse_sent", "unlock_pulse_acked"]
    assert (await core.events())[0]["data"]["command"] == cmd["id"]


async def test_repeat_returns_first_reply_and_does_not_pulse_again(core: Core) -> None:
    cmd = core.command("open", {"compartment": "A02", "reason": "maintenance"})
    payload = core.signed(cmd)
    first = json.loads(await core.commands.handle(payload))
    again = json.loads(await core.commands.handle(payload))
    assert first == again
    lock = core.settings.compartment("A02").lock
    core.board(lock.board).assert_pulsed(lock.channel, times=1)


async def test_same_id_other_body_is_a_conflict(core: Core) -> None:
    cmd = core.command("open", {"compartment": "A02", "reason": "maintenance"})
    assert (await core.send(cmd))["ok"]
    other = core.command("open", {"compartment": "A03", "reason": "maintenance"},
                         command_id=cmd["id"])
    reply = await core.send(other)
    assert reply["error"]["code"] == "conflict"
    lock = core.settings.compartment("A03").lock
    assert core.board(lock.board).pulses(lock.channel) == []


async def test_a_repeat_past_its_deadline_gets_the_first_reply(core: Core) -> None:
    cmd = core.command("open", {"compartment": "A02", "reason": "maintenance"}, ttl_ms=2_000)
    payload = core.signed(cmd)
    first = json.loads(await core.commands.handle(payload))
    assert first["ok"], first
    core.start -= 60.0  # the cabinet's clock is a minute later: the deadline has passed
    again = json.loads(await core.commands.handle(payload))
    assert again == first
    late = core.command("open", {"compartment": "A03", "reason": "maintenance"},
                        ttl_ms=2_000)
    reply = await core.send(late)
    assert reply["ok"], reply  # a new command is checked as ever


async def test_same_id_other_body_is_a_conflict_even_when_it_fails_its_checks(
    core: Core,
) -> None:
    cmd = core.command("open", {"compartment": "A02", "reason": "maintenance"})
    assert (await core.send(cmd))["ok"]
    other = core.command("open", {"compartment": "A03", "reason": "maintenance"},
                         command_id=cmd["id"])
    reply = await core.send(other, sign=False)
    assert reply["error"]["code"] == "conflict"
    fresh = core.command("open", {"compartment": "A03", "reason": "maintenance"})
    assert (await core.send(fresh, sign=False))["error"]["code"] == "unauthenticated"


async def test_unsigned_door_command_is_refused_and_changes_nothing(core: Core) -> None:
    cmd = core.command("open", {"compartment": "A01", "reason": "maintenance"})
    reply = await core.send(cmd, sign=False)
    assert reply["error"]["code"] == "unauthenticated"
    assert await core.events() == []
    assert await core.store.get_command(cmd["id"]) is None
    for board in core.hardware.lock_boards.values():
        assert board.pulses() == []  # type: ignore[attr-defined]


async def test_unsigned_get_state_is_allowed(core: Core) -> None:
    reply = await core.send(core.command("get_state", {}), sign=False)
    assert reply["ok"], reply
    assert {c["id"] for c in reply["result"]["compartments"]} >= {"A01", "B01"}


async def test_pulse_failure_is_a_structured_hardware_error(core: Core) -> None:
    lock = core.settings.compartment("A04").lock
    core.board(lock.board).inject("timeout", op="pulse")
    reply = await core.send(core.command("open", {"compartment": "A04",
                                                   "reason": "maintenance"}))
    assert reply["ok"] is False
    assert reply["error"]["code"] == "hardware"
    kinds = [e["kind"] for e in await core.events()]
    assert kinds == ["open_requested", "unlock_pulse_sent", "unlock_pulse_failed"]


async def _spend_rate_limit(core: Core, cid: str) -> None:
    """Maintenance opens of ``cid`` until its per-minute pulse limit is used up."""
    for _ in range(core.settings.timing.compartment_max_pulses_per_minute):
        reply = await core.send(core.command("open", {"compartment": cid,
                                                      "reason": "maintenance"}))
        assert reply["ok"], reply
        await asyncio.sleep(0.03)  # the 10 ms pulse is over


async def test_rate_limit_refuses_before_anything_is_recorded(core: Core) -> None:
    cid = "B03"
    await _spend_rate_limit(core, cid)
    events_before = len(await core.events())
    cmd = core.command("open", {"compartment": cid, "reason": "maintenance"})
    reply = await core.send(cmd)
    assert reply["error"]["code"] == "rate_limited"
    assert len(await core.events()) == events_before
    # The refusal is the command's reply on record: a repeat gets it, nothing more.
    assert (await core.send(cmd))["error"]["code"] == "rate_limited"


async def test_interrupted_command_is_answered_and_never_executed_again(core: Core) -> None:
    cmd = core.command("open", {"compartment": "A05", "reason": "maintenance"})
    payload = core.signed(cmd)
    # What a crash between the pulse intent and the reply leaves behind.
    await core.store.begin_command(cmd["id"], _digest(payload, decode_command(payload)))
    assert await core.store.record_pulse_intent(cmd["id"], "A05")
    daemon = Daemon(core.settings)
    daemon.store, daemon.sink, daemon.boot_id = core.store, core.sink, core.boot_id
    await daemon._answer_interrupted()
    reply = json.loads(await core.commands.handle(payload))
    assert reply["ok"] is False
    assert "interrupted" in reply["error"]["message"]
    lock = core.settings.compartment("A05").lock
    assert core.board(lock.board).pulses(lock.channel) == []
    interrupted = [e for e in await core.events() if e["kind"] == "command_interrupted"]
    assert interrupted
    assert interrupted[0]["data"]["may_have_pulsed"] == ["A05"]


async def test_assign_then_release(core: Core) -> None:
    spec = next(c for c in core.settings.compartments if c.pool == "parcel")
    reply = await core.send(core.command(
        "assign", {"order_id": "o-1", "size": spec.size, "zone": spec.zone, "pool": "parcel"}))
    assert reply["ok"], reply
    cid = reply["result"]["compartment"]
    assert core.model.compartments.get(cid).order is not None
    assert await core.store.load_compartment(cid) is not None  # persisted
    reply = await core.send(core.command("release", {"order_id": "o-1"}))
    assert reply["ok"], reply
    assert core.model.compartments.get(cid).order is None
    reply = await core.send(core.command("release", {"order_id": "o-1"}))
    assert reply["error"]["code"] == "unknown_order"


async def test_block_refuses_assignment_and_customer_open(core: Core) -> None:
    reply = await core.send(core.command("block", {"compartment": "A01", "reason": "broken"}))
    assert reply["ok"], reply
    reply = await core.send(core.command(
        "assign", {"order_id": "o-2", "size": "S", "zone": "ambient", "pool": "grocery",
                   "compartment": "A01"}))
    assert reply["ok"] is False
    assert reply["error"]["code"] == "blocked"
    log = await core.store.audit_log(10)
    assert [a.action for a in log] == ["block"]


async def test_a_retry_after_the_store_failed_to_claim_the_id_is_not_a_replay(
    core: Core,
) -> None:
    from controller.store.errors import StoreUnavailable

    cmd = core.command("open", {"compartment": "A06", "reason": "maintenance"})
    real = core.store.begin_command
    calls = {"n": 0}

    async def failing_once(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise StoreUnavailable("redis restarting", op="begin_command")
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    core.store.begin_command = failing_once  # type: ignore[method-assign]
    first = await core.send(cmd)
    assert first["error"]["code"] == "busy"
    again = await core.send(cmd)
    assert again["ok"], again
    lock = core.settings.compartment("A06").lock
    core.board(lock.board).assert_pulsed(lock.channel, times=1)


async def test_a_compartment_out_of_use_is_refused_as_such_not_told_to_retry(
    core: Core,
) -> None:
    """Blocked or faulty, with the lock's rate limit spent too: the refusal is ``blocked``
    or ``hardware`` (compartment_fault), never ``rate_limited``, which would have dispatch
    retry an open that cannot be allowed."""
    cid = "B03"
    await _spend_rate_limit(core, cid)
    assert (await core.send(core.command("block", {"compartment": cid, "reason": "jam"})))["ok"]
    for reason in ("collect", "deposit"):
        reply = await core.send(core.command("open", {"compartment": cid, "reason": reason}))
        assert reply["error"]["code"] == "blocked", reply
    assert (await core.send(core.command("unblock", {"compartment": cid, "reason": "ok"})))["ok"]
    compartment = core.model.compartments.get(cid)
    for _ in range(compartment.fault_after):
        compartment.open_not_detected(time.time())
    assert compartment.faulted
    for reason in ("collect", "deposit"):
        reply = await core.send(core.command("open", {"compartment": cid, "reason": reason}))
        assert reply["error"]["code"] == "hardware", reply
        assert reply["error"]["message"].startswith("compartment_fault"), reply
    # A staff open is no customer use: the lock's own limit answers it.
    reply = await core.send(core.command("open", {"compartment": cid, "reason": "maintenance"}))
    assert reply["error"]["code"] == "rate_limited", reply


async def test_the_audit_names_the_key_that_signed_the_command(core: Core) -> None:
    assert (await core.send(core.command("block", {"compartment": "A01", "reason": "jam"})))["ok"]
    reply = await core.send(core.command("open", {"compartment": "B03", "reason": "maintenance"}))
    assert reply["ok"], reply
    entries = {a.action: a for a in await core.store.audit_log(10)}
    assert entries["block"].details == {"reason": "jam", "key_id": "test"}
    assert entries["open"].details["key_id"] == "test"
    assert entries["block"].actor.startswith("command:")
