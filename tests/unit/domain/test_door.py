from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from controller.domain.door import (
    AMBIENT_AJAR_AFTER_S,
    COLD_AJAR_AFTER_S,
    DoorMachine,
    DoorState,
    DoorTiming,
)
from controller.domain.errors import DomainError
from controller.domain.events import AlarmKind, DomainEvent, EventKind
from controller.domain.signals import DoorReading, LatchReading

from .clock import FakeClock

OPEN, CLOSED, UNKNOWN = DoorReading.OPEN, DoorReading.CLOSED, DoorReading.UNKNOWN
TIMING = DoorTiming(open_detect_timeout_s=5.0, ajar_after_s=60.0)


def kinds(events: list[DomainEvent]) -> list[str]:
    return [e.alarm.value if e.alarm else e.kind.value for e in events]


def closed_door(*, latch: bool = False) -> tuple[DoorMachine, FakeClock]:
    clock = FakeClock()
    door = DoorMachine("A01", TIMING, has_latch_feedback=latch)
    door.observe(CLOSED, clock(), LatchReading.ENGAGED if latch else None)
    return door, clock


def test_starts_unknown_without_alarm() -> None:
    door = DoorMachine("A01")
    assert door.state is DoorState.UNKNOWN
    assert door.active_alarms == frozenset()
    assert kinds(door.observe(UNKNOWN, 0.0)) == ["sensor_unknown"]


def test_first_closed_reading_is_latched() -> None:
    door, _ = closed_door()
    assert door.state is DoorState.LATCHED


def test_timing_validation_and_zone_defaults() -> None:
    with pytest.raises(DomainError):
        DoorTiming(open_detect_timeout_s=0)
    with pytest.raises(DomainError):
        DoorTiming(ajar_after_s=-1)
    assert DoorTiming.for_zone(cold=True).ajar_after_s == COLD_AJAR_AFTER_S
    assert DoorTiming.for_zone(cold=False).ajar_after_s == AMBIENT_AJAR_AFTER_S
    assert COLD_AJAR_AFTER_S < AMBIENT_AJAR_AFTER_S


def test_authorised_open_and_close() -> None:
    door, clock = closed_door()
    assert kinds(door.pulse_sent(clock())) == ["unlock_pulse_sent"]
    assert door.state is DoorState.UNLOCK_SENT
    assert kinds(door.pulse_acked(clock.advance(0.1))) == ["unlock_pulse_acked"]
    events = door.observe(OPEN, clock.advance(1.0))
    assert kinds(events) == ["door_opened"]
    assert events[0].details["authorised"] is True
    assert events[0].details["pulse_acked"] is True
    assert door.state is DoorState.OPEN
    events = door.observe(CLOSED, clock.advance(10.0))
    assert kinds(events) == ["door_closed"]
    assert events[0].details == {"authorised": True, "open_s": 10.0}
    assert door.state is DoorState.LATCHED
    assert door.active_alarms == frozenset()


def test_open_between_sent_and_ack_is_authorised() -> None:
    door, clock = closed_door()
    door.pulse_sent(clock())
    events = door.observe(OPEN, clock.advance(0.2))
    assert events[0].details["authorised"] is True
    assert events[0].details["pulse_acked"] is False
    # the late ack does not open a second window
    door.pulse_acked(clock.advance(0.1))
    door.observe(CLOSED, clock.advance(1.0))
    events = door.observe(OPEN, clock.advance(1.0))
    assert kinds(events) == ["door_opened", "forced_open"]


def test_ack_moves_the_deadline() -> None:
    door, clock = closed_door()
    door.pulse_sent(clock())
    door.pulse_acked(clock.advance(4.0))
    assert door.tick(clock.advance(4.0)) == []  # 8 s after sent, 4 s after ack
    events = door.observe(OPEN, clock())
    assert events[0].details["authorised"] is True


def test_one_pulse_one_open() -> None:
    door, clock = closed_door()
    door.pulse_sent(clock())
    door.pulse_acked(clock())
    door.observe(OPEN, clock.advance(1))
    door.observe(CLOSED, clock.advance(1))
    events = door.observe(OPEN, clock.advance(1))
    assert kinds(events) == ["door_opened", "forced_open"]
    assert door.state is DoorState.FORCED_OPEN


