"""The store watch: ``store_full`` at once, ``store_unavailable`` only after a while (a
Redis restart of a second is no incident), each raised once and cleared by a write."""

from __future__ import annotations

from typing import Any

from controller.services.reporting import PendingEvent
from controller.services.storewatch import FULL_ALARM, UNAVAILABLE_ALARM, StoreWatch
from controller.store.errors import StoreError, StoreFull, StoreUnavailable


class ProbeStore:
    def __init__(self) -> None:
        self.error: StoreError | None = None

    async def probe_write(self) -> None:
        if self.error is not None:
            raise self.error


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make() -> tuple[StoreWatch, ProbeStore, Clock, list[PendingEvent], list[int]]:
    store, clock = ProbeStore(), Clock()
    events: list[PendingEvent] = []
    changes: list[int] = []

    async def emit(batch: Any) -> None:
        events.extend(batch)

    watch = StoreWatch(store, emit, unavailable_after_s=10.0, monotonic=clock,  # type: ignore[arg-type]
                       wall=clock, on_change=lambda: changes.append(1))
    return watch, store, clock, events, changes


async def test_a_full_store_is_an_alarm_at_once_raised_once_and_cleared_by_a_write() -> None:
    watch, store, clock, events, changes = make()
    await watch.check()
    assert events == []
    store.error = StoreFull("Redis refused the write: OOM", op="probe_write")
    await watch.check()
    await watch.check()
    assert [(e.kind, e.data["alarm"]) for e in events] == [("alarm_raised", FULL_ALARM)]
    assert "OOM" in events[0].data["error"]
    assert changes == [1]
    clock.t += 42.0
    store.error = None
    await watch.check()
    assert [(e.kind, e.data["alarm"]) for e in events][1:] == [("alarm_cleared", FULL_ALARM)]
    assert events[1].data["active_s"] == 42.0
    assert watch.active == []


async def test_a_short_outage_is_no_alarm_a_long_one_is() -> None:
    watch, store, clock, events, _changes = make()
    store.error = StoreUnavailable("connection refused", op="probe_write")
    await watch.check()
    clock.t += 9.0
    await watch.check()
    assert events == []
    store.error = None
    await watch.check()  # back within the delay: nothing to report
    assert events == []
    store.error = StoreUnavailable("connection refused", op="probe_write")
    await watch.check()
    clock.t += 10.0
    await watch.check()
    assert [(e.kind, e.data["alarm"]) for e in events] == [("alarm_raised", UNAVAILABLE_ALARM)]
    assert not watch.healthy


class HangingStore(ProbeStore):
    """A probe that waits ``wait_s`` of the clock (the store's socket timeout) before it
    fails, as against a stopped Redis."""

    def __init__(self, clock: Clock, wait_s: float) -> None:
        super().__init__()
        self.clock, self.wait_s = clock, wait_s

    async def probe_write(self) -> None:
        if self.error is not None:
            self.clock.t += self.wait_s
        await super().probe_write()


async def test_the_alarm_counts_from_the_last_answer_not_from_the_first_failed_probe() -> None:
    """Redis stopped right after an answer: the next probe (5 s later) waits 5 s for its
    socket timeout; at 10 s without an answer the alarm is raised by that very probe, not
    one or two retries later (it came 16-18 s after the stop before)."""
    clock = Clock()
    store = HangingStore(clock, wait_s=5.0)
    events: list[PendingEvent] = []
    order: list[str] = []

    async def emit(batch: Any) -> None:
        order.append("emit")
        events.extend(batch)

    watch = StoreWatch(store, emit, unavailable_after_s=10.0, monotonic=clock,  # type: ignore[arg-type]
                       wall=clock, on_change=lambda: order.append("state"))
    await watch.check()  # answered at t=100
    store.error = StoreUnavailable("timeout", op="probe_write")
    clock.t += 5.0
    await watch.check()  # starts at 105, gives up at 110
    assert [(e.kind, e.data["alarm"]) for e in events] == [("alarm_raised", UNAVAILABLE_ALARM)]
    assert order == ["state", "emit"]  # the retained state first: the emit may wait


async def test_the_store_answering_other_operations_is_no_outage() -> None:
    """Only the probe's answers lost (or Redis down just after another operation's
    answer): the 10 s run from the store's last answer to anything."""
    watch, store, clock, events, _changes = make()
    store.answered_at = clock.t  # type: ignore[attr-defined]
    store.error = StoreUnavailable("probe lost", op="probe_write")
    await watch.check()
    clock.t += 8.0
    store.answered_at = clock.t  # type: ignore[attr-defined]  # a commit answered
    clock.t += 5.0
    await watch.check()  # 13 s after the probe's last answer, 5 s after the store's
    assert events == []
    clock.t += 5.0
    await watch.check()
    assert [(e.kind, e.data["alarm"]) for e in events] == [("alarm_raised", UNAVAILABLE_ALARM)]
