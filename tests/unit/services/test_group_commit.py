"""Group commit on the door path: the poller hands a cycle's changes over once, without
waiting for the fsync, and the sink commits everything queued meanwhile in one
transaction, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from controller.domain.cabinet_model import Now
from controller.services.poller import Poller
from controller.services.reporting import EventSink, PendingEvent, StateKeeper
from controller.store import Store, StoreUnavailable, UnknownCommand
from controller.store.records import CommandReply, Event, NewEvent
from tests.unit.services.conftest import Core


class CountingStore(Store):
    """The real store, counting its commits; ``gate`` (when set) holds each commit."""

    commits: int = 0
    gate: asyncio.Event | None = None

    async def commit(self, events: Sequence[NewEvent], *,
                     compartments: Any = None, doors: Any = None) -> list[Event]:
        self.commits += 1
        if self.gate is not None:
            await self.gate.wait()
        return await super().commit(events, compartments=compartments, doors=doors)


class _Clock:
    def __init__(self) -> None:
        self.mono = 100.0

    def __call__(self) -> Now:
        return Now(self.mono, 1_800_000_000.0 + self.mono)


async def test_the_poller_does_not_wait_for_the_commit_of_what_it_saw(core: Core) -> None:
    store = await CountingStore.connect("memory://", "test", "cab-1")
    try:
        await store.new_boot()
        store.gate = asyncio.Event()  # every commit hangs: an fsync that never ends
        sink = EventSink(store)
        keeper = StateKeeper(core.model, store, sink)
        clock = _Clock()
        poller = Poller(core.model, core.hardware, keeper.submit, now=clock, interval_s=0.1)
        bus = next(iter(core.hardware.buses))
        boards = core.hardware.boards_on(bus)
        for _name, board in boards:  # the whole line goes dead at once
            board.inject("timeout", op="read_inputs",  # type: ignore[attr-defined]
                         persistent=True)
        for _ in range(core.settings.timing.unknown_after_failed_polls + 1):
            async with asyncio.timeout(1.0):  # polls on while the commit hangs
                await poller._cycle(bus)
            clock.mono += 0.1
        for _ in range(5):
            await asyncio.sleep(0)
        assert store.commits == 1  # the first commit, still waiting
        store.gate.set()
        for _ in range(100):
            if sink.backlog == 0:
                break
            await asyncio.sleep(0.01)
        # Every board's alarm, seen while the first commit hung: at most one more commit.
        assert store.commits <= 2
        alarms = [e for e in await store.pending(100) if e.data.get("alarm") == "board_offline"]
        assert len(alarms) == len(boards)
        await sink.close()
    finally:
        await store.close()


async def test_events_submitted_during_a_commit_are_committed_together_in_order() -> None:
    store = await CountingStore.connect("memory://", "test", "cab-1")
    try:
        await store.new_boot()
        store.gate = asyncio.Event()
        sink = EventSink(store)
        sink.submit([PendingEvent("door_opened", {"n": 0}, 1.8e9, "A01")])
        await asyncio.sleep(0)  # the first commit starts and waits on the fsync
        assert store.commits == 1
        for n in range(1, 6):  # five more changes while it waits: queued, not waited for
            sink.submit([PendingEvent("door_opened", {"n": n}, 1.8e9, f"A0{n + 1}")])
        assert store.commits == 1
        store.gate.set()
        for _ in range(100):
            if sink.committed == 6:
                break
            await asyncio.sleep(0.01)
        assert store.commits == 2  # the five behind the first: one group commit
        events = await store.pending(10)
        assert [e.data["n"] for e in events] == [0, 1, 2, 3, 4, 5]
        assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
        doors = await store.load_doors()
        assert set(doors) == {"A01", "A02", "A03", "A04", "A05", "A06"}
        await sink.close()
    finally:
        await store.close()


async def test_a_bad_event_in_a_group_is_set_aside_and_the_rest_committed() -> None:
    store = await CountingStore.connect("memory://", "test", "cab-1")
    try:
        await store.new_boot()
        sink = EventSink(store)
        store.gate = asyncio.Event()
        sink.submit([PendingEvent("door_opened", {"n": 0}, 1.8e9, "A01")])
        await asyncio.sleep(0)
        sink.submit([PendingEvent("door_opened", {"n": 1}, 1.8e9, "A02")])
        sink.submit([PendingEvent("door_opened", {"n": float("nan")}, 1.8e9, "A03")])  # no JSON
        sink.submit([PendingEvent("door_closed", {"n": 3}, 1.8e9, "A02")])
        store.gate.set()
        for _ in range(100):
            if sink.committed + sink.dropped_invalid == 4:
                break
            await asyncio.sleep(0.01)
        assert sink.dropped_invalid == 1
        assert [e.data["n"] for e in await store.pending(10)] == [0, 1, 3]
        await sink.close()
    finally:
        await store.close()


async def _outbox(n: int) -> Store:
    store = await Store.connect("memory://", "test", "cab-1")
    await store.new_boot()
    await store.commit([NewEvent("door_opened", {"n": i}, 1.8e9, "A01") for i in range(n)])
    return store


async def test_the_pump_keeps_a_window_in_flight_in_order_and_acks_the_run() -> None:
    from controller.services.ports import PublishError
    from controller.services.reporting import OutboxPump

    store = await _outbox(300)
    sent: list[int] = []
    in_flight = peak = 0
    fail_at: int | None = 200

    async def publish(topic: str, payload: bytes) -> None:
        nonlocal in_flight, peak
        import json
        seq = json.loads(payload)["seq"]
        sent.append(seq)
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.001 * (seq % 3))  # acks come back out of order
            if seq == fail_at:
                raise PublishError("connection lost")
        finally:
            in_flight -= 1

    async def connected() -> None:
        return None

    pump = OutboxPump(store, publish, "t", wait_connected=connected, batch=512, window=16,
                      ack_every=32)
    try:
        try:
            await pump.drain()
        except PublishError:
            pass
        assert sent[:200] == list(range(1, 201))  # left in sequence order
        assert 1 < peak <= 16
        pending = [e.seq for e in await store.pending(1000)]
        assert pending == list(range(200, 301))  # a suffix, no gap
        # Acknowledged by the broker behind the failed one, not yet removed: they are not
        # published again by this process (only their removal is retried).
        acked_behind = {e.seq for e in await store.pending(1000) if e.id in pump._unacked}
        fail_at = None
        sent.clear()
        assert await pump.drain() == 101
        assert sent == [seq for seq in range(200, 301) if seq not in acked_behind]
        assert await store.depth() == 0
        assert pump.last_published_seq == 300
    finally:
        await store.close()


class ReadCountingStore(Store):
    """The real store, counting the reads of pending events."""

    reads: int = 0

    async def pending(self, limit: int = 100, *, after_seq: int = 0) -> list[Event]:
        self.reads += 1
        return await super().pending(limit, after_seq=after_seq)


async def test_the_pump_publishes_handed_over_events_without_reading_them_back() -> None:
    import json

    from controller.services.reporting import OutboxPump

    store = await ReadCountingStore.connect("memory://", "test", "cab-1")
    sent: list[int] = []

    async def publish(topic: str, payload: bytes) -> None:
        sent.append(json.loads(payload)["seq"])

    async def connected() -> None:
        return None

    pump = OutboxPump(store, publish, "t", wait_connected=connected, batch=8)
    sink = EventSink(store, hand_over=pump.hand_over)
    try:
        await store.new_boot()
        await sink.emit([PendingEvent("a", {}, 0.0)])
        # The first batch after a start reads the store (events of an earlier run).
        assert await pump.drain() == 1
        assert store.reads == 1
        await sink.emit([PendingEvent("b", {}, 0.0), PendingEvent("c", {}, 0.0)])
        assert await pump.drain() == 2
        assert store.reads == 1
        assert pump.from_hand_over == 2
        # Another process commits in between: the next hand-over does not follow the last
        # published seq, so the store is read and nothing is skipped.
        await store.append("from_lockerctl", {}, at=0)
        await sink.emit([PendingEvent("d", {}, 0.0)])
        assert await pump.drain() == 2
        assert store.reads == 2
        # More than a batch handed over: the store is read (the hand-over is bounded).
        await sink.emit([PendingEvent(f"e{n}", {}, 0.0) for n in range(9)])
        assert await pump.drain() == 8
        assert await pump.drain() == 1
        assert sent == list(range(1, 15))
        assert await store.depth() == 0
    finally:
        await sink.close()
        await store.close()


async def test_a_handed_over_event_whose_publish_failed_is_published_again() -> None:
    import json

    from controller.services.ports import PublishError
    from controller.services.reporting import OutboxPump

    store = await Store.connect("memory://", "test", "cab-1")
    sent: list[int] = []
    fail = {3}

    async def publish(topic: str, payload: bytes) -> None:
        seq = json.loads(payload)["seq"]
        if seq in fail:
            fail.discard(seq)
            raise PublishError("connection lost")
        sent.append(seq)

    async def connected() -> None:
        return None

    pump = OutboxPump(store, publish, "t", wait_connected=connected, window=1)
    sink = EventSink(store, hand_over=pump.hand_over)
    try:
        await store.new_boot()
        await sink.emit([PendingEvent("a", {}, 0.0)])
        await pump.drain()
        await sink.emit([PendingEvent(k, {}, 0.0) for k in "bcd"])
        try:
            await pump.drain()
        except PublishError:
            pass
        assert sent == [1, 2]
        assert pump.last_published_seq == 2
        await pump.drain()  # the store's pending events, from the failed one on
        assert sent == [1, 2, 3, 4]
        assert await store.depth() == 0
    finally:
        await sink.close()
        await store.close()


class ReplyCountingStore(CountingStore):
    """Also counts the commits that carry a command's reply, and the lone replies."""

    with_reply: int = 0
    alone: int = 0
    down: bool = False

    async def commit(self, events: Sequence[NewEvent], *,
                     compartments: Any = None, doors: Any = None) -> list[Event]:
        if self.down:
            raise StoreUnavailable("redis is away", op="commit")
        return await super().commit(events, compartments=compartments, doors=doors)

    async def commit_with_reply(self, events: Sequence[NewEvent], reply: CommandReply, *,
                                compartments: Any = None,
                                doors: Any = None) -> tuple[list[Event], Any]:
        if self.down:
            raise StoreUnavailable("redis is away", op="commit")
        self.with_reply += 1
        return await super().commit_with_reply(events, reply, compartments=compartments,
                                               doors=doors)

    async def finish_command(self, command_id: str, reply: Any, *,
                             unpulsed: Sequence[str] = ()) -> dict[str, Any]:
        self.alone += 1
        return await super().finish_command(command_id, reply, unpulsed=unpulsed)