def test_no_open_within_timeout_is_open_not_detected() -> None:
    door, clock = closed_door()
    door.pulse_sent(clock())
    door.pulse_acked(clock())
    assert door.tick(clock.advance(5.0)) == []  # deadline itself is still inside
    events = door.tick(clock.advance(0.1))
    assert kinds(events) == ["open_not_detected"]
    assert events[0].details == {"pulse_acked": True, "latch": None, "jammed": False}
    assert door.state is DoorState.OPEN_NOT_DETECTED


def test_open_after_timeout_is_forced() -> None:
    door, clock = closed_door()
    door.pulse_sent(clock())
    door.pulse_acked(clock())
    events = door.observe(OPEN, clock.advance(6.0))
    assert kinds(events) == ["open_not_detected", "door_opened", "forced_open"]


def test_jammed_when_latch_never_released() -> None:
    door, clock = closed_door(latch=True)
    door.pulse_sent(clock())
    door.pulse_acked(clock())
    door.observe(CLOSED, clock.advance(1), LatchReading.ENGAGED)
    events = door.tick(clock.advance(5))
    assert events[0].details["jammed"] is True
    assert events[0].details["latch"] == "engaged"


def test_not_jammed_when_latch_released_but_nobody_pulled() -> None:
    door, clock = closed_door(latch=True)
    door.pulse_sent(clock())
    door.pulse_acked(clock())
    door.observe(CLOSED, clock.advance(1), LatchReading.RELEASED)
    door.observe(CLOSED, clock.advance(1), LatchReading.ENGAGED)
    events = door.tick(clock.advance(5))
    assert kinds(events) == ["open_not_detected"]
    assert events[0].details["jammed"] is False


def test_closed_with_latch_released_is_closed_not_latched() -> None:
    door, clock = closed_door(latch=True)
    door.observe(CLOSED, clock.advance(1), LatchReading.RELEASED)
    assert door.state is DoorState.CLOSED
    door.observe(CLOSED, clock.advance(1), LatchReading.UNKNOWN)
    assert door.state is DoorState.CLOSED
    door.observe(CLOSED, clock.advance(1), LatchReading.ENGAGED)
    assert door.state is DoorState.LATCHED


def test_pulse_is_never_vetoed_by_an_open_reading() -> None:
    door = DoorMachine("A01", TIMING)
    door.observe(OPEN, 0.0)  # cut wire reads open
    events = door.pulse_sent(1.0)
    assert kinds(events) == ["unlock_pulse_sent"]
    assert events[0].details["door"] == "open"
    door.pulse_acked(1.1)
    events = door.tick(7.0)
    assert kinds(events) == ["unlock_unconfirmed"]
    assert events[0].details["reason"] == "door_open"


def test_pulse_on_open_door_then_close_and_open_is_authorised() -> None:
    door = DoorMachine("A01", TIMING)
    door.observe(OPEN, 0.0)
    door.observe(CLOSED, 1.0)
    door.pulse_sent(2.0)
    events = door.observe(OPEN, 3.0)
    assert events[0].details["authorised"] is True


def test_failed_pulse_window_still_authorises_but_ends_silently() -> None:
    door, clock = closed_door()
    door.pulse_sent(clock())
    assert kinds(door.pulse_failed(clock.advance(1), "timeout")) == ["unlock_pulse_failed"]
    assert door.tick(clock.advance(10)) == []
    assert door.state is DoorState.LATCHED
    door.pulse_sent(clock())
    door.pulse_failed(clock.advance(1), "timeout")
    events = door.observe(OPEN, clock.advance(1))
    assert events[0].details["authorised"] is True


def test_the_window_waits_for_a_verdict_slower_than_the_timeout() -> None:
    # The driver may take longer to give up than open_detect_timeout: the window neither
    # ends nor tells open_not_detected before the verdict, then runs from the verdict.
    door, clock = closed_door()
    door.pulse_sent(clock())
    assert door.tick(clock.advance(7.0)) == []
    assert door.next_deadline() is None
    assert door.state is DoorState.UNLOCK_SENT
    assert kinds(door.pulse_unconfirmed(clock(), "ack lost")) == ["unlock_pulse_unconfirmed"]
    assert door.tick(clock.advance(4.9)) == []
    opened = door.observe(OPEN, clock())
    assert kinds(opened) == ["door_opened"]
    assert opened[0].details["authorised"] is True
    assert opened[0].details["pulse_acked"] is False


