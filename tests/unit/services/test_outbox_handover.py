"""The outbox pump takes the events a commit has just written from the sink instead of
reading them back, and goes back to the store whenever it cannot be sure that what was
handed over follows on from what it already took: another writer's event, a failed
publish, a reconnection, a run handed over while it was reading. Whatever the
interleaving, every event is published, first deliveries come in sequence order, and
the outbox ends empty."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

from controller.services.ports import PublishError
from controller.services.reporting import EventSink, OutboxPump, PendingEvent, event_payload
from controller.store import Store
from controller.store.records import Event

pytestmark = pytest.mark.timeout(60)


class _Broker:
    """Records every publish (seq). The publish of a seq in ``fail`` loses the
    connection (once): it and every publish after it fail until :meth:`connected`."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.fail: set[int] = set()
        self.down = False

    async def publish(self, topic: str, payload: bytes) -> None:
        seq = json.loads(payload)["seq"]
        if seq in self.fail:
            self.fail.discard(seq)
            self.down = True
        if self.down:
            raise PublishError("connection lost")
        self.sent.append(seq)
        await asyncio.sleep(0)  # the PUBACK

    async def connected(self) -> None:
        self.down = False

    def first_deliveries(self) -> list[int]:
        seen: set[int] = set()
        out = []
        for seq in self.sent:
            if seq not in seen:
                seen.add(seq)
                out.append(seq)
        return out


class _ReadCounter(Store):
    """The real store, counting the pump's reads of the outbox."""

    reads: int = 0
    #: Called in the middle of a read (after the store answered, before the pump sees it).
    during_read: Any = None

    async def outbox_head(self, limit: int = 100) -> tuple[list[Event], int | None]:
        self.reads += 1
        out = await super().outbox_head(limit)
        if self.during_read is not None:
            hook, self.during_read = self.during_read, None
            await hook()
        return out


async def _lane(batch: int = 512) -> tuple[_ReadCounter, EventSink, OutboxPump, _Broker]:
    store = await _ReadCounter.connect("memory://", "test", "cab-1")
    await store.new_boot()
    broker = _Broker()
    pump = OutboxPump(store, broker.publish, "t", wait_connected=broker.connected, batch=batch,
                      window=8, ack_every=4)
    sink = EventSink(store, on_committed=pump.wake, hand_over=pump.offer)
    return store, sink, pump, broker


def _events(n: int) -> list[PendingEvent]:
    return [PendingEvent("heartbeat", {"n": i}, 1_800_000_000.0 + i) for i in range(n)]


async def test_committed_events_are_published_without_reading_them_back() -> None:
    store, sink, pump, broker = await _lane()
    try:
        assert await pump.drain() == 0  # the first batch is always a store read
        assert store.reads == 1
        for _ in range(5):
            await sink.emit(_events(3))
            assert await pump.drain() == 3
        assert store.reads == 1
        assert pump.batches_handed_over == 5
        assert broker.sent == list(range(1, 16))
        assert await store.depth() == 0
        assert pump.last_published_seq == 15
    finally:
        await store.close()


async def test_an_event_from_another_writer_sends_the_pump_back_to_the_store() -> None:
    store, sink, pump, broker = await _lane()
    try:
        await sink.emit(_events(2))
        assert await pump.drain() == 2
        reads = store.reads
        # Another process (lockerctl) commits seq 3 behind the sink's back ...
        await store.append("heartbeat", {"by": "other"}, at=1_800_000_000.0)
        await sink.emit(_events(2))  # ... so the hand-over of 4-5 does not follow on
        assert await pump.drain() == 3
        assert store.reads == reads + 1
        assert broker.sent == [1, 2, 3, 4, 5]
        await sink.emit(_events(1))  # in step again
        assert await pump.drain() == 1
        assert store.reads == reads + 1
        assert await store.depth() == 0
    finally:
        await store.close()


