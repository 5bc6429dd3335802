"""One command, one pulse frame: every board profile against a spoiled acknowledgement,
over a real pty.

The board model carries out the pulse frame and then loses, delays, garbles or cuts
its reply. The driver must never send the pulse frame again; it reads the output back
and says what is known. Frames are counted on the wire, as the board received them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from drivers.base import LockBoard
from drivers.errors import BoardError, PulseUnconfirmed
from drivers.modbus.boards import GenericIOBoard, WaveshareRelayBoard
from drivers.modbus.line import ModbusLine
from drivers.modbus.registers import WAVESHARE
from tests.support.rtu_responder import BoardModel, RtuResponder

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TIMEOUT = 0.05
PULSE = 0.25
CAP = 0.4
CHANNEL = 2
PULSE_REGISTER = 0x0300


@dataclass
class Profile:
    name: str
    build: Callable[[ModbusLine], LockBoard]
    #: Whether a write frame (request bytes) energises the lock output.
    is_pulse_frame: Callable[[bytes], bool]


def _waveshare(line: ModbusLine) -> LockBoard:
    return WaveshareRelayBoard(line, 1, outputs=8, inputs=8, max_pulse_s=CAP)


def _generic_board_timed(line: ModbusLine) -> LockBoard:
    return GenericIOBoard(
        line, 1,
        {"outputs": {"table": "holding_register_bits", "address": 0x0100},
         "pulse": {"kind": "register", "address": PULSE_REGISTER, "unit_ms": 50}},
        outputs=8, inputs=8, max_pulse_s=CAP,
    )


def _generic_driver_timed(line: ModbusLine) -> LockBoard:
    return GenericIOBoard(line, 1, {"pulse": {"kind": "daemon"}},
                          outputs=8, inputs=8, max_pulse_s=CAP)


def _addr(req: bytes) -> int:
    return req[2] << 8 | req[3]


def _value(req: bytes) -> int:
    return req[4] << 8 | req[5]


PROFILES = [
    Profile("waveshare-flash", _waveshare,
            lambda r: r[1] == 5 and _addr(r) == WAVESHARE.flash_on_base + CHANNEL),
    Profile("generic-register-pulse", _generic_board_timed,
            lambda r: r[1] == 6 and _addr(r) == PULSE_REGISTER + CHANNEL),
    Profile("generic-driver-timed", _generic_driver_timed,
            lambda r: r[1] == 5 and _addr(r) == CHANNEL and _value(r) == 0xFF00),
]


class PulseRegisterModel(BoardModel):
    """The model with a board-timed pulse register per channel: writing ``n`` to
    ``PULSE_REGISTER + ch`` energises output ``ch`` for ``n * 50 ms``, and the output
    bits read back from holding register 0x0100 (as the generic profile maps them)."""

    def _execute(self, fc: int, data: bytes) -> bytes | None:
        addr = int.from_bytes(data[0:2], "big")
        if fc == 6 and PULSE_REGISTER <= addr < PULSE_REGISTER + self.outputs:
            units = int.from_bytes(data[2:4], "big")
            self.flash_until[addr - PULSE_REGISTER] = time.monotonic() + units * 0.05
            return bytes([fc]) + data[:4]
        if fc == 3 and addr == 0x0100:
            word = sum(1 << ch for ch in range(self.outputs) if self.coil(ch))
            return bytes([3, 2, word >> 8, word & 0xFF])
        return super()._execute(fc, data)


@asynccontextmanager
async def wired(profile: Profile) -> AsyncIterator[tuple[BoardModel, ModbusLine, LockBoard]]:
    model: BoardModel = (
        PulseRegisterModel(unit=1) if profile.name == "generic-register-pulse"
        else BoardModel(unit=1)
    )
    async with RtuResponder(model) as responder:
        line = ModbusLine("rs485-p", port=responder.port, timeout=TIMEOUT, retries=2,
                          settle_s=0.01)
        async with line:
            yield model, line, profile.build(line)


def _energised_s(model: BoardModel) -> float:
    """How long the driver-timed output was held on (coil writes on, then off)."""
    on = [t for t, ch, level in model.coil_writes if ch == CHANNEL and level]
    off = [t for t, ch, level in model.coil_writes if ch == CHANNEL and not level]
    assert on
    assert off
    return off[-1] - on[0]


async def _wait_for(condition: Callable[[], bool], deadline_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not condition():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.005)


REPLY_FAULTS = ["drop", "late", "garble", "short"]


@pytest.mark.parametrize("fault", REPLY_FAULTS)
@pytest.mark.parametrize("profile", PROFILES, ids=[p.name for p in PROFILES])
async def test_spoiled_ack_never_repeats_the_pulse_and_is_confirmed(
    profile: Profile, fault: str
) -> None:
    async with wired(profile) as (model, line, board):
        model.write_faults.append(("late", 2 * TIMEOUT) if fault == "late" else fault)
        receipt = await board.pulse(CHANNEL, PULSE)
        frames = [req for _, req in model.writes if profile.is_pulse_frame(req)]
        assert len(frames) == 1, f"{len(frames)} pulse frames for one command"
        assert receipt.confirmed_by in ("readback", "ack")
        assert receipt.evidence
        assert (receipt.channel, receipt.duration_s) == (CHANNEL, PULSE)
        if not board.board_times_pulse:
            assert model.coil(CHANNEL) is False  # switched off
            assert _energised_s(model) <= CAP
        if fault == "late":
            # The late echo is counted (and not taken for anything else).
            await _wait_for(lambda: line.stats().units[1].late_replies >= 1)


@pytest.mark.parametrize("profile", PROFILES, ids=[p.name for p in PROFILES])
async def test_pulse_frame_that_never_reached_the_board_is_not_pulsed(profile: Profile) -> None:
    async with wired(profile) as (model, _, board):
        model.write_faults.append("lose")
        with pytest.raises(BoardError, match="not pulsed") as info:
            await board.pulse(CHANNEL, PULSE)
        assert not isinstance(info.value, PulseUnconfirmed)
        frames = [req for _, req in model.writes if profile.is_pulse_frame(req)]
        assert len(frames) == 1
        assert model.coil(CHANNEL) is False


class NoCoilReads(BoardModel):
    """A relay board that cannot read its coils back (function 01 refused)."""

    def _execute(self, fc: int, data: bytes) -> bytes | None:
        if fc == 1:
            return bytes([0x81, 1])
        return super()._execute(fc, data)


async def test_late_echo_confirms_a_pulse_the_board_cannot_read_back() -> None:
    model = NoCoilReads(unit=1)
    model.write_faults.append(("late", 2 * TIMEOUT))
    async with RtuResponder(model) as responder:
        line = ModbusLine("rs485-p", port=responder.port, timeout=TIMEOUT, retries=2,
                          settle_s=0.01)
        async with line:
            receipt = await _waveshare(line).pulse(CHANNEL, PULSE)
    assert receipt.confirmed_by == "ack"
    assert "acknowledged late" in receipt.evidence
    assert [r for _, r in model.writes if r[1] == 5] == [model.writes[0][1]]


async def test_no_echo_and_no_read_back_is_unconfirmed() -> None:
    model = NoCoilReads(unit=1)
    model.write_faults.append("drop")
    async with RtuResponder(model) as responder:
        line = ModbusLine("rs485-p", port=responder.port, timeout=TIMEOUT, retries=2,
                          settle_s=0.01)
        async with line:
            with pytest.raises(PulseUnconfirmed) as info:
                await _waveshare(line).pulse(CHANNEL, PULSE)
    assert "read-back failed" in info.value.evidence
    assert info.value.channel == CHANNEL
    assert len(model.writes) == 1
