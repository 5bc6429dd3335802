"""Everything the cabinet tells dispatch: events through the durable outbox, the
retained state snapshot, and the active alarms behind it.

Events: :class:`EventSink` commits every domain event to the store's outbox *before*
anything publishes it, in the order the domain produced them (events queued while a
commit is under way are committed together in the next one: group commit);
:class:`OutboxPump` publishes the pending events in sequence order, several in flight at
once, and removes them only once the broker acknowledged them (QoS 1 PUBACK), the
acknowledged run in one transaction. A restart or a reconnect simply resumes from what is
pending, with the original ids, sequence numbers and times, so dispatch dedupes by id
and sees no gap.

If the store itself is unreachable (Redis restarting), events wait in memory, in order,
and are committed as soon as it answers; they are never reordered or dropped. Each batch
of events is committed with the compartment states and door views it leaves (one
transaction), so a restart after a crash compares the *reported* doors with the sensors
and reports what the dead process saw but never committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from controller.contract.messages import ClockReading, encode, from_builtins
from controller.contract.messages import Event as EventMessage
from controller.domain.cabinet_model import CabinetModel, Emitted
from controller.domain.events import EventKind
from controller.services.ports import Publisher, PublishError
from controller.store import Store
from controller.store.errors import (
    StoreDataError,
    StoreError,
    StoreUnavailable,
    UnknownCommand,
)
from controller.store.records import CommandReply, Event, NewEvent

__all__ = ["AlarmBoard", "EventSink", "OutboxPump", "PendingEvent", "StateKeeper",
           "StatePublisher"]

log = logging.getLogger(__name__)


def iso(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class PendingEvent:
    """An event waiting to be committed: kind, compartment, data and wall time, and the
    id it will be committed under, drawn once, so that a commit retried after its
    outcome was lost (Redis gone after EXEC) does not commit it twice."""

    __slots__ = ("at_wall", "compartment", "data", "event_id", "kind")

    def __init__(
        self, kind: str, data: dict[str, Any], at_wall: float, compartment: str | None = None
    ) -> None:
        self.kind = kind
        self.data = data
        self.at_wall = at_wall
        self.compartment = compartment
        self.event_id = str(uuid.uuid4())

    @classmethod
    def of(cls, emitted: Emitted) -> PendingEvent:
        return cls(emitted.kind.value, emitted.data(), emitted.at_wall, emitted.compartment)

    @classmethod
    def command_interrupted(cls, command_id: str, may_have_pulsed: list[str]) -> PendingEvent:
        """A command cut short (by a restart, or by a fault while it acted): never acted on
        again; ``may_have_pulsed`` the compartments its pulse intent named (the event's
        compartment when there is exactly one)."""
        return cls("command_interrupted",
                   {"command": command_id, "may_have_pulsed": may_have_pulsed}, time.time(),
                   may_have_pulsed[0] if len(may_have_pulsed) == 1 else None)


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

    def restore(self, alarm: str, since_wall: float, *, compartment: str | None = None) -> None:
        """An alarm raised before this start and still active (restored from the store, as
        a compartment's fault or a lane's ``code_guessing``): listed, with its first raise
        time, and no new event (its ``alarm_raised`` was reported then)."""
        key = (alarm, compartment, None, None, None)
        if key not in self._active:
            self._active[key] = since_wall
            log.info(f"alarm still active from before the start: {alarm}"
                     + (f" {compartment}" if compartment else ""),
                     extra={"ctx": {"alarm": alarm, "compartment": compartment}})

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


class _Batch:
    """The events of one emit and the state they leave reported, committed as one."""

    __slots__ = ("compartments", "doors", "events", "split_from_group")

    def __init__(self, events: list[PendingEvent], compartments: dict[str, dict[str, Any]],
                 doors: dict[str, dict[str, Any]]) -> None:
        self.events = events
        self.compartments = compartments
        self.doors = doors
        #: A part of a batch the store refused: committed alone, never grouped again.
        self.split_from_group = False

    def split(self) -> list[_Batch]:
        """One batch per event (the states with the last), to isolate a bad event."""
        if len(self.events) <= 1:
            return [self]
        parts = [_Batch([e], {}, {}) for e in self.events]
        parts[-1].compartments, parts[-1].doors = self.compartments, self.doors
        for part in parts:
            part.split_from_group = True
        return parts


def reported_doors(events: Iterable[PendingEvent]) -> dict[str, dict[str, Any]]:
    """Per compartment, the door as ``events`` leave it reported to dispatch: open (and
    whether that open was authorised) or closed. Stored with the events in the same
    transaction, it tells a restart which movements dispatch has heard of."""
    doors: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.compartment is None:
            continue
        if event.kind == EventKind.DOOR_OPENED.value:
            doors[event.compartment] = {
                "open": True, "authorised": bool(event.data.get("authorised", False))}
        elif event.kind == EventKind.DOOR_CLOSED.value:
            doors[event.compartment] = {"open": False, "authorised": False}
    return doors


class EventSink:
    """Commits events to the outbox in order; wakes the pump after each commit.

    The events of one :meth:`emit` are committed in one transaction with the compartment
    states given and the door views they imply (:func:`reported_doors`): a crash leaves
    either all of it or none of it, never a state that claims what no event told.
    """

    def __init__(
        self,
        store: Store,
        *,
        on_committed: Callable[[], None] = lambda: None,
        hand_over: Callable[[list[Event]], None] | None = None,
        alarms: AlarmBoard | None = None,
        retry_s: float = 0.5,
        max_backlog: int = 100_000,
        group_max: int = 256,
    ) -> None:
        self._store = store
        self._group_max = group_max
        self._flusher: asyncio.Task[None] | None = None
        self._on_committed = on_committed
        #: Given the events of each commit, in order, before ``on_committed`` (the pump
        #: publishes them without reading them back from the store).
        self._hand_over = hand_over
        self.alarms = alarms or AlarmBoard()
        self._backlog: deque[_Batch] = deque()
        self._held = 0
        self._lock = asyncio.Lock()
        self._retry_s = retry_s
        self._max_backlog = max_backlog
        self._retry_task: asyncio.Task[None] | None = None
        self.committed = 0
        self.dropped_invalid = 0

    @property
    def backlog(self) -> int:
        """Events waiting for the store to come back."""
        return self._held

    async def emit(
        self,
        events: Iterable[Emitted | PendingEvent],
        *,
        compartments: Mapping[str, dict[str, Any]] | None = None,
    ) -> list[Event]:
        """Queue ``events`` in order (with ``compartments``, the states they leave) and
        commit everything queued. Returns the events committed by this call (fewer when
        the store is down: the rest follow later, in order)."""
        if not self._queue(events, compartments):
            return []
        return await self.flush()

    def submit(
        self,
        events: Iterable[Emitted | PendingEvent],
        *,
        compartments: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        """Queue ``events`` like :meth:`emit`, without waiting for the commit: the next
        group commit takes them with everything queued before and after them (for the
        poller, which must not wait on an fsync between two polls). Nothing is lost to
        the wait: an event not yet committed has been told to nobody, and a restart
        reports a door movement it missed from the stored door records."""
        if not self._queue(events, compartments):
            return
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_queued(), name="event-commit")
            self._flusher.add_done_callback(_log_failure)

    async def _flush_queued(self) -> None:
        for _ in range(10_000):  # bounded: each flush commits, drops, or hands over
            if not self._backlog:
                return
            await self.flush()
            if self._retry_task is not None and not self._retry_task.done():
                return  # the store is away: the retry task flushes when it is back

    def _queue(
        self,
        events: Iterable[Emitted | PendingEvent],
        compartments: Mapping[str, dict[str, Any]] | None,
    ) -> bool:
        pending: list[PendingEvent] = []
        for item in events:
            event = item if isinstance(item, PendingEvent) else PendingEvent.of(item)
            self.alarms.feed(event)
            pending.append(event)
        if not pending and not compartments:
            return False
        while pending and self._held + len(pending) > self._max_backlog and self._backlog:
            # Memory is the last resort while Redis is down; past this the oldest
            # in-memory event is lost, loudly.
            head = self._backlog[0]
            if head.events:
                lost = head.events.pop(0)
                self._held -= 1
                log.critical("event backlog full, oldest dropped",
                             extra={"ctx": {"kind": lost.kind}})
            if not head.events:
                self._backlog.popleft()
        self._backlog.append(_Batch(pending, dict(compartments or {}),
                                    reported_doors(pending)))
        self._held += len(pending)
        return True

    def _group(self) -> None:
        """Merge the batches queued behind the head into it, in order, up to
        ``group_max`` events: one transaction (one fsync) for all of them. The states of a
        later batch replace those of an earlier one (they are newer)."""
        if len(self._backlog) < 2:
            return
        head = self._backlog.popleft()
        events = list(head.events)
        compartments = dict(head.compartments)
        doors = dict(head.doors)
        while self._backlog and len(events) + len(self._backlog[0].events) <= self._group_max:
            nxt = self._backlog.popleft()
            events.extend(nxt.events)
            compartments.update(nxt.compartments)
            doors.update(nxt.doors)
        self._backlog.appendleft(_Batch(events, compartments, doors))

    async def flush(self) -> list[Event]:
        async with self._lock:
            done = await self._commit_queued()
        self._committed(done)
        return done

    async def _commit_queued(self, *, keep: int = 0) -> list[Event]:
        """Commit the queued batches, grouped, in order, until ``keep`` groups are left
        (the caller holds the lock). A store that fails stops it (the retry task takes
        over); an event the store refuses is isolated and dropped, loudly."""
        done: list[Event] = []
        # Bounded: each pass commits, drops or splits the head (a split batch is made of
        # one-event batches, which are never split again).
        for _ in range(4 * (self._held + len(self._backlog)) + 1):
            if len(self._backlog) <= keep:
                break
            if not self._backlog[0].split_from_group:
                self._group()
                if len(self._backlog) <= keep:
                    break
            head = self._backlog[0]
            try:
                committed = await self._store.commit(
                    [NewEvent(e.kind, e.data, e.at_wall, e.compartment, e.event_id)
                     for e in head.events],
                    compartments=head.compartments, doors=head.doors)
            except StoreDataError as exc:
                # A bug, not an outage: say so, keep the rest flowing.
                self._backlog.popleft()
                if len(head.events) > 1:
                    self._backlog.extendleft(reversed(head.split()))
                    continue
                self._held -= len(head.events)
                self.dropped_invalid += len(head.events)
                log.error("event refused by the store",
                          extra={"ctx": {"kinds": [e.kind for e in head.events],
                                         "error": str(exc)}})
                continue
            except StoreError as exc:
                self._schedule_retry(exc)
                break
            self._backlog.popleft()
            self._held -= len(head.events)
            self.committed += len(committed)
            done.extend(committed)
        return done

    def _committed(self, done: list[Event]) -> None:
        if done:
            if self._hand_over is not None:
                self._hand_over(done)
            self._on_committed()

    async def finish_command(self, reply: CommandReply) -> dict[str, Any]:
        """Store a command's reply after everything queued before it, the last group of
        queued events in the same transaction as the reply
        (:meth:`Store.commit_with_reply`): a reply on record never tells of an event
        that is not. A door command's ``unlock_pulse_acked`` is queued, not committed,
        before its reply is stored: one fsync for both, not two.

        Returns the reply on record (the first stored for this id). Raises StoreError
        like :meth:`Store.finish_command` (UnknownCommand: no record; StoreUnavailable:
        events are still held in memory, so the reply is not stored ahead of them). The
        events committed meanwhile are handed over; the rest stay queued, in order."""
        done: list[Event] = []
        try:
            async with self._lock:
                done += await self._commit_queued(keep=1)
                if len(self._backlog) > 1:
                    raise StoreUnavailable("events are still held in memory",
                                           op="finish_command")
                if self._backlog:
                    head = self._backlog[0]
                    try:
                        committed, stored = await self._store.commit_with_reply(
                            [NewEvent(e.kind, e.data, e.at_wall, e.compartment, e.event_id)
                             for e in head.events],
                            reply, compartments=head.compartments, doors=head.doors)
                    except StoreDataError:
                        # An event or the reply refused: the events go the ordinary way
                        # (a bad one isolated), then the reply alone, which says why.
                        done += await self._commit_queued()
                        if self._backlog:
                            raise StoreUnavailable("events are still held in memory",
                                                   op="finish_command") from None
                    except StoreError as exc:
                        self._schedule_retry(exc)
                        raise
                    else:
                        self._backlog.popleft()
                        self._held -= len(head.events)
                        self.committed += len(committed)
                        done.extend(committed)
                        if stored is None:
                            raise UnknownCommand(
                                f"no record for command {reply.command_id!r}",
                                op="finish_command", command_id=reply.command_id)
                        return stored
                return await self._store.finish_command(
                    reply.command_id, reply.reply, unpulsed=reply.unpulsed)
        finally:
            self._committed(done)

    async def save_now(self, compartments: Mapping[str, dict[str, Any]]) -> None:
        """Commit compartment states at once, after everything queued before them.
        Raises StoreError (StoreUnavailable while events are still held in memory):
        a state is never written ahead of the events that came before it."""
        await self.flush()
        async with self._lock:
            if self._backlog:
                raise StoreUnavailable("events are still held in memory", op="commit")
            await self._store.commit([], compartments=compartments)

    def _schedule_retry(self, exc: BaseException) -> None:
        if self._retry_task is not None and not self._retry_task.done():
            return
        log.warning("store unavailable, events held in memory",
                    extra={"ctx": {"backlog": self._held, "error": str(exc)}})

        async def retry() -> None:
            while self._backlog:
                await asyncio.sleep(self._retry_s)
                await self.flush()

        self._retry_task = asyncio.get_running_loop().create_task(retry(), name="event-retry")

    async def close(self) -> None:
        for task in (self._flusher, self._retry_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


class StateKeeper:
    """Keeps each compartment's stored form in step with the model. A state that changed
    with events is committed *with* them, in one transaction (see :class:`EventSink`), so
    a crash cannot leave a stored state ahead of, or behind, the story dispatch heard: a
    restart finds a loaded compartment loaded, and reports what it never committed."""

    def __init__(
        self, model: CabinetModel, store: Store, sink: EventSink,
        saved: Mapping[str, dict[str, Any] | None] | None = None,
    ) -> None:
        self._model = model
        self._store = store
        self._sink = sink
        self._saved: dict[str, dict[str, Any] | None] = {
            cid: (saved or {}).get(cid) for cid in model.compartment_ids()}

    def _changed(self, compartments: Iterable[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for cid in compartments:
            if cid not in self._saved:
                continue
            state = self._model.stored_state(cid)
            if state != self._saved.get(cid):
                out[cid] = state
        return out

    async def save(self, compartment: str) -> None:
        """Save ``compartment`` if its stored form changed; raises StoreError."""
        changed = self._changed([compartment])
        if changed:
            await self._sink.save_now(changed)
            self._saved.update(changed)

    async def emit(self, events: Iterable[Emitted | PendingEvent]) -> list[Event]:
        events, changed = self._with_states(events)
        return await self._sink.emit(events, compartments=changed)

    async def finish_command(self, reply: CommandReply) -> dict[str, Any]:
        """Store a command's reply with the events queued before it
        (:meth:`EventSink.finish_command`)."""
        return await self._sink.finish_command(reply)

    async def submit(self, events: Iterable[Emitted | PendingEvent]) -> None:
        """Like :meth:`emit`, without waiting for the commit (:meth:`EventSink.submit`):
        the poller's emit."""
        events, changed = self._with_states(events)
        self._sink.submit(events, compartments=changed)

    def _with_states(
        self, events: Iterable[Emitted | PendingEvent]
    ) -> tuple[list[Emitted | PendingEvent], dict[str, dict[str, Any]]]:
        listed = list(events)
        changed = self._changed(sorted({e.compartment for e in listed
                                        if e.compartment is not None}))
        # Taken as saved now: the sink commits it with these events, or holds both.
        self._saved.update(changed)
        return listed, changed


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("event commit task failed", exc_info=task.exception())


