"""The world model: door physics, polarity, temperature, faults, ground truth."""

from __future__ import annotations

import pytest

from simulator.errors import InvalidRequest, UnknownTarget
from simulator.world import World
from tests.unit.simulator.conftest import ManualClock


def kinds(world: World, compartment: str | None = None) -> list[str]:
    return [e.kind for e in world.truth.events(compartment=compartment)]


def test_closed_latched_door_reads_through_polarity(world: World) -> None:
    # A01: door active high (closed -> 0), latch active high (latched -> 0)
    assert world.input_level("locks", 0) is False
    assert world.input_level("locks", 1) is False
    # B01: door active low (closed -> 1); occupancy active low with one parcel -> 0
    assert world.input_level("locks", 2) is True
    assert world.input_level("io", 17) is False
    # A01 empty, occupancy active high -> 0; an unwired input reads 0
    assert world.input_level("io", 0) is False
    assert world.input_level("locks", 7) is False


def test_pull_on_latched_door_does_nothing(world: World) -> None:
    door = world.door("A01")
    assert door.pull() is False
    assert not door.is_open
    assert kinds(world, "A01") == ["pull_blocked"]


def test_board_timed_pulse_releases_latch_and_ends_by_itself(
    world: World, clock: ManualClock
) -> None:
    world.pulse_output("locks", 0, 0.7)
    assert world.output_level("locks", 0) is True
    assert world.input_level("locks", 1) is True  # latch released
    clock.advance(0.69)
    assert world.output_level("locks", 0) is True
    clock.advance(0.02)
    assert world.output_level("locks", 0) is False
    assert world.door("A01").is_latched  # nobody pulled: relatched
    off = world.truth.last("output_off")
    assert off is not None
    assert off.at == pytest.approx(
        1000.7
    )
    assert world.truth.last("latch_engaged", compartment="A01").at == pytest.approx(1000.7)


def test_door_opens_only_while_unlatched_then_relatches_on_close(
    world: World, clock: ManualClock
) -> None:
    door = world.door("A01")
    world.pulse_output("locks", 0, 0.5)
    clock.advance(0.2)
    assert door.pull() is True
    assert world.input_level("locks", 0) is True  # door open
    clock.advance(1.0)  # the pulse ended while the door was open: latch stays released
    assert not door.is_latched
    door.close()
    assert door.is_latched
    assert not door.is_open
    assert kinds(world, "A01") == ["latch_released", "door_opened", "door_closed", "latch_engaged"]


def test_person_waiting_at_the_handle_opens_at_the_release(
    world: World, clock: ManualClock
) -> None:
    door = world.door("A01")
    assert door.pull_when_released() is False
    clock.advance(3.0)
    world.pulse_output("locks", 0, 0.5)
    assert door.is_open
    assert world.truth.last("door_opened").at == pytest.approx(1003.0)


def test_steady_output_and_close_while_energised(world: World) -> None:
    world.set_output("io", 1, True)  # B01's lock on the generic board
    door = world.door("B01")
    assert door.pull()
    door.close()
    assert not door.is_latched  # still energised
    world.set_output("io", 1, False)
    assert door.is_latched


def test_force_open_ignores_the_latch(world: World) -> None:
    world.door("A01").force_open()
    assert world.door("A01").is_open
    assert kinds(world, "A01") == ["door_forced"]


def test_parcels_need_an_open_door_and_drive_occupancy(world: World) -> None:
    door = world.door("A01")
    with pytest.raises(InvalidRequest) as info:
        door.place_parcel()
    assert info.value.code == "door_closed"
    door.force_open()
    assert door.place_parcel() == 1
    assert world.input_level("io", 0) is True
    assert door.remove_parcel() == 0
    with pytest.raises(InvalidRequest):
        door.remove_parcel()
    assert world.input_level("io", 0) is False


def test_unknown_compartment_and_zone(world: World) -> None:
    with pytest.raises(UnknownTarget) as info:
        world.door("Z99")
    assert info.value.code == "unknown_compartment"
    with pytest.raises(UnknownTarget):
        world.zone("tropical")


# -- temperature -------------------------------------------------------------------


def test_open_door_warms_a_cold_zone_and_it_recovers(world: World, clock: ManualClock) -> None:
    zone = world.zone("chilled")
    assert zone.temperature_c == pytest.approx(3.0)
    world.door("A01").force_open()
    clock.advance(30.0)
    warm = zone.temperature_c
    assert warm > 5.0
    world.door("A01").close()
    clock.advance(500.0)
    assert zone.temperature_c == pytest.approx(3.0, abs=0.1)