def test_a_late_verdict_ends_the_window_after_it() -> None:
    door, clock = closed_door()
    door.pulse_sent(clock())
    door.pulse_unconfirmed(clock.advance(7.0))
    ended = door.tick(clock.advance(5.1))
    assert kinds(ended) == ["open_not_detected"]
    assert ended[0].details["pulse_acked"] is False
    # A late ack likewise; a late failure ends the window silently at its deadline.
    door.pulse_sent(clock())
    assert kinds(door.pulse_acked(clock.advance(7.0))) == ["unlock_pulse_acked"]
    assert door.tick(clock.advance(5.0)) == []
    assert kinds(door.tick(clock.advance(0.1))) == ["open_not_detected"]
    door, clock = closed_door()
    door.pulse_sent(clock())
    door.pulse_failed(clock.advance(7.0), "timeout")
    assert door.tick(clock.advance(0.1)) == []
    assert kinds(door.observe(OPEN, clock())) == ["door_opened", "forced_open"]


def test_an_abandoned_pulse_ends_its_window_at_the_deadline() -> None:
    door, clock = closed_door()
    door.pulse_sent(clock())
    assert door.tick(clock.advance(7.0)) == []
    door.pulse_abandoned()
    assert door.next_deadline() is not None
    assert kinds(door.tick(clock())) == ["open_not_detected"]


def test_ack_without_sent_still_opens_a_window() -> None:
    door, clock = closed_door()
    door.pulse_acked(clock())
    assert door.state is DoorState.UNLOCK_SENT
    assert door.observe(OPEN, clock.advance(1))[0].details["authorised"] is True


def test_forced_open_raised_once_cleared_on_close() -> None:
    door, clock = closed_door()
    events = door.observe(OPEN, clock.advance(1))
    assert kinds(events) == ["door_opened", "forced_open"]
    assert events[0].details["authorised"] is False
    assert door.observe(OPEN, clock.advance(1)) == []
    events = door.observe(CLOSED, clock.advance(1))
    assert kinds(events) == ["door_closed", "forced_open"]
    assert events[1].kind is EventKind.ALARM_CLEARED
    assert door.state is DoorState.LATCHED


def test_ajar_after_timeout_cleared_on_close() -> None:
    door, clock = closed_door()
    door.pulse_sent(clock())
    door.observe(OPEN, clock.advance(1))
    assert door.next_deadline() == clock() + 60
    assert door.tick(clock.advance(59.9)) == []
    events = door.tick(clock.advance(0.1))
    assert kinds(events) == ["door_ajar"]
    assert events[0].kind is EventKind.ALARM_RAISED
    assert door.state is DoorState.AJAR
    assert door.tick(clock.advance(100)) == []
    assert door.next_deadline() is None
    events = door.observe(CLOSED, clock.advance(1))
    assert kinds(events) == ["door_closed", "door_ajar"]
    assert events[1].kind is EventKind.ALARM_CLEARED


def test_forced_and_ajar_together() -> None:
    door, clock = closed_door()
    door.observe(OPEN, clock.advance(1))
    door.tick(clock.advance(61))
    assert door.state is DoorState.AJAR
    assert door.active_alarms == {AlarmKind.FORCED_OPEN, AlarmKind.DOOR_AJAR}
    events = door.observe(CLOSED, clock.advance(1))
    assert sorted(kinds(events)) == ["door_ajar", "door_closed", "forced_open"]
    assert door.active_alarms == frozenset()


def test_unknown_raises_sensor_unknown_once_and_recovers() -> None:
    door, clock = closed_door()
    events = door.observe(UNKNOWN, clock.advance(1))
    assert kinds(events) == ["sensor_unknown"]
    assert door.state is DoorState.UNKNOWN
    assert door.observe(UNKNOWN, clock.advance(1)) == []
    events = door.observe(CLOSED, clock.advance(1))
    assert kinds(events) == ["sensor_unknown"]
    assert events[0].kind is EventKind.ALARM_CLEARED
    assert door.state is DoorState.LATCHED


