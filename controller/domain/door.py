"""The door of one compartment: what the sensors and the unlock pulses say happened.

The machine never decides whether to pulse (that is :mod:`controller.domain.unlock`) and
never vetoes a pulse: a cut door-sensor wire reads "open", so refusing to pulse an "open"
door would lock a customer out. It only interprets facts and returns
:class:`~controller.domain.events.DomainEvent` lists; the caller persists and publishes.

Facts in: an authorised unlock pulse was sent / acknowledged by the board / failed;
a door reading (open, closed, unknown) with the latch feedback when fitted; clock ticks.
All times are seconds in the caller's monotonic clock.

States (:class:`DoorState`), derived from the last reading and the open incident::

    reading unknown                      -> UNKNOWN            (alarm sensor_unknown)
    reading unknown, the sensor flapping -> UNKNOWN            (its sensor_flapping only)
    reading open,  open longer than ajar -> AJAR               (alarm door_ajar)
    reading open,  no authorised window  -> FORCED_OPEN        (alarm forced_open)
    reading open,  authorised            -> OPEN
    reading closed, unlock window open   -> UNLOCK_SENT
    reading closed, last pulse unopened  -> OPEN_NOT_DETECTED
    reading closed, latch not confirmed  -> CLOSED             (latch feedback fitted only)
    reading closed                       -> LATCHED

Rules:

* ``pulse_sent`` opens an *unlock window* until ``sent + open_detect_timeout``;
  ``pulse_acked`` moves its end to ``ack + open_detect_timeout``. A door seen opening
  while a window is open is an authorised open (``door_opened`` with ``authorised=True``)
  and consumes the window: one pulse, one open.
* The window never ends while its pulse's verdict (acked, failed, unconfirmed) is still
  to come: the driver may take longer to give up (retries, read-back) than the
  open-detect timeout, and the verdict decides how the window ends. Past its deadline it
  ends at the first tick after the verdict, unless the verdict moves the deadline.
  :meth:`DoorMachine.pulse_abandoned` stands for a verdict that will never come.
* A failed pulse keeps its window until its deadline (a Modbus write that timed out may
  still have been executed; the customer who then pulls the door is the authorised one),
  but ends silently: the failure was already reported.
* An unconfirmed pulse (the frame went out, its acknowledgement was lost) is taken as a
  pulse that may have happened: ``pulse_unconfirmed`` moves the window's end to
  ``now + open_detect_timeout`` (``now`` the verdict), a door opening inside it is
  authorised, and the window ends like an acknowledged one (``open_not_detected`` with
  ``pulse_acked=False``).
* The window ends with no open seen: ``open_not_detected`` when the door was seen
  closed (``jammed=True`` when the latch feedback never showed the latch released after
  an acknowledged pulse); ``unlock_unconfirmed`` when the door was already open or the
  sensor unknown, because then nothing can be told.
* A door seen opening with no window is a forced open: ``door_opened`` with
  ``authorised=False`` and the ``forced_open`` alarm, cleared when the door closes. This
  holds on the first reading after start-up too, unless the machine was built with
  ``resume_authorised_open=True`` (the store recorded an authorised open in progress).
* After a restart, ``reported_open`` is the door as the last committed events left it
  (``True`` open, ``False`` closed, ``None`` not known). A door reported open and found
  open is the same open (no second ``door_opened``; its ``forced_open`` alarm, already
  raised, stays active); reported open and found closed, it closed unseen: one
  ``door_closed`` (``resumed=True``). So a movement the dead process saw but never
  committed is reported once, and one it did commit is not reported twice.
* A door open for ``ajar_after_s`` raises ``door_ajar``, cleared when it closes.
* An unknown reading raises ``sensor_unknown``; the next known reading clears it and
  re-derives the state: an open that was known before continues (no new ``door_opened``),
  a door that was open and is now closed reports ``door_closed``, a door that was closed
  (or never seen) and is now open follows the rules above. Open-related alarms stay
  active while the sensor is unknown: their condition has not been seen to end.
* A flapping door sensor (see :class:`~controller.domain.signals.SignalFilter`) reads
  unknown with ``flapping=True``: the same rules, except that no ``sensor_unknown`` is
  raised (the signal's one ``sensor_flapping`` alarm stands for it) and an unlock window
  ending meanwhile is ``unlock_unconfirmed`` with reason ``sensor_flapping``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from controller.domain.errors import DomainError, ErrorCode
from controller.domain.events import AlarmKind, AlarmSet, Detail, DomainEvent, EventKind
from controller.domain.signals import DoorReading, LatchReading

__all__ = [
    "AMBIENT_AJAR_AFTER_S",
    "COLD_AJAR_AFTER_S",
    "DEFAULT_OPEN_DETECT_TIMEOUT_S",
    "DoorMachine",
    "DoorState",
    "DoorStatus",
    "DoorTiming",
    "UnlockWindow",
]

DEFAULT_OPEN_DETECT_TIMEOUT_S = 8.0
AMBIENT_AJAR_AFTER_S = 120.0
#: A chilled or frozen compartment loses its cold fast: the ajar alarm comes sooner.
COLD_AJAR_AFTER_S = 45.0


class DoorState(StrEnum):
    """The door's state; see the module docstring for how each is derived."""

    LATCHED = "latched"
    UNLOCK_SENT = "unlock_sent"
    OPEN = "open"
    CLOSED = "closed"
    OPEN_NOT_DETECTED = "open_not_detected"
    FORCED_OPEN = "forced_open"
    AJAR = "ajar"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class DoorTiming:
    """Timeouts of one door. Use :meth:`for_zone` for the zone's default ajar delay."""

    open_detect_timeout_s: float = DEFAULT_OPEN_DETECT_TIMEOUT_S
    ajar_after_s: float = AMBIENT_AJAR_AFTER_S

    def __post_init__(self) -> None:
        for name in ("open_detect_timeout_s", "ajar_after_s"):
            if not getattr(self, name) > 0:
                raise DomainError(ErrorCode.INVALID_ARGUMENT, f"{name} must be > 0", field=name)

    @classmethod
    def for_zone(
        cls, *, cold: bool, open_detect_timeout_s: float = DEFAULT_OPEN_DETECT_TIMEOUT_S
    ) -> DoorTiming:
        """Default timing for an ambient (``cold=False``) or chilled/frozen compartment."""
        ajar = COLD_AJAR_AFTER_S if cold else AMBIENT_AJAR_AFTER_S
        return cls(open_detect_timeout_s=open_detect_timeout_s, ajar_after_s=ajar)


