from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from controller.domain.assignment import assign_order
from controller.domain.compartment import (
    Compartment,
    Compartments,
    CompartmentSpec,
    CompartmentState,
    OpenPurpose,
    Order,
    Size,
    ZoneKind,
)
from controller.domain.errors import DomainError, ErrorCode
from controller.domain.events import AlarmKind, DomainEvent, EventKind
from controller.domain.signals import OccupancyReading

OCCUPIED, EMPTY, UNKNOWN = (
    OccupancyReading.OCCUPIED,
    OccupancyReading.EMPTY,
    OccupancyReading.UNKNOWN,
)


def spec(
    cid: str = "A01",
    size: Size = Size.M,
    *,
    sensor: bool = True,
    zone: str = "chilled",
    kind: ZoneKind = ZoneKind.CHILLED,
    pool: str = "grocery",
) -> CompartmentSpec:
    return CompartmentSpec(cid, size, zone, kind, pool, has_occupancy_sensor=sensor)


def order(oid: str = "o-1", size: Size = Size.S, **kw: Any) -> Order:
    values: dict[str, Any] = {"pool": "grocery", "zone": ZoneKind.CHILLED, "expires_at": 5000.0}
    values.update(kw)
    return Order(oid, size=size, **values)


def kinds(events: list[DomainEvent]) -> list[str]:
    return [e.alarm.value if e.alarm else e.kind.value for e in events]


def loaded(c: Compartment | None = None, *, sensor: bool = True) -> Compartment:
    c = c or Compartment(spec(sensor=sensor))
    c.assign(order(), 100.0)
    c.open_for_deposit(101.0)
    c.door_opened(102.0)
    c.door_closed(OCCUPIED, 110.0)
    assert c.state is CompartmentState.LOADED
    return c


def assert_refused(code: ErrorCode, c: Compartment, action: Any, *args: Any) -> None:
    before = (c.to_dict(), c.status())
    with pytest.raises(DomainError) as err:
        action(*args)
    assert err.value.code is code
    assert (c.to_dict(), c.status()) == before


# -- values ------------------------------------------------------------------------------


def test_sizes_order_and_fit() -> None:
    assert [s.rank for s in (Size.S, Size.M, Size.L, Size.XL)] == [0, 1, 2, 3]
    assert Size.L.fits(Size.M)
    assert Size.M.fits(Size.M)
    assert not Size.M.fits(Size.L)
    assert not Size.L.fits(Size.XL)


def test_zone_kinds() -> None:
    assert ZoneKind.FROZEN.is_cold
    assert ZoneKind.CHILLED.is_cold
    assert not ZoneKind.AMBIENT.is_cold


def test_order_validation_and_round_trip() -> None:
    with pytest.raises(DomainError):
        order("")
    with pytest.raises(DomainError):
        order(pool="")
    with pytest.raises(DomainError):
        order(pickup_from=6000.0)
    o = order(pickup_from=10.0)
    assert Order.from_dict(o.to_dict()) == o


# -- assign ------------------------------------------------------------------------------


def test_assign_reserves() -> None:
    c = Compartment(spec())
    assert c.is_assignable
    events = c.assign(order(), 100.0)
    assert kinds(events) == ["compartment_assigned"]
    assert events[0].details["order"] == "o-1"
    assert c.state is CompartmentState.RESERVED
    assert c.order == order()
    assert not c.is_assignable
    assert c.next_deadline() == 5000.0


def test_assign_refusals_change_nothing() -> None:
    c = Compartment(spec())
    c.assign(order(), 1.0)
    assert_refused(ErrorCode.WRONG_STATE, c, c.assign, order("o-2"), 2.0)
    c = Compartment(spec())
    assert_refused(ErrorCode.WRONG_POOL, c, c.assign, order(pool="shop-7"), 1.0)
    assert_refused(ErrorCode.INVALID_ARGUMENT, c, c.assign, order(size=Size.L), 1.0)
    assert_refused(ErrorCode.INVALID_ARGUMENT, c, c.assign, order(zone=ZoneKind.FROZEN), 1.0)
    assert_refused(ErrorCode.ORDER_EXPIRED, c, c.assign, order(), 5000.0)
    c.block(1.0, "hinge")
    assert_refused(ErrorCode.COMPARTMENT_BLOCKED, c, c.assign, order(), 2.0)


