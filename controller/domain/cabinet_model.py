"""The whole cabinet as one aggregate: signals, doors and compartments joined.

The pieces each know one thing: :class:`~controller.domain.signals.CabinetSignals` turns
board polls into readings, :class:`~controller.domain.door.DoorMachine` turns readings
and pulses into door facts, :class:`~controller.domain.compartment.Compartment` turns
door facts into the life of an order. :class:`CabinetModel` feeds each one's output to
the next, so the services only hand it polls, pulses, commands and the time.

Two clocks come in with every call. Door timing (open detection, ajar) runs on the
*monotonic* clock: an NTP step after boot must not raise a false ajar alarm. Order
lifetimes (pickup windows of hours or days, which must survive a reboot) run on the
*wall* clock. Every event leaves with its wall time (``Emitted.at_wall``), computed from
the monotonic time of the fact where the fact was timed by the monotonic clock.

Pure: no I/O, no asyncio; every method returns what happened as :class:`Emitted`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from controller.domain.compartment import (
    Compartment,
    Compartments,
    CompartmentSpec,
    OpenPurpose,
    Order,
)
from controller.domain.door import DoorMachine, DoorState, DoorTiming
from controller.domain.events import DomainEvent, EventKind
from controller.domain.signals import (
    CabinetSignals,
    CompartmentReadings,
    CompartmentWiring,
    DoorReading,
    LatchReading,
    OccupancyReading,
    SignalFiltering,
    SignalKind,
)

__all__ = ["CabinetModel", "CompartmentSetup", "Emitted", "Now"]


@dataclass(frozen=True, slots=True)
class Now:
    """One reading of both clocks, taken together."""

    mono: float
    wall: float

    def wall_of(self, mono: float) -> float:
        """Wall time of a monotonic instant (close to now)."""
        return self.wall - (self.mono - mono)


@dataclass(frozen=True, slots=True)
class Emitted:
    """A domain event with its wall time, ready to be committed to the outbox."""

    event: DomainEvent
    at_wall: float

    @property
    def kind(self) -> EventKind:
        return self.event.kind

    @property
    def compartment(self) -> str | None:
        return self.event.compartment

    def data(self) -> dict[str, Any]:
        """The event's details, plus the alarm kind for alarm events."""
        out: dict[str, Any] = dict(self.event.details)
        if self.event.alarm is not None:
            out["alarm"] = self.event.alarm.value
        return out


@dataclass(frozen=True, slots=True)
class CompartmentSetup:
    """Everything the config says about one compartment, in domain terms."""

    spec: CompartmentSpec
    wiring: CompartmentWiring
    timing: DoorTiming


