"""The simulator over a real pty, with raw bytes through pyserial."""

from __future__ import annotations

import os
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from simulator.cabinet import SimCabinet
from tests.unit.simulator.rtu_master import RawMaster, crc_ok, frame, wait_for

pytestmark = pytest.mark.integration

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "sim-cabinet.toml"
BUS = "rs485-0"


@pytest.fixture
async def cab(tmp_path: Path) -> AsyncIterator[SimCabinet]:
    async with SimCabinet.from_file(DEMO, emulate_timing=False, link_dir=tmp_path) as cabinet:
        yield cabinet


@pytest.fixture
def master(cab: SimCabinet) -> RawMaster:
    m = RawMaster(cab.serial_path(BUS))
    yield m
    m.close()


def test_the_configured_port_is_a_symlink_to_the_pty(cab: SimCabinet, tmp_path: Path) -> None:
    link = cab.link_path(BUS)
    assert link == str(tmp_path / "ttyLOCKER0")
    assert os.path.realpath(link) == os.path.realpath(cab.serial_path(BUS))
    with RawMaster(link) as m:  # the daemon opens the configured path
        assert m.read_registers(1, 3, 0x8000, 1) == [100]


def _is_link(path: str) -> bool:
    return os.path.lexists(path)


async def test_close_removes_the_symlink_and_is_safe_twice(tmp_path: Path) -> None:
    cab = SimCabinet.from_file(DEMO, emulate_timing=False, link_dir=tmp_path)
    await cab.start()
    link = cab.link_path(BUS) or ""
    assert _is_link(link)
    await cab.close()
    await cab.close()
    assert not _is_link(link)


def test_read_coils_and_inputs_reflect_the_world(cab: SimCabinet, master: RawMaster) -> None:
    assert master.read_bits(1, 1, 0, 16) == [False] * 16
    inputs = master.read_bits(2, 2, 0, 16)
    # locks-b: doors of B01..B06 are normally closed (active low): closed reads 1
    assert inputs[:6] == [True] * 6
    cab.world.door("B03").force_open()  # live values reach the wire
    assert master.read_bits(2, 2, 0, 16)[2] is False


def test_flash_pulse_is_board_timed_and_opens_the_door(cab: SimCabinet, master: RawMaster) -> None:
    request = struct.pack(">BHH", 5, 0x0200 + 0, 7)  # A01, 700 ms
    reply = master.request(1, request, 8)
    assert reply == frame(1, request)  # echo of address and value
    assert master.read_bits(1, 1, 0, 4) == [True, False, False, False]
    assert master.read_bits(1, 2, 0, 2) == [False, True]  # door closed, latch released
    assert cab.world.door("A01").pull()
    assert master.read_bits(1, 2, 0, 2) == [True, True]
    assert wait_for(lambda: master.read_bits(1, 1, 0, 1) == [False], timeout=2.0)
    pulse = cab.ground_truth.last("pulse_received")
    assert pulse is not None
    assert pulse.board == "locks-a"
    assert pulse.detail["duration_s"] == pytest.approx(0.7)
    opened = cab.ground_truth.last("door_opened", compartment="A01")
    off = cab.ground_truth.last("output_off")
    assert opened is not None
    assert off is not None
    assert off.at - pulse.at == pytest.approx(0.7)


def test_relay_on_off_all_relays_and_toggle(master: RawMaster) -> None:
    assert master.write_single(1, 5, 3, 0xFF00) == frame(1, struct.pack(">BHH", 5, 3, 0xFF00))
    assert master.read_bits(1, 1, 0, 4) == [False, False, False, True]
    master.write_single(1, 5, 0x00FF, 0xFF00)
    assert master.read_bits(1, 1, 0, 16) == [True] * 16
    master.write_single(1, 5, 0x00FF, 0x0000)
    assert master.read_bits(1, 1, 0, 16) == [False] * 16
    master.write_single(1, 5, 2, 0x5500)
    assert master.read_bits(1, 1, 2, 1) == [True]


def test_address_and_version_registers(cab: SimCabinet, master: RawMaster) -> None:
    assert master.read_registers(1, 3, 0x4000, 1) == [1]
    assert master.read_registers(1, 3, 0x8000, 1) == [100]
    reply = master.write_single(1, 6, 0x4000, 6)
    assert reply == frame(1, struct.pack(">BHH", 6, 0x4000, 6))
    assert master.request(1, struct.pack(">BHH", 3, 0x4000, 1), timeout=0.2) == b""
    assert master.read_registers(6, 3, 0x4000, 1) == [6]
    change = cab.ground_truth.last("address_changed")
    assert change is not None
    assert change.detail == {"old": 1, "new": 6}


def test_broadcast_address_write_with_one_board_on_the_line(
    cab: SimCabinet, master: RawMaster
) -> None:
    cab.faults.set("silent", board="locks-b")  # unplugged: locks-a alone on the line
    assert master.request(0, struct.pack(">BHH", 6, 0x4000, 9), timeout=0.2) == b""
    assert master.read_registers(9, 3, 0x4000, 1) == [9]
    assert cab.buses[BUS].board("locks-b").unit == 2


def test_broadcast_address_write_with_two_boards_makes_them_collide(
    cab: SimCabinet, master: RawMaster
) -> None:
    # Why the vendor says "one board at a time": both boards take the address.
    assert master.request(0, struct.pack(">BHH", 6, 0x4000, 9), timeout=0.2) == b""
    reply = master.request(9, struct.pack(">BHH", 3, 0x4000, 1))
    assert reply
    assert not crc_ok(reply)
    assert cab.stats(BUS).collisions == 1