def test_faulty_compartment_is_not_assigned() -> None:
    c = Compartment(spec(), fault_after=1)
    c.open_for_staff(1.0)
    c.open_not_detected(2.0)
    assert c.state is CompartmentState.FAULT
    assert_refused(ErrorCode.COMPARTMENT_FAULT, c, c.assign, order(), 3.0)


# -- deposit -----------------------------------------------------------------------------


def test_deposit_occupied_is_loaded() -> None:
    c = Compartment(spec())
    c.assign(order(), 100.0)
    events = c.open_for_deposit(101.0)
    assert kinds(events) == ["open_requested"]
    assert events[0].details == {"purpose": "deposit", "order": "o-1"}
    assert c.pending_open is OpenPurpose.DEPOSIT
    assert c.door_opened(102.0) == []
    events = c.door_closed(OCCUPIED, 110.0)
    assert kinds(events) == ["compartment_loaded"]
    assert events[0].details["confirmed"] is True
    assert c.state is CompartmentState.LOADED
    assert c.goods_inside
    assert c.pending_open is None


def test_deposit_empty_is_reported_not_loaded() -> None:
    c = Compartment(spec())
    c.assign(order(), 100.0)
    c.open_for_deposit(101.0)
    c.door_opened(102.0)
    assert kinds(c.door_closed(EMPTY, 110.0)) == ["deposit_empty"]
    assert c.state is CompartmentState.RESERVED
    assert not c.goods_inside


def test_deposit_unknown_occupancy_is_loaded_unconfirmed() -> None:
    c = Compartment(spec())
    c.assign(order(), 100.0)
    c.open_for_deposit(101.0)
    c.door_opened(102.0)
    events = c.door_closed(UNKNOWN, 110.0)
    assert kinds(events) == ["compartment_loaded"]
    assert events[0].details["confirmed"] is False
    assert events[0].details["occupancy"] == "unknown"


def test_deposit_without_sensor_is_loaded_on_close() -> None:
    c = Compartment(spec(sensor=False))
    c.assign(order(), 100.0)
    c.open_for_deposit(101.0)
    c.door_opened(102.0)
    events = c.door_closed(None, 110.0)
    assert events[0].details["occupancy"] == "no_sensor"
    assert c.state is CompartmentState.LOADED


def test_sensor_fitted_but_none_reading_counts_as_unknown() -> None:
    c = Compartment(spec())
    c.assign(order(), 100.0)
    c.open_for_deposit(101.0)
    c.door_opened(102.0)
    assert c.door_closed(None, 110.0)[0].details["occupancy"] == "unknown"


def test_reopen_for_more_goods_and_take_them_out() -> None:
    c = loaded()
    c.open_for_deposit(120.0)
    c.door_opened(121.0)
    assert kinds(c.door_closed(EMPTY, 130.0)) == ["deposit_empty"]
    assert c.state is CompartmentState.RESERVED


def test_deposit_refusals() -> None:
    c = Compartment(spec())
    assert_refused(ErrorCode.NOT_ASSIGNED, c, c.open_for_deposit, 1.0)
    c.assign(order(), 1.0)
    assert_refused(ErrorCode.ORDER_EXPIRED, c, c.open_for_deposit, 5000.0)
    c.block(2.0)
    assert_refused(ErrorCode.COMPARTMENT_BLOCKED, c, c.open_for_deposit, 3.0)


def test_close_without_open_changes_nothing() -> None:
    c = Compartment(spec())
    c.assign(order(), 1.0)
    c.open_for_deposit(2.0)
    assert c.door_closed(OCCUPIED, 3.0) == []  # the door never opened for it
    assert c.state is CompartmentState.RESERVED


# -- collection --------------------------------------------------------------------------


def test_collection_empty_is_collected_and_freed() -> None:
    c = loaded()
    assert kinds(c.open_for_collection(200.0)) == ["open_requested"]
    c.door_opened(201.0)
    events = c.door_closed(EMPTY, 230.0)
    assert kinds(events) == ["compartment_collected", "compartment_freed"]
    assert events[0].details["confirmed"] is True
    assert c.state is CompartmentState.FREE
    assert c.order is None
    assert c.is_assignable


