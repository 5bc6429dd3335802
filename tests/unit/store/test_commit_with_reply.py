"""``Store.commit_with_reply``: a command's reply and the events before it in one
transaction. A reply on record never tells of an event that is not on record, and the
events are committed whatever the command's record says."""

from __future__ import annotations

from typing import Any

import pytest

from controller.store import CommandReply, NewEvent, Store, StoreDataError

EXPIRES = {"boot_id": "b", "uptime_ms": 8812345}
ACKED = NewEvent("unlock_pulse_acked", {"command": "c-1"}, 1.8e9, "A01", "ev-acked-1")


async def test_events_and_reply_land_in_one_exec(store: Store, raw: Any) -> None:
    await store.begin_command("c-1", "d1", EXPIRES, pulse="A01")
    execs = 0
    transaction = store._transaction

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal execs
        execs += 1
        return await transaction(*args, **kwargs)

    store._transaction = counting  # type: ignore[method-assign]
    events, reply = await store.commit_with_reply(
        [ACKED], CommandReply("c-1", {"ok": True, "n": 1}),
        compartments={"A01": {"phase": "free"}})
    assert execs == 1
    assert reply == {"ok": True, "n": 1}
    assert [e.kind for e in events] == ["unlock_pulse_acked"]
    assert [e.kind for e in await store.pending(10)] == ["unlock_pulse_acked"]
    record = await store.get_command("c-1")
    assert record is not None
    assert record.state == "done"
    assert record.reply == {"ok": True, "n": 1}
    assert record.may_have_pulsed("A01")  # pulsed: the intent stays as evidence
    assert await store.unfinished_commands() == []
    assert await store.load_compartment("A01") == {"phase": "free"}


async def test_unpulsed_intents_are_dropped_with_the_reply(store: Store) -> None:
    await store.begin_command("c-1", "d1", EXPIRES, pulse="A01")
    _, reply = await store.commit_with_reply(
        [ACKED], CommandReply("c-1", {"ok": False}, unpulsed=("A01",)))
    assert reply == {"ok": False}
    record = await store.get_command("c-1")
    assert record is not None
    assert not record.may_have_pulsed("A01")


async def test_the_first_reply_wins_and_the_events_still_commit(store: Store) -> None:
    await store.begin_command("c-1", "d1", EXPIRES)
    await store.finish_command("c-1", {"first": True})
    events, reply = await store.commit_with_reply(
        [ACKED], CommandReply("c-1", {"second": True}))
    assert reply == {"first": True}
    assert [e.id for e in events] == ["ev-acked-1"]
    assert [e.id for e in await store.pending(10)] == ["ev-acked-1"]


async def test_no_record_commits_the_events_and_says_so(store: Store) -> None:
    events, reply = await store.commit_with_reply([ACKED], CommandReply("never", {"ok": 1}))
    assert reply is None
    assert [e.id for e in events] == ["ev-acked-1"]
    assert await store.get_command("never") is None


async def test_a_retry_of_a_lost_answer_commits_nothing_twice(store: Store) -> None:
    await store.begin_command("c-1", "d1", EXPIRES)
    first, _ = await store.commit_with_reply([ACKED], CommandReply("c-1", {"ok": 1}))
    # The same commit again (its answer was lost): the event is found by its mark, the
    # reply is the one on record.
    again, reply = await store.commit_with_reply([ACKED], CommandReply("c-1", {"ok": 2}))
    assert [e.seq for e in again] == [e.seq for e in first]
    assert reply == {"ok": 1}
    assert len(await store.pending(10)) == 1


async def test_a_reply_that_is_not_json_changes_nothing(store: Store) -> None:
    await store.begin_command("c-1", "d1", EXPIRES)
    with pytest.raises(StoreDataError):
        await store.commit_with_reply([ACKED], CommandReply("c-1", {"x": float("nan")}))
    assert await store.pending(10) == []
    record = await store.get_command("c-1")
    assert record is not None
    assert record.state == "in_progress"


async def test_without_events_it_is_finish_command(store: Store) -> None:
    await store.begin_command("c-1", "d1", EXPIRES)
    events, reply = await store.commit_with_reply([], CommandReply("c-1", {"ok": 1}))
    assert (events, reply) == ([], {"ok": 1})
    assert (await store.commit_with_reply([], CommandReply("nope", {"ok": 1}))) == ([], None)
