"""A connection that dies inside a watched transaction, at a chosen byte, on a real
redis-server: the store says StoreUnavailable (never a plain StoreError), never runs a
transaction twice after its EXEC left, and so leaves no gap in the sequence numbers.

redis-py reports a connection lost while keys are WATCHed as a ``WatchError``, the class
it also uses for "a watched key changed" (which the store retries). A proxy between the
store and Redis cuts the connection exactly when the client sends a given command, either
before forwarding it (Redis never saw it) or after (Redis applied it, the answer is lost).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from controller.services.reporting import EventSink, PendingEvent
from controller.store import NewEvent, Store, StoreError, StoreOptions, StoreUnavailable
from tests.support.cutting_proxy import CuttingProxy
from tests.support.services import RedisProcess

pytestmark = pytest.mark.integration

OPTIONS = StoreOptions(socket_timeout_s=2, connect_timeout_s=1)
EXEC = b"$4\r\nEXEC\r\n"
GET = b"$3\r\nGET\r\n"


@contextlib.asynccontextmanager
async def store_through(redis_server: RedisProcess) -> AsyncIterator[tuple[Store, CuttingProxy]]:
    async with CuttingProxy(redis_server.port) as proxy:
        store = await Store.connect(f"redis://127.0.0.1:{proxy.port}/0", "locker", "cab-01",
                                    options=OPTIONS)
        async with store:
            await store.new_boot()
            yield store, proxy


async def seqs(redis_server: RedisProcess) -> list[int]:
    async with await Store.connect(redis_server.url, "locker", "cab-01") as direct:
        return [e.seq for e in await direct.pending(1000)]


async def test_connection_cut_after_exec_is_unavailable_and_never_repeated(
    redis_server: RedisProcess,
) -> None:
    async with store_through(redis_server) as (store, proxy):
        await store.append("first", {}, at=0)
        proxy.cut(EXEC, before=False)
        with pytest.raises(StoreUnavailable) as caught:
            await store.append("second", {}, at=0)
        assert caught.value.op == "append"
        assert proxy.cuts == 1
        # Redis applied it once; a blind repeat would have taken seq 3 and left 2 empty.
        assert await seqs(redis_server) == [1, 2]
        assert (await store.append("third", {}, at=0)).seq == 3
    assert await seqs(redis_server) == [1, 2, 3]


async def test_connection_cut_before_exec_is_unavailable_and_writes_nothing(
    redis_server: RedisProcess,
) -> None:
    async with store_through(redis_server) as (store, proxy):
        proxy.cut(EXEC, before=True)
        with pytest.raises(StoreUnavailable):
            await store.commit([NewEvent("a", {}, 0), NewEvent("b", {}, 0)],
                               doors={"A01": {"open": True}})
        assert await seqs(redis_server) == []
        assert await store.load_doors() == {}
        events = await store.commit([NewEvent("a", {}, 0)], doors={"A01": {"open": True}})
        assert [e.seq for e in events] == [1]
        assert await store.load_doors() == {"A01": {"open": True}}


async def test_connection_cut_while_reading_is_retried_once_then_unavailable(
    redis_server: RedisProcess,
) -> None:
    async with store_through(redis_server) as (store, proxy):
        # Once: nothing was written yet, so a fresh connection finishes the job.
        proxy.cut(GET, before=True, times=1)
        assert (await store.append("k", {}, at=0)).seq == 1
        # Every time (Redis going away mid-transaction): StoreUnavailable, not StoreError.
        proxy.cut(GET, before=True, times=10)
        with pytest.raises(StoreError) as caught:
            await store.append("k", {}, at=0)
        assert isinstance(caught.value, StoreUnavailable), repr(caught.value)
        proxy.times = 0
        assert (await store.append("k", {}, at=0)).seq == 2
    assert await seqs(redis_server) == [1, 2]


async def test_a_commit_with_ids_retried_after_a_cut_after_exec_commits_nothing_twice(
    redis_server: RedisProcess,
) -> None:
    drafts = [NewEvent("door_opened", {}, 0, "A01", id="ev-a"),
              NewEvent("door_closed", {}, 0, "A01", id="ev-b")]
    async with store_through(redis_server) as (store, proxy):
        await store.append("first", {}, at=0)
        proxy.cut(EXEC, before=False)
        with pytest.raises(StoreUnavailable):
            await store.commit(drafts, doors={"A01": {"open": False}})
        # Redis applied it; the retry (with one event more) finds it and adds only the new.
        retried = await store.commit([*drafts, NewEvent("door_opened", {}, 0, "A01", id="ev-c")],
                                     doors={"A01": {"open": True}})
        assert [(e.id, e.seq) for e in retried] == [("ev-a", 2), ("ev-b", 3), ("ev-c", 4)]
        assert await store.load_doors() == {"A01": {"open": True}}
    assert await seqs(redis_server) == [1, 2, 3, 4]


async def test_the_event_sink_retries_a_commit_cut_after_exec_without_a_duplicate(
    redis_server: RedisProcess,
) -> None:
    async with store_through(redis_server) as (store, proxy):
        all_committed = asyncio.Event()
        sink = EventSink(store, retry_s=0.05,
                         on_committed=lambda: sink.committed >= 3 and all_committed.set())
        try:
            proxy.cut(EXEC, before=False)
            assert await sink.emit([PendingEvent("door_opened", {}, 0.0, "A01"),
                                    PendingEvent("door_closed", {}, 0.0, "A01")]) == []
            # Held in memory; the sink's retry commits them once the store answers again.
            sink.submit([PendingEvent("door_opened", {}, 0.0, "A02")])
            await asyncio.wait_for(all_committed.wait(), 10)
            assert sink.committed == 3
        finally:
            await sink.close()
    async with await Store.connect(redis_server.url, "locker", "cab-01") as direct:
        pending = await direct.pending(1000)
    assert [(e.seq, e.kind, e.compartment) for e in pending] == [
        (1, "door_opened", "A01"), (2, "door_closed", "A01"), (3, "door_opened", "A02")]