@dataclass(frozen=True, slots=True)
class UnlockWindow:
    """The time during which a door opening counts as authorised by a pulse."""

    sent_at: float
    deadline: float
    acked_at: float | None = None
    failed: bool = False
    latch_released_seen: bool = False


@dataclass(frozen=True, slots=True)
class DoorStatus:
    """A snapshot of the door for the state topic and the store."""

    compartment: str
    state: DoorState
    reading: DoorReading
    latch: LatchReading | None
    alarms: frozenset[AlarmKind]
    opened_at: float | None
    open_authorised: bool | None
    unlock_deadline: float | None


class DoorMachine:
    """The door of one compartment. Every method returns the events it caused, oldest first."""

    def __init__(
        self,
        compartment: str,
        timing: DoorTiming | None = None,
        *,
        has_latch_feedback: bool = False,
        resume_authorised_open: bool = False,
        reported_open: bool | None = None,
    ) -> None:
        self.compartment = compartment
        self.timing = timing or DoorTiming()
        self.has_latch_feedback = has_latch_feedback
        self._reading = DoorReading.UNKNOWN
        self._observed = False
        self._latch = LatchReading.UNKNOWN
        self._flapping = False
        self._known_open: bool | None = reported_open
        self._resumed_open = bool(reported_open)
        self._opened_at: float | None = None
        self._open_authorised = bool(reported_open and resume_authorised_open)
        self._window: UnlockWindow | None = None
        self._awaiting_ack = False
        self._not_detected = False
        self._resume_authorised_open = resume_authorised_open
        self._alarms = AlarmSet(compartment)

    # -- queries ---------------------------------------------------------------------

    @property
    def state(self) -> DoorState:
        """The current :class:`DoorState`."""
        if self._reading is DoorReading.UNKNOWN:
            return DoorState.UNKNOWN
        if self._reading is DoorReading.OPEN:
            if self._alarms.is_active(AlarmKind.DOOR_AJAR):
                return DoorState.AJAR
            if self._alarms.is_active(AlarmKind.FORCED_OPEN):
                return DoorState.FORCED_OPEN
            return DoorState.OPEN
        if self._window is not None:
            return DoorState.UNLOCK_SENT
        if self._not_detected:
            return DoorState.OPEN_NOT_DETECTED
        if self.has_latch_feedback and self._latch is not LatchReading.ENGAGED:
            return DoorState.CLOSED
        return DoorState.LATCHED

    @property
    def reading(self) -> DoorReading:
        """The last door reading."""
        return self._reading

    @property
    def active_alarms(self) -> frozenset[AlarmKind]:
        """Alarms raised and not yet cleared."""
        return self._alarms.active

    @property
    def window(self) -> UnlockWindow | None:
        """The open unlock window, if any."""
        return self._window

    def status(self) -> DoorStatus:
        """A snapshot of the door."""
        return DoorStatus(
            compartment=self.compartment,
            state=self.state,
            reading=self._reading,
            latch=self._latch if self.has_latch_feedback else None,
            alarms=self._alarms.active,
            opened_at=self._opened_at,
            open_authorised=self._open_authorised if self._known_open else None,
            unlock_deadline=self._window.deadline if self._window else None,
        )

    def next_deadline(self) -> float | None:
        """The earliest time at which :meth:`tick` may produce an event, or None."""
        candidates: list[float] = []
        if self._window is not None and not self._awaiting_ack:
            candidates.append(self._window.deadline)
        if (
            self._reading is DoorReading.OPEN
            and self._opened_at is not None
            and not self._alarms.is_active(AlarmKind.DOOR_AJAR)
        ):
            candidates.append(self._opened_at + self.timing.ajar_after_s)
        return min(candidates) if candidates else None

    # -- facts -----------------------------------------------------------------------

    def pulse_sent(self, now: float) -> list[DomainEvent]:
        """An authorised unlock pulse was sent to the board. Never refused."""
        events = self._timers(now)
        self._window = UnlockWindow(sent_at=now, deadline=now + self.timing.open_detect_timeout_s)
        self._awaiting_ack = True
        self._not_detected = False
        events.append(self._event(EventKind.UNLOCK_PULSE_SENT, now, door=self._reading.value))
        return events

    def pulse_acked(self, now: float) -> list[DomainEvent]:
        """The board acknowledged the pulse: the open-detect timeout starts now."""
        events = self._timers(now)
        deadline = now + self.timing.open_detect_timeout_s
        if self._window is not None:
            self._window = replace(self._window, acked_at=now, deadline=deadline)
        elif not self._awaiting_ack:
            # An ack with no pulse on record: still a pulse, still a window.
            self._window = UnlockWindow(sent_at=now, deadline=deadline, acked_at=now)
        # else: the door already opened on this pulse; the window was consumed.
        self._awaiting_ack = False
        events.append(self._event(EventKind.UNLOCK_PULSE_ACKED, now))
        return events

    def pulse_failed(self, now: float, reason: str = "") -> list[DomainEvent]:
        """The pulse command failed (timeout, rejected, bus down)."""
        events = self._timers(now)
        if self._window is not None and self._window.acked_at is None:
            self._window = replace(self._window, failed=True)
        self._awaiting_ack = False
        events.append(self._event(EventKind.UNLOCK_PULSE_FAILED, now, reason=reason))
        return events

    def resume_unlock_window(self, now: float) -> None:
        """After a restart: an authorised open was declared, and its pulse may have gone out
        just before the process died. A door opening within the open-detect timeout from
        ``now`` is that open (authorised), as after an acknowledged pulse; if it does not
        open, ``open_not_detected`` ends it. No event: the pulse was reported, or not,
        before the restart."""
        if self._window is None and not self._known_open:
            self._window = UnlockWindow(
                sent_at=now, deadline=now + self.timing.open_detect_timeout_s
            )

    def pulse_unconfirmed(self, now: float, evidence: str = "") -> list[DomainEvent]:
        """The pulse frame went out but whether it acted is unknown (acknowledgement lost,
        late or garbled). The open-detect timeout starts now, as for an acknowledgement."""
        events = self._timers(now)
        deadline = now + self.timing.open_detect_timeout_s
        if self._window is not None:
            self._window = replace(self._window, deadline=deadline)
        elif not self._awaiting_ack:
            self._window = UnlockWindow(sent_at=now, deadline=deadline)
        # else: the door already opened on this pulse; the window was consumed.
        self._awaiting_ack = False
        events.append(self._event(EventKind.UNLOCK_PULSE_UNCONFIRMED, now, evidence=evidence))
        return events

    def pulse_abandoned(self) -> None:
        """The pulse's verdict will never come (its caller was cancelled or failed
        unexpectedly): the window stops waiting for it and ends at its deadline as a pulse
        that may have happened. No event: nothing new is known about the pulse."""
        self._awaiting_ack = False

    def observe(
        self,
        door: DoorReading,
        now: float,
        latch: LatchReading | None = None,
        *,
        flapping: bool = False,
    ) -> list[DomainEvent]:
        """A poll result: the door reading and, when fitted, the latch feedback.
        ``flapping``: the door reads unknown because its sensor flaps."""
        events = self._timers(now)
        flapping = flapping and door is DoorReading.UNKNOWN
        cause_changed = flapping is not self._flapping and door is DoorReading.UNKNOWN
        self._flapping = flapping
        if latch is not None and self.has_latch_feedback:
            self._latch = latch
            if latch is LatchReading.RELEASED and self._window is not None:
                self._window = replace(self._window, latch_released_seen=True)
        if door is not self._reading or not self._observed or cause_changed:
            events.extend(self._apply(door, now))
        self._observed = True
        events.extend(self._timers(now))
        return events

    def tick(self, now: float) -> list[DomainEvent]:
        """Time passed: end unlock windows, raise ``door_ajar``."""
        return self._timers(now)

    # -- mechanics -------------------------------------------------------------------

    def _apply(self, door: DoorReading, now: float) -> list[DomainEvent]:
        self._reading = door
        if door is DoorReading.UNKNOWN:
            if self._flapping:
                return []  # the signal's sensor_flapping alarm says it
            return self._alarms.raise_(AlarmKind.SENSOR_UNKNOWN, now)
        events = self._alarms.clear(AlarmKind.SENSOR_UNKNOWN, now)
        if self._resumed_open:
            # The open reported before a restart: its forced_open alarm (if any) was
            # raised then, and is still active until the door is seen closed.
            self._resumed_open = False
            if not self._open_authorised:
                self._alarms.raise_(AlarmKind.FORCED_OPEN, now)
        if door is DoorReading.OPEN:
            if self._known_open:
                if self._opened_at is None:
                    self._opened_at = now  # resumed: timed from the restart
                return events  # the same open, seen again after an unknown spell
            return events + self._opened(now)
        if self._known_open:
            events.extend(self._closed(now))
        self._known_open = False
        self._resume_authorised_open = False
        return events

    def _opened(self, now: float) -> list[DomainEvent]:
        self._known_open = True
        self._opened_at = now
        self._not_detected = False
        window = self._window
        if window is not None:
            self._window = None
            self._open_authorised = True
            return [
                self._event(
                    EventKind.DOOR_OPENED,
                    now,
                    authorised=True,
                    pulse_acked=window.acked_at is not None,
                    after_pulse_s=round(now - window.sent_at, 3),
                )
            ]
        if self._resume_authorised_open:
            self._resume_authorised_open = False
            self._open_authorised = True
            return [self._event(EventKind.DOOR_OPENED, now, authorised=True, resumed=True)]
        self._open_authorised = False
        events = [self._event(EventKind.DOOR_OPENED, now, authorised=False)]
        return events + self._alarms.raise_(AlarmKind.FORCED_OPEN, now)

    def _closed(self, now: float) -> list[DomainEvent]:
        if self._opened_at is None:
            # Reported open before a restart, found closed: it closed while unseen.
            closed = self._event(EventKind.DOOR_CLOSED, now, authorised=self._open_authorised,
                                 resumed=True)
        else:
            closed = self._event(EventKind.DOOR_CLOSED, now, authorised=self._open_authorised,
                                 open_s=round(now - self._opened_at, 3))
        events = [closed]
        events += self._alarms.clear(AlarmKind.DOOR_AJAR, now)
        events += self._alarms.clear(AlarmKind.FORCED_OPEN, now)
        self._opened_at = None
        return events

    def _timers(self, now: float) -> list[DomainEvent]:
        events: list[DomainEvent] = []
        window = self._window
        if window is not None and now > window.deadline and not self._awaiting_ack:
            self._window = None
            if self._reading is DoorReading.CLOSED:
                if not window.failed:
                    events.append(self._not_detected_event(window, now))
            else:
                if self._reading is DoorReading.OPEN:
                    reason = "door_open"
                else:
                    reason = "sensor_flapping" if self._flapping else "sensor_unknown"
                events.append(self._event(EventKind.UNLOCK_UNCONFIRMED, now, reason=reason))
        if (
            self._reading is DoorReading.OPEN
            and self._opened_at is not None
            and now >= self._opened_at + self.timing.ajar_after_s
        ):
            events += self._alarms.raise_(
                AlarmKind.DOOR_AJAR, now, {"open_s": round(now - self._opened_at, 3)}
            )
        return events

    def _not_detected_event(self, window: UnlockWindow, now: float) -> DomainEvent:
        self._not_detected = True
        acked = window.acked_at is not None
        jammed = (
            self.has_latch_feedback
            and acked
            and not window.latch_released_seen
            and self._latch is LatchReading.ENGAGED
        )
        return self._event(
            EventKind.OPEN_NOT_DETECTED,
            now,
            pulse_acked=acked,
            latch=self._latch.value if self.has_latch_feedback else None,
            jammed=jammed,
        )

    def _event(self, kind: EventKind, at: float, **details: Detail) -> DomainEvent:
        return DomainEvent(kind, self.compartment, at, details)