class CabinetModel:
    """Signals, doors and compartments of one cabinet. See the module docstring."""

    def __init__(
        self,
        setups: Iterable[CompartmentSetup],
        *,
        offline_after: int = 3,
        filtering: SignalFiltering | None = None,
        extra_boards: Iterable[str] = (),
        fault_after: int = 3,
        collected_hold_s: float = 0.0,
        stored: dict[str, dict[str, Any]] | None = None,
        reported_doors: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """``stored``: the compartment states a restart finds in the store;
        ``reported_doors``: per compartment, the door as the last committed events left it
        (``{"open": bool, "authorised": bool}``), so the first poll reports what the dead
        process saw but never committed, and nothing it did commit a second time."""
        setups = list(setups)
        stored = stored or {}
        reported = reported_doors or {}
        self._setups = {s.spec.compartment_id: s for s in setups}
        self.signals = CabinetSignals(
            [s.wiring for s in setups],
            offline_after=offline_after,
            filtering=filtering,
            extra_boards=extra_boards,
        )
        self.doors: dict[str, DoorMachine] = {
            s.spec.compartment_id: DoorMachine(
                s.spec.compartment_id, s.timing, has_latch_feedback=s.wiring.latch is not None,
                resume_authorised_open=_resume_authorised(
                    stored.get(s.spec.compartment_id, {}),
                    reported.get(s.spec.compartment_id)),
                reported_open=_reported_open(reported.get(s.spec.compartment_id)),
            )
            for s in setups
        }
        built: list[Compartment] = []
        for s in setups:
            data = stored.get(s.spec.compartment_id)
            if data is not None:
                built.append(
                    Compartment.from_dict(
                        s.spec, data, fault_after=fault_after, collected_hold_s=collected_hold_s
                    )
                )
            else:
                built.append(
                    Compartment(s.spec, fault_after=fault_after, collected_hold_s=collected_hold_s)
                )
        self.compartments = Compartments(built)
        #: Compartments whose declared open was awaited when the process died: their door
        #: gets a fresh unlock window at its first poll (see DoorMachine.resume_unlock_window).
        self._awaited: set[str] = set()
        for c in built:
            purpose = stored.get(c.compartment_id, {}).get("open_purpose")
            if purpose and stored[c.compartment_id].get("door_open_authorised"):
                c.resume_open(OpenPurpose(purpose))
                if _reported_open(reported.get(c.compartment_id)):
                    c.door_opened(0.0)  # its door_opened was committed: the open goes on
            elif (purpose and stored[c.compartment_id].get("open_awaited")
                  and not _reported_open(reported.get(c.compartment_id))):
                c.resume_open(OpenPurpose(purpose))
                self._awaited.add(c.compartment_id)
        self._by_board: dict[str, list[str]] = {}
        self._last_seen: dict[str, tuple[CompartmentReadings, ...]] = {}
        # Doors seen closing whose occupancy sensor sits on another board: the compartment
        # decides (loaded, empty, collected) once that board has been read after the close.
        self._closing: dict[str, float] = {}
        for s in setups:
            for signal in s.wiring.signals():
                ids = self._by_board.setdefault(signal.board, [])
                if s.spec.compartment_id not in ids:
                    ids.append(s.spec.compartment_id)

    # -- queries ---------------------------------------------------------------------

    def setup(self, compartment: str) -> CompartmentSetup:
        self.compartments.get(compartment)  # unknown_compartment if absent
        return self._setups[compartment]

    def compartment_ids(self) -> tuple[str, ...]:
        return tuple(self._setups)

    def next_deadline(self) -> float | None:
        """Earliest monotonic time at which :meth:`tick` may produce a door event."""
        deadlines = [d for d in (m.next_deadline() for m in self.doors.values()) if d is not None]
        return min(deadlines) if deadlines else None

    def snapshot(self) -> dict[str, Any]:
        """The state of every compartment, door and board, JSON-ready."""
        compartments = []
        for compartment in self.compartments:
            cid = compartment.compartment_id
            status = compartment.status()
            door = self.doors[cid].status()
            readings = self.signals.readings(cid)
            order = compartment.order
            compartments.append(
                {
                    "id": cid,
                    "state": status.state.value,
                    "phase": status.phase.value,
                    "size": compartment.spec.size.value,
                    "zone": compartment.spec.zone,
                    "pool": compartment.spec.pool,
                    "order_id": order.order_id if order else None,
                    "goods_inside": status.goods_inside,
                    "blocked": status.blocked,
                    "door": door.state.value,
                    "signals": {
                        "door": _value(readings.door),
                        "latch": _value(readings.latch),
                        "occupancy": _value(readings.occupancy),
                    },
                    "alarms": sorted(
                        a.value
                        for a in (status.alarms | door.alarms | self.signals.active_alarms(cid))
                    ),
                }
            )
        boards = {name: self.signals.board(name).health.value for name in self.signals.boards}
        return {"compartments": compartments, "boards": boards}

    def stored_state(self, compartment: str) -> dict[str, Any]:
        """What the store keeps for one compartment: its life, and whether an authorised
        open is under way (so a restart neither calls it forced nor loses its purpose)."""
        c = self.compartments.get(compartment)
        door = self.doors[compartment].status()
        door_open = door.reading is DoorReading.OPEN
        authorised_open = door_open and door.open_authorised is True
        purpose = c.open_purpose
        # An open declared and not yet seen (its pulse may be on the wire) is kept too, so
        # that a door opening just after a restart is that open, not a forced one.
        kept = purpose is not None and (authorised_open or not door_open)
        return {**c.to_dict(), "door_open_authorised": authorised_open,
                "open_purpose": purpose.value if kept and purpose is not None else None,
                "open_awaited": kept and not door_open}

    # -- facts from the boards -------------------------------------------------------

    def poll_ok(self, board: str, levels: Sequence[bool], now: Now) -> list[Emitted]:
        """A good poll of ``board``: update readings and the doors wired to it."""
        if not self._closing and self.signals.poll_unchanged(board, levels, now.mono):
            # The common case: the same levels as the last poll, every signal of the board
            # settled. No reading changes, so no door can have moved; timers (open
            # detection, ajar) are the ticker's business.
            return []
        out = self._wrap(self.signals.poll_succeeded(board, levels, now.mono), now)
        out.extend(self._settle_closes(board, now))
        seen = tuple(self.signals.readings(cid) for cid in self._by_board.get(board, ()))
        if not out and self._last_seen.get(board) == seen:
            # No filtered reading of this board has changed: no door can have moved.
            # Timers (open detection, ajar) are the ticker's business.
            return out
        self._last_seen[board] = seen
        for cid in self._by_board.get(board, ()):
            out.extend(self._observe(cid, now))
        return out

    def quiet(self, board: str, levels: Sequence[bool]) -> bool:
        """Whether another good poll of ``board`` reading ``levels`` would change nothing
        but its time (the common case of :meth:`poll_ok`): the poller may then have such
        polls read without the model, and hand it the last one's time."""
        return not self._closing and self.signals.settled_on(board, levels)

    def poll_failed(self, board: str, now: Now, reason: str = "") -> list[Emitted]:
        """A failed poll of ``board``; after enough of them its signals are unknown."""
        out = self._wrap(self.signals.poll_failed(board, now.mono, reason), now)
        if self.signals.board(board).health.value == "offline":
            out.extend(self._settle_closes(board, now))  # unknown now: decide in doubt
        self._last_seen.pop(board, None)
        for cid in self._by_board.get(board, ()):
            out.extend(self._observe(cid, now))
        return out

    def tick(self, now: Now) -> list[Emitted]:
        """Time passed: door timers (monotonic), order expiry and holds (wall)."""
        out: list[Emitted] = []
        for cid, door in self.doors.items():
            out.extend(self._door_events(cid, door.tick(now.mono), now))
        for compartment in self.compartments:
            out.extend(self._wrap_wall(compartment.tick(now.wall), now))
        return out

    # -- unlock pulses ---------------------------------------------------------------

    def request_open(
        self, compartment: str, purpose: OpenPurpose, now: Now, reason: str = ""
    ) -> list[Emitted]:
        """Declare why the next pulse happens. Raises DomainError (nothing changed) when
        the compartment may not be opened for that purpose."""
        c = self.compartments.get(compartment)
        if purpose is OpenPurpose.DEPOSIT:
            events = c.open_for_deposit(now.wall)
        elif purpose is OpenPurpose.COLLECTION:
            events = c.open_for_collection(now.wall)
        else:
            events = c.open_for_staff(now.wall, reason)
        return self._wrap_wall(events, now)

    def check_open(self, compartment: str, purpose: OpenPurpose) -> None:
        """Raise DomainError when ``compartment`` is out of use for ``purpose`` (unknown,
        blocked, faulty); changes nothing (:meth:`Compartment.check_open`)."""
        self.compartments.get(compartment).check_open(purpose)

    def withdraw_open(self, compartment: str) -> None:
        """Undo :meth:`request_open` when the open stops before its pulse (a refusal, a
        store that cannot record it): no pending open is left to hold the order back."""
        self.compartments.get(compartment).withdraw_open()

    def pulse_sent(self, compartment: str, now: Now) -> list[Emitted]:
        return self._door_events(compartment, self._door(compartment).pulse_sent(now.mono), now)

    def pulse_acked(self, compartment: str, now: Now) -> list[Emitted]:
        return self._door_events(compartment, self._door(compartment).pulse_acked(now.mono), now)

    def pulse_unconfirmed(self, compartment: str, now: Now, evidence: str = "") -> list[Emitted]:
        """The pulse frame went out and its outcome is unknown. The declared open stands
        for the open-detection timeout: a door opening then is an authorised opening for
        the declared purpose; no opening ends it as ``open_not_detected``, after this
        event (the unlock window waits for the pulse's verdict)."""
        events = self._door(compartment).pulse_unconfirmed(now.mono, evidence)
        return self._door_events(compartment, events, now)

    def pulse_abandoned(self, compartment: str) -> None:
        """The pulse's verdict will never come (its caller stopped in between): its unlock
        window stops waiting for one and ends at its deadline. No event."""
        self._door(compartment).pulse_abandoned()

    def pulse_failed(self, compartment: str, now: Now, reason: str = "") -> list[Emitted]:
        events = self._door(compartment).pulse_failed(now.mono, reason)
        out = self._door_events(compartment, events, now)
        out.extend(self._wrap_wall(self.compartments.get(compartment).unlock_failed(now.wall), now))
        return out

    # -- orders and maintenance --------------------------------------------------------

    def assign(self, compartment: str, order: Order, now: Now) -> list[Emitted]:
        return self._wrap_wall(self.compartments.get(compartment).assign(order, now.wall), now)

    def release(self, compartment: str, now: Now, reason: str = "cancelled") -> list[Emitted]:
        return self._wrap_wall(self.compartments.get(compartment).release(now.wall, reason), now)

    def block(self, compartment: str, now: Now, reason: str = "") -> list[Emitted]:
        return self._wrap_wall(self.compartments.get(compartment).block(now.wall, reason), now)

    def unblock(self, compartment: str, now: Now) -> list[Emitted]:
        return self._wrap_wall(self.compartments.get(compartment).unblock(now.wall), now)

    def clear_fault(self, compartment: str, now: Now) -> list[Emitted]:
        return self._wrap_wall(self.compartments.get(compartment).clear_fault(now.wall), now)

    # -- mechanics -------------------------------------------------------------------

    def _door(self, compartment: str) -> DoorMachine:
        self.compartments.get(compartment)
        return self.doors[compartment]

    def _observe(self, cid: str, now: Now) -> list[Emitted]:
        readings = self.signals.readings(cid)
        if readings.door is None:
            # No door sensor: nothing to observe; pulses stay unconfirmed by design.
            return []
        latch = readings.latch if readings.latch is not None else None
        if cid in self._awaited:
            self._awaited.discard(cid)
            self.doors[cid].resume_unlock_window(now.mono)
        events = self.doors[cid].observe(
            readings.door, now.mono, latch, flapping=SignalKind.DOOR in readings.flapping
        )
        return self._door_events(cid, events, now)

    def _door_events(self, cid: str, events: list[DomainEvent], now: Now) -> list[Emitted]:
        """Wrap door events and feed the ones the compartment cares about to it."""
        out: list[Emitted] = []
        compartment = self.compartments.get(cid)
        for event in events:
            out.append(Emitted(event, now.wall_of(event.at)))
            if event.kind is EventKind.DOOR_OPENED:
                if event.details.get("authorised", False):
                    follow = compartment.door_opened(now.wall)
                else:
                    follow = []
            elif event.kind is EventKind.DOOR_CLOSED:
                if self._occupancy_elsewhere(cid):
                    self._closing[cid] = now.wall
                    follow = []
                else:
                    follow = compartment.door_closed(self._occupancy(cid), now.wall)
            elif event.kind is EventKind.OPEN_NOT_DETECTED:
                follow = compartment.open_not_detected(now.wall)
            else:
                follow = []
            out.extend(self._wrap_wall(follow, now))
        return out

    def _occupancy_elsewhere(self, cid: str) -> bool:
        wiring = self._setups[cid].wiring
        return (wiring.occupancy is not None and wiring.door is not None
                and wiring.occupancy.board != wiring.door.board)

    def _settle_closes(self, board: str, now: Now) -> list[Emitted]:
        """Decide the closes waiting for ``board``'s occupancy reading."""
        out: list[Emitted] = []
        for cid in [c for c in self._closing
                    if (w := self._setups[c].wiring.occupancy) is not None and w.board == board]:
            del self._closing[cid]
            follow = self.compartments.get(cid).door_closed(self._occupancy(cid), now.wall)
            out.extend(self._wrap_wall(follow, now))
        return out

    def _occupancy(self, cid: str) -> OccupancyReading | None:
        return self.signals.readings(cid).occupancy

    @staticmethod
    def _wrap(events: list[DomainEvent], now: Now) -> list[Emitted]:
        return [Emitted(e, now.wall_of(e.at)) for e in events]

    @staticmethod
    def _wrap_wall(events: list[DomainEvent], now: Now) -> list[Emitted]:
        return [Emitted(e, e.at) for e in events]

    def door_state(self, compartment: str) -> DoorState:
        return self._door(compartment).state


def _reported_open(door: dict[str, Any] | None) -> bool | None:
    if door is None or not isinstance(door.get("open"), bool):
        return None
    return bool(door["open"])


def _resume_authorised(stored: dict[str, Any], door: dict[str, Any] | None) -> bool:
    """Whether an open that a restart finds under way was authorised: as reported with its
    ``door_opened`` when that was committed, else as the stored state says."""
    if _reported_open(door) and door is not None:
        return bool(door.get("authorised"))
    return bool(stored.get("door_open_authorised"))


def _value(reading: DoorReading | LatchReading | OccupancyReading | None) -> str | None:
    return None if reading is None else reading.value
