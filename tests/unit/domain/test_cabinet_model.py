"""The cabinet aggregate: polls, pulses and doors joined, with two clocks."""

from __future__ import annotations

from controller.domain.cabinet_model import CabinetModel, CompartmentSetup, Now
from controller.domain.compartment import CompartmentSpec, OpenPurpose, Order, Size, ZoneKind
from controller.domain.door import DoorTiming
from controller.domain.signals import CompartmentWiring, Polarity, SignalWiring

WALL0 = 1_800_000_000.0


def _model() -> CabinetModel:
    def setup(cid: str, door_ch: int, occ_ch: int) -> CompartmentSetup:
        return CompartmentSetup(
            CompartmentSpec(cid, Size.M, "ambient", ZoneKind.AMBIENT, "grocery",
                            has_occupancy_sensor=True),
            CompartmentWiring(cid, door=SignalWiring("b1", door_ch, Polarity.HIGH),
                              occupancy=SignalWiring("b1", occ_ch, Polarity.HIGH)),
            DoorTiming(open_detect_timeout_s=5.0, ajar_after_s=30.0),
        )

    return CabinetModel([setup("A01", 0, 1), setup("A02", 2, 3)])


def now(mono: float) -> Now:
    return Now(mono, WALL0 + mono)


def levels(**on: bool) -> tuple[bool, ...]:
    out = [False] * 4
    for name, value in on.items():
        out[int(name[1:])] = value
    return tuple(out)


def kinds(events: list) -> list[str]:  # type: ignore[type-arg]
    return [e.kind.value for e in events]


def test_deposit_story_from_pulse_to_loaded() -> None:
    m = _model()
    m.poll_ok("b1", levels(), now(0.0))
    order = Order("o-1", "grocery", Size.M, ZoneKind.AMBIENT, expires_at=WALL0 + 3600)
    assert kinds(m.assign("A01", order, now(1.0))) == ["compartment_assigned"]
    assert kinds(m.request_open("A01", OpenPurpose.DEPOSIT, now(2.0))) == ["open_requested"]
    assert kinds(m.pulse_sent("A01", now(2.0))) == ["unlock_pulse_sent"]
    assert kinds(m.pulse_acked("A01", now(2.02))) == ["unlock_pulse_acked"]
    opened = m.poll_ok("b1", levels(c0=True), now(2.3))
    assert kinds(opened) == ["door_opened"]
    assert opened[0].event.details["authorised"] is True
    closed = m.poll_ok("b1", levels(c1=True), now(5.0))
    assert kinds(closed) == ["door_closed", "compartment_loaded"]
    # The wall time of a door fact comes from its monotonic instant.
    assert closed[0].at_wall == WALL0 + 5.0


def test_a_door_opened_without_a_pulse_is_forced() -> None:
    m = _model()
    m.poll_ok("b1", levels(), now(0.0))
    events = m.poll_ok("b1", levels(c2=True), now(1.0))
    assert "door_opened" in kinds(events)
    assert any(e.event.alarm is not None and e.event.alarm.value == "forced_open"
               for e in events)
    cleared = m.poll_ok("b1", levels(), now(2.0))
    assert "alarm_cleared" in kinds(cleared)


def test_unchanged_polls_produce_nothing_and_timers_still_run() -> None:
    m = _model()
    m.poll_ok("b1", levels(), now(0.0))
    m.pulse_sent("A02", now(1.0))
    m.pulse_acked("A02", now(1.0))
    for t in range(2, 10):
        assert m.poll_ok("b1", levels(), now(float(t))) == []
    assert "open_not_detected" in kinds(m.tick(now(10.0)))


def test_dead_board_makes_signals_unknown_then_recovers() -> None:
    m = _model()
    m.poll_ok("b1", levels(c1=True), now(0.0))
    events = []
    for t in range(1, 4):
        events += m.poll_failed("b1", now(float(t)), "timeout")
    assert any(e.event.alarm is not None and e.event.alarm.value == "board_offline"
               for e in events)
    comps = {c["id"]: c for c in m.snapshot()["compartments"]}
    assert comps["A01"]["signals"] == {"door": "unknown", "latch": None, "occupancy": "unknown"}
    back = m.poll_ok("b1", levels(c1=True), now(5.0))
    assert "alarm_cleared" in kinds(back)
    comps = {c["id"]: c for c in m.snapshot()["compartments"]}
    assert comps["A01"]["signals"]["occupancy"] == "occupied"


def test_stored_state_round_trips() -> None:
    m = _model()
    order = Order("o-9", "grocery", Size.M, ZoneKind.AMBIENT, expires_at=WALL0 + 3600)
    m.assign("A02", order, now(1.0))
    stored = {"A02": m.stored_state("A02")}
    again = CabinetModel([m.setup("A01"), m.setup("A02")], stored=stored)
    restored = again.compartments.get("A02").order
    assert restored is not None
    assert restored.order_id == "o-9"


def _split_model() -> CabinetModel:
    """Door switch on one board, occupancy sensor on another (as on many cabinets)."""
    return CabinetModel([CompartmentSetup(
        CompartmentSpec("B01", Size.S, "ambient", ZoneKind.AMBIENT, "parcel",
                        has_occupancy_sensor=True),
        CompartmentWiring("B01", door=SignalWiring("locks", 0, Polarity.HIGH),
                          occupancy=SignalWiring("io", 0, Polarity.HIGH)),
        DoorTiming(open_detect_timeout_s=5.0, ajar_after_s=30.0),
    )])