def test_unknown_then_open_without_window_is_forced() -> None:
    door, clock = closed_door()
    door.observe(UNKNOWN, clock.advance(1))
    events = door.observe(OPEN, clock.advance(1))
    assert kinds(events) == ["sensor_unknown", "door_opened", "forced_open"]


def test_open_continues_across_unknown_and_ajar_counts_from_first_open() -> None:
    door, clock = closed_door()
    door.pulse_sent(clock())
    door.observe(OPEN, clock.advance(1))
    door.observe(UNKNOWN, clock.advance(30))
    assert door.tick(clock.advance(40)) == []  # cannot tell it is still open
    events = door.observe(OPEN, clock.advance(1))
    assert kinds(events) == ["sensor_unknown", "door_ajar"]
    assert door.state is DoorState.AJAR


def test_alarms_stay_active_while_unknown() -> None:
    door, clock = closed_door()
    door.observe(OPEN, clock.advance(1))
    door.observe(UNKNOWN, clock.advance(1))
    assert AlarmKind.FORCED_OPEN in door.active_alarms
    events = door.observe(CLOSED, clock.advance(1))
    assert kinds(events) == ["sensor_unknown", "door_closed", "forced_open"]


def test_window_ending_while_unknown_is_unconfirmed() -> None:
    door, clock = closed_door()
    door.pulse_sent(clock())
    door.pulse_acked(clock())
    door.observe(UNKNOWN, clock.advance(1))
    events = door.tick(clock.advance(10))
    assert kinds(events) == ["unlock_unconfirmed"]
    assert events[0].details["reason"] == "sensor_unknown"


def test_startup_open_is_forced_unless_resumed() -> None:
    assert kinds(DoorMachine("A01").observe(OPEN, 0.0)) == ["door_opened", "forced_open"]
    resumed = DoorMachine("A01", resume_authorised_open=True)
    events = resumed.observe(OPEN, 0.0)
    assert kinds(events) == ["door_opened"]
    assert events[0].details == {"authorised": True, "resumed": True}
    assert resumed.state is DoorState.OPEN


def test_resume_flag_is_spent_by_a_closed_reading() -> None:
    door = DoorMachine("A01", resume_authorised_open=True)
    door.observe(CLOSED, 0.0)
    assert kinds(door.observe(OPEN, 1.0)) == ["door_opened", "forced_open"]


def test_status_snapshot() -> None:
    door, clock = closed_door(latch=True)
    door.pulse_sent(clock())
    status = door.status()
    assert status.state is DoorState.UNLOCK_SENT
    assert status.unlock_deadline == clock() + 5.0
    assert status.latch is LatchReading.ENGAGED
    assert status.opened_at is None
    assert status.open_authorised is None
    door.observe(OPEN, clock.advance(1), LatchReading.RELEASED)
    status = door.status()
    assert status.opened_at == clock()
    assert status.open_authorised is True


def test_events_carry_compartment_and_time() -> None:
    door, clock = closed_door()
    events = door.pulse_sent(clock.advance(3))
    assert events[0].compartment == "A01"
    assert events[0].at == clock()


# -- stateful ----------------------------------------------------------------------------


