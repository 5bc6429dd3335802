from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from controller.domain.errors import DomainError, ErrorCode
from controller.domain.events import AlarmKind, DomainEvent, EventKind
from controller.domain.signals import (
    BoardHealth,
    BoardInputs,
    CabinetSignals,
    CompartmentWiring,
    DoorReading,
    LatchReading,
    OccupancyReading,
    Polarity,
    SignalWiring,
    TriState,
)


@pytest.mark.parametrize(
    ("polarity", "level", "expected"),
    [
        (Polarity.HIGH, True, TriState.ACTIVE),
        (Polarity.HIGH, False, TriState.INACTIVE),
        (Polarity.LOW, True, TriState.INACTIVE),
        (Polarity.LOW, False, TriState.ACTIVE),
        (Polarity.HIGH, None, TriState.UNKNOWN),
        (Polarity.LOW, None, TriState.UNKNOWN),
    ],
)
def test_polarity_interprets_raw_level(
    polarity: Polarity, level: bool | None, expected: TriState
) -> None:
    assert polarity.interpret(level) is expected


def test_polarity_parses_config_strings() -> None:
    assert Polarity("high") is Polarity.HIGH
    assert Polarity("low") is Polarity.LOW


def test_readings_from_tristate() -> None:
    assert DoorReading.from_tristate(TriState.ACTIVE) is DoorReading.OPEN
    assert DoorReading.from_tristate(TriState.INACTIVE) is DoorReading.CLOSED
    assert DoorReading.from_tristate(TriState.UNKNOWN) is DoorReading.UNKNOWN
    assert LatchReading.from_tristate(TriState.ACTIVE) is LatchReading.RELEASED
    assert LatchReading.from_tristate(TriState.INACTIVE) is LatchReading.ENGAGED
    assert OccupancyReading.from_tristate(TriState.ACTIVE) is OccupancyReading.OCCUPIED
    assert OccupancyReading.from_tristate(TriState.INACTIVE) is OccupancyReading.EMPTY
    assert OccupancyReading.from_tristate(TriState.UNKNOWN) is OccupancyReading.UNKNOWN


def test_never_polled_board_is_unknown_without_alarm() -> None:
    board = BoardInputs("locks-a")
    assert board.health is BoardHealth.NEVER_POLLED
    assert board.level(0) is None
    assert board.active_alarms == frozenset()


def test_good_poll_gives_levels() -> None:
    board = BoardInputs("locks-a")
    assert board.poll_succeeded([True, False], at=1.0) == []
    assert board.health is BoardHealth.ONLINE
    assert board.level(0) is True
    assert board.level(1) is False
    assert board.level(2) is None  # not reported
    assert board.last_good_at == 1.0


def test_failed_polls_below_threshold_keep_last_levels() -> None:
    board = BoardInputs("locks-a")
    board.poll_succeeded([True], at=1.0)
    assert board.poll_failed(2.0) == []
    assert board.poll_failed(3.0) == []
    assert board.health is BoardHealth.DEGRADED
    assert board.consecutive_failures == 2
    assert board.level(0) is True


def test_third_failed_poll_makes_everything_unknown_and_raises_once() -> None:
    board = BoardInputs("locks-a")
    board.poll_succeeded([False], at=1.0)
    board.poll_failed(2.0)
    board.poll_failed(3.0)
    events = board.poll_failed(4.0, reason="timeout")
    raised = (EventKind.ALARM_RAISED, AlarmKind.BOARD_OFFLINE)
    assert [(e.kind, e.alarm) for e in events] == [raised]
    assert events[0].details["board"] == "locks-a"
    assert events[0].details["failures"] == 3
    assert events[0].details["reason"] == "timeout"
    assert events[0].compartment is None
    assert board.health is BoardHealth.OFFLINE
    assert board.level(0) is None
    assert board.poll_failed(5.0) == []  # once per incident
    assert board.active_alarms == {AlarmKind.BOARD_OFFLINE}


def test_never_polled_board_goes_offline_after_threshold() -> None:
    board = BoardInputs("locks-a", offline_after=2)
    assert board.poll_failed(1.0) == []
    assert board.health is BoardHealth.NEVER_POLLED
    assert len(board.poll_failed(2.0)) == 1
    assert board.health is BoardHealth.OFFLINE


def test_one_good_poll_restores_and_clears() -> None:
    board = BoardInputs("locks-a", offline_after=1)
    board.poll_succeeded([False], at=1.0)
    board.poll_failed(2.0)
    events = board.poll_succeeded([True], at=5.0)
    cleared = (EventKind.ALARM_CLEARED, AlarmKind.BOARD_OFFLINE)
    assert [(e.kind, e.alarm) for e in events] == [cleared]
    assert events[0].details["active_s"] == 3.0
    assert board.level(0) is True  # one good poll
    assert board.health is BoardHealth.ONLINE