def test_quick_close_waits_for_the_occupancy_board_read_after_it() -> None:
    m = _split_model()
    m.poll_ok("locks", (False,), now(0.0))
    m.poll_ok("io", (False,), now(0.01))
    m.assign("B01", Order("o-1", "parcel", Size.S, ZoneKind.AMBIENT,
                          expires_at=WALL0 + 3600), now(0.5))
    m.request_open("B01", OpenPurpose.DEPOSIT, now(1.0))
    m.pulse_sent("B01", now(1.0))
    m.pulse_acked("B01", now(1.02))
    assert "door_opened" in kinds(m.poll_ok("locks", (True,), now(1.1)))
    # The parcel goes in and the door shuts before the occupancy board is read again.
    closed = m.poll_ok("locks", (False,), now(1.2))
    assert kinds(closed) == ["door_closed"]  # no verdict on a stale "empty"
    settled = m.poll_ok("io", (True,), now(1.21))
    assert kinds(settled) == ["compartment_loaded"]


def test_quick_close_with_the_occupancy_board_dead_is_decided_in_doubt() -> None:
    m = _split_model()
    m.poll_ok("locks", (False,), now(0.0))
    m.poll_ok("io", (False,), now(0.01))
    m.assign("B01", Order("o-2", "parcel", Size.S, ZoneKind.AMBIENT,
                          expires_at=WALL0 + 3600), now(0.5))
    m.request_open("B01", OpenPurpose.DEPOSIT, now(1.0))
    m.pulse_sent("B01", now(1.0))
    m.pulse_acked("B01", now(1.0))
    m.poll_ok("locks", (True,), now(1.1))
    m.poll_ok("locks", (False,), now(1.2))
    events = []
    for t in range(3):
        events += m.poll_failed("io", now(1.3 + t), "timeout")
    loaded = [e for e in events if e.kind.value == "compartment_loaded"]
    assert loaded
    assert loaded[0].event.details["confirmed"] is False


def test_an_authorised_open_resumes_after_a_restart() -> None:
    m = _model()
    m.poll_ok("b1", levels(c1=True), now(0.0))
    order = Order("o-5", "grocery", Size.M, ZoneKind.AMBIENT, expires_at=WALL0 + 3600)
    m.assign("A01", order, now(0.5))
    m.request_open("A01", OpenPurpose.DEPOSIT, now(1.0))
    m.pulse_sent("A01", now(1.0))
    m.pulse_acked("A01", now(1.0))
    m.poll_ok("b1", levels(c0=True, c1=True), now(1.2))
    stored = {"A01": m.stored_state("A01")}
    assert stored["A01"]["door_open_authorised"] is True
    assert stored["A01"]["open_purpose"] == "deposit"
    # A new process: the door is found open, as it was left.
    again = CabinetModel([m.setup("A01"), m.setup("A02")], stored=stored)
    first = again.poll_ok("b1", levels(c0=True, c1=True), now(0.0))
    assert [e.event.alarm for e in first if e.event.alarm is not None] == []
    opened = [e for e in first if e.kind.value == "door_opened"]
    assert opened[0].event.details["authorised"] is True
    closed = again.poll_ok("b1", levels(c1=True), now(1.0))
    assert "compartment_loaded" in kinds(closed)


def _pulsed_then_died() -> dict[str, dict[str, object]]:
    """A process that declared a deposit open and sent its pulse, and died before any poll
    saw the door move: what it left in the store."""
    m = _model()
    m.poll_ok("b1", levels(c1=True), now(0.0))
    order = Order("o-6", "grocery", Size.M, ZoneKind.AMBIENT, expires_at=WALL0 + 3600)
    m.assign("A01", order, now(0.5))
    m.request_open("A01", OpenPurpose.DEPOSIT, now(1.0))
    stored = {"A01": m.stored_state("A01")}  # saved before the pulse (write before acting)
    m.pulse_sent("A01", now(1.0))
    assert stored["A01"]["open_purpose"] == "deposit"
    assert stored["A01"]["open_awaited"] is True
    return stored


def test_a_door_opening_just_after_a_restart_is_the_open_declared_before_it() -> None:
    stored = _pulsed_then_died()
    again = CabinetModel([_model().setup("A01"), _model().setup("A02")], stored=stored)
    assert kinds(again.poll_ok("b1", levels(c1=True), now(0.0))) == []
    opened = again.poll_ok("b1", levels(c0=True, c1=True), now(0.4))
    assert kinds(opened) == ["door_opened"]  # no forced_open alarm
    assert opened[0].event.details["authorised"] is True
    closed = again.poll_ok("b1", levels(c1=True), now(2.0))
    assert "compartment_loaded" in kinds(closed)


def test_a_declared_open_that_never_comes_after_a_restart_ends_as_not_detected() -> None:
    stored = _pulsed_then_died()
    again = CabinetModel([_model().setup("A01"), _model().setup("A02")], stored=stored)
    again.poll_ok("b1", levels(c1=True), now(0.0))
    ended = again.tick(now(5.5))
    assert kinds(ended) == ["open_not_detected"]
    assert again.compartments.get("A01").open_purpose is None
    # After the window, a door opening is forced again.
    late = again.poll_ok("b1", levels(c0=True, c1=True), now(7.0))
    assert [e.event.alarm for e in late if e.event.alarm is not None] != []