async def _reply_store() -> ReplyCountingStore:
    store = await ReplyCountingStore.connect("memory://", "test", "cab-1")
    await store.new_boot()
    await store.begin_command("c-1", "d1", {"uptime_ms": 1}, pulse="A01")
    return store


async def test_a_reply_is_stored_in_the_commit_of_the_events_queued_before_it() -> None:
    store = await _reply_store()
    try:
        sink = EventSink(store)
        sink.submit([PendingEvent("unlock_pulse_sent", {"n": 0}, 1.8e9, "A01")])
        sink.submit([PendingEvent("unlock_pulse_acked", {"n": 1}, 1.8e9, "A01")])
        stored = await sink.finish_command(CommandReply("c-1", {"ok": True}))
        assert stored == {"ok": True}
        # One transaction for both events and the reply: no commit of its own for the
        # events, no lone finish_command after them.
        assert (store.commits, store.with_reply, store.alone) == (0, 1, 0)
        assert [e.data["n"] for e in await store.pending(10)] == [0, 1]
        assert sink.backlog == 0
        assert sink.committed == 2
        record = await store.get_command("c-1")
        assert record is not None
        assert record.reply == {"ok": True}
        await sink.close()
    finally:
        await store.close()


async def test_with_nothing_queued_the_reply_is_stored_alone() -> None:
    store = await _reply_store()
    try:
        sink = EventSink(store)
        assert await sink.finish_command(CommandReply("c-1", {"ok": 1})) == {"ok": 1}
        assert (store.with_reply, store.alone) == (0, 1)
        with pytest.raises(UnknownCommand):
            await sink.finish_command(CommandReply("never", {"ok": 1}))
        sink.submit([PendingEvent("door_opened", {}, 1.8e9, "A01")])
        with pytest.raises(UnknownCommand):  # the event is committed all the same
            await sink.finish_command(CommandReply("never", {"ok": 1}))
        assert [e.kind for e in await store.pending(10)] == ["door_opened"]
        await sink.close()
    finally:
        await store.close()


