"""An offline board is read at most once per ``offline_retry_s``: a dead board on a shared
pair of wires must not take the line time its healthy neighbours need."""

from __future__ import annotations

from controller.domain.cabinet_model import Now
from controller.services.poller import Poller
from tests.unit.services.conftest import Core


class _Clock:
    def __init__(self) -> None:
        self.mono = 100.0

    def __call__(self) -> Now:
        return Now(self.mono, 1_800_000_000.0 + self.mono)


async def test_an_offline_board_is_read_once_per_retry_interval(core: Core) -> None:
    clock = _Clock()
    poller = Poller(core.model, core.hardware, core.sink.emit, now=clock, interval_s=0.1,
                    offline_retry_s=5.0)
    [(dead_name, dead), *others] = core.hardware.boards_on(
        next(iter(core.hardware.buses)))
    dead.inject("timeout", op="read_inputs", persistent=True)  # type: ignore[attr-defined]
    bus = next(iter(core.hardware.buses))
    for _ in range(30):  # three seconds of 100 ms cycles
        await poller._cycle(bus)
        clock.mono += 0.1
    reads = len(dead.calls("read_inputs"))  # type: ignore[attr-defined]
    # Read until the model holds it offline (unknown_after_failed_polls), then left alone.
    offline_after = core.settings.timing.unknown_after_failed_polls
    assert reads == offline_after
    assert core.model.signals.board(dead_name).health.value == "offline"
    for _name, board in others:  # the neighbours were read every cycle
        assert len(board.calls("read_inputs")) == 30  # type: ignore[attr-defined]
    clock.mono += 5.0
    dead.clear_faults()  # type: ignore[attr-defined]
    await poller._cycle(bus)
    assert len(dead.calls("read_inputs")) == offline_after + 1  # type: ignore[attr-defined]
    assert core.model.signals.board(dead_name).health.value == "online"
