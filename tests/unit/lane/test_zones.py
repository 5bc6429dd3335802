"""Zone temperature: excursion alarm after the delay, once per incident, zone unavailable
for new cold orders while it lasts, min/max/mean reported."""

from __future__ import annotations

import pytest

from controller.domain.assignment import assign_order
from controller.domain.compartment import Order, Size, ZoneKind
from controller.domain.errors import DomainError
from controller.services.reporting import PendingEvent
from controller.services.zones import ZoneMonitor, ZoneWatch
from tests.unit.lane.harness import Lane

pytestmark = pytest.mark.timeout(30)


def test_zone_watch_waits_for_the_delay_and_clears_once() -> None:
    watch = ZoneWatch("chilled", 2.0, 4.0, delay_s=5.0)
    assert watch.sample(3.0, 0.0) is None
    assert watch.sample(6.0, 1.0) is None  # out, delay running
    assert watch.sample(3.5, 2.0) is None  # back before the delay: nothing
    assert watch.sample(6.0, 3.0) is None
    assert watch.sample(None, 7.0) is None  # no reading: no decision
    assert watch.sample(7.0, 8.0) == "raise"
    assert watch.sample(8.0, 9.0) is None  # once per incident
    assert watch.sample(3.0, 10.0) == "clear"
    assert watch.sample(3.0, 11.0) is None
    assert watch.excursion.as_dict()["max_c"] == 8.0


async def test_excursion_makes_the_zone_unavailable_until_it_recovers(lane: Lane) -> None:
    readings: dict[tuple[str, int], float | None] = {("probes", 1): 3.0, ("probes", 0): 20.0}
    clock = [0.0]
    events: list[PendingEvent] = []

    async def emit(items: object) -> None:
        events.extend(items)  # type: ignore[arg-type]

    monitor = ZoneMonitor(lane.settings, lambda: readings, emit, lane.store,
                          mono=lambda: clock[0], report_interval_s=60.0)
    await monitor.sample_once()
    readings[("probes", 1)] = 9.0
    for t in (1.0, 3.0, 6.5, 8.0):
        clock[0] = t
        await monitor.sample_once()
    assert monitor.unavailable_zones() == {"chilled"}
    raised = [e for e in events if e.kind == "alarm_raised"]
    assert len(raised) == 1
    assert raised[0].data["zone"] == "chilled"
    order = Order("o-cold", "grocery", Size.S, ZoneKind.CHILLED, lane.wall() + 3600)
    with pytest.raises(DomainError) as refused:
        assign_order(lane.model.compartments, order, lane.wall(),
                     unavailable_zones=monitor.unavailable_zones())
    assert refused.value.code.value in ("zone_out_of_range", "no_compartment_available")
    readings[("probes", 1)] = 3.2
    clock[0] = 9.0
    await monitor.sample_once()
    assert monitor.unavailable_zones() == frozenset()
    assert [e.kind for e in events if e.kind.startswith("alarm")] == [
        "alarm_raised", "alarm_cleared"]
    assign_order(lane.model.compartments, order, lane.wall(),
                 unavailable_zones=monitor.unavailable_zones())
    clock[0] = 61.0
    await monitor.sample_once()
    report = [e for e in events if e.kind == "zone_temperatures"]
    assert len(report) == 1
    chilled = report[0].data["zones"]["chilled"]
    assert chilled["min_c"] == 3.0
    assert chilled["max_c"] == 9.0
    assert 3.0 < chilled["mean_c"] < 9.0
    audit = [a.action for a in await lane.store.audit_log(100)]
    assert audit == ["alarm_raised", "alarm_cleared"]
