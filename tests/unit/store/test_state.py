"""Compartment and order state, lane data, boots and the audit log."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from controller.store import Store, StoreDataError
from tests.unit.store.conftest import FakeClock, OpenStore


async def test_compartment_state_round_trip(store: Store) -> None:
    assert await store.load_compartment("A01") is None
    state = {"status": "loaded", "order": "o-1", "door": None}
    await store.save_compartment("A01", state)
    await store.save_compartment("A02", {"status": "free"})
    assert await store.load_compartment("A01") == state
    assert await store.load_compartments() == {"A01": state, "A02": {"status": "free"}}
    await store.save_compartment("A01", {"status": "blocked"})
    assert await store.load_compartment("A01") == {"status": "blocked"}
    assert await store.delete_compartment("A01") is True
    assert await store.delete_compartment("A01") is False
    assert list(await store.load_compartments()) == ["A02"]


async def test_orders_round_trip_and_survive_restart(open_store: OpenStore) -> None:
    first = await open_store()
    order = {"tenant": "grocery", "window": [1, 2], "compartment": "A01"}
    await first.save_order("o-1", order)
    await first.close()
    second = await open_store()
    assert await second.load_order("o-1") == order
    assert await second.load_orders() == {"o-1": order}
    assert await second.delete_order("o-1") is True
    assert await second.load_order("o-1") is None


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.save_compartment("A01", {"x": {1, 2}}),
        lambda s: s.save_compartment("A01", "not a dict"),
        lambda s: s.save_order("bad id", {}),
        lambda s: s.load_order(""),
        lambda s: s.save_lockout("lane-1", {}, 0),
        lambda s: s.save_lockout("lane-1", {}, float("inf")),
        lambda s: s.mark_code_used("o-1", "no spaces"),
    ],
)
async def test_bad_state_arguments_are_refused(store: Store, call: Any) -> None:
    with pytest.raises(StoreDataError):
        await call(store)


async def test_a_corrupt_stored_value_is_a_data_error(store: Store, raw: Any) -> None:
    await raw.hset("locker:cab-01:compartments", "A01", "{not json")
    with pytest.raises(StoreDataError):
        await store.load_compartment("A01")
    await raw.hset("locker:cab-01:orders", "o-1", "[1]")
    with pytest.raises(StoreDataError):
        await store.load_orders()


async def test_codes_their_index_and_single_use(store: Store) -> None:
    records = [{"code_id": "deposit-0", "purpose": "deposit", "verifier": "aa" * 16},
               {"code_id": "collect-1", "purpose": "collect", "verifier": "bb" * 16}]
    assert await store.save_codes("o-1", records) == []
    assert await store.load_codes("o-1") == {"codes": records}
    assert await store.find_code("bb" * 16) == {"order_id": "o-1", "code_id": "collect-1",
                                                 "purpose": "collect"}
    assert await store.find_code("cc" * 16) is None
    # Another order may not take a live verifier; nothing of it is written.
    clash = [{"code_id": "collect-0", "purpose": "collect", "verifier": "dd" * 16},
             {"code_id": "collect-1", "purpose": "collect", "verifier": "bb" * 16}]
    assert await store.save_codes("o-2", clash) == [1]
    assert await store.load_codes("o-2") is None
    assert await store.find_code("dd" * 16) is None
    # Saving an order again replaces its index entries.
    assert await store.save_codes("o-1", records[1:]) == []
    assert await store.find_code("aa" * 16) is None
    assert await store.code_used_at("o-1", "collect-1") is None
    assert await store.mark_code_used("o-1", "collect-1") is True
    assert await store.mark_code_used("o-1", "collect-1") is False
    assert await store.code_used_at("o-1", "collect-1") is not None
    assert await store.delete_codes("o-1") is True
    assert await store.load_codes("o-1") is None
    assert await store.find_code("bb" * 16) is None
    assert await store.code_used_at("o-1", "collect-1") is None
    assert await store.delete_codes("o-1") is False
    with pytest.raises(StoreDataError):
        await store.find_code("not a verifier")


async def test_concurrent_code_use_is_granted_once(store: Store) -> None:
    results = await asyncio.gather(*(store.mark_code_used("o-1", "k1") for _ in range(6)))
    assert results.count(True) == 1


async def test_lockout_has_a_ttl_and_can_be_cleared(store: Store, raw: Any) -> None:
    await store.save_lockout("lane-1", {"failures": 5, "level": 2}, ttl_s=60)
    assert await store.load_lockout("lane-1") == {"failures": 5, "level": 2}
    assert 0 < await raw.pttl("locker:cab-01:lockout:lane-1") <= 60_000
    assert await store.clear_lockout("lane-1") is True
    assert await store.clear_lockout("lane-1") is False
    assert await store.load_lockout("lane-1") is None


async def test_lockout_expires(store: Store) -> None:
    await store.save_lockout("lane-1", {"failures": 5}, ttl_s=0.02)
    for _ in range(400):
        if await store.load_lockout("lane-1") is None:
            break
        await asyncio.sleep(0.005)
    assert await store.load_lockout("lane-1") is None


async def test_boots_count_up_and_history_is_bounded(
    open_store: OpenStore, clock: FakeClock
) -> None:
    store = await open_store(boot=False, boot_history=3)
    assert await store.current_boot() is None
    boots = []
    for _ in range(5):
        boots.append(await store.new_boot())
        clock.advance(10)
    assert [b.number for b in boots] == [1, 2, 3, 4, 5]
    assert len({b.id for b in boots}) == 5
    assert store.boot_id == boots[-1].id
    assert await store.current_boot() == boots[-1]
    assert await store.boots(10) == boots[:1:-1]
    assert (await open_store()).boot_id != boots[-1].id


async def test_audit_log_order_copy_and_paging(store: Store) -> None:
    details = {"reason": "customer_app"}
    first = await store.audit("door_opened", actor="dispatch", compartment="A01", details=details)
    details["reason"] = "changed later"
    second = await store.audit("compartment_blocked", actor="technician:jdoe", at=0)
    third = await store.audit("config_changed", actor="lockerctl")
    assert first.details == {"reason": "customer_app"}
    log = await store.audit_log()
    assert log == [first, second, third]
    assert log[1].at == "1970-01-01T00:00:00.000Z"
    assert log[1].compartment is None
    assert await store.audit_log(2) == [second, third]
    assert await store.audit_log(1, after=first.entry_id) == [second]
    assert await store.audit_log(10, after=third.entry_id) == []
    assert await store.audit_length() == 3


async def test_audit_log_is_trimmed_by_count(open_store: OpenStore) -> None:
    store = await open_store(audit_max_entries=5)
    for n in range(12):
        await store.audit("alarm", actor="daemon", details={"n": n})
    assert await store.audit_length() == 5
    assert [e.details["n"] for e in await store.audit_log(100)] == [7, 8, 9, 10, 11]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"action": "", "actor": "x"},
        {"action": "x", "actor": ""},
        {"action": "x", "actor": "y", "compartment": "A 1"},
        {"action": "x", "actor": "y", "details": {"v": float("nan")}},
    ],
)
async def test_bad_audit_lines_are_refused(store: Store, kwargs: dict[str, Any]) -> None:
    action = kwargs.pop("action")
    with pytest.raises(StoreDataError):
        await store.audit(action, **kwargs)
    assert await store.audit_length() == 0


async def test_audit_paging_refuses_a_bad_cursor(store: Store) -> None:
    with pytest.raises(StoreDataError):
        await store.audit_log(10, after="not-an-id")
