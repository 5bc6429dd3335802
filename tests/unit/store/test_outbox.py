"""The outbox: commit before publish, remove after ack, gap-free seq, replay unchanged."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import fakeredis
import pytest

from controller.store import Event, NewEvent, Store, StoreDataError
from tests.unit.store.conftest import FakeClock, OpenStore

AT = 1_795_000_000.25


async def test_append_assigns_gap_free_seqs_and_unique_ids(store: Store) -> None:
    events = [await store.append("door_opened", {"n": n}, at=AT) for n in range(10)]
    assert [e.seq for e in events] == list(range(1, 11))
    assert len({e.id for e in events}) == 10
    assert await store.depth() == 10
    assert await store.last_seq() == 10
    assert await store.pending(100) == events


async def test_event_carries_boot_cabinet_time_compartment_and_a_data_copy(store: Store) -> None:
    data: dict[str, Any] = {"by": "code", "nested": {"a": [1, 2]}}
    event = await store.append("door_opened", data, at=AT, compartment="A01")
    data["nested"]["a"].append(3)
    assert event.boot_id == store.boot_id
    assert event.cabinet == "cab-01"
    assert event.compartment == "A01"
    assert event.at == "2026-11-18T11:06:40.250Z"
    assert event.data == {"by": "code", "nested": {"a": [1, 2]}}
    (stored,) = await store.pending()
    assert stored == event
    assert Event.from_dict(event.to_dict()) == event


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        ("2026-01-01T10:00:00+01:00", "2026-01-01T09:00:00.000Z"),
        ("2026-01-01T09:00:00.123456Z", "2026-01-01T09:00:00.123Z"),
        (datetime(2026, 1, 1, 9, tzinfo=timezone(timedelta(hours=-5))), "2026-01-01T14:00:00.000Z"),
    ],
)
async def test_time_is_normalised_to_utc_iso(store: Store, at: Any, expected: str) -> None:
    assert (await store.append("k", {}, at=at)).at == expected


@pytest.mark.parametrize(
    "at", ["2026-01-01T10:00:00", datetime(2026, 1, 1), "yesterday", float("nan"), True, None]
)
async def test_bad_time_is_refused_and_nothing_committed(store: Store, at: Any) -> None:
    with pytest.raises(StoreDataError):
        await store.append("k", {}, at=at)
    assert await store.last_seq() == 0
    assert await store.depth() == 0


@pytest.mark.parametrize(
    ("kind", "data", "compartment"),
    [
        ("", {}, None),
        ("k" * 65, {}, None),
        ("k", {"x": object()}, None),
        ("k", {"x": float("inf")}, None),
        ("k", [1, 2], None),
        ("k", {}, "A 01"),
        ("k", {}, "A01:x/y"),
    ],
)
async def test_bad_event_is_refused_and_nothing_committed(
    store: Store, kind: str, data: Any, compartment: str | None
) -> None:
    with pytest.raises(StoreDataError):
        await store.append(kind, data, at=AT, compartment=compartment)
    assert await store.last_seq() == 0


async def test_append_needs_a_boot_id(open_store: OpenStore) -> None:
    store = await open_store(boot=False)
    with pytest.raises(StoreDataError, match="boot"):
        await store.append("k", {}, at=AT)
    store.boot_id = "given-at-creation"
    assert (await store.append("k", {}, at=AT)).boot_id == "given-at-creation"


async def test_ack_by_id_removes_only_that_event(store: Store) -> None:
    a, b, c = [await store.append("k", {"n": n}, at=AT) for n in range(3)]
    assert await store.ack(b.id) is True
    assert await store.pending() == [a, c]
    assert await store.depth() == 2


async def test_ack_by_seq(store: Store) -> None:
    a, b = [await store.append("k", {}, at=AT) for _ in range(2)]
    assert await store.ack(1) is True
    assert await store.pending() == [b]
    assert await store.ack(1) is False
    assert a.seq == 1


async def test_ack_twice_or_unknown_is_harmless(store: Store) -> None:
    event = await store.append("k", {}, at=AT)
    assert await store.ack(event.id) is True
    assert await store.ack(event.id) is False
    assert await store.ack("no-such-event") is False
    assert await store.ack(999) is False
    assert len(await store.delivered()) == 1


@pytest.mark.parametrize("ref", [True, 1.5, None, -1, "bad id with spaces", b"x"])
async def test_ack_refuses_what_is_neither_id_nor_seq(store: Store, ref: Any) -> None:
    with pytest.raises(StoreDataError):
        await store.ack(ref)


async def test_pending_limit_and_paging(store: Store) -> None:
    events = [await store.append("k", {}, at=AT) for _ in range(7)]
    assert await store.pending(3) == events[:3]
    assert await store.pending(3, after_seq=3) == events[3:6]
    assert await store.pending(100, after_seq=7) == []
    with pytest.raises(StoreDataError):
        await store.pending(0)
    with pytest.raises(StoreDataError):
        await store.pending(5, after_seq=-1)


async def test_seq_continues_after_everything_was_acked(store: Store) -> None:
    for _ in range(3):
        await store.ack((await store.append("k", {}, at=AT)).id)
    assert await store.depth() == 0
    assert (await store.append("k", {}, at=AT)).seq == 4


async def test_replay_after_restart_keeps_ids_seqs_times_and_boot(
    open_store: OpenStore, clock: FakeClock
) -> None:
    first = await open_store()
    committed = [await first.append("k", {"n": n}, at=AT + n) for n in range(5)]
    await first.ack(committed[1].id)
    await first.close()
    clock.advance(3600)
    second = await open_store()
    assert second.boot_id != committed[0].boot_id
    assert await second.pending() == [committed[0], *committed[2:]]
    later = await second.append("k", {}, at=clock())
    assert later.seq == 6
    assert later.boot_id == second.boot_id


async def test_keys_are_namespaced_per_cabinet(open_store: OpenStore, raw: Any) -> None:
    one = await open_store(cabinet="cab-01")
    two = await open_store(cabinet="cab-02")
    await one.append("k", {}, at=AT)
    assert (await two.append("k", {}, at=AT)).seq == 1
    assert await two.depth() == 1
    keys = await raw.keys("*")
    assert all(k.startswith(("locker:cab-01:", "locker:cab-02:")) for k in keys)


async def test_delivered_log_keeps_acked_events_in_order(store: Store, clock: FakeClock) -> None:
    events = [await store.append("k", {"n": n}, at=AT) for n in range(3)]
    await store.ack(events[2].id)
    clock.advance(1)
    await store.ack(events[0].id)
    log = await store.delivered()
    assert [d.event for d in log] == [events[2], events[0]]
    assert log[1].acked_at > log[0].acked_at


async def test_delivered_log_is_trimmed_by_count(open_store: OpenStore) -> None:
    store = await open_store(delivered_max_entries=3)
    events = [await store.append("k", {}, at=AT) for _ in range(10)]
    for event in events:
        await store.ack(event.id)
    assert [d.event.seq for d in await store.delivered(100)] == [8, 9, 10]


async def test_delivered_log_is_trimmed_by_age(open_store: OpenStore) -> None:
    store = await open_store(delivered_max_age_s=0.001)
    old = await store.append("k", {}, at=AT)
    new = await store.append("k", {}, at=AT)
    await store.ack(old.id)
    before = (await store.delivered())[0].entry_id
    # Age is measured on the server's clock: wait (bounded) until it moved past 1 ms.
    for _ in range(500):
        await asyncio.sleep(0.005)
        if int(before.split("-")[0]) < int(datetime.now(UTC).timestamp() * 1000) - 5:
            break
    await store.ack(new.id)
    assert [d.event for d in await store.delivered()] == [new]


async def test_concurrent_appends_of_one_store_are_gap_free(store: Store) -> None:
    events = await asyncio.gather(*(store.append("k", {"n": n}, at=AT) for n in range(50)))
    assert sorted(e.seq for e in events) == list(range(1, 51))
    assert [e.seq for e in await store.pending(100)] == list(range(1, 51))


async def test_concurrent_appends_of_several_stores_are_gap_free(open_store: OpenStore) -> None:
    stores = [await open_store() for _ in range(4)]
    events = await asyncio.gather(
        *(s.append("k", {}, at=AT) for _ in range(25) for s in stores)
    )
    assert sorted(e.seq for e in events) == list(range(1, 101))
    assert len({e.id for e in events}) == 100


async def test_concurrent_acks_of_one_event_log_it_once(store: Store) -> None:
    event = await store.append("k", {}, at=AT)
    results = await asyncio.gather(*(store.ack(event.id) for _ in range(5)))
    assert sorted(results) == [False, False, False, False, True]
    assert len(await store.delivered()) == 1


async def test_commit_writes_events_compartment_states_and_doors_together(store: Store) -> None:
    first = await store.append("daemon_started", {}, at=AT)
    events = await store.commit(
        [NewEvent("door_closed", {"authorised": True}, AT, "A01"),
         NewEvent("alarm_cleared", {"alarm": "forced_open"}, AT, "A01")],
        compartments={"A01": {"phase": "free"}}, doors={"A01": {"open": False}})
    assert [e.seq for e in events] == [first.seq + 1, first.seq + 2]
    assert [e.kind for e in await store.pending()] == [
        "daemon_started", "door_closed", "alarm_cleared"]
    assert await store.load_compartment("A01") == {"phase": "free"}
    assert await store.load_doors() == {"A01": {"open": False}}
    # States alone (no event) are a commit too; nothing else moves.
    assert await store.commit([], doors={"A02": {"open": True}}) == []
    assert await store.last_seq() == first.seq + 2
    assert (await store.load_doors())["A02"] == {"open": True}


async def test_a_bad_event_in_a_commit_writes_nothing(store: Store) -> None:
    with pytest.raises(StoreDataError):
        await store.commit([NewEvent("door_opened", {}, AT, "A01"),
                            NewEvent("door_closed", {"x": {1, 2}}, AT, "A01")],
                           compartments={"A01": {"phase": "free"}}, doors={"A01": {"open": True}})
    assert await store.last_seq() == 0
    assert await store.load_compartments() == {}
    assert await store.load_doors() == {}


@pytest.mark.parametrize("key", ["compartments", "doors", "pending"])
async def test_a_key_of_the_wrong_type_makes_the_commit_write_nothing(store: Store,
                                                                      key: str) -> None:
    # Redis runs every command of a MULTI even when one fails: without the check, the
    # events would be committed while the states they report fail, and every following
    # poll would report the same door movement again under a new id.
    first = await store.append("daemon_started", {}, at=AT)
    await store._client.set(getattr(store._keys, key), "not a hash")
    with pytest.raises(StoreDataError, match="nothing committed"):
        await store.commit([NewEvent("door_opened", {"authorised": False}, AT, "A01")],
                           compartments={"A01": {"phase": "free"}}, doors={"A01": {"open": True}})
    assert await store.last_seq() == first.seq


async def test_ack_many_removes_a_run_in_one_go_and_logs_it_in_order(store: Store) -> None:
    events = [await store.append("k", {"n": n}, at=AT) for n in range(5)]
    assert await store.ack(events[1].id) is True  # already acknowledged: skipped
    assert await store.ack_many([e.id for e in events[:4]]) == 3
    assert [e.seq for e in await store.pending()] == [5]
    log = await store.delivered()
    assert [d.event.seq for d in log] == [2, 1, 3, 4]
    assert await store.ack_many([e.id for e in events[:4]]) == 0  # twice: harmless
    assert await store.ack_many([]) == 0


async def test_a_commit_with_caller_ids_repeated_commits_nothing_twice(store: Store) -> None:
    drafts = [NewEvent("door_opened", {"n": 1}, AT, "A01", id="ev-1"),
              NewEvent("door_closed", {"n": 2}, AT, "A01", id="ev-2")]
    first = await store.commit(drafts, doors={"A01": {"open": False}})
    assert [(e.id, e.seq) for e in first] == [("ev-1", 1), ("ev-2", 2)]
    # The same commit again, as after an answer lost after EXEC: the same events back.
    again = await store.commit(drafts, doors={"A01": {"open": False}})
    assert again == first
    assert await store.last_seq() == 2
    assert [e.id for e in await store.pending()] == ["ev-1", "ev-2"]


async def test_a_repeated_commit_that_grew_commits_only_the_new_events(store: Store) -> None:
    drafts = [NewEvent("a", {}, AT, id="ev-1"), NewEvent("b", {}, AT, id="ev-2")]
    await store.commit(drafts)
    grown = await store.commit([*drafts, NewEvent("c", {}, AT, id="ev-3")],
                               compartments={"A01": {"state": "free"}})
    assert [(e.id, e.seq) for e in grown] == [("ev-1", 1), ("ev-2", 2), ("ev-3", 3)]
    assert [e.id for e in await store.pending()] == ["ev-1", "ev-2", "ev-3"]
    assert await store.load_compartment("A01") == {"state": "free"}


async def test_a_repeated_commit_after_an_ack_is_not_committed_again(store: Store) -> None:
    drafts = [NewEvent("a", {"x": 1}, AT, "A01", id="ev-1"), NewEvent("b", {}, AT, id="ev-2")]
    first = await store.commit(drafts)
    assert await store.ack("ev-1")
    again = await store.commit(drafts)
    assert [(e.id, e.seq, e.kind, e.data, e.compartment) for e in again] == [
        (e.id, e.seq, e.kind, e.data, e.compartment) for e in first]
    assert again[0].cabinet_clock is None  # acknowledged: rebuilt, not read back
    assert again[1] == first[1]
    assert await store.last_seq() == 2
    assert [e.id for e in await store.pending()] == ["ev-2"]


@pytest.mark.parametrize("ids", [("ev-1", None), ("ev-1", "ev-1"), ("bad id!", "ev-2")])
async def test_event_ids_all_or_none_unique_and_well_formed(
    store: Store, ids: tuple[str | None, str | None]
) -> None:
    with pytest.raises(StoreDataError):
        await store.commit([NewEvent("a", {}, AT, id=ids[0]), NewEvent("b", {}, AT, id=ids[1])])
    assert await store.last_seq() == 0


async def test_the_commit_mark_is_kept_for_its_retention_only(
    open_store: OpenStore, server: fakeredis.FakeServer
) -> None:
    store = await open_store(commit_mark_retention_s=50)
    await store.commit([NewEvent("a", {}, AT, id="ev-1")])
    raw = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
    ttl_ms = await raw.pttl("locker:cab-01:outbox:commit:ev-1")
    assert 0 < ttl_ms <= 50_000
    assert await raw.get("locker:cab-01:outbox:commit:ev-1") == "1 1"
    # Events without caller ids leave no mark.
    await store.append("b", {}, at=AT)
    assert len(await raw.keys("locker:cab-01:outbox:commit:*")) == 1
    await raw.aclose()


async def test_a_retry_of_a_retry_follows_every_mark(store: Store) -> None:
    a, b, c, d = (NewEvent(k, {}, AT, id=f"ev-{k}") for k in "abcd")
    await store.commit([a, b])  # answer lost
    await store.append("other", {}, at=AT)  # another writer takes seq 3 meanwhile
    await store.commit([a, b, c])  # its answer lost too: c committed at seq 4
    again = await store.commit([a, b, c, d])
    assert [(e.id, e.seq) for e in again] == [("ev-a", 1), ("ev-b", 2), ("ev-c", 4), ("ev-d", 5)]
    assert await store.last_seq() == 5
    assert [e.seq for e in await store.pending()] == [1, 2, 3, 4, 5]
