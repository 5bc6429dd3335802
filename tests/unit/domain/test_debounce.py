"""Debounce and flapping of door, latch and occupancy signals, in the domain's own time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.domain.cabinet_model import CabinetModel, CompartmentSetup, Emitted, Now
from controller.domain.compartment import CompartmentSpec, Size, ZoneKind
from controller.domain.door import DoorMachine, DoorState, DoorTiming
from controller.domain.errors import DomainError
from controller.domain.events import AlarmKind, EventKind
from controller.domain.signals import (
    CabinetSignals,
    CompartmentWiring,
    DoorReading,
    LatchReading,
    OccupancyReading,
    Polarity,
    SignalFiltering,
    SignalWiring,
)

WALL0 = 1_800_000_000.0
POLL = 0.1
# The shipped defaults (docs/configuration.md, [timing]).
DEFAULTS = SignalFiltering(
    door_debounce_s=0.25,
    latch_debounce_s=0.1,
    occupancy_debounce_s=0.2,
    flapping_changes=8,
    flapping_window_s=3.0,
    flapping_clear_s=5.0,
)
WIRING = CompartmentWiring(
    "A01",
    door=SignalWiring("b1", 0, Polarity.HIGH),
    latch=SignalWiring("b1", 1, Polarity.HIGH),
    occupancy=SignalWiring("b1", 2, Polarity.HIGH),
)
DOOR_EVENTS = (EventKind.DOOR_OPENED, EventKind.DOOR_CLOSED)


def model(filtering: SignalFiltering = DEFAULTS) -> CabinetModel:
    setup = CompartmentSetup(
        CompartmentSpec("A01", Size.M, "ambient", ZoneKind.AMBIENT, "grocery",
                        has_occupancy_sensor=True),
        WIRING,
        DoorTiming(open_detect_timeout_s=5.0, ajar_after_s=120.0),
    )
    return CabinetModel([setup], filtering=filtering)


def now(mono: float) -> Now:
    return Now(mono, WALL0 + mono)


def door_levels(door: bool) -> tuple[bool, ...]:
    return (door, False, False)


def alarms(events: list[Emitted], alarm: AlarmKind) -> list[Emitted]:
    return [e for e in events if e.event.alarm is alarm]


# -- debounce, per signal ----------------------------------------------------------------


def test_each_signal_has_its_own_debounce_time() -> None:
    filtering = SignalFiltering(door_debounce_s=0.3, latch_debounce_s=0.1,
                                occupancy_debounce_s=0.5)
    cabinet = CabinetSignals([WIRING], filtering=filtering)
    cabinet.poll_succeeded("b1", [False, False, False], at=0.0)
    seen: dict[str, float] = {}
    t = 0.0
    while t < 1.0:
        t = round(t + POLL, 3)
        cabinet.poll_succeeded("b1", [True, True, True], at=t)
        r = cabinet.readings("A01")
        if r.door is DoorReading.OPEN:
            seen.setdefault("door", t)
        if r.latch is LatchReading.RELEASED:
            seen.setdefault("latch", t)
        if r.occupancy is OccupancyReading.OCCUPIED:
            seen.setdefault("occupancy", t)
    # First seen at 0.1: each accepted at the first poll its debounce time later.
    assert seen == {"latch": 0.2, "door": 0.4, "occupancy": 0.6}


def test_a_bounce_shorter_than_the_debounce_changes_nothing() -> None:
    m = model()
    m.poll_ok("b1", door_levels(False), now(0.0))
    events = []
    for t, level in ((0.1, True), (0.2, True), (0.3, True), (0.4, False), (0.5, False)):
        events += m.poll_ok("b1", door_levels(level), now(t))
    assert [e for e in events if e.kind in DOOR_EVENTS] == []
    assert m.door_state("A01") is DoorState.LATCHED
    assert not m.doors["A01"].active_alarms


def test_a_steady_opening_is_reported_one_debounce_after_it_is_first_seen() -> None:
    m = model()
    m.poll_ok("b1", door_levels(False), now(0.0))
    assert m.poll_ok("b1", door_levels(True), now(0.1)) == []
    assert m.poll_ok("b1", door_levels(True), now(0.3)) == []
    opened = m.poll_ok("b1", door_levels(True), now(0.4))
    assert [e.kind for e in opened] == [EventKind.DOOR_OPENED, EventKind.ALARM_RAISED]
    assert opened[0].at_wall == WALL0 + 0.4


def test_unknown_is_at_once_and_the_first_poll_after_it_is_taken_as_it_is() -> None:
    cabinet = CabinetSignals([WIRING], offline_after=1, filtering=DEFAULTS)
    cabinet.poll_succeeded("b1", [False, False, False], at=0.0)
    cabinet.poll_failed("b1", at=0.1)
    assert cabinet.readings("A01").door is DoorReading.UNKNOWN
    cabinet.poll_succeeded("b1", [True, False, False], at=0.2)
    assert cabinet.readings("A01").door is DoorReading.OPEN


# -- flapping ----------------------------------------------------------------------------


def flap(m: CabinetModel, start: float, until: float, period: float) -> list[Emitted]:
    """Poll every POLL s while the door input inverts every ``period`` s."""
    out: list[Emitted] = []
    i = 0
    while (t := round(start + i * POLL, 3)) < until:
        level = int((t - start) / period) % 2 == 1
        out += m.poll_ok("b1", door_levels(level), now(t))
        out += m.tick(now(t))
        i += 1
    return out


def test_a_door_flapping_every_200ms_for_5s_is_one_flapping_alarm_and_no_door_event() -> None:
    m = model()
    m.poll_ok("b1", door_levels(False), now(0.0))
    during = flap(m, 0.1, 5.1, 0.2)
    raised = alarms(during, AlarmKind.SENSOR_FLAPPING)
    assert [e.kind for e in raised] == [EventKind.ALARM_RAISED]
    assert raised[0].compartment == "A01"
    assert raised[0].data() == {"alarm": "sensor_flapping", "signal": "door", "board": "b1",
                                "channel": 0, "changes": 9, "window_s": 3.0}
    assert m.door_state("A01") is DoorState.UNKNOWN
    assert m.signals.readings("A01").door is DoorReading.UNKNOWN
    snap = m.snapshot()["compartments"][0]
    assert snap["signals"]["door"] == "unknown"
    assert snap["alarms"] == ["sensor_flapping"]

    # The door stays shut: the alarm clears once, 5 s after the last change.
    after = flap(m, 5.1, 12.0, 1000.0)
    cleared = alarms(after, AlarmKind.SENSOR_FLAPPING)
    assert [e.kind for e in cleared] == [EventKind.ALARM_CLEARED]
    assert cleared[0].data()["signal"] == "door"
    assert 9.8 <= cleared[0].at_wall - WALL0 <= 10.0 + POLL  # last change near 4.9 s
    everything = during + after
    assert [e for e in everything if e.kind in DOOR_EVENTS] == []
    assert alarms(everything, AlarmKind.FORCED_OPEN) == []
    assert alarms(everything, AlarmKind.SENSOR_UNKNOWN) == []
    assert m.door_state("A01") is DoorState.LATCHED

    # A real opening afterwards is seen, once.
    opened = [e for t in (12.0, 12.1, 12.2, 12.3, 12.4)
              for e in m.poll_ok("b1", door_levels(True), now(t))]
    assert [e.kind for e in opened if e.kind in DOOR_EVENTS] == [EventKind.DOOR_OPENED]


def test_a_door_that_changes_while_flapping_is_reported_when_it_settles() -> None:
    m = model()
    m.poll_ok("b1", door_levels(False), now(0.0))
    flap(m, 0.1, 3.0, 0.2)
    assert m.doors["A01"].reading is DoorReading.UNKNOWN
    out = []
    t = 3.0
    while t < 9.0:
        out += m.poll_ok("b1", door_levels(True), now(t))
        t = round(t + POLL, 3)
    kinds = [(e.kind, e.event.alarm) for e in out]
    assert kinds == [(EventKind.ALARM_CLEARED, AlarmKind.SENSOR_FLAPPING),
                     (EventKind.DOOR_OPENED, None),
                     (EventKind.ALARM_RAISED, AlarmKind.FORCED_OPEN)]


def test_latch_and_occupancy_flap_on_their_own() -> None:
    cabinet = CabinetSignals([WIRING], filtering=DEFAULTS)
    cabinet.poll_succeeded("b1", [False, False, False], at=0.0)
    events = []
    for i in range(1, 30):
        events += cabinet.poll_succeeded("b1", [False, i % 2 == 1, False], at=i * POLL)
    assert [(e.kind, e.details["signal"]) for e in events] == [
        (EventKind.ALARM_RAISED, "latch")]
    readings = cabinet.readings("A01")
    assert readings.latch is LatchReading.UNKNOWN
    assert readings.door is DoorReading.CLOSED
    assert readings.occupancy is OccupancyReading.EMPTY
    assert {k.value for k in readings.flapping} == {"latch"}


def test_flapping_off_and_no_debounce_take_every_poll() -> None:
    cabinet = CabinetSignals([WIRING])
    cabinet.poll_succeeded("b1", [False, False, False], at=0.0)
    for i in range(1, 40):
        assert cabinet.poll_succeeded("b1", [i % 2 == 1, False, False], at=i * POLL) == []
        assert cabinet.readings("A01").door is (DoorReading.OPEN if i % 2 else DoorReading.CLOSED)


def test_a_flapping_door_raises_no_sensor_unknown_and_ends_a_window_as_flapping() -> None:
    door = DoorMachine("A01", DoorTiming(open_detect_timeout_s=1.0))
    door.observe(DoorReading.CLOSED, 0.0)
    door.pulse_sent(0.5)
    door.pulse_acked(0.5)
    assert door.observe(DoorReading.UNKNOWN, 0.6, flapping=True) == []
    assert door.state is DoorState.UNKNOWN
    ended = door.tick(2.0)
    assert [(e.kind, e.details["reason"]) for e in ended] == [
        (EventKind.UNLOCK_UNCONFIRMED, "sensor_flapping")]
    # The same unknown for another cause (the board went offline) is sensor_unknown.
    lost = door.observe(DoorReading.UNKNOWN, 2.1)
    assert [(e.kind, e.alarm) for e in lost] == [(EventKind.ALARM_RAISED,
                                                  AlarmKind.SENSOR_UNKNOWN)]


@pytest.mark.parametrize(
    ("field", "value"),
    [("door_debounce_s", -0.1), ("latch_debounce_s", float("nan")),
     ("flapping_changes", -1), ("flapping_window_s", 0.0), ("flapping_clear_s", -1.0)],
)
def test_invalid_filtering_is_refused(field: str, value: float) -> None:
    with pytest.raises(DomainError) as err:
        SignalFiltering(**{field: value})  # type: ignore[arg-type]
    assert err.value.field == field


# -- properties --------------------------------------------------------------------------

debounces = st.sampled_from([0.1, 0.2, 0.3, 0.5, 1.0])
poll_gaps = st.floats(min_value=0.02, max_value=0.4)


@settings(max_examples=300, deadline=None)
@given(
    debounce=debounces,
    flapping_changes=st.sampled_from([0, 4, 8]),
    bounces=st.lists(
        st.tuples(
            st.lists(poll_gaps, min_size=1, max_size=6),  # polls reading closed
            st.lists(poll_gaps, min_size=0, max_size=6),  # gaps between "open" polls
        ),
        max_size=20,
    ),
)
def test_no_bounce_shorter_than_the_debounce_ever_makes_a_door_event(
    debounce: float, flapping_changes: int, bounces: list[tuple[list[float], list[float]]]
) -> None:
    m = model(SignalFiltering(door_debounce_s=debounce, flapping_changes=flapping_changes,
                              flapping_window_s=3.0, flapping_clear_s=5.0))
    t = 0.0
    events = m.poll_ok("b1", door_levels(False), now(t))
    for closed_gaps, open_gaps in bounces:
        for gap in closed_gaps:
            t += gap
            events += m.poll_ok("b1", door_levels(False), now(t))
        # One bounce: the door reads open at polls spanning less than the debounce.
        first_open = t + 0.02
        t = first_open
        events += m.poll_ok("b1", door_levels(True), now(t))
        for gap in open_gaps:
            if t + gap - first_open >= debounce:
                break
            t += gap
            events += m.poll_ok("b1", door_levels(True), now(t))
        t += 0.02
        events += m.poll_ok("b1", door_levels(False), now(t))
        events += m.tick(now(t))
    assert [e for e in events if e.kind in DOOR_EVENTS] == []
    assert alarms(events, AlarmKind.FORCED_OPEN) == []


@settings(max_examples=300, deadline=None)
@given(
    debounce=debounces,
    poll=poll_gaps,
    settle=st.integers(min_value=1, max_value=30),
    open_at=st.floats(min_value=0.0, max_value=1.0),
    bounces=st.lists(st.integers(min_value=1, max_value=3), max_size=3),
)
def test_a_steady_change_is_reported_within_debounce_plus_one_poll(
    debounce: float, poll: float, settle: int, open_at: float, bounces: list[int]
) -> None:
    m = model(SignalFiltering(door_debounce_s=debounce, flapping_changes=8,
                              flapping_window_s=3.0, flapping_clear_s=5.0))
    t = 0.0
    m.poll_ok("b1", door_levels(False), now(t))
    for _ in range(settle):
        t += poll
        m.poll_ok("b1", door_levels(False), now(t))
    for polls in bounces:  # a few short bounces first (at most 6 changes: not flapping)
        t += poll
        m.poll_ok("b1", door_levels(True), now(t))
        for _ in range(polls):
            t += poll
            m.poll_ok("b1", door_levels(False), now(t))
    # The door opens for good somewhere in the next poll interval.
    change = t + open_at * poll
    t += poll
    first_seen = t
    assert first_seen >= change
    reported: float | None = None
    while t <= first_seen + debounce + 2 * poll:
        events = m.poll_ok("b1", door_levels(True), now(t))
        if any(e.kind is EventKind.DOOR_OPENED for e in events):
            reported = t
            break
        t += poll
    assert reported is not None
    assert reported - first_seen <= debounce + poll + 1e-9


@pytest.mark.parametrize("phase", [i * 0.007 for i in range(15)])
def test_at_the_defaults_a_045s_opening_is_always_seen_and_a_02s_flicker_never(
    phase: float,
) -> None:
    """What docs/configuration.md promises for 10 Hz polling, at every phase of the poll."""

    def events_for(open_from: float, open_until: float) -> list[Emitted]:
        m = model()
        out: list[Emitted] = []
        for i in range(40):
            t = phase + i * POLL
            out += m.poll_ok("b1", door_levels(open_from <= t < open_until), now(t))
        return [e for e in out if e.kind in DOOR_EVENTS]

    assert [e.kind for e in events_for(1.0, 1.45)] == [EventKind.DOOR_OPENED,
                                                       EventKind.DOOR_CLOSED]
    assert events_for(1.0, 1.2) == []
