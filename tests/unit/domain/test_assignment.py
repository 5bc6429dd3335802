from __future__ import annotations

import pytest

from controller.domain.assignment import assign_order, choose_compartment
from controller.domain.compartment import (
    Compartment,
    Compartments,
    CompartmentSpec,
    CompartmentState,
    Order,
    Size,
    ZoneKind,
)
from controller.domain.errors import DomainError, ErrorCode


def cabinet() -> Compartments:
    return Compartments(
        Compartment(CompartmentSpec(cid, size, zone, kind, pool))
        for cid, size, zone, kind, pool in [
            ("A03", Size.L, "chilled", ZoneKind.CHILLED, "grocery"),
            ("A02", Size.M, "chilled", ZoneKind.CHILLED, "grocery"),
            ("A01", Size.M, "chilled", ZoneKind.CHILLED, "grocery"),
            ("B01", Size.S, "ambient", ZoneKind.AMBIENT, "grocery"),
            ("B02", Size.XL, "ambient", ZoneKind.AMBIENT, "grocery"),
            ("C01", Size.S, "ambient", ZoneKind.AMBIENT, "mondial-relay"),
            ("F01", Size.M, "frozen", ZoneKind.FROZEN, "grocery"),
        ]
    )


def order(
    oid: str = "o-1",
    size: Size = Size.S,
    zone: ZoneKind = ZoneKind.CHILLED,
    pool: str = "grocery",
) -> Order:
    return Order(oid, pool, size, zone, expires_at=10_000.0)


def test_smallest_fitting_then_lowest_id() -> None:
    assert choose_compartment(cabinet(), order(size=Size.S)).compartment_id == "A01"
    assert choose_compartment(cabinet(), order(size=Size.L)).compartment_id == "A03"
    assert choose_compartment(cabinet(), order(zone=ZoneKind.AMBIENT)).compartment_id == "B01"
    ambient_l = order(size=Size.L, zone=ZoneKind.AMBIENT)
    assert choose_compartment(cabinet(), ambient_l).compartment_id == "B02"


def test_pool_is_respected() -> None:
    parcel = order(zone=ZoneKind.AMBIENT, pool="mondial-relay")
    assert choose_compartment(cabinet(), parcel).compartment_id == "C01"
    with pytest.raises(DomainError) as err:
        choose_compartment(
            cabinet(), order(zone=ZoneKind.AMBIENT, size=Size.M, pool="mondial-relay")
        )
    assert err.value.code is ErrorCode.NO_COMPARTMENT_AVAILABLE


def test_blocked_faulty_and_taken_are_skipped() -> None:
    c = cabinet()
    c.get("A01").block(1.0)
    c.get("A02").assign(order("o-0"), 1.0)
    assert choose_compartment(c, order()).compartment_id == "A03"
    c.get("A03").open_for_staff(2.0)
    c.get("A03").open_not_detected(3.0)
    c.get("A03").open_for_staff(4.0)
    c.get("A03").open_not_detected(5.0)
    c.get("A03").open_for_staff(6.0)
    c.get("A03").open_not_detected(7.0)
    assert c.get("A03").state is CompartmentState.FAULT
    with pytest.raises(DomainError) as err:
        choose_compartment(c, order())
    assert err.value.code is ErrorCode.NO_COMPARTMENT_AVAILABLE
    assert err.value.field == "size"


def test_cold_zone_out_of_range_is_not_assigned() -> None:
    with pytest.raises(DomainError) as err:
        choose_compartment(cabinet(), order(), unavailable_zones={"chilled"})
    assert err.value.code is ErrorCode.ZONE_OUT_OF_RANGE
    frozen = order(zone=ZoneKind.FROZEN)
    assert choose_compartment(cabinet(), frozen, unavailable_zones={"chilled"}).compartment_id
    # an ambient zone is never excluded for temperature
    ambient = order(zone=ZoneKind.AMBIENT)
    assert choose_compartment(cabinet(), ambient, unavailable_zones={"ambient"}).compartment_id


def test_assign_order_picks_and_assigns() -> None:
    c = cabinet()
    chosen, events = assign_order(c, order(), 1.0)
    assert chosen.compartment_id == "A01"
    assert chosen.state is CompartmentState.RESERVED
    assert events[0].details["order"] == "o-1"
    chosen, _ = assign_order(c, order("o-2"), 1.0)
    assert chosen.compartment_id == "A02"


def test_order_is_never_assigned_twice() -> None:
    c = cabinet()
    assign_order(c, order(), 1.0)
    with pytest.raises(DomainError) as err:
        assign_order(c, order(), 2.0)
    assert err.value.code is ErrorCode.ORDER_ALREADY_ASSIGNED
    assert err.value.field == "order_id"
    with pytest.raises(DomainError):
        assign_order(c, order(), 2.0, compartment_id="A03")
    assert c.get("A03").state is CompartmentState.FREE


def test_pinned_compartment() -> None:
    c = cabinet()
    chosen, _ = assign_order(c, order(), 1.0, compartment_id="A03")
    assert chosen.compartment_id == "A03"
    with pytest.raises(DomainError) as err:
        assign_order(c, order("o-2"), 1.0, compartment_id="Z9")
    assert err.value.code is ErrorCode.UNKNOWN_COMPARTMENT
    with pytest.raises(DomainError) as err:
        assign_order(c, order("o-2"), 1.0, compartment_id="A01", unavailable_zones={"chilled"})
    assert err.value.code is ErrorCode.ZONE_OUT_OF_RANGE
    with pytest.raises(DomainError) as err:
        assign_order(c, order("o-2"), 1.0, compartment_id="A03")
    assert err.value.code is ErrorCode.WRONG_STATE
