"""The cheap path of an unchanged poll (``CabinetSignals.poll_unchanged``) decides nothing
differently from the whole path: the same readings, alarms, events and door states after
any sequence of polls, failed polls, pulses and ticks, whatever the filtering."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.domain.cabinet_model import CabinetModel, CompartmentSetup, Emitted, Now
from controller.domain.compartment import CompartmentSpec, OpenPurpose, Order, Size, ZoneKind
from controller.domain.door import DoorTiming
from controller.domain.errors import DomainError
from controller.domain.signals import (
    CabinetSignals,
    CompartmentWiring,
    Polarity,
    SignalFiltering,
    SignalWiring,
)

WALL0 = 1_800_000_000.0
BOARDS = ("b1", "b2")
CHANNELS = 3


class WholePathSignals(CabinetSignals):
    """The reference: every poll takes the whole path."""

    def poll_unchanged(self, board: str, levels: Sequence[bool], at: float) -> bool:
        return False


def _setups() -> list[CompartmentSetup]:
    timing = DoorTiming(open_detect_timeout_s=0.6, ajar_after_s=1.5)

    def spec(cid: str, occupancy: bool) -> CompartmentSpec:
        return CompartmentSpec(cid, Size.M, "ambient", ZoneKind.AMBIENT, "grocery",
                               has_occupancy_sensor=occupancy)

    return [
        # Everything on one board.
        CompartmentSetup(spec("A01", True), CompartmentWiring(
            "A01", door=SignalWiring("b1", 0), latch=SignalWiring("b1", 1),
            occupancy=SignalWiring("b1", 2, Polarity.LOW)), timing),
        # Door on one board, latch and occupancy on the other: a close waits for the
        # occupancy board's next read, and readings of a compartment of b2 change when b1
        # is read (channels shared with A01, as a test of independence, not of wiring).
        CompartmentSetup(spec("A02", True), CompartmentWiring(
            "A02", door=SignalWiring("b2", 0), latch=SignalWiring("b1", 2),
            occupancy=SignalWiring("b1", 1)), timing),
        # A door switch only, on a channel the board may not report.
        CompartmentSetup(spec("A03", False), CompartmentWiring(
            "A03", door=SignalWiring("b2", 2, Polarity.LOW)), timing),
    ]


def _model(filtering: SignalFiltering, *, whole_path: bool) -> CabinetModel:
    setups = _setups()
    model = CabinetModel(setups, filtering=filtering, offline_after=2)
    if whole_path:
        model.signals = WholePathSignals([s.wiring for s in setups], offline_after=2,
                                         filtering=filtering)
    return model


def _view(model: CabinetModel) -> dict[str, Any]:
    return {
        "snapshot": model.snapshot(),
        "readings": [model.signals.readings(cid) for cid in model.compartment_ids()],
        "flapping": [model.signals.active_alarms(cid) for cid in model.compartment_ids()],
        "health": [(b, model.signals.board(b).health, model.signals.board(b).last_good_at,
                    model.signals.board(b).consecutive_failures) for b in BOARDS],
        "deadline": model.next_deadline(),
        "stored": [model.stored_state(cid) for cid in model.compartment_ids()],
    }


def _events(events: list[Emitted]) -> list[tuple[Any, ...]]:
    """A step's events, each compartment's in the order they came. Two compartments' door
    timers that run out in one step fire at the poll of each door's board on the whole
    path and at the tick on the cheap one: the same events, in another order across
    compartments (each compartment's own order, which its events' meaning rests on, is
    compared as it is)."""
    rows = [(e.kind, e.compartment, e.at_wall, sorted(e.data().items())) for e in events]
    return sorted(rows, key=lambda row: str(row[1]))  # stable: keeps each one's order


_levels = st.lists(st.booleans(), min_size=CHANNELS - 1, max_size=CHANNELS).map(tuple)
_step = st.one_of(
    st.tuples(st.just("ok"), st.sampled_from(BOARDS), _levels),
    # Repeats of a board's last levels are the common case: weight them up.
    st.tuples(st.just("same"), st.sampled_from(BOARDS), st.none()),
    st.tuples(st.just("same"), st.sampled_from(BOARDS), st.none()),
    st.tuples(st.just("same"), st.sampled_from(BOARDS), st.none()),
    st.tuples(st.just("fail"), st.sampled_from(BOARDS), st.none()),
    st.tuples(st.just("open"), st.sampled_from(("A01", "A02", "A03")),
              st.sampled_from(list(OpenPurpose))),
    st.tuples(st.just("assign"), st.sampled_from(("A01", "A02", "A03")), st.none()),
)
_filtering = st.builds(
    SignalFiltering,
    door_debounce_s=st.sampled_from((0.0, 0.05, 0.25)),
    latch_debounce_s=st.sampled_from((0.0, 0.1)),
    occupancy_debounce_s=st.sampled_from((0.0, 0.2)),
    flapping_changes=st.sampled_from((0, 2, 4)),
    flapping_window_s=st.sampled_from((0.5, 1.0)),
    flapping_clear_s=st.sampled_from((0.3, 1.0)),
)


@settings(max_examples=300, deadline=None)
@given(filtering=_filtering,
       steps=st.lists(st.tuples(_step, st.sampled_from((0.01, 0.05, 0.1, 0.3))),
                      max_size=80))
def test_the_cheap_path_decides_like_the_whole_path(
    filtering: SignalFiltering, steps: list[tuple[tuple[str, str, Any], float]]
) -> None:
    fast = _model(filtering, whole_path=False)
    whole = _model(filtering, whole_path=True)
    last: dict[str, tuple[bool, ...]] = {b: (False,) * CHANNELS for b in BOARDS}
    mono = 100.0
    for (action, target, levels), dt in steps:
        mono += dt
        now = Now(mono, WALL0 + mono)
        results = []
        for model in (fast, whole):
            if action in ("ok", "same"):
                got = model.poll_ok(target, levels if action == "ok" else last[target], now)
            elif action == "fail":
                got = model.poll_failed(target, now, "timeout")
            elif action == "assign":
                order = Order(f"o-{target}-{mono}", "grocery", Size.M, ZoneKind.AMBIENT,
                              expires_at=WALL0 + 3600.0)
                try:
                    got = model.assign(target, order, now)
                except DomainError:
                    got = []
            else:
                try:
                    got = model.request_open(target, levels, now, "test")
                except DomainError:
                    got = []
                got += model.pulse_sent(target, now) + model.pulse_acked(target, now)
            # The ticker runs after every step: door timers fire at a poll or at the
            # next tick, the same events either way.
            got += model.tick(now)
            results.append((_events(got), _view(model)))
        if action == "ok":
            last[target] = levels
        assert results[0] == results[1]


def test_an_unchanged_poll_of_a_settled_board_is_the_cheap_one() -> None:
    model = _model(SignalFiltering(door_debounce_s=0.25), whole_path=False)
    model.poll_ok("b1", (False, False, True), Now(1.0, WALL0 + 1.0))
    assert model.signals.poll_unchanged("b1", (False, False, True), 1.1)
    assert model.signals.board("b1").last_good_at == 1.1
    # A new level waits out its debounce: the whole path runs until it settles.
    model.poll_ok("b1", (True, False, True), Now(1.2, WALL0 + 1.2))
    assert not model.signals.poll_unchanged("b1", (True, False, True), 1.3)
    model.poll_ok("b1", (True, False, True), Now(1.5, WALL0 + 1.5))
    assert model.signals.poll_unchanged("b1", (True, False, True), 1.6)
    # A failed poll forgets it.
    model.poll_failed("b1", Now(1.7, WALL0 + 1.7))
    assert not model.signals.poll_unchanged("b1", (True, False, True), 1.8)


def test_a_close_waiting_for_the_occupancy_board_is_decided_at_its_next_read() -> None:
    # A02's door is on b2, its occupancy sensor on b1: b1 unchanged is still read fully.
    model = _model(SignalFiltering(), whole_path=False)
    model.poll_ok("b1", (False, True, False), Now(1.0, WALL0 + 1.0))
    model.poll_ok("b2", (False, False, False), Now(1.0, WALL0 + 1.0))
    order = Order("o-1", "grocery", Size.M, ZoneKind.AMBIENT, expires_at=WALL0 + 3600.0)
    model.assign("A02", order, Now(1.1, WALL0 + 1.1))
    model.request_open("A02", OpenPurpose.DEPOSIT, Now(1.2, WALL0 + 1.2))
    model.pulse_sent("A02", Now(1.2, WALL0 + 1.2))
    model.pulse_acked("A02", Now(1.2, WALL0 + 1.2))
    model.poll_ok("b2", (True, False, False), Now(1.3, WALL0 + 1.3))
    closed = model.poll_ok("b2", (False, False, False), Now(1.5, WALL0 + 1.5))
    assert [e.kind.value for e in closed] == ["door_closed"]
    settled = model.poll_ok("b1", (False, True, False), Now(1.6, WALL0 + 1.6))
    assert [e.kind.value for e in settled] == ["compartment_loaded"]
