"""Board profiles and bus tools over a real pty: the bytes each profile puts on the wire."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import pytest

from drivers.errors import BoardTimeout
from drivers.modbus.boards import GenericIOBoard, TemperatureProbe, WaveshareRelayBoard
from drivers.modbus.line import ModbusLine
from drivers.modbus.scan import scan, set_address
from tests.support.rtu_responder import BoardModel, Line, RtuResponder, Send, frame

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]  # a pty per test


@asynccontextmanager
async def wired(handler: Callable[[bytes], Sequence[Send]]) -> AsyncIterator[
    tuple[RtuResponder, ModbusLine]
]:
    async with RtuResponder(handler) as responder:
        line = ModbusLine("rs485-b", port=responder.port, timeout=0.05, retries=1, settle_s=0.01)
        async with line:
            yield responder, line


async def test_waveshare_flash_all_off_inputs_and_version() -> None:
    model = BoardModel(unit=2, outputs=8, inputs=8, version=102)
    model.discrete[7] = True
    async with wired(model) as (responder, line):
        board = WaveshareRelayBoard(line, 2, outputs=8, inputs=8)
        receipt = await board.pulse(3, 0.65)
        await board.all_off()
        snap = await board.read_inputs()
        info = await board.describe()
    assert receipt.timed_by == "board"
    assert model.flashes == [(3, 7)]  # 0.65 s -> 7 x 100 ms, rounded up
    assert snap.levels == (False,) * 7 + (True,)
    assert info.firmware == "V1.02"
    wire = [r.data[:-2].hex() for r in responder.requests]
    assert wire == ["02050203" "0007", "020500ff" "0000", "020200000008", "020380000001"]


async def test_generic_io_register_bits_and_register_pulse() -> None:
    model = BoardModel(unit=5, outputs=0, inputs=0)
    model.holding.update({0x0100: 0b1000_0000_0000_0001, 0x0101: 0})
    model.input_registers.update({0x0010: 0b0000_0000_0010_0100, 0x0011: 0x0001})
    async with wired(model) as (_, line):
        board = GenericIOBoard(
            line, 5,
            {"outputs": {"table": "holding_register_bits", "address": 0x0100},
             "inputs": {"table": "input_register_bits", "address": 0x0010},
             "pulse": {"kind": "register", "address": 0x0200, "unit_ms": 50}},
            outputs=20, inputs=17,
        )
        await board._set_output(4, True)
        await board._set_output(15, False)
        snap = await board.read_inputs()
        await board.pulse(17, 0.12)
        await board.all_off()
    assert snap.levels == tuple(i in (2, 5, 16) for i in range(17))
    assert model.holding[0x0200 + 17] == 3  # 0.12 s in 50 ms units, rounded up
    assert (model.holding[0x0100], model.holding[0x0101]) == (0, 0)


async def test_generic_io_set_output_read_modify_write_keeps_other_bits() -> None:
    model = BoardModel(unit=5, outputs=0, inputs=0)
    model.holding[0x0100] = 0b1001
    async with wired(model) as (_, line):
        board = GenericIOBoard(
            line, 5, {"outputs": {"table": "holding_register_bits", "address": 0x0100}},
            outputs=16, inputs=0,
        )
        await board._set_output(1, True)
        await board._set_output(3, False)
    assert model.holding[0x0100] == 0b0011


async def test_temperature_probe_scale_sign_and_invalid() -> None:
    model = BoardModel(unit=10, outputs=0, inputs=0)
    model.input_registers.update({0: 42, 1: 0xFF4C, 2: 0x8000})
    async with wired(model) as (_, line):
        probe = TemperatureProbe(line, 10, {"scale": 0.1, "invalid": -32768}, channels=3)
        snap = await probe.read_values()
    assert snap.values[0] == pytest.approx(4.2)
    assert snap.values[1] == pytest.approx(-18.0)
    assert snap.values[2] is None


def _garbled(unit: int) -> Callable[[bytes], list[Send]]:
    """Two boards answering at once: what reaches the master fails its CRC."""

    def handler(req: bytes) -> list[Send]:
        if req[0] != unit:
            return []
        good = frame(unit, bytes([3, 2, 0, 100]))
        return [Send(good[:-1] + bytes([good[-1] ^ 0x5A]))]

    return handler


def _other_make(unit: int) -> Callable[[bytes], list[Send]]:
    def handler(req: bytes) -> list[Send]:
        return [Send(frame(unit, bytes([0x83, 2])))] if req[0] == unit else []

    return handler


async def test_scan_reports_who_answered() -> None:
    bus = Line([BoardModel(unit=1, version=100), BoardModel(unit=4, version=201),
                _garbled(6), _other_make(7)])
    seen: list[int] = []
    async with wired(bus) as (_, line):
        # A timeout a busy machine cannot miss: a board answering after it would be
        # reported silent (a fast scan's timing is test_scan_stops_at_its_deadline's).
        hits = await scan(line, range(1, 10), timeout_s=0.3, progress=seen.append)
        assert line.stats().units[2].failing  # silence is counted, not logged
    assert seen == list(range(1, 10))
    assert [(h.address, h.kind, h.firmware) for h in hits] == [
        (1, "waveshare", "V1.00"), (4, "waveshare", "V2.01"), (6, "garbled", None),
        (7, "other", None),
    ]


async def test_scan_stops_at_its_deadline() -> None:
    async with wired(lambda req: []) as (_, line):
        hits = await scan(line, range(1, 248), timeout_s=0.02, max_duration_s=0.1)
        probed = line.stats().transactions
    assert hits == []
    assert probed < 247


async def test_set_address_moves_a_board_and_verifies() -> None:
    model = BoardModel(unit=1)
    async with wired(model) as (_, line):
        change = await set_address(line, 1, 9, settle_s=0.01)
    assert change.verified
    assert model.unit == 9
    assert "unclear" in change.detail  # this board acknowledges from its new address


async def test_set_address_by_broadcast_needs_the_single_board_promise() -> None:
    model = BoardModel(unit=1)
    async with wired(model) as (responder, line):
        with pytest.raises(ValueError, match="only_board_on_line"):
            await set_address(line, 0, 9)
        assert responder.requests == []
        change = await set_address(line, 0, 12, only_board_on_line=True, settle_s=0.01)
    assert change.verified
    assert model.unit == 12


async def test_set_address_reports_a_board_that_did_not_move() -> None:
    model = BoardModel(unit=1)

    def stubborn(req: bytes) -> list[Send]:
        if req[1] == 6:  # acknowledges, but keeps its address
            return [Send(req)]
        return model(req)

    async with wired(stubborn) as (_, line):
        with pytest.raises(BoardTimeout):  # nobody answers at the new address
            await set_address(line, 1, 9, settle_s=0.01)
    assert model.unit == 1
