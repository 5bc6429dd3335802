"""The simulated Waveshare relay board against the vendor's published frames, and the
simulator's reply faults, processing time and pulse ground truth (no transport)."""

from __future__ import annotations

import struct
import tomllib

import pytest

from simulator.boards import make_board
from simulator.bus import SimBus
from simulator.config import SimConfigError, parse_config
from simulator.errors import InvalidRequest
from simulator.world import World
from tests.unit.simulator.conftest import SMALL_CABINET, ManualClock


@pytest.fixture
def bus(world: World) -> SimBus:
    config = world.config
    boards = [make_board(b, world, baudrate=config.buses[0].baudrate) for b in config.boards]
    return SimBus(config.buses[0], boards, world.fault_book)


def _bus_of(toml_text: str, clock: ManualClock) -> tuple[SimBus, World]:
    config = parse_config(tomllib.loads(toml_text), source="t.toml")
    world = World(config, clock=clock)
    boards = [make_board(b, world, baudrate=config.buses[0].baudrate) for b in config.boards]
    return SimBus(config.buses[0], boards, world.fault_book), world


# -- the published protocol --------------------------------------------------------


def test_broadcast_read_of_the_address_register_is_answered_from_the_boards_address(
    bus: SimBus,
) -> None:
    # 00 03 40 00 00 01 (90 1B): "read device address", sent to unit 0.
    answer = bus.answer(0, bytes.fromhex("0340000001"))
    assert answer.pdus == (bytes.fromhex("03020001"),)
    reply = bus.rtu_reply(0, answer)
    assert reply is not None
    assert reply[:5] == bytes.fromhex("0103020001")  # from unit 1, value 1


def test_broadcast_address_read_with_two_relay_boards_collides(clock: ManualClock) -> None:
    text = SMALL_CABINET.replace(
        '[[boards]]\nname = "io"',
        '[[boards]]\nname = "locks2"\nbus = "rs485-0"\naddress = 7\nprofile = "waveshare_relay"'
        '\noutputs = 2\n\n[[boards]]\nname = "io"',
    )
    bus, _ = _bus_of(text, clock)
    answer = bus.answer(0, bytes.fromhex("0340000001"))
    assert len(answer.pdus) == 2
    assert bus.stats.collisions == 1


def test_other_broadcasts_are_still_not_answered(bus: SimBus, world: World) -> None:
    assert bus.answer(0, struct.pack(">BHH", 5, 1, 0xFF00)).pdus == ()
    assert world.output_level("locks", 1)
    assert bus.answer(0, bytes.fromhex("0380000001")).pdus == ()  # version: not answered


def test_serial_settings_register_reads_the_line_and_keeps_a_write(
    bus: SimBus, world: World
) -> None:
    # 19200 baud, no parity: code 0x02, parity 0.
    assert bus.answer(1, bytes.fromhex("0320000001")).pdus == (bytes.fromhex("03020002"),)
    # 00 06 20 00 00 05: broadcast "115200, no parity" (takes effect after a power cycle).
    assert bus.answer(0, bytes.fromhex("0620000005")).pdus == ()
    assert bus.answer(1, bytes.fromhex("0320000001")).pdus == (bytes.fromhex("03020005"),)
    # even parity (0x01), 9600 (0x01), addressed: echoed
    assert bus.answer(1, bytes.fromhex("0620000101")).pdus == (bytes.fromhex("0620000101"),)
    assert [e.detail["value"] for e in world.truth.events("serial_settings_changed")] == [
        0x0005, 0x0101,
    ]
    assert bus.answer(1, bytes.fromhex("0620000308")).pdus == (bytes([0x86, 0x03]),)
    assert bus.answer(1, bytes.fromhex("0620000008")).pdus == (bytes([0x86, 0x03]),)


def test_addresses_run_up_to_255(bus: SimBus, clock: ManualClock) -> None:
    assert bus.answer(1, struct.pack(">BHH", 6, 0x4000, 255)).pdus == (
        struct.pack(">BHH", 6, 0x4000, 255),
    )
    assert bus.answer(255, bytes.fromhex("0340000001")).pdus == (bytes.fromhex("030200ff"),)
    text = SMALL_CABINET.replace("address = 1\n", "address = 250\n", 1)
    bus2, _ = _bus_of(text, clock)
    assert bus2.answer(250, bytes.fromhex("0380000001")).pdus == (bytes.fromhex("03020064"),)
    with pytest.raises(SimConfigError, match=r"outside 1\.\.255"):
        parse_config(tomllib.loads(SMALL_CABINET.replace("address = 1\n", "address = 256\n", 1)))


# -- processing time and late replies ----------------------------------------------