def test_collection_occupied_is_incomplete() -> None:
    c = loaded()
    c.open_for_collection(200.0)
    c.door_opened(201.0)
    assert kinds(c.door_closed(OCCUPIED, 230.0)) == ["collection_incomplete"]
    assert c.state is CompartmentState.LOADED


def test_collection_unknown_is_unconfirmed_and_keeps_goods() -> None:
    c = loaded()
    c.open_for_collection(200.0)
    c.door_opened(201.0)
    assert kinds(c.door_closed(UNKNOWN, 230.0)) == ["collection_unconfirmed"]
    assert c.state is CompartmentState.LOADED
    assert c.goods_inside


def test_collection_without_sensor_frees_on_close() -> None:
    c = loaded(sensor=False)
    c.open_for_collection(200.0)
    c.door_opened(201.0)
    events = c.door_closed(None, 230.0)
    assert kinds(events) == ["compartment_collected", "compartment_freed"]
    assert events[0].details["confirmed"] is False


def test_collected_hold_allows_reopen_then_frees() -> None:
    c = loaded(Compartment(spec(), collected_hold_s=120.0))
    c.open_for_collection(200.0)
    c.door_opened(201.0)
    assert kinds(c.door_closed(EMPTY, 230.0)) == ["compartment_collected"]
    assert c.state is CompartmentState.COLLECTED
    assert not c.is_assignable
    assert c.next_deadline() == 350.0
    c.open_for_collection(240.0)  # reopen within the hold
    c.door_opened(241.0)
    c.door_closed(EMPTY, 250.0)
    assert c.tick(349.0) == []
    assert kinds(c.tick(370.0)) == ["compartment_freed"]
    assert c.state is CompartmentState.FREE


def test_collection_refusals() -> None:
    c = Compartment(spec())
    assert_refused(ErrorCode.NOT_ASSIGNED, c, c.open_for_collection, 1.0)
    c.assign(order(pickup_from=300.0), 100.0)
    assert_refused(ErrorCode.WRONG_STATE, c, c.open_for_collection, 400.0)  # nothing deposited
    c.open_for_deposit(101.0)
    c.door_opened(102.0)
    c.door_closed(OCCUPIED, 103.0)
    assert_refused(ErrorCode.PICKUP_NOT_OPEN, c, c.open_for_collection, 200.0)
    assert_refused(ErrorCode.ORDER_EXPIRED, c, c.open_for_collection, 5000.0)
    c.tick(5000.0)
    assert c.state is CompartmentState.EXPIRED
    assert_refused(ErrorCode.ORDER_EXPIRED, c, c.open_for_collection, 5001.0)


def test_unlock_failed_drops_the_request() -> None:
    c = loaded()
    c.open_for_collection(200.0)
    assert c.unlock_failed(201.0) == []
    assert c.pending_open is None


# -- staff, expiry, release --------------------------------------------------------------


def test_expiry_then_staff_retrieval_frees() -> None:
    c = loaded()
    events = c.tick(5000.0)
    assert kinds(events) == ["order_expired"]
    assert events[0].details == {"order": "o-1", "goods_inside": True}
    assert c.tick(5001.0) == []
    c.open_for_staff(5100.0, "retrieval")
    c.door_opened(5101.0)
    assert kinds(c.door_closed(EMPTY, 5110.0)) == ["order_retrieved", "compartment_freed"]
    assert c.state is CompartmentState.FREE


def test_staff_retrieval_leaving_goods_changes_nothing() -> None:
    c = loaded()
    c.tick(5000.0)
    c.open_for_staff(5100.0)
    c.door_opened(5101.0)
    assert c.door_closed(OCCUPIED, 5110.0) == []
    assert c.state is CompartmentState.EXPIRED


def test_expiry_waits_for_an_open_in_progress() -> None:
    c = loaded()
    c.open_for_collection(4990.0)
    c.door_opened(4991.0)
    assert c.tick(5000.0) == []
    c.door_closed(EMPTY, 5010.0)
    assert c.state is CompartmentState.FREE


def test_reserved_expires_and_release_frees() -> None:
    c = Compartment(spec())
    c.assign(order(), 1.0)
    assert c.tick(5000.0)[0].details["goods_inside"] is False
    events = c.release(5001.0)
    assert kinds(events) == ["order_released", "compartment_freed"]