def event_payload(event: Event) -> bytes:
    """The ``events`` message of a stored event (contract model, validated)."""
    return encode(
        EventMessage(
            id=event.id,
            boot_id=event.boot_id,
            seq=event.seq,
            kind=event.kind,
            at=datetime.fromisoformat(event.at.replace("Z", "+00:00")),
            cabinet_clock=None if event.cabinet_clock is None
            else from_builtins(ClockReading, event.cabinet_clock),
            compartment=event.compartment,
            data=event.data,
        )
    )


def honour_cancel() -> None:
    """Raise CancelledError if this task was asked to stop: a cancellation that a library
    call swallowed on the way (seen with a stop arriving mid-publish) must still end the
    loop, or the daemon's stop (and an ``apply_config`` restart) waits for ever. Python
    3.11's ``asyncio.wait_for``, which redis-py (the store's client under ``memory://``)
    wraps around every command it sends,
    returns the answer and drops the cancellation when both arrive together."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class OutboxPump:
    """Publishes pending events in sequence order, several in flight at once, and removes
    them from the outbox once the broker acknowledged them.

    Up to ``window`` QoS 1 publishes wait for their PUBACK at a time (the broker keeps the
    messages of one topic in order, and they leave in sequence order over one
    connection). As acknowledgements come in, the longest run of events acknowledged from
    the start of the batch is removed in one transaction (:meth:`Store.ack_many`), at
    most every ``ack_every`` events or when the batch ends: what stays pending is always
    a suffix of what was sent. A failed publish ends the batch: the acknowledged run
    before it is removed, the rest stays pending and is published again (dispatch
    dedupes by id). Catching up after an outage is bounded by the broker's throughput,
    not by one round trip per event.
    """

    def __init__(
        self,
        store: Store,
        publish: Publisher,
        topic: str,
        *,
        wait_connected: Callable[[], Awaitable[None]],
        batch: int = 512,
        window: int = 64,
        ack_every: int = 128,
        idle_recheck_s: float = 5.0,
    ) -> None:
        self._store = store
        self._publish = publish
        self._topic = topic
        self._wait_connected = wait_connected
        self._batch = batch
        self._window = max(1, window)
        self._ack_every = max(1, ack_every)
        self._idle_recheck_s = idle_recheck_s
        self._wake = asyncio.Event()
        self.published = 0
        self.last_published_seq = 0
        self._unacked: set[str] = set()
        self._handed: list[Event] = []
        self.from_hand_over = 0

    def wake(self) -> None:
        self._wake.set()

    def hand_over(self, events: list[Event]) -> None:
        """Events this process just committed, in order; the next batch publishes them
        without reading the store when they follow the last event published with no gap
        (otherwise, or past one batch, the store is read as usual). Then wakes the pump."""
        if len(self._handed) + len(events) <= self._batch:
            self._handed.extend(events)
        else:
            self._handed.clear()  # bounded: the store has them all
        self._wake.set()

    def _handed_batch(self) -> list[Event] | None:
        """The handed-over events if they are exactly the next ones to publish: after at
        least one batch read from the store, the first follows the last published seq and
        the rest follow it with no gap. Anything else (a first batch after a start, events
        committed by another process in between, a failed publish, a hand-over lost to
        the bound) reads the store."""
        handed, self._handed = self._handed, []
        last = self.last_published_seq
        handed = [event for event in handed if event.seq > last]
        if not handed or last == 0 or handed[0].seq != last + 1:
            return None
        for before, after in itertools.pairwise(handed):
            if after.seq != before.seq + 1:
                return None
        return handed

    async def run(self) -> None:
        """Until cancelled: drain the outbox whenever there is something and a broker."""
        while True:
            honour_cancel()
            await self._wait_connected()
            # Cleared before reading: an event committed from here on sets it again, so a
            # short batch needs no second read to know the outbox is empty.
            self._wake.clear()
            try:
                drained = await self.drain()
            except PublishError:
                await asyncio.sleep(0.2)  # the link is reconnecting; wait_connected blocks
                continue
            except StoreError:
                # Redis down, or refusing the ack (full): the events stay pending and go
                # when it writes again; none is published twice meanwhile (drain).
                await asyncio.sleep(0.5)
                continue
            if drained >= self._batch or (drained and self._wake.is_set()):
                continue
            honour_cancel()
            with contextlib.suppress(TimeoutError):
                # Re-check now and then: an event committed by another process, or a wake
                # lost to a race, is still published. asyncio.timeout, not wait_for: on
                # 3.11 wait_for swallows a cancellation that arrives as the wake comes (a
                # stop right after an event), and the pump, hence the daemon, never ends.
                async with asyncio.timeout(self._idle_recheck_s):
                    await self._wake.wait()

    async def drain(self) -> int:
        """Publish one batch of pending events; returns how many were acknowledged and
        removed. Raises PublishError (after removing the acknowledged run) when a publish
        failed, StoreError when the store did.

        An event the broker acknowledged but the store could not remove (Redis refusing
        writes) is not published again while this process runs: only its removal is
        retried."""
        handed = self._handed_batch()
        if handed is not None:
            events = handed
            self.from_hand_over += len(events)
        else:
            events = await self._store.pending(self._batch)
            # Bounded: only ids still pending are remembered.
            self._unacked &= {event.id for event in events}
        if not events:
            return 0
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self._window)
        sent: list[asyncio.Task[None]] = []
        acked = 0  # events of the batch removed from the outbox so far
        ok_upto = 0  # events of the batch acknowledged by the broker without a gap
        failed = False

        async def one(event: Event) -> None:
            nonlocal failed
            try:
                if event.id not in self._unacked:
                    await self._publish(self._topic, event_payload(event))
                    self._unacked.add(event.id)
            except BaseException:
                failed = True
                raise
            finally:
                slots.release()

        def advance() -> int:
            nonlocal ok_upto
            while ok_upto < len(sent) and sent[ok_upto].done() \
                    and not sent[ok_upto].cancelled() and sent[ok_upto].exception() is None:
                ok_upto += 1
            return ok_upto

        async def settle() -> None:
            nonlocal acked
            upto = advance()
            if upto > acked:
                removed = [e.id for e in events[acked:upto]]
                await self._store.ack_many(removed)
                self._unacked.difference_update(removed)
                self.published += upto - acked
                self.last_published_seq = events[upto - 1].seq
                acked = upto

        try:
            for event in events:
                await slots.acquire()
                if failed:
                    slots.release()
                    break
                # Tasks start in creation order: the messages leave in sequence order.
                sent.append(loop.create_task(one(event), name="event-publish"))
                if advance() - acked >= self._ack_every:
                    await settle()
            if sent:
                await asyncio.wait(sent)
            await settle()
            for task in sent[acked:]:
                if task.cancelled():
                    raise PublishError("publish cancelled")
                exc = task.exception()
                if exc is not None:
                    raise exc
            return acked
        finally:
            for task in sent:
                if not task.done():
                    task.cancel()
            for task in sent:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: a failure behind the first is expected


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
            except (PublishError, StoreError):
                # Not connected: the next connection marks the state dirty again.
                pass