def test_invalid_parameters_are_rejected() -> None:
    with pytest.raises(DomainError) as err:
        BoardInputs("x", offline_after=0)
    assert err.value.code is ErrorCode.INVALID_ARGUMENT
    assert err.value.field == "offline_after"
    with pytest.raises(DomainError):
        SignalWiring("x", -1)


WIRING = [
    CompartmentWiring(
        "A01",
        door=SignalWiring("locks-a", 0, Polarity.HIGH),
        latch=SignalWiring("locks-a", 1, Polarity.LOW),
        occupancy=SignalWiring("io-b", 0, Polarity.HIGH),
    ),
    CompartmentWiring("A02", door=SignalWiring("locks-a", 2, Polarity.LOW)),
]


def test_cabinet_readings_apply_polarity_per_signal() -> None:
    cabinet = CabinetSignals(WIRING)
    assert set(cabinet.boards) == {"locks-a", "io-b"}
    cabinet.poll_succeeded("locks-a", [True, True, True], at=1.0)
    cabinet.poll_succeeded("io-b", [False], at=1.0)
    a01 = cabinet.readings("A01")
    assert a01.door is DoorReading.OPEN
    assert a01.latch is LatchReading.ENGAGED  # low = released, raw high = engaged
    assert a01.occupancy is OccupancyReading.EMPTY
    a02 = cabinet.readings("A02")
    assert a02.door is DoorReading.CLOSED
    assert a02.latch is None
    assert a02.occupancy is None


def test_cabinet_offline_board_only_affects_its_signals() -> None:
    cabinet = CabinetSignals(WIRING, offline_after=1)
    cabinet.poll_succeeded("locks-a", [False, True, True], at=1.0)
    cabinet.poll_succeeded("io-b", [True], at=1.0)
    events = cabinet.poll_failed("io-b", at=2.0)
    assert events[0].details["board"] == "io-b"
    a01 = cabinet.readings("A01")
    assert a01.door is DoorReading.CLOSED
    assert a01.occupancy is OccupancyReading.UNKNOWN


def test_cabinet_errors() -> None:
    cabinet = CabinetSignals(WIRING)
    with pytest.raises(DomainError) as err:
        cabinet.readings("Z99")
    assert err.value.code is ErrorCode.UNKNOWN_COMPARTMENT
    with pytest.raises(DomainError):
        cabinet.poll_failed("nope", at=0.0)
    with pytest.raises(DomainError):
        CabinetSignals([CompartmentWiring("A01"), CompartmentWiring("A01")])


def test_before_any_poll_readings_are_unknown() -> None:
    cabinet = CabinetSignals(WIRING)
    a01 = cabinet.readings("A01")
    assert (a01.door, a01.latch, a01.occupancy) == (
        DoorReading.UNKNOWN,
        LatchReading.UNKNOWN,
        OccupancyReading.UNKNOWN,
    )


class BoardHealthMachine(RuleBasedStateMachine):
    """Random good and failed polls; the board never vouches for a level it cannot know."""

    def __init__(self) -> None:
        super().__init__()
        self.board = BoardInputs("b", offline_after=3)
        self.now = 0.0
        self.failures = 0
        self.ever_polled = False
        self.offline = False
        self.raised = 0
        self.cleared = 0

    def _count(self, events: list[DomainEvent]) -> None:
        for event in events:
            assert event.alarm is AlarmKind.BOARD_OFFLINE
            if event.kind is EventKind.ALARM_RAISED:
                self.raised += 1
            else:
                self.cleared += 1

    @rule(levels=st.lists(st.booleans(), min_size=2, max_size=2))
    def good_poll(self, levels: list[bool]) -> None:
        self.now += 0.1
        was_offline = self.offline
        self._count(self.board.poll_succeeded(levels, self.now))
        self.failures = 0
        self.offline = False
        if was_offline or not self.ever_polled:
            assert [self.board.level(0), self.board.level(1)] == levels
        self.ever_polled = True

    @rule()
    def failed_poll(self) -> None:
        self.now += 0.1
        self._count(self.board.poll_failed(self.now))
        self.failures += 1
        if self.failures >= 3:
            self.offline = True

    @invariant()
    def unknown_when_offline(self) -> None:
        if self.offline or not self.ever_polled:
            assert self.board.level(0) is None
            assert Polarity.LOW.interpret(self.board.level(0)) is TriState.UNKNOWN
        else:
            assert self.board.level(0) is not None

    @invariant()
    def alarm_iff_offline(self) -> None:
        assert (AlarmKind.BOARD_OFFLINE in self.board.active_alarms) == self.offline
        assert self.raised - self.cleared == (1 if self.offline else 0)


TestBoardHealthMachine = BoardHealthMachine.TestCase
TestBoardHealthMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