def test_release_reserved_frees() -> None:
    c = Compartment(spec())
    c.assign(order(), 1.0)
    events = c.release(2.0, "customer_cancelled")
    assert events[0].details == {
        "order": "o-1",
        "reason": "customer_cancelled",
        "awaiting_retrieval": False,
    }
    assert c.state is CompartmentState.FREE


def test_release_loaded_waits_for_retrieval() -> None:
    c = loaded()
    events = c.release(200.0)
    assert events[0].details["awaiting_retrieval"] is True
    assert c.state is CompartmentState.EXPIRED
    assert_refused(ErrorCode.WRONG_STATE, c, c.release, 201.0)
    assert_refused(ErrorCode.ORDER_EXPIRED, c, c.open_for_collection, 202.0)


def test_release_free_is_not_assigned() -> None:
    c = Compartment(spec())
    assert_refused(ErrorCode.NOT_ASSIGNED, c, c.release, 1.0)


def test_block_keeps_phase_and_allows_staff_open() -> None:
    c = loaded()
    events = c.block(200.0, "broken hinge")
    assert kinds(events) == ["compartment_blocked"]
    assert c.state is CompartmentState.BLOCKED
    assert c.phase is CompartmentState.LOADED
    assert_refused(ErrorCode.COMPARTMENT_BLOCKED, c, c.open_for_collection, 201.0)
    assert_refused(ErrorCode.WRONG_STATE, c, c.block, 201.0)
    assert kinds(c.open_for_staff(202.0, "repair")) == ["open_requested"]
    c.door_opened(203.0)
    c.door_closed(OCCUPIED, 204.0)
    assert kinds(c.unblock(205.0)) == ["compartment_unblocked"]
    assert c.state is CompartmentState.LOADED
    assert_refused(ErrorCode.WRONG_STATE, c, c.unblock, 206.0)


def test_blocked_message_names_the_reason() -> None:
    c = Compartment(spec())
    c.block(1.0, "hinge")
    with pytest.raises(DomainError, match="hinge"):
        c.assign(order(), 2.0)


# -- fault -------------------------------------------------------------------------------


def test_fault_after_consecutive_open_not_detected() -> None:
    c = loaded()
    for i in range(2):
        c.open_for_collection(200.0 + i)
        assert c.open_not_detected(205.0 + i) == []
        assert c.pending_open is None
    c.open_for_collection(210.0)
    events = c.open_not_detected(215.0)
    assert kinds(events) == ["compartment_fault"]
    assert events[0].kind is EventKind.ALARM_RAISED
    assert c.state is CompartmentState.FAULT
    assert c.open_not_detected(220.0) == []  # once per incident
    assert_refused(ErrorCode.COMPARTMENT_FAULT, c, c.open_for_collection, 221.0)
    c.open_for_staff(222.0)  # staff may still try
    events = c.clear_fault(230.0)
    assert kinds(events) == ["compartment_fault"]
    assert events[0].kind is EventKind.ALARM_CLEARED
    assert c.state is CompartmentState.LOADED
    assert_refused(ErrorCode.WRONG_STATE, c, c.clear_fault, 231.0)


def test_a_detected_open_resets_the_count() -> None:
    c = loaded()
    c.open_for_collection(200.0)
    c.open_not_detected(201.0)
    c.open_for_collection(202.0)
    c.open_not_detected(203.0)
    c.open_for_collection(204.0)
    c.door_opened(205.0)
    c.door_closed(OCCUPIED, 206.0)
    c.open_for_collection(207.0)
    assert c.open_not_detected(208.0) == []
    assert not c.faulted


def test_constructor_validation() -> None:
    with pytest.raises(DomainError):
        Compartment(spec(), fault_after=0)
    with pytest.raises(DomainError):
        Compartment(spec(), collected_hold_s=-1)


# -- persistence -------------------------------------------------------------------------


def test_round_trip_through_dict() -> None:
    c = loaded(Compartment(spec(), fault_after=1))
    c.block(200.0, "hinge")
    c.open_for_staff(201.0)
    c.open_not_detected(202.0)
    data = c.to_dict()
    back = Compartment.from_dict(spec(), data, fault_after=1)
    assert back.to_dict() == data
    assert back.status() == c.status()
    cleared = back.clear_fault(210.0)
    assert cleared[0].details["active_s"] == 8.0