def test_processing_time_per_board_delays_its_replies(clock: ManualClock) -> None:
    text = SMALL_CABINET.replace("[simulator]\n", "[simulator]\nprocessing_s = { locks = 0.012 }\n")
    bus, _ = _bus_of(text, clock)
    assert bus.answer(1, struct.pack(">BHH", 1, 0, 1)).latency_s == pytest.approx(0.012)
    assert bus.answer(3, struct.pack(">BHH", 3, 16, 1)).latency_s == 0.0  # io: no delay
    bad = SMALL_CABINET.replace("[simulator]\n", "[simulator]\nprocessing_s = { nope = 0.1 }\n")
    with pytest.raises(SimConfigError, match=r"processing_s\.nope"):
        parse_config(tomllib.loads(bad))
    bad = SMALL_CABINET.replace("[simulator]\n", "[simulator]\nprocessing_s = { locks = -1 }\n")
    with pytest.raises(SimConfigError, match=r"processing_s\.locks"):
        parse_config(tomllib.loads(bad))


def test_late_fault_delays_replies_and_writes_only_spares_reads(
    bus: SimBus, world: World
) -> None:
    world.faults.set("late", board="locks", delay_s=0.3)
    assert bus.answer(1, struct.pack(">BHH", 1, 0, 1)).latency_s == pytest.approx(0.3)
    world.faults.set("late", board="locks", delay_s=0.2, writes_only=True)
    assert bus.answer(1, struct.pack(">BHH", 1, 0, 1)).latency_s == 0.0
    write = bus.answer(1, struct.pack(">BHH", 5, 0x0202, 7))
    assert write.latency_s == pytest.approx(0.2)
    assert world.output_level("locks", 2)  # the write acted at once
    assert world.faults.active()[0].as_dict() == {
        "kind": "late", "board": "locks", "delay_s": 0.2, "writes_only": True,
    }
    with pytest.raises(InvalidRequest, match="delay_s"):
        world.faults.set("late", board="locks")


# -- reply faults on writes: the write acts, its reply does not come back right --------


@pytest.mark.parametrize("kind", ["drop_reply", "garble_reply", "short_reply"])
def test_reply_faults_spoil_the_reply_to_a_write_not_the_write(
    bus: SimBus, world: World, clock: ManualClock, kind: str
) -> None:
    world.faults.set(kind, board="locks")
    answer = bus.answer(1, struct.pack(">BHH", 5, 0x0200 + 3, 7))  # flash 700 ms
    assert world.output_level("locks", 3)
    assert [e.detail["pdu"] for e in world.truth.events("write_acted")] == ["0502030007"]
    assert len(world.truth.events("pulse_received")) == 1
    reply = bus.rtu_reply(1, answer)
    if kind == "drop_reply":
        assert reply is None
        assert bus.stats.dropped_replies == 1
    elif kind == "garble_reply":
        assert reply is not None
        assert reply[:6] == bytes.fromhex("010502030007")
        assert bus.stats.corrupted_replies == 1
    else:
        assert reply == bytes.fromhex("0105020300")
        assert bus.stats.short_replies == 1
    # Reads are answered normally: the read-back sees the output on.
    read = bus.answer(1, struct.pack(">BHH", 1, 3, 1))
    assert bus.rtu_reply(1, read) is not None
    assert read.pdus == (bytes([1, 1, 1]),)
    assert not read.corrupt_crc
    assert read.truncate is None


def test_ground_truth_has_the_energised_time_of_every_output(
    bus: SimBus, world: World, clock: ManualClock
) -> None:
    bus.answer(1, struct.pack(">BHH", 5, 0x0200 + 2, 7))  # board-timed 700 ms
    clock.advance(1.0)
    bus.answer(1, struct.pack(">BHH", 5, 1, 0xFF00))  # driver-timed: on ...
    clock.advance(0.25)
    bus.answer(1, struct.pack(">BHH", 5, 1, 0x0000))  # ... off
    offs = {e.channel: e.detail["energised_s"] for e in world.truth.events("output_off")}
    assert offs[2] == pytest.approx(0.7)
    assert offs[1] == pytest.approx(0.25)
    assert world.energised_periods("locks", 2) == [(1000.0, pytest.approx(1000.7))]
    assert len(world.truth.events("write_acted", board="locks")) == 3


def test_reply_fault_with_a_count_spoils_that_many_replies_then_clears(
    bus: SimBus, world: World
) -> None:
    world.faults.set("drop_reply", board="locks", count=2)
    assert world.faults.active()[0].as_dict()["count"] == 2
    replies = [bus.answer(1, struct.pack(">BHH", 5, ch, 0xFF00)).pdus for ch in range(3)]
    assert replies[:2] == [(), ()]
    assert replies[2] == (struct.pack(">BHH", 5, 2, 0xFF00),)
    assert world.faults.active() == ()
    assert [world.output_level("locks", ch) for ch in range(3)] == [True] * 3
    # Reads do not use up a write reply fault; a late fault counts the replies it delays.
    world.faults.set("late", board="locks", delay_s=0.1, count=1)
    assert bus.answer(1, struct.pack(">BHH", 1, 0, 1)).latency_s == pytest.approx(0.1)
    assert bus.answer(1, struct.pack(">BHH", 1, 0, 1)).latency_s == 0.0
    with pytest.raises(InvalidRequest, match="count"):
        world.faults.set("silent", board="locks", count=1)
    with pytest.raises(InvalidRequest, match="count"):
        world.faults.set("drop_reply", board="locks", count=0)
