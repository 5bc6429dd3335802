"""The lock-board contract (drivers/base.py), checked on every backend.

Each parameter builds a board and a *harness* that lets the test see the board's
side: which pulses it accepted, the levels its inputs show, which outputs are on, and
how to make it fail. The same tests then run on the fake backend, on the Modbus
driver talking to a board model over a real pty, and on the Modbus driver talking to
the cabinet simulator (its pty, line timing emulated).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import pytest

from drivers.base import LockBoard
from drivers.errors import (
    BoardError,
    BoardRejected,
    BoardTimeout,
    ChannelError,
    PulseUnconfirmed,
)
from drivers.fake import FakeLockBoard
from drivers.modbus.boards import GenericIOBoard, WaveshareRelayBoard
from drivers.modbus.line import ModbusLine
from tests.support.rtu_responder import BoardModel, RtuResponder

pytestmark = pytest.mark.timeout(30)

OUTPUTS = 8
INPUTS = 8
MAX_PULSE = 0.3


@dataclass
class Harness:
    board: LockBoard
    #: Pulses the board accepted: (channel, duration in s as the board will time it).
    pulses: Callable[[], list[tuple[int, float]]]
    set_input: Callable[[int, bool], None]
    outputs_on: Callable[[], list[bool]]
    force_outputs_on: Callable[[], None]
    go_silent: Callable[[], None]
    #: None when the backend cannot be made to answer with an exception response.
    reject_all: Callable[[int], None] | None
    heal: Callable[[], None]
    #: Lose the acknowledgement of the next pulse frame, the board having acted on it;
    #: None when the backend cannot model the case.
    lose_ack_after_acting: Callable[[], None] | None = None
    #: Lose the next pulse frame on its way to the board (not carried out, no reply).
    lose_pulse_frame: Callable[[], None] | None = None


def _fake(board_times_pulse: bool) -> Harness:
    board = FakeLockBoard(
        bus="fake-bus", address=3, outputs=OUTPUTS, inputs=INPUTS,
        board_times_pulse=board_times_pulse, max_pulse_s=MAX_PULSE,
    )

    def force_on() -> None:
        board._held_on = [True] * OUTPUTS

    op = "pulse" if board_times_pulse else "set_output"

    return Harness(
        board,
        pulses=lambda: [(p.channel, p.duration_s) for p in board.pulses()],
        set_input=board.set_input,
        outputs_on=lambda: [board.energised(ch) for ch in range(OUTPUTS)],
        force_outputs_on=force_on,
        go_silent=lambda: board.inject("timeout", persistent=True),
        reject_all=lambda code: board.inject("rejected", persistent=True, exception_code=code),
        heal=board.clear_faults,
        lose_ack_after_acting=lambda: board.inject("ack_lost", op=op),
        lose_pulse_frame=lambda: board.inject("timeout", op=op),
    )


def _model_harness(board: LockBoard, model: BoardModel) -> Harness:
    def pulses() -> list[tuple[int, float]]:
        out = [(ch, units * 0.1) for ch, units in model.flashes]
        on_at: dict[int, float] = {}
        for at, ch, on in model.coil_writes:
            if on:
                on_at.setdefault(ch, at)
            elif ch in on_at:
                out.append((ch, at - on_at.pop(ch)))
        return out

    def set_fault(fault: str | int | None) -> None:
        model.fault = fault

    def force_on() -> None:
        model.coils = [True] * OUTPUTS

    def set_input(ch: int, level: bool) -> None:
        model.discrete[ch] = level

    return Harness(
        board,
        pulses=pulses,
        set_input=set_input,
        outputs_on=lambda: [model.coil(ch) for ch in range(OUTPUTS)],
        force_outputs_on=force_on,
        go_silent=lambda: set_fault("silent"),
        reject_all=set_fault,
        heal=lambda: set_fault(None),
        lose_ack_after_acting=lambda: model.write_faults.append("drop"),
        lose_pulse_frame=lambda: model.write_faults.append("lose"),
    )


async def _on_pty(stack: AsyncExitStack, model: BoardModel) -> ModbusLine:
    responder = await stack.enter_async_context(RtuResponder(model))
    line = ModbusLine(
        "rs485-c", port=responder.port, baudrate=19200, timeout=0.05, retries=1, settle_s=0.01
    )
    return await stack.enter_async_context(line)


async def _simulator(stack: AsyncExitStack) -> Harness:
    """The Modbus driver against the cabinet simulator over its pty, timing emulated."""
    from simulator.cabinet import SimCabinet
    from simulator.config import parse_config

    config = parse_config(
        {
            "cabinet": {"site": "contract", "id": "cab-c"},
            "buses": [{"name": "rs485-s", "kind": "rtu", "port": "/nonexistent/ttySIM",
                       "baudrate": 19200}],
            "boards": [{"name": "locks", "bus": "rs485-s", "address": 3,
                        "profile": "waveshare_relay", "outputs": OUTPUTS, "inputs": INPUTS}],
        }
    )
    cab = await stack.enter_async_context(
        SimCabinet(config, emulate_timing=True, make_links=False)
    )
    line = ModbusLine(
        "rs485-s", port=cab.serial_path("rs485-s"), baudrate=19200,
        timeout=0.05, retries=1, settle_s=0.01,
    )
    await stack.enter_async_context(line)
    board = WaveshareRelayBoard(line, 3, outputs=OUTPUTS, inputs=INPUTS, max_pulse_s=MAX_PULSE)
    world = cab.world

    def pulses() -> list[tuple[int, float]]:
        return [
            (int(e.channel or 0), float(e.detail["duration_s"]))
            for e in world.truth.events("pulse_received", board="locks")
        ]

    def force_on() -> None:
        for ch in range(OUTPUTS):
            world.set_output("locks", ch, True)

    return Harness(
        board,
        pulses=pulses,
        # An unwired input reads 0; a "cut wire" with a level forces any level.
        set_input=lambda ch, level: world.faults.set(
            "cut_wire", board="locks", channel=ch, level=level
        ),
        outputs_on=lambda: [world.output_level("locks", ch) for ch in range(OUTPUTS)],
        force_outputs_on=force_on,
        go_silent=lambda: world.faults.set("silent", board="locks"),
        reject_all=lambda code: world.faults.set("busy", board="locks", code=code),
        heal=lambda: world.faults.clear("silent", board="locks"),
        # Every write's reply is lost from now on (the test pulses once).
        lose_ack_after_acting=lambda: world.faults.set("drop_reply", board="locks"),
    )


BACKENDS = [
    "fake-board-timed", "fake-daemon-timed",
    # The production driver over a pty: integration (a pty, and the simulator's thread).
    pytest.param("waveshare-pty", marks=pytest.mark.integration),
    pytest.param("generic-io-pty", marks=pytest.mark.integration),
    pytest.param("waveshare-simulator", marks=pytest.mark.integration),
]


@pytest.fixture(params=BACKENDS)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    kind = request.param
    async with AsyncExitStack() as stack:
        if kind == "fake-board-timed":
            yield _fake(True)
        elif kind == "fake-daemon-timed":
            yield _fake(False)
        elif kind == "waveshare-simulator":
            yield await _simulator(stack)
        elif kind == "waveshare-pty":
            model = BoardModel(unit=3, outputs=OUTPUTS, inputs=INPUTS)
            line = await _on_pty(stack, model)
            board = WaveshareRelayBoard(
                line, 3, outputs=OUTPUTS, inputs=INPUTS, max_pulse_s=MAX_PULSE
            )
            yield _model_harness(board, model)
        else:
            model = BoardModel(unit=3, outputs=OUTPUTS, inputs=INPUTS)
            line = await _on_pty(stack, model)
            io = GenericIOBoard(
                line, 3,
                {"outputs": {"table": "coils", "address": 0},
                 "inputs": {"table": "discrete_inputs", "address": 0},
                 "pulse": {"kind": "daemon"}},
                outputs=OUTPUTS, inputs=INPUTS, max_pulse_s=MAX_PULSE,
            )
            yield _model_harness(io, model)


async def test_pulse_is_acknowledged_and_reaches_the_board(harness: Harness) -> None:
    board = harness.board
    receipt = await board.pulse(2, 0.03)
    assert (receipt.bus, receipt.address, receipt.channel) == (board.bus, board.address, 2)
    assert receipt.timed_by == ("board" if board.board_times_pulse else "driver")
    assert receipt.sent_at <= receipt.acked_at
    pulses = harness.pulses()
    assert [ch for ch, _ in pulses] == [2]
    if board.board_times_pulse:
        # The board times it, rounded up to its resolution, never shorter.
        assert pulses[0][1] >= 0.03
    assert not any(harness.outputs_on()[ch] for ch in range(OUTPUTS) if ch != 2)


async def test_pulse_is_capped_at_max_pulse(harness: Harness) -> None:
    receipt = await harness.board.pulse(1, 60.0)
    assert receipt.duration_s == MAX_PULSE


async def test_daemon_timed_pulse_ends_with_output_off(harness: Harness) -> None:
    await harness.board.pulse(4, 0.02)
    if not harness.board.board_times_pulse:
        assert harness.outputs_on()[4] is False


@pytest.mark.parametrize("channel", [-1, OUTPUTS])
async def test_bad_channel_is_refused_before_the_wire(harness: Harness, channel: int) -> None:
    with pytest.raises(ChannelError) as info:
        await harness.board.pulse(channel, 0.02)
    assert info.value.channel == channel
    assert harness.pulses() == []


@pytest.mark.parametrize("duration", [0.0, -1.0])
async def test_non_positive_duration_is_refused(harness: Harness, duration: float) -> None:
    with pytest.raises(ValueError):
        await harness.board.pulse(0, duration)
    assert harness.pulses() == []


async def test_read_inputs_returns_every_input_in_one_snapshot(harness: Harness) -> None:
    harness.set_input(0, True)
    harness.set_input(5, True)
    before = time.monotonic()
    snap = await harness.board.read_inputs()
    assert snap.levels == tuple(ch in (0, 5) for ch in range(INPUTS))
    assert (snap.bus, snap.address) == (harness.board.bus, harness.board.address)
    assert snap.at >= before


async def test_all_off_switches_every_output_off(harness: Harness) -> None:
    harness.force_outputs_on()
    await harness.board.all_off()
    assert harness.outputs_on() == [False] * OUTPUTS


async def test_describe_names_the_board(harness: Harness) -> None:
    info = await harness.board.describe()
    assert (info.bus, info.address) == (harness.board.bus, harness.board.address)
    assert (info.outputs, info.inputs) == (OUTPUTS, INPUTS)
    assert info.board_times_pulse == harness.board.board_times_pulse


async def test_silent_board_is_a_timeout_naming_the_board_then_recovers(harness: Harness) -> None:
    harness.go_silent()
    with pytest.raises(BoardTimeout) as info:
        await harness.board.read_inputs()
    assert info.value.address == harness.board.address
    assert info.value.bus == harness.board.bus
    # The pulse frame went out and nothing came back, not even a read-back: unknown.
    with pytest.raises(PulseUnconfirmed) as unknown:
        await harness.board.pulse(0, 0.02)
    assert (unknown.value.channel, unknown.value.duration_s) == (0, 0.02)
    assert (unknown.value.bus, unknown.value.address) == (
        harness.board.bus, harness.board.address
    )
    assert "read-back failed" in unknown.value.evidence
    harness.heal()
    snap = await harness.board.read_inputs()
    assert len(snap.levels) == INPUTS


async def test_rejecting_board_is_board_rejected_with_its_code(harness: Harness) -> None:
    if harness.reject_all is None:
        pytest.skip("this backend has no way to answer with an exception response")
    harness.reject_all(4)
    with pytest.raises(BoardRejected) as info:
        await harness.board.read_inputs()
    assert info.value.exception_code == 4
    assert info.value.address == harness.board.address


async def test_pulse_whose_ack_is_lost_after_acting_is_confirmed_by_reading_back(
    harness: Harness,
) -> None:
    if harness.lose_ack_after_acting is None:
        pytest.skip("this backend cannot lose one acknowledgement")
    harness.lose_ack_after_acting()
    receipt = await harness.board.pulse(2, MAX_PULSE)
    assert receipt.confirmed_by == "readback"
    assert receipt.evidence
    assert [ch for ch, _ in harness.pulses()] == [2]  # one pulse, never sent again
    if not harness.board.board_times_pulse:
        assert harness.outputs_on()[2] is False


async def test_pulse_frame_lost_before_the_board_is_not_pulsed(harness: Harness) -> None:
    if harness.lose_pulse_frame is None:
        pytest.skip("this backend cannot lose one frame")
    harness.lose_pulse_frame()
    with pytest.raises(BoardError, match="not pulsed") as info:
        await harness.board.pulse(2, MAX_PULSE)
    assert not isinstance(info.value, PulseUnconfirmed)
    assert (info.value.bus, info.value.address) == (harness.board.bus, harness.board.address)
    assert harness.pulses() == []
    assert harness.outputs_on()[2] is False