def test_failed_compressor_drifts_toward_ambient(world: World, clock: ManualClock) -> None:
    zone = world.zone("chilled")
    zone.fail_compressor()
    clock.advance(1000.0)  # one leak time constant: 63 % of the way
    assert zone.temperature_c == pytest.approx(20.0 - 17.0 * 0.3679, abs=0.05)
    zone.repair_compressor()
    clock.advance(2000.0)
    assert zone.temperature_c == pytest.approx(3.0, abs=0.01)


def test_exact_integration_does_not_depend_on_the_step(config) -> None:
    a, b = ManualClock(), ManualClock()
    wa, wb = World(config, clock=a), World(config, clock=b)
    for w in (wa, wb):
        w.zone("chilled").fail_compressor()
    for _ in range(100):
        a.advance(3.0)
        wa.zone("chilled").temperature_c  # noqa: B018 - reading integrates
    b.advance(300.0)
    assert wa.zone("chilled").temperature_c == pytest.approx(wb.zone("chilled").temperature_c)


def test_probe_reads_zone_temperature(world: World) -> None:
    assert world.probe_value("probes", 1) == pytest.approx(3.0)
    assert world.probe_value("probes", 0) == pytest.approx(20.0)


# -- faults ------------------------------------------------------------------------


def test_stuck_latch_pulse_does_not_release(world: World) -> None:
    world.faults.set("stuck_latch", compartment="A01")
    world.pulse_output("locks", 0, 0.5)
    assert world.output_level("locks", 0) is True
    assert world.door("A01").is_latched
    assert world.door("A01").pull() is False
    assert "latch_stuck" in kinds(world, "A01")
    world.faults.clear("stuck_latch", compartment="A01")
    world.pulse_output("locks", 0, 0.5)
    assert world.door("A01").pull() is True


def test_flapping_sensor_toggles_with_its_period(world: World, clock: ManualClock) -> None:
    world.faults.set("flapping", board="locks", channel=0, period_s=0.2)
    levels = []
    for _ in range(6):
        levels.append(world.input_level("locks", 0))
        clock.advance(0.2)
    assert levels == [False, True, False, True, False, True]
    world.faults.clear("flapping")
    assert world.input_level("locks", 0) is False


def test_cut_wire_on_normally_closed_switch_reads_open(world: World) -> None:
    # B01's door switch is active low (normally closed): closed door reads 1
    assert world.input_level("locks", 2) is True
    world.faults.set("cut_wire", compartment="B01", signal="door")
    assert world.input_level("locks", 2) is False  # no current: reads "open"


def test_cut_wire_level_is_configurable(world: World) -> None:
    world.faults.set("cut_wire", board="locks", channel=0, level=True)
    assert world.input_level("locks", 0) is True


def test_cut_probe_wire_reads_no_sensor(world: World) -> None:
    world.faults.set("cut_wire", board="probes", channel=1)
    assert world.probe_value("probes", 1) is None


def test_fault_targets_are_checked(world: World) -> None:
    with pytest.raises(InvalidRequest) as info:
        world.faults.set("gremlins", board="locks")
    assert info.value.code == "unknown_fault"
    with pytest.raises(UnknownTarget):
        world.faults.set("silent", board="nope")
    with pytest.raises(UnknownTarget):
        world.faults.set("compressor_failure", zone="nope")
    with pytest.raises(InvalidRequest):
        world.faults.set("cut_wire", compartment="B01", signal="latch")  # B01 has no latch sensor
    with pytest.raises(InvalidRequest):
        world.faults.set("slow", board="locks")  # needs a latency


def test_faults_are_in_the_ground_truth(world: World) -> None:
    world.faults.set("silent", board="locks")
    world.faults.clear()
    assert [e.kind for e in world.truth.events()] == ["fault_set", "fault_cleared"]
    assert world.truth.events()[0].detail == {"kind": "silent", "board": "locks"}
    assert world.faults.active() == ()


def test_initial_parcels(world: World) -> None:
    assert world.door("B01").parcels == 1


def test_snapshot_is_plain_data(world: World) -> None:
    snap = world.snapshot()
    assert snap["compartments"]["A01"] == {
        "door_open": False,
        "latched": True,
        "parcels": 0,
        "lock_energised": False,
    }
    assert snap["zones"]["chilled"]["compressor_ok"] is True
