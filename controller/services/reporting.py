"""Everything the cabinet tells dispatch: events through the durable outbox, the
retained state snapshot, and the active alarms behind it.

Events: :class:`EventSink` commits every domain event to the store's outbox *before*
anything publishes it, in the order the domain produced them; :class:`OutboxPump`
publishes the pending events in sequence order and removes each one only once the broker
acknowledged it (QoS 1 PUBACK). A restart or a reconnect simply resumes from what is
pending, with the original ids, sequence numbers and times, so dispatch dedupes by id
and sees no gap.

If the store itself is unreachable (Redis restarting), events wait in memory, in order,
and are committed as soon as it answers; they are never reordered or dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from controller.contract.messages import Event as EventMessage
from controller.contract.messages import encode
from controller.domain.cabinet_model import CabinetModel, Emitted
from controller.domain.events import EventKind
from controller.mqtt.link import LinkDown, MqttLinkError
from controller.store import Store
from controller.store.errors import StoreDataError, StoreError, StoreUnavailable
from controller.store.records import Event

__all__ = ["AlarmBoard", "EventSink", "OutboxPump", "PendingEvent", "StateKeeper",
           "StatePublisher"]

log = logging.getLogger(__name__)


def iso(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class PendingEvent:
    """An event waiting to be committed: kind, compartment, data and wall time."""

    __slots__ = ("at_wall", "compartment", "data", "kind")

    def __init__(
        self, kind: str, data: dict[str, Any], at_wall: float, compartment: str | None = None
    ) -> None:
        self.kind = kind
        self.data = data
        self.at_wall = at_wall
        self.compartment = compartment

    @classmethod
    def of(cls, emitted: Emitted) -> PendingEvent:
        return cls(emitted.kind.value, emitted.data(), emitted.at_wall, emitted.compartment)


class AlarmBoard:
    """The alarms active now, with the time each was raised, fed by the events."""

    def __init__(self) -> None:
        # (alarm, compartment, board, zone, signal): one compartment's door and latch
        # may flap at once, two incidents.
        self._active: dict[tuple[str, str | None, str | None, str | None, str | None],
                           float] = {}

    def feed(self, event: PendingEvent) -> None:
        alarm = event.data.get("alarm")
        if not isinstance(alarm, str):
            return
        board = event.data.get("board")
        zone = event.data.get("zone")
        signal = event.data.get("signal")
        key = (alarm, event.compartment, board if isinstance(board, str) else None,
               zone if isinstance(zone, str) else None,
               signal if isinstance(signal, str) else None)
        # Logged here, where every alarm event passes: a warning for each raise (journalctl
        # -p warning lists them), an info line for each clear, with what it is about.
        where = {k: v for k, v in (("compartment", event.compartment), ("board", key[2]),
                                   ("zone", key[3]), ("signal", key[4])) if v is not None}
        about = "".join(f" {v}" for v in where.values())
        if event.kind == EventKind.ALARM_RAISED.value:
            self._active.setdefault(key, event.at_wall)
            log.warning(f"alarm raised: {alarm}{about}",
                        extra={"ctx": {"alarm": alarm, **where}})
        elif event.kind == EventKind.ALARM_CLEARED.value:
            self._active.pop(key, None)
            log.info(f"alarm cleared: {alarm}{about}",
                     extra={"ctx": {"alarm": alarm, **where,
                                    "active_s": event.data.get("active_s")}})

    def active(self) -> list[dict[str, Any]]:
        out = []
        for (kind, compartment, board, zone, _signal), since in sorted(self._active.items(),
                                                              key=lambda i: i[1]):
            item: dict[str, Any] = {"kind": kind, "since": iso(since)}
            if compartment is not None:
                item["compartment"] = compartment
            if board is not None:
                item["board"] = board
            if zone is not None:
                item["zone"] = zone
            out.append(item)
        return out


class EventSink:
    """Commits events to the outbox in order; wakes the pump after each commit."""

    def __init__(
        self,
        store: Store,
        *,
        on_committed: Callable[[], None] = lambda: None,
        alarms: AlarmBoard | None = None,
        retry_s: float = 0.5,
        max_backlog: int = 100_000,
    ) -> None:
        self._store = store
        self._on_committed = on_committed
        self.alarms = alarms or AlarmBoard()
        self._backlog: deque[PendingEvent] = deque()
        self._lock = asyncio.Lock()
        self._retry_s = retry_s
        self._max_backlog = max_backlog
        self._retry_task: asyncio.Task[None] | None = None
        self.committed = 0
        self.dropped_invalid = 0

    @property
    def backlog(self) -> int:
        """Events waiting for the store to come back."""
        return len(self._backlog)

    async def emit(self, events: Iterable[Emitted | PendingEvent]) -> list[Event]:
        """Queue ``events`` in order and commit everything queued. Returns the events
        committed by this call (fewer when the store is down: the rest follow later)."""
        added = False
        for item in events:
            pending = item if isinstance(item, PendingEvent) else PendingEvent.of(item)
            self.alarms.feed(pending)
            if len(self._backlog) >= self._max_backlog:
                # Memory is the last resort while Redis is down; past this the oldest
                # in-memory event is lost, loudly.
                lost = self._backlog.popleft()
                log.critical("event backlog full, oldest dropped",
                             extra={"ctx": {"kind": lost.kind}})
            self._backlog.append(pending)
            added = True
        if not added:
            return []
        return await self.flush()

    async def flush(self) -> list[Event]:
        done: list[Event] = []
        async with self._lock:
            while self._backlog:
                head = self._backlog[0]
                try:
                    event = await self._store.append(
                        head.kind, head.data, head.at_wall, head.compartment
                    )
                except StoreDataError as exc:
                    # A bug, not an outage: say so, keep the rest flowing.
                    self._backlog.popleft()
                    self.dropped_invalid += 1
                    log.error("event refused by the store",
                              extra={"ctx": {"kind": head.kind, "error": str(exc)}})
                    continue
                except StoreError as exc:
                    self._schedule_retry(exc)
                    break
                self._backlog.popleft()
                self.committed += 1
                done.append(event)
        if done:
            self._on_committed()
        return done

    def _schedule_retry(self, exc: BaseException) -> None:
        if self._retry_task is not None and not self._retry_task.done():
            return
        log.warning("store unavailable, events held in memory",
                    extra={"ctx": {"backlog": len(self._backlog), "error": str(exc)}})

        async def retry() -> None:
            while self._backlog:
                await asyncio.sleep(self._retry_s)
                await self.flush()

        self._retry_task = asyncio.get_running_loop().create_task(retry(), name="event-retry")

    async def close(self) -> None:
        if self._retry_task is not None:
            self._retry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry_task


class StateKeeper:
    """Keeps each compartment's stored form in step with the model: saved whenever it
    changed, *before* the events that tell about the change are committed (state before
    story), so a restart finds a loaded compartment loaded."""

    def __init__(
        self, model: CabinetModel, store: Store, sink: EventSink,
        saved: Mapping[str, dict[str, Any] | None] | None = None,
    ) -> None:
        self._model = model
        self._store = store
        self._sink = sink
        self._saved: dict[str, dict[str, Any] | None] = {
            cid: (saved or {}).get(cid) for cid in model.compartment_ids()}

    async def save(self, compartment: str) -> None:
        """Save ``compartment`` if its stored form changed; raises StoreError."""
        state = self._model.stored_state(compartment)
        if state != self._saved.get(compartment):
            await self._store.save_compartment(compartment, state)
            self._saved[compartment] = state

    async def emit(self, events: Iterable[Emitted | PendingEvent]) -> list[Event]:
        events = list(events)
        for cid in {e.compartment for e in events if e.compartment is not None}:
            if cid not in self._saved:
                continue
            try:
                await self.save(cid)
            except StoreError as exc:
                # Saved again with its next change; the events still reach the outbox.
                log.error("compartment state not saved",
                          extra={"ctx": {"compartment": cid, "error": str(exc)}})
        return await self._sink.emit(events)


def event_payload(event: Event) -> bytes:
    """The ``events`` message of a stored event (contract model, validated)."""
    return encode(
        EventMessage(
            id=event.id,
            boot_id=event.boot_id,
            seq=event.seq,
            kind=event.kind,
            at=datetime.fromisoformat(event.at.replace("Z", "+00:00")),
            compartment=event.compartment,
            data=event.data,
        )
    )


def _honour_cancel() -> None:
    """Raise CancelledError if this task was asked to stop: a cancellation that a library
    call swallowed on the way (seen with a stop arriving mid-publish) must still end the
    loop, or the daemon's stop (and an ``apply_config`` restart) waits for ever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class OutboxPump:
    """Publishes pending events in sequence order, acknowledging each after its PUBACK."""

    def __init__(
        self,
        store: Store,
        publish: Callable[[str, bytes], Awaitable[None]],
        topic: str,
        *,
        wait_connected: Callable[[], Awaitable[None]],
        batch: int = 100,
        idle_recheck_s: float = 5.0,
    ) -> None:
        self._store = store
        self._publish = publish
        self._topic = topic
        self._wait_connected = wait_connected
        self._batch = batch
        self._idle_recheck_s = idle_recheck_s
        self._wake = asyncio.Event()
        self.published = 0
        self.last_published_seq = 0

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled: drain the outbox whenever there is something and a broker."""
        while True:
            _honour_cancel()
            await self._wait_connected()
            try:
                drained = await self.drain()
            except (LinkDown, MqttLinkError):
                await asyncio.sleep(0.2)  # the link is reconnecting; wait_connected blocks
                continue
            except StoreUnavailable:
                await asyncio.sleep(0.5)
                continue
            if drained:
                continue
            self._wake.clear()
            _honour_cancel()
            with contextlib.suppress(TimeoutError):
                # Re-check now and then: an event committed by another process, or a wake
                # lost to a race, is still published. asyncio.timeout, not wait_for: on
                # 3.11 wait_for swallows a cancellation that arrives as the wake comes (a
                # stop right after an event), and the pump, hence the daemon, never ends.
                async with asyncio.timeout(self._idle_recheck_s):
                    await self._wake.wait()

    async def drain(self) -> int:
        """Publish one batch of pending events; returns how many were published."""
        events = await self._store.pending(self._batch)
        for event in events:
            await self._publish(self._topic, event_payload(event))
            await self._store.ack(event.id)
            self.published += 1
            self.last_published_seq = event.seq
        return len(events)


class StatePublisher:
    """Publishes the retained state snapshot on change, coalesced: many changes within
    ``coalesce_s`` become one message."""

    def __init__(
        self,
        build: Callable[[], Awaitable[bytes]],
        publish: Callable[[bytes], Awaitable[None]],
        *,
        coalesce_s: float = 0.2,
    ) -> None:
        self._build = build
        self._publish = publish
        self._coalesce_s = coalesce_s
        self._dirty = asyncio.Event()
        self.published = 0

    def mark_dirty(self) -> None:
        self._dirty.set()

    async def run(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self._coalesce_s)
            self._dirty.clear()
            try:
                await self._publish(await self._build())
                self.published += 1
            except (MqttLinkError, StoreError):
                # Not connected: the next connection marks the state dirty again.
                pass
