"""Command records: the same id never acts twice, the first reply is the reply, and a pulse
intent is committed before the pulse so a crash can never lead to a second pulse."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from controller.store import (
    AlreadySeen,
    NewCommand,
    Store,
    StoreDataError,
    UnknownCommand,
)
from tests.unit.store.conftest import OpenStore

EXPIRES = {"boot_id": "b", "uptime_ms": 8812345}


async def test_first_begin_owns_the_command(store: Store) -> None:
    outcome = await store.begin_command("c-1", "digest-1", EXPIRES)
    assert isinstance(outcome, NewCommand)
    record = outcome.record
    assert (record.id, record.digest, record.state) == ("c-1", "digest-1", "in_progress")
    assert record.expires == EXPIRES
    assert record.boot_id == store.boot_id
    assert record.pulses == {}
    assert await store.get_command("c-1") == record


async def test_repeat_while_in_progress_is_already_seen(store: Store) -> None:
    await store.begin_command("c-1", "digest-1", EXPIRES)
    again = await store.begin_command("c-1", "digest-1", EXPIRES)
    assert isinstance(again, AlreadySeen)
    assert again.in_progress
    assert again.reply is None
    assert again.digest_matches


async def test_reused_id_with_another_body_is_flagged(store: Store) -> None:
    await store.begin_command("c-1", "digest-1")
    again = await store.begin_command("c-1", "digest-2")
    assert isinstance(again, AlreadySeen)
    assert not again.digest_matches
    assert again.record.digest == "digest-1"


async def test_first_reply_wins(store: Store) -> None:
    await store.begin_command("c-1", "d")
    first = {"id": "c-1", "ok": True, "result": {"pulsed": ["A01"]}}
    assert await store.finish_command("c-1", first) == first
    assert await store.finish_command("c-1", {"id": "c-1", "ok": False}) == first
    again = await store.begin_command("c-1", "d")
    assert isinstance(again, AlreadySeen)
    assert not again.in_progress
    assert again.reply == first
    assert again.record.finished_at is not None


async def test_pulse_intent_is_granted_once_per_compartment(store: Store) -> None:
    await store.begin_command("c-1", "d")
    assert await store.record_pulse_intent("c-1", "A01") is True
    assert await store.record_pulse_intent("c-1", "A01") is False
    assert await store.record_pulse_intent("c-1", "A02") is True
    record = await store.get_command("c-1")
    assert record is not None
    assert set(record.pulses) == {"A01", "A02"}
    assert record.may_have_pulsed("A01")
    assert not record.may_have_pulsed("A03")


async def test_no_pulse_after_the_command_finished(store: Store) -> None:
    await store.begin_command("c-1", "d")
    await store.finish_command("c-1", {"ok": False})
    assert await store.record_pulse_intent("c-1", "A01") is False


async def test_concurrent_pulse_intents_grant_exactly_one(store: Store) -> None:
    await store.begin_command("c-1", "d")
    results = await asyncio.gather(*(store.record_pulse_intent("c-1", "A01") for _ in range(8)))
    assert results.count(True) == 1


async def test_concurrent_begins_create_exactly_one_owner(open_store: OpenStore) -> None:
    stores = [await open_store() for _ in range(3)]
    outcomes = await asyncio.gather(
        *(s.begin_command("c-1", "d") for s in stores for _ in range(3))
    )
    assert sum(isinstance(o, NewCommand) for o in outcomes) == 1


async def test_unknown_command(store: Store) -> None:
    with pytest.raises(UnknownCommand) as caught:
        await store.record_pulse_intent("c-404", "A01")
    assert caught.value.command_id == "c-404"
    assert isinstance(caught.value, KeyError)
    with pytest.raises(UnknownCommand):
        await store.finish_command("c-404", {"ok": True})
    assert await store.get_command("c-404") is None


async def test_crash_between_intent_and_reply_is_visible_after_restart(
    open_store: OpenStore,
) -> None:
    before = await open_store()
    await before.begin_command("c-1", "d")
    await before.begin_command("c-2", "d")
    await before.begin_command("c-3", "d")
    assert await before.record_pulse_intent("c-1", "A01")
    await before.finish_command("c-3", {"ok": True})
    await before.close()  # the daemon dies here, before replying to c-1 and c-2

    after = await open_store()
    unfinished = await after.unfinished_commands()
    assert [r.id for r in unfinished] == ["c-1", "c-2"]
    assert unfinished[0].may_have_pulsed("A01")
    assert not unfinished[1].may_have_pulsed("A01")
    # The repeat from dispatch must not pulse again.
    assert isinstance(await after.begin_command("c-1", "d"), AlreadySeen)
    assert await after.record_pulse_intent("c-1", "A01") is False
    await after.finish_command("c-1", {"ok": True, "result": {"uncertain": True}})
    assert [r.id for r in await after.unfinished_commands()] == ["c-2"]


async def test_record_expires_after_the_retention(open_store: OpenStore, raw: Any) -> None:
    store = await open_store(command_retention_s=0.05)
    await store.begin_command("c-1", "d")
    ttl_ms = await raw.pttl("locker:cab-01:cmd:c-1")
    assert 0 < ttl_ms <= 50
    for _ in range(400):  # bounded: expiry is the server's business
        if await store.get_command("c-1") is None:
            break
        await asyncio.sleep(0.005)
    assert await store.get_command("c-1") is None
    assert await store.unfinished_commands() == []  # the stale index entry is dropped
    assert await raw.zcard("locker:cab-01:commands:open") == 0
    assert isinstance(await store.begin_command("c-1", "d"), NewCommand)


async def test_default_retention_is_a_day_and_finishing_keeps_it(store: Store, raw: Any) -> None:
    await store.begin_command("c-1", "d")
    await store.finish_command("c-1", {"ok": True})
    ttl_ms = await raw.pttl("locker:cab-01:cmd:c-1")
    assert 23 * 3600 * 1000 < ttl_ms <= 24 * 3600 * 1000


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.begin_command("bad id", "d"),
        lambda s: s.begin_command("x" * 129, "d"),
        lambda s: s.begin_command("c-1", ""),
        lambda s: s.begin_command("c-1", "d", {"x": object()}),
        lambda s: s.finish_command("c-1", ["not", "a", "dict"]),
        lambda s: s.record_pulse_intent("c-1", "A 01"),
    ],
)
async def test_bad_arguments_are_refused(store: Store, call: Any) -> None:
    with pytest.raises(StoreDataError):
        await call(store)