async def test_a_store_away_keeps_the_events_and_refuses_to_store_the_reply() -> None:
    store = await _reply_store()
    try:
        sink = EventSink(store, retry_s=0.01)
        store.down = True
        sink.submit([PendingEvent("unlock_pulse_acked", {"n": 1}, 1.8e9, "A01")])
        with pytest.raises(StoreUnavailable):
            await sink.finish_command(CommandReply("c-1", {"ok": True}))
        assert sink.backlog == 1
        record = await store.get_command("c-1")
        assert record is not None
        assert record.state == "in_progress"
        store.down = False
        for _ in range(200):  # the retry task commits it when the store is back
            if sink.backlog == 0:
                break
            await asyncio.sleep(0.01)
        assert [e.kind for e in await store.pending(10)] == ["unlock_pulse_acked"]
        await sink.close()
    finally:
        await store.close()


async def test_a_bad_event_before_a_reply_is_set_aside_and_the_reply_stored() -> None:
    store = await _reply_store()
    try:
        sink = EventSink(store)
        sink.submit([PendingEvent("door_opened", {"n": 0}, 1.8e9, "A01")])
        sink.submit([PendingEvent("door_opened", {"n": float("nan")}, 1.8e9, "A02")])
        assert await sink.finish_command(CommandReply("c-1", {"ok": 1})) == {"ok": 1}
        assert sink.dropped_invalid == 1
        assert [e.data["n"] for e in await store.pending(10)] == [0]
        await sink.close()
    finally:
        await store.close()
