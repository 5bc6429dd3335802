"""The fake backend's own features: history, faults, assertion helpers, connected doors."""

from __future__ import annotations

import pytest

from drivers.errors import (
    BoardError,
    BoardRejected,
    BoardTimeout,
    BusError,
    FrameError,
    PulseUnconfirmed,
)
from drivers.fake import FakeLockBoard, FakeSensorBoard, ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(100.0)


async def test_history_is_time_stamped_with_the_injected_clock(clock: ManualClock) -> None:
    board = FakeLockBoard(clock=clock)
    await board.pulse(1, 0.5)
    clock.advance(2.0)
    await board.read_inputs()
    assert [(c.at, c.op, c.args, c.outcome) for c in board.history] == [
        (100.0, "pulse", (1, 0.5), "ok"),
        (102.0, "read_inputs", (), "ok"),
    ]


async def test_board_timed_pulse_energises_for_its_duration(clock: ManualClock) -> None:
    board = FakeLockBoard(clock=clock)
    receipt = await board.pulse(3, 1.0)
    assert receipt.timed_by == "board"
    assert board.energised(3)
    clock.advance(0.99)
    assert board.energised(3)
    clock.advance(0.02)
    assert not board.energised(3)
    board.assert_pulsed(3, times=1, duration_s=1.0)
    board.assert_not_pulsed(2)
    with pytest.raises(AssertionError):
        board.assert_pulsed(2)
    with pytest.raises(AssertionError):
        board.assert_pulsed(3, times=2)


async def test_daemon_timed_pulse_records_on_and_off() -> None:
    board = FakeLockBoard(board_times_pulse=False)
    receipt = await board.pulse(0, 0.01)
    assert receipt.timed_by == "driver"
    assert [c.op for c in board.history] == ["set_output", "set_output"]
    assert not board.energised(0)
    assert [p.channel for p in board.pulses()] == [0]


@pytest.mark.parametrize(
    ("fault", "error"),
    [("timeout", BoardTimeout), ("frame", FrameError), ("rejected", BoardRejected),
     ("bus", BusError)],
)
async def test_injected_fault_once_then_healthy(fault: str, error: type[Exception]) -> None:
    board = FakeLockBoard(bus="b", address=4)
    board.inject(fault, op="pulse")
    await board.read_inputs()  # other operations unaffected
    with pytest.raises(BoardError if fault in ("timeout", "frame") else error) as info:
        await board.pulse(0, 0.1)
    if fault in ("timeout", "frame"):
        # The ack did not come: the pulse policy read the output back, off, within the
        # pulse: not pulsed (the injected error is the cause).
        assert "not pulsed" in str(info.value)
        assert isinstance(info.value.__cause__, error)
    board.assert_not_pulsed()
    await board.pulse(0, 0.1)
    board.assert_pulsed(0)
    assert [c.outcome for c in board.calls("pulse")] == [fault, "ok"]


@pytest.mark.parametrize("fault", ["ack_lost", "ack_garbled"])
@pytest.mark.parametrize("board_times_pulse", [True, False])
async def test_ack_lost_after_acting_is_confirmed_by_readback(
    clock: ManualClock, fault: str, board_times_pulse: bool
) -> None:
    board = FakeLockBoard(clock=clock, board_times_pulse=board_times_pulse)
    board.inject(fault, op="pulse" if board_times_pulse else "set_output")
    receipt = await board.pulse(1, 0.2)
    assert receipt.confirmed_by == "readback"
    assert fault.removeprefix("ack_") in receipt.evidence.lower() or "injected" in receipt.evidence
    board.assert_pulsed(1, times=1)
    assert [c.op for c in board.history if c.op != "set_output" or c.args[1]] == [
        "pulse" if board_times_pulse else "set_output", "read_output",
    ]


async def test_ack_lost_and_read_back_failing_is_unconfirmed(clock: ManualClock) -> None:
    board = FakeLockBoard(bus="b", address=2, clock=clock)
    board.inject("ack_lost", op="pulse")
    board.inject("timeout", op="read_output")
    with pytest.raises(PulseUnconfirmed) as info:
        await board.pulse(3, 0.4)
    err = info.value
    assert (err.bus, err.address, err.channel, err.duration_s, err.sent_at) == (
        "b", 2, 3, 0.4, 100.0
    )
    assert "read-back failed" in err.evidence
    assert isinstance(err, TimeoutError)
    assert len(board.calls("pulse")) == 1  # never sent again


async def test_read_back_off_after_the_pulse_would_have_ended_is_unconfirmed(
    clock: ManualClock,
) -> None:
    board = FakeLockBoard(clock=clock)
    board.inject("ack_lost", op="pulse")

    async def late_read(channel: int) -> bool:
        clock.advance(0.5)  # the read-back comes after the 0.3 s pulse has ended
        return board.energised(channel)

    board._read_output = late_read  # type: ignore[method-assign]
    with pytest.raises(PulseUnconfirmed, match="would have ended"):
        await board.pulse(0, 0.3)


async def test_persistent_fault_until_cleared() -> None:
    board = FakeLockBoard(address=5)
    board.inject("timeout", persistent=True)
    for _ in range(3):
        with pytest.raises(BoardTimeout) as info:
            await board.read_inputs()
    assert info.value.address == 5
    board.clear_faults()
    await board.read_inputs()


async def test_fault_arguments_are_checked() -> None:
    board = FakeLockBoard()
    with pytest.raises(ValueError, match="fault"):
        board.inject("fire")
    with pytest.raises(ValueError, match="times"):
        board.inject("timeout", times=0)


async def test_connected_door_opens_only_while_released(clock: ManualClock) -> None:
    board = FakeLockBoard(outputs=4, inputs=6, clock=clock)
    door = board.connect_door(2, door_input=0, latch_input=1, occupancy_input=2,
                              latch_active_high=False)
    door.occupied = True
    assert door.pull() is False  # latched
    snap = await board.read_inputs()
    assert snap.levels[:3] == (False, True, True)  # closed, latch engaged (active low), occupied
    await board.pulse(2, 1.0)
    assert (await board.read_inputs()).levels[1] is False  # released reads low
    assert door.pull() is True
    clock.advance(1.5)
    snap = await board.read_inputs()
    assert snap.levels[:2] == (True, True)  # still open, latch back
    door.close()
    assert (await board.read_inputs()).levels[0] is False
    assert door.opened_at == [100.0]


async def test_scripted_person_opens_as_soon_as_released(clock: ManualClock) -> None:
    board = FakeLockBoard(clock=clock)
    door = board.connect_door(0, door_input=3, door_active_high=False, opens_when_released=True)
    assert (await board.read_inputs()).levels[3] is True  # closed reads high (active low)
    await board.pulse(0, 0.5)
    assert door.is_open
    assert (await board.read_inputs()).levels[3] is False


async def test_forced_open_without_pulse() -> None:
    board = FakeLockBoard()
    door = board.connect_door(1, door_input=1)
    door.force_open()
    assert (await board.read_inputs()).levels[1] is True
    board.assert_not_pulsed()


async def test_fake_sensor_board() -> None:
    probe = FakeSensorBoard(address=10, channels=2, values=(3.5, None))
    snap = await probe.read_values()
    assert snap.values == (3.5, None)
    probe.set_value(1, -18.0)
    probe.inject("timeout")
    with pytest.raises(BoardTimeout):
        await probe.read_values()
    assert (await probe.read_values()).values == (3.5, -18.0)