def test_from_dict_rejects_inconsistent_data() -> None:
    data = Compartment(spec()).to_dict()
    with pytest.raises(DomainError):
        Compartment.from_dict(spec("B01"), data)
    with pytest.raises(DomainError):
        Compartment.from_dict(spec(), {**data, "phase": "blocked"})
    with pytest.raises(DomainError):
        Compartment.from_dict(spec(), {**data, "phase": "loaded"})


def test_compartments_registry() -> None:
    a, b = Compartment(spec("A01")), Compartment(spec("A02"))
    cabinet = Compartments([a, b])
    assert len(cabinet) == 2
    assert "A01" in cabinet
    assert list(cabinet) == [a, b]
    assert cabinet.get("A02") is b
    with pytest.raises(DomainError) as err:
        cabinet.get("Z9")
    assert err.value.code is ErrorCode.UNKNOWN_COMPARTMENT
    assert err.value.field == "compartment"
    a.assign(order("o-7"), 1.0)
    assert cabinet.holding("o-7") is a
    assert cabinet.holding("o-8") is None
    with pytest.raises(DomainError):
        Compartments([a, Compartment(spec("A01"))])


# -- stateful ----------------------------------------------------------------------------


SPECS = [
    spec("A01", Size.S),
    spec("A02", Size.M, sensor=False),
    spec("A03", Size.L),
    spec("B01", Size.M, zone="ambient", kind=ZoneKind.AMBIENT),
]
IDS = [s.compartment_id for s in SPECS]


