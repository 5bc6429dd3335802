"""Concurrent appenders on a real redis-server, in one process and in several, never
produce a duplicate or a missing sequence number."""

from __future__ import annotations

import asyncio

import pytest

from controller.store import Store
from tests.integration.test_store_crash import check_outbox, drain, start_writer
from tests.support.services import RedisProcess

pytestmark = pytest.mark.integration


async def test_many_stores_in_one_process(redis_server: RedisProcess) -> None:
    stores = [await Store.connect(redis_server.url, "locker", "cab-01") for _ in range(4)]
    try:
        for store in stores:
            await store.new_boot()
        events = await asyncio.gather(
            *(s.append("k", {"n": n}, at=0) for n in range(100) for s in stores)
        )
        assert sorted(e.seq for e in events) == list(range(1, 401))
        assert len({e.id for e in events}) == 400
        acks = await asyncio.gather(*(stores[e.seq % 4].ack(e.id) for e in events[::2]))
        assert all(acks)
        committed = {e.seq: e.id for e in events}
    finally:
        for store in stores:
            await store.close()
    last, pending = await check_outbox(redis_server.url, committed)
    assert (last, pending) == (400, 200)


async def test_several_writer_processes(redis_server: RedisProcess) -> None:
    writers = [start_writer(redis_server.url, 150, ack_every=3) for _ in range(3)]
    committed: dict[int, str] = {}
    try:
        for writer in writers:
            mine: dict[int, str] = {}
            drain(writer, mine)
            assert writer.returncode == 0
            assert not set(mine) & set(committed), "two writers got the same seq"
            committed |= mine
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.wait(10)
    assert sorted(committed) == list(range(1, 451))
    last, _ = await check_outbox(redis_server.url, committed)
    assert last == 450