def test_exception_replies(master: RawMaster) -> None:
    reply = master.request(1, struct.pack(">BHH", 1, 0, 17), 5)  # past the 16 coils
    assert crc_ok(reply)
    assert reply[1:3] == bytes([0x81, 0x02])
    reply = master.request(1, struct.pack(">BHH", 5, 0, 0x1234), 5)  # bad coil value
    assert reply[1:3] == bytes([0x85, 0x03])
    reply = master.request(1, struct.pack(">BHH", 4, 0, 1), 5)  # no input registers
    assert reply[1:3] == bytes([0x84, 0x01])
    reply = master.request(1, bytes([0x2B, 0x0E, 0x01, 0x00]), 5)  # not supported
    assert reply[1:3] == bytes([0xAB, 0x01])


def test_temperature_probe_registers(cab: SimCabinet, master: RawMaster) -> None:
    raw = master.read_registers(10, 4, 0, 3)
    celsius = [struct.unpack(">h", struct.pack(">H", r))[0] * 0.1 for r in raw]
    assert celsius == pytest.approx([21.0, 3.0, -18.0], abs=0.11)
    cab.faults.set("cut_wire", board="probes", channel=2)
    assert master.read_registers(10, 4, 2, 1) == [0x8000]  # the invalid sentinel


def test_generic_io_pulse_register_and_occupancy(cab: SimCabinet, master: RawMaster) -> None:
    reply = master.write_single(3, 6, 256 + 1, 5)  # 500 ms on channel 1, board-timed
    assert reply == frame(3, struct.pack(">BHH", 6, 257, 5))
    assert master.read_bits(3, 1, 0, 8)[1] is True
    occupancy = master.read_bits(3, 2, 0, 16)
    # A03/A04 occupancy is active low (empty reads 1), B02 holds one parcel (ch 5)
    assert occupancy[2:6] == [True, True, False, True]


def test_garbled_request_gets_no_reply_and_the_line_recovers(master: RawMaster) -> None:
    bad = bytearray(frame(1, struct.pack(">BHH", 1, 0, 8)))
    bad[-1] ^= 0x55
    master.send(bytes(bad))
    assert master.receive(timeout=0.2) == b""
    time.sleep(0.01)  # the RTU silent interval before the next frame: protocol timing
    assert master.read_bits(1, 1, 0, 8) == [False] * 8
    master.send(bytes([1, 1, 0]))  # a truncated frame: ends at the silent interval
    assert master.receive(timeout=0.2) == b""
    assert master.read_bits(1, 1, 0, 8) == [False] * 8


# -- faults ------------------------------------------------------------------------


def test_silent_board_while_the_others_answer(cab: SimCabinet, master: RawMaster) -> None:
    cab.faults.set("silent", board="locks-a")
    assert master.request(1, struct.pack(">BHH", 1, 0, 16), timeout=0.2) == b""
    assert master.read_bits(2, 1, 0, 16) == [False] * 16
    assert master.read_registers(10, 4, 0, 1)
    cab.faults.clear("silent", board="locks-a")
    assert master.read_bits(1, 1, 0, 16) == [False] * 16


def test_corrupted_crc(cab: SimCabinet, master: RawMaster) -> None:
    cab.faults.set("corrupt_crc", board="locks-b")
    reply = master.request(2, struct.pack(">BHH", 1, 0, 16), 7)
    assert len(reply) == 7
    assert reply[:3] == bytes([2, 1, 2])
    assert not crc_ok(reply)
    assert master.read_bits(1, 1, 0, 16) == [False] * 16


def test_duplicated_address_garbles_the_reply(cab: SimCabinet, master: RawMaster) -> None:
    cab.faults.set("duplicate_address", board="locks-a")
    reply = master.request(1, struct.pack(">BHH", 3, 0x8000, 1))
    assert reply
    assert not crc_ok(reply)
    assert cab.stats(BUS).collisions == 1


def test_slow_board_replies_late(cab: SimCabinet, master: RawMaster) -> None:
    cab.faults.set("slow", board="locks-a", latency_s=0.3)
    started = time.perf_counter()
    reply = master.request(1, struct.pack(">BHH", 3, 0x8000, 1), 7)
    assert crc_ok(reply)
    assert time.perf_counter() - started >= 0.3


def test_stuck_latch_over_the_wire(cab: SimCabinet, master: RawMaster) -> None:
    cab.faults.set("stuck_latch", compartment="A02")
    master.write_single(1, 5, 0x0200 + 1, 5)
    assert master.read_bits(1, 1, 1, 1) == [True]  # the relay is on
    assert master.read_bits(1, 2, 2, 2) == [False, False]  # door closed, latch engaged
    assert cab.world.door("A02").pull() is False


def test_flapping_and_cut_door_sensor_over_the_wire(cab: SimCabinet, master: RawMaster) -> None:
    cab.faults.set("cut_wire", compartment="B01", signal="door")
    assert master.read_bits(2, 2, 0, 1) == [False]  # normally-closed switch, cut: "open"
    cab.faults.clear()
    cab.faults.set("flapping", compartment="B01", signal="door", period_s=0.05)
    seen = set()
    for _ in range(20):
        seen.add(master.read_bits(2, 2, 0, 1)[0])
        time.sleep(0.013)  # the sampling pace, off the 50 ms flapping period
    assert seen == {True, False}
