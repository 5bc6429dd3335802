"""The production driver against the simulator's reply faults, over its pty with line
timing emulated: one pulse frame per command in the ground truth, the energised time
within the cap, late replies discarded and the board degraded. Faults are set through
the control channel's request handler, as a campaign does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from drivers.errors import BoardTimeout
from drivers.modbus.boards import GenericIOBoard, WaveshareRelayBoard
from drivers.modbus.line import ModbusLine
from simulator.cabinet import SimCabinet
from simulator.config import parse_config
from simulator.control import handle_request

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TIMEOUT = 0.05
CAP = 0.5


@pytest.fixture
async def cab() -> AsyncIterator[SimCabinet]:
    config = parse_config(
        {
            "cabinet": {"site": "t", "id": "cab-r"},
            "buses": [{"name": "rs485-r", "kind": "rtu", "port": "/nonexistent/ttyR",
                       "baudrate": 19200}],
            "boards": [
                {"name": "locks", "bus": "rs485-r", "address": 3,
                 "profile": "waveshare_relay", "outputs": 4, "inputs": 4},
                {"name": "io", "bus": "rs485-r", "address": 200, "profile": "generic_io",
                 "outputs": 4, "inputs": 4},
            ],
            "simulator": {"processing_s": {"locks": 0.003}},
        }
    )
    async with SimCabinet(config, emulate_timing=True, make_links=False) as cabinet:
        yield cabinet


@pytest.fixture
async def line(cab: SimCabinet) -> AsyncIterator[ModbusLine]:
    async with ModbusLine("rs485-r", port=cab.serial_path("rs485-r"), timeout=TIMEOUT,
                          retries=2, settle_s=0.01) as opened:
        yield opened


def _control(cab: SimCabinet, **request: object) -> dict[str, object]:
    reply = handle_request(cab, json.dumps(request))
    assert reply["ok"], reply
    result = reply["result"]
    assert isinstance(result, dict)
    return result


@pytest.mark.parametrize(
    "fault",
    [{"kind": "drop_reply"}, {"kind": "garble_reply"}, {"kind": "short_reply"},
     {"kind": "late", "delay_s": 2 * TIMEOUT, "writes_only": True}],
    ids=["lost", "garbled", "short", "late"],
)
async def test_board_timed_pulse_with_a_spoiled_ack_is_one_frame_and_confirmed(
    cab: SimCabinet, line: ModbusLine, fault: dict[str, object]
) -> None:
    _control(cab, op="fault_set", board="locks", **fault)
    board = WaveshareRelayBoard(line, 3, outputs=4, inputs=4, max_pulse_s=CAP)
    receipt = await board.pulse(1, 0.4)
    assert receipt.confirmed_by in ("readback", "ack")
    truth = cab.world.truth
    assert len(truth.events("pulse_received", board="locks")) == 1
    assert len(truth.events("write_acted", board="locks")) == 1


async def test_driver_timed_pulse_with_a_lost_ack_stays_within_the_cap(
    cab: SimCabinet, line: ModbusLine
) -> None:
    # Every write's reply is lost: the "on" is confirmed by reading back, the "off"
    # (retried, its acks lost too) by reading back off.
    _control(cab, op="fault_set", board="io", kind="drop_reply")
    board = GenericIOBoard(line, 200, {"pulse": {"kind": "daemon"}}, outputs=4, inputs=4,
                           max_pulse_s=CAP)
    receipt = await board.pulse(2, 10.0)  # capped
    assert receipt.confirmed_by == "readback"
    assert receipt.duration_s == CAP
    periods = cab.world.energised_periods("io", 2)
    assert len(periods) == 1
    on, off = periods[0]
    assert off is not None
    # One "on" frame; the "off" frame's own latency is all it may add to the cap.
    assert off - on <= CAP + 0.1
    on_frames = [e for e in cab.world.truth.events("write_acted", board="io")
                 if e.detail["pdu"] == "050002ff00"]
    assert len(on_frames) == 1


async def test_board_answering_late_is_degraded_and_never_read(
    cab: SimCabinet, line: ModbusLine
) -> None:
    _control(cab, op="fault_set", board="locks", kind="late", delay_s=2 * TIMEOUT)
    board = WaveshareRelayBoard(line, 3, outputs=4, inputs=4)
    failures = 0
    for _ in range(4):
        try:
            await board.read_inputs()
        except BoardTimeout:
            failures += 1
    assert failures == 4
    stats = line.stats()
    assert stats.units[3].degraded
    # 3 attempts on the first read, then one per read of a failing unit: 6 sent, every
    # reply late (the last may still be on its way).
    assert stats.units[3].late_replies >= 5
    assert stats.units[3].retries == 2
    # The other board on the line is unaffected.
    io = GenericIOBoard(line, 200, {}, outputs=4, inputs=4)
    assert len((await io.read_inputs()).levels) == 4
    assert not line.stats().units[200].degraded