async def test_a_failed_publish_of_a_handed_over_batch_reads_the_rest_again() -> None:
    store, sink, pump, broker = await _lane()
    try:
        assert await pump.drain() == 0
        await sink.emit(_events(10))
        broker.fail = {6}
        with pytest.raises(PublishError):
            await pump.drain()
        await broker.connected()
        reads = store.reads
        assert (await store.pending(1))[0].seq <= 6
        await sink.emit(_events(1))  # handed over, but the pump is no longer in step
        assert await pump.drain() > 0
        assert store.reads == reads + 1
        assert broker.first_deliveries() == list(range(1, 12))
        assert await store.depth() == 0
    finally:
        await store.close()


async def test_a_run_handed_over_during_a_read_is_neither_lost_nor_doubled() -> None:
    store, sink, pump, broker = await _lane()
    try:
        await sink.emit(_events(2))

        async def commit_more() -> None:
            await sink.emit(_events(3))  # committed after the read: not in its answer

        store.during_read = commit_more
        assert await pump.drain() == 2
        assert await pump.drain() == 3  # from the hand-over, after the read's batch
        assert store.reads == 1
        assert broker.sent == [1, 2, 3, 4, 5]
        assert await store.depth() == 0
    finally:
        await store.close()


async def test_reread_and_a_backlog_larger_than_a_batch_go_to_the_store() -> None:
    store, sink, pump, broker = await _lane(batch=4)
    try:
        assert await pump.drain() == 0
        await sink.emit(_events(3))
        pump.reread()  # the broker link came back
        assert await pump.drain() == 3
        assert store.reads == 2
        for _ in range(6):
            await sink.emit(_events(1))  # more than the pump holds for a 4-event batch
        await sink.emit(_events(20))
        while await pump.drain():
            pass
        assert broker.sent == list(range(1, 30))
        assert await store.depth() == 0
    finally:
        await store.close()


@pytest.mark.parametrize("seed", range(12))
async def test_any_interleaving_publishes_every_event_in_order(seed: int) -> None:
    """Sink commits, other writers, failed publishes, reconnections and a running pump,
    in a random order: every seq is delivered, first deliveries in seq order."""
    rng = random.Random(seed)
    store, sink, pump, broker = await _lane(batch=rng.choice([3, 8, 64]))
    task = asyncio.get_running_loop().create_task(pump.run())
    try:
        for _ in range(60):
            step = rng.random()
            if step < 0.55:
                if rng.random() < 0.5:
                    await sink.emit(_events(rng.randint(1, 5)))
                else:
                    sink.submit(_events(rng.randint(1, 5)))
            elif step < 0.65:
                await store.append("heartbeat", {"by": "other"}, at=1_800_000_000.0)
            elif step < 0.75:
                broker.fail.add(await store.last_seq() + rng.randint(1, 4))
            elif step < 0.8:
                pump.reread()
            for _ in range(rng.randint(0, 6)):
                await asyncio.sleep(0)
        await sink.flush()
        broker.fail.clear()
        last = await store.last_seq()
        async with asyncio.timeout(20):
            while await store.depth() or pump.last_published_seq < last:
                pump.wake()
                await asyncio.sleep(0.01)
        assert broker.first_deliveries() == list(range(1, last + 1))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


async def test_a_handed_over_event_is_the_event_the_store_holds() -> None:
    """Published from the hand-over or read back, the message is the same bytes."""
    store = await Store.connect("memory://", "test", "cab-1")
    try:
        await store.new_boot()
        handed: list[Event] = []
        sink = EventSink(store, hand_over=handed.extend)
        await sink.emit([PendingEvent("door_opened", {"authorised": True, "x": 0.1, "é": [1, None]},
                                      1_800_000_000.123456, "A01"),
                         PendingEvent("heartbeat", {}, 1_800_000_001.0)])
        stored = await store.pending(10)
        assert handed == stored
        assert [event_payload(e) for e in handed] == [event_payload(e) for e in stored]
    finally:
        await store.close()
