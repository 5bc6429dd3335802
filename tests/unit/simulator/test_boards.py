"""Boards and the bus without a transport: request PDU in, reply PDUs out."""

from __future__ import annotations

import struct

import pytest

from drivers.modbus.registers import crc16
from simulator.boards import make_board
from simulator.bus import SimBus, collide, rtu_frame
from simulator.world import World
from tests.unit.simulator.conftest import ManualClock


@pytest.fixture
def bus(world: World) -> SimBus:
    config = world.config
    boards = [make_board(b, world) for b in config.boards]
    return SimBus(config.buses[0], boards, world.fault_book)


def ask(bus: SimBus, unit: int, fmt: str, *values: int) -> bytes:
    answer = bus.answer(unit, struct.pack(fmt, *values))
    assert len(answer.pdus) == 1, answer
    return answer.pdus[0]


def test_generic_io_outputs_in_holding_register_bits(bus: SimBus, world: World) -> None:
    # io: outputs packed in holding registers from 16, inputs in input registers from 32
    assert ask(bus, 3, ">BHH", 6, 16, 0b0101) == struct.pack(">BHH", 6, 16, 0b0101)
    assert world.output_level("io", 0)
    assert not world.output_level("io", 1)
    assert world.output_level("io", 2)
    assert ask(bus, 3, ">BHH", 3, 16, 1) == struct.pack(">BBH", 3, 2, 0b0101)


def test_generic_io_inputs_in_input_register_bits(bus: SimBus, world: World) -> None:
    # 20 inputs in two registers; B01 occupancy (ch 17, active low) holds a parcel -> 0;
    # A01 occupancy (ch 0, active high) empty -> 0; unwired -> 0
    assert ask(bus, 3, ">BHH", 4, 32, 2) == struct.pack(">BBHH", 4, 4, 0, 0)
    world.door("A01").force_open()
    world.door("A01").place_parcel()
    assert ask(bus, 3, ">BHH", 4, 32, 2) == struct.pack(">BBHH", 4, 4, 1, 0)


def test_generic_io_pulse_register_is_board_timed(
    bus: SimBus, world: World, clock: ManualClock
) -> None:
    assert ask(bus, 3, ">BHH", 6, 256 + 1, 4) == struct.pack(">BHH", 6, 257, 4)  # 4 x 50 ms
    assert world.output_level("io", 1)
    clock.advance(0.21)
    assert not world.output_level("io", 1)
    assert ask(bus, 3, ">BHH", 3, 257, 1) == struct.pack(">BBH", 3, 2, 0)


def test_generic_io_coils_table_absent(bus: SimBus) -> None:
    assert ask(bus, 3, ">BHH", 1, 0, 1) == bytes([0x81, 0x02])


def test_probe_scaling_sign_and_sentinel(bus: SimBus, world: World) -> None:
    world.zone("chilled").set_temperature(-2.34)
    assert ask(bus, 10, ">BHH", 4, 0, 2) == struct.pack(">BBhh", 4, 4, 200, -23)
    world.faults.set("cut_wire", board="probes", channel=0)
    assert ask(bus, 10, ">BHH", 4, 0, 1) == struct.pack(">BBh", 4, 2, -32768)
    assert ask(bus, 10, ">BHH", 3, 0, 1) == bytes([0x83, 0x02])  # holding: not in the map


def test_waveshare_flash_off_and_write_multiple_coils(
    bus: SimBus, world: World, clock: ManualClock
) -> None:
    world.set_output("locks", 2, True)
    ask(bus, 1, ">BHH", 5, 0x0400 + 2, 3)  # off for 300 ms, then on again
    assert not world.output_level("locks", 2)
    clock.advance(0.31)
    assert world.output_level("locks", 2)
    assert ask(bus, 1, ">BHHBB", 15, 0, 4, 1, 0b1001) == struct.pack(">BHH", 15, 0, 4)
    assert [world.output_level("locks", ch) for ch in range(4)] == [True, False, False, True]


def test_address_register_rejects_out_of_range(bus: SimBus) -> None:
    assert ask(bus, 1, ">BHH", 6, 0x4000, 256) == bytes([0x86, 0x03])
    assert ask(bus, 1, ">BHH", 6, 0x4000, 0) == bytes([0x86, 0x03])
    assert ask(bus, 1, ">BHH", 6, 0x8000, 5) == bytes([0x86, 0x02])


def test_unknown_unit_is_silent(bus: SimBus) -> None:
    assert bus.answer(99, struct.pack(">BHH", 1, 0, 1)).pdus == ()
    assert bus.stats.no_reply == 1


def test_rtu_frame_and_collision() -> None:
    frame = rtu_frame(1, bytes([3, 2, 0, 100]))
    crc = crc16(frame[:-2])
    assert frame[-2:] == bytes([crc & 0xFF, crc >> 8])
    garbled = collide([frame, frame])
    assert garbled[:-2] == frame[:-2]
    assert garbled[-2:] != frame[-2:]  # identical frames still never check
    bad = rtu_frame(1, bytes([3, 2, 0, 100]), corrupt_crc=True)
    assert bad[:-2] == frame[:-2]
    assert bad[-2:] != frame[-2:]