class DoorStateMachine(RuleBasedStateMachine):
    """Random pulses, readings and time; check the door's promises against a model."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.door = DoorMachine("A01", TIMING, has_latch_feedback=True)
        self.active: set[AlarmKind] = set()
        self.pulses: list[float] = []  # time of every pulse_sent / ack / unconfirmed
        self.verdict_pending = False  # a pulse sent, its verdict not yet given
        self.reading = DoorReading.UNKNOWN
        self.observed = False
        self.open_now = False  # per the events reported

    def _check(self, events: list[DomainEvent], before: DoorReading | None = None) -> None:
        """``before``: the reading before an observation. Its timers run first, on the
        reading they found: an unlock window that ended then ends on that one."""
        now = self.clock()
        for event in events:
            assert event.compartment == "A01"
            assert event.at == now
            if event.kind is EventKind.ALARM_RAISED:
                assert event.alarm is not None
                assert event.alarm not in self.active, "raised twice in one incident"
                self.active.add(event.alarm)
            elif event.kind is EventKind.ALARM_CLEARED:
                assert event.alarm in self.active, "cleared without a raise"
                self.active.discard(event.alarm)
            elif event.kind is EventKind.DOOR_OPENED:
                assert self.reading is DoorReading.OPEN
                assert not self.open_now
                self.open_now = True
                if event.details["authorised"]:
                    window = TIMING.open_detect_timeout_s
                    assert self.verdict_pending or any(
                        now - t <= window for t in self.pulses), "opened without pulse"
                else:
                    assert AlarmKind.FORCED_OPEN in self.active or any(
                        e.alarm is AlarmKind.FORCED_OPEN for e in events
                    )
            elif event.kind is EventKind.DOOR_CLOSED:
                assert self.reading is DoorReading.CLOSED, "closed reported from an unknown"
                assert self.open_now
                self.open_now = False
            elif event.kind is EventKind.OPEN_NOT_DETECTED:
                assert DoorReading.CLOSED in (self.reading, before)
                assert not self.verdict_pending, "open_not_detected before the verdict"
            elif event.kind is EventKind.UNLOCK_UNCONFIRMED:
                assert not self.verdict_pending, "unlock_unconfirmed before the verdict"

    @rule(dt=st.sampled_from([0.0, 0.5, 2.0, 4.9, 5.1, 20.0, 61.0]))
    def advance(self, dt: float) -> None:
        self._check(self.door.tick(self.clock.advance(dt)))

    @rule()
    def pulse_sent(self) -> None:
        self.pulses.append(self.clock())
        self._check(self.door.pulse_sent(self.clock()))
        self.verdict_pending = True

    @rule()
    def pulse_acked(self) -> None:
        self.pulses.append(self.clock())
        self._check(self.door.pulse_acked(self.clock()))
        self.verdict_pending = False

    @rule()
    def pulse_unconfirmed(self) -> None:
        self.pulses.append(self.clock())
        self._check(self.door.pulse_unconfirmed(self.clock(), "ack lost"))
        self.verdict_pending = False

    @rule()
    def pulse_failed(self) -> None:
        self._check(self.door.pulse_failed(self.clock(), "timeout"))
        self.verdict_pending = False

    @rule()
    def pulse_abandoned(self) -> None:
        self.door.pulse_abandoned()
        self.verdict_pending = False

    @rule(door=st.sampled_from(list(DoorReading)), latch=st.sampled_from(list(LatchReading)))
    def observe(self, door: DoorReading, latch: LatchReading) -> None:
        before, self.reading = self.reading, door
        self.observed = True
        self._check(self.door.observe(door, self.clock(), latch), before)

    @precondition(lambda self: self.reading is not DoorReading.UNKNOWN)
    @rule()
    def observe_same_again(self) -> None:
        self._check(self.door.observe(self.reading, self.clock()))

    @invariant()
    def alarms_match_the_events(self) -> None:
        assert self.door.active_alarms == self.active

    @invariant()
    def state_follows_the_reading(self) -> None:
        state = self.door.state
        if self.reading is DoorReading.UNKNOWN:
            assert state is DoorState.UNKNOWN
        elif self.reading is DoorReading.OPEN:
            assert state in (DoorState.OPEN, DoorState.FORCED_OPEN, DoorState.AJAR)
        else:
            assert state in (
                DoorState.LATCHED,
                DoorState.CLOSED,
                DoorState.UNLOCK_SENT,
                DoorState.OPEN_NOT_DETECTED,
            )

    @invariant()
    def sensor_unknown_alarm_iff_unknown_reading(self) -> None:
        if self.observed:
            assert (AlarmKind.SENSOR_UNKNOWN in self.active) == (
                self.reading is DoorReading.UNKNOWN
            )

    @invariant()
    def open_alarms_only_while_not_seen_closed(self) -> None:
        if self.reading is DoorReading.CLOSED:
            assert AlarmKind.DOOR_AJAR not in self.active
            assert AlarmKind.FORCED_OPEN not in self.active
        if AlarmKind.DOOR_AJAR in self.active or AlarmKind.FORCED_OPEN in self.active:
            assert self.open_now

    @invariant()
    def forced_state_has_its_alarm(self) -> None:
        if self.door.state is DoorState.FORCED_OPEN:
            assert AlarmKind.FORCED_OPEN in self.active
        if self.door.state is DoorState.AJAR:
            assert AlarmKind.DOOR_AJAR in self.active


TestDoorStateMachine = DoorStateMachine.TestCase
TestDoorStateMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