class CompartmentMachine(RuleBasedStateMachine):
    """Random dispatch, lane and door operations on a small cabinet."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.cabinet = Compartments(
            Compartment(s, fault_after=2, collected_hold_s=30.0 if i % 2 else 0.0)
            for i, s in enumerate(SPECS)
        )
        self.next_order = 0
        self.fault_active: set[str] = set()

    def _run(self, c: Compartment, action: Any, *args: Any) -> list[DomainEvent]:
        before = (c.to_dict(), c.status())
        was_blocked, was_faulted = c.blocked, c.faulted
        try:
            events = action(*args)
        except DomainError:
            assert (c.to_dict(), c.status()) == before, "a refused operation changed state"
            return []
        for event in events:
            assert event.compartment == c.compartment_id
            assert event.at == self.now
            if event.kind is EventKind.COMPARTMENT_ASSIGNED:
                assert not was_blocked, "a blocked compartment was assigned"
                assert not was_faulted, "a faulty compartment was assigned"
            if event.alarm is AlarmKind.COMPARTMENT_FAULT:
                if event.kind is EventKind.ALARM_RAISED:
                    assert c.compartment_id not in self.fault_active
                    self.fault_active.add(c.compartment_id)
                else:
                    self.fault_active.remove(c.compartment_id)
        return events

    @rule(dt=st.sampled_from([1.0, 20.0, 100.0, 400.0]))
    def advance(self, dt: float) -> None:
        self.now += dt
        for c in self.cabinet:
            self._run(c, c.tick, self.now)

    @rule(
        size=st.sampled_from(list(Size)),
        zone=st.sampled_from([ZoneKind.CHILLED, ZoneKind.AMBIENT]),
        pinned=st.sampled_from([None, *IDS]),
        reuse=st.booleans(),
        cold_out=st.booleans(),
    )
    def assign(
        self, size: Size, zone: ZoneKind, pinned: str | None, reuse: bool, cold_out: bool
    ) -> None:
        if not reuse:
            self.next_order += 1
        oid = f"o-{self.next_order}"
        o = Order(oid, "grocery", size, zone, expires_at=self.now + 600.0)
        unavailable = {"chilled"} if cold_out else set()
        holder_before = self.cabinet.holding(oid)
        snapshot = [c.to_dict() for c in self.cabinet]
        try:
            chosen, events = assign_order(
                self.cabinet, o, self.now, compartment_id=pinned, unavailable_zones=unavailable
            )
        except DomainError:
            assert [c.to_dict() for c in self.cabinet] == snapshot
            return
        assert holder_before is None, "an order was assigned twice"
        assert chosen.spec.zone not in unavailable
        assert kinds(events) == ["compartment_assigned"]

    @rule(cid=st.sampled_from(IDS))
    def open_for_deposit(self, cid: str) -> None:
        c = self.cabinet.get(cid)
        self._run(c, c.open_for_deposit, self.now)

    @rule(cid=st.sampled_from(IDS))
    def open_for_collection(self, cid: str) -> None:
        c = self.cabinet.get(cid)
        self._run(c, c.open_for_collection, self.now)

    @rule(cid=st.sampled_from(IDS))
    def open_for_staff(self, cid: str) -> None:
        c = self.cabinet.get(cid)
        self._run(c, c.open_for_staff, self.now, "maintenance")

    @rule(cid=st.sampled_from(IDS))
    def door_opened(self, cid: str) -> None:
        c = self.cabinet.get(cid)
        self._run(c, c.door_opened, self.now)

    @rule(cid=st.sampled_from(IDS), occupancy=st.sampled_from([None, *OccupancyReading]))
    def door_closed(self, cid: str, occupancy: OccupancyReading | None) -> None:
        c = self.cabinet.get(cid)
        had_goods = c.goods_inside
        events = self._run(c, c.door_closed, occupancy, self.now)
        if c.spec.has_occupancy_sensor and occupancy in (None, OccupancyReading.UNKNOWN):
            assert EventKind.COMPARTMENT_FREED not in [e.kind for e in events] or not had_goods, (
                "an unknown occupancy was taken for empty"
            )

    @rule(cid=st.sampled_from(IDS))
    def open_not_detected(self, cid: str) -> None:
        c = self.cabinet.get(cid)
        self._run(c, c.open_not_detected, self.now)

    @rule(cid=st.sampled_from(IDS))
    def unlock_failed(self, cid: str) -> None:
        c = self.cabinet.get(cid)
        self._run(c, c.unlock_failed, self.now)

    @rule(cid=st.sampled_from(IDS))
    def release(self, cid: str) -> None:
        c = self.cabinet.get(cid)
        self._run(c, c.release, self.now)

    @rule(cid=st.sampled_from(IDS))
    def block(self, cid: str) -> None:
        c = self.cabinet.get(cid)
        self._run(c, c.block, self.now, "test")

    @rule(cid=st.sampled_from(IDS))
    def unblock(self, cid: str) -> None:
        c = self.cabinet.get(cid)
        self._run(c, c.unblock, self.now)

    @rule(cid=st.sampled_from(IDS))
    def clear_fault(self, cid: str) -> None:
        c = self.cabinet.get(cid)
        self._run(c, c.clear_fault, self.now)

    @invariant()
    def orders_held_once(self) -> None:
        held = [c.order.order_id for c in self.cabinet if c.order is not None]
        assert len(held) == len(set(held))

    @invariant()
    def phase_and_order_agree(self) -> None:
        for c in self.cabinet:
            assert (c.order is None) == (c.phase is CompartmentState.FREE)
            if c.goods_inside:
                assert c.phase in (CompartmentState.LOADED, CompartmentState.EXPIRED)
            if c.phase is CompartmentState.LOADED:
                assert c.goods_inside

    @invariant()
    def conditions_show_in_state(self) -> None:
        for c in self.cabinet:
            if c.blocked:
                assert c.state is CompartmentState.BLOCKED
            elif c.faulted:
                assert c.state is CompartmentState.FAULT
            else:
                assert c.state is c.phase
            assert c.is_assignable == (c.state is CompartmentState.FREE)

    @invariant()
    def fault_alarm_matches(self) -> None:
        for c in self.cabinet:
            assert (AlarmKind.COMPARTMENT_FAULT in c.active_alarms) == c.faulted
            assert c.faulted == (c.compartment_id in self.fault_active)

    @invariant()
    def survives_a_round_trip(self) -> None:
        for c in self.cabinet:
            data = c.to_dict()
            back = Compartment.from_dict(
                c.spec, data, fault_after=c.fault_after, collected_hold_s=c.collected_hold_s
            )
            assert back.to_dict() == data


TestCompartmentMachine = CompartmentMachine.TestCase
TestCompartmentMachine.settings = settings(max_examples=120, stateful_step_count=50, deadline=None)
