"""A pulse whose verdict comes later than the open-detection timeout (the driver's
retries and read-back can take longer than a short ``open_detect_timeout_s``): the door
ticker running meanwhile ends nothing, and the open's window runs from the verdict."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from controller.domain.cabinet_model import Emitted, Now
from controller.domain.unlock import UnlockPolicy
from controller.services.setup import unlock_limits
from controller.services.unlock import UnlockService
from drivers.base import PulseReceipt
from drivers.errors import PulseUnconfirmed
from tests.unit.services.conftest import Core

CID = "A02"


class Clock:
    """Both clocks, moved only by the test (and the slow board)."""

    def __init__(self) -> None:
        self.mono = time.monotonic()
        self.wall = time.time()

    def __call__(self) -> Now:
        return Now(self.mono, self.wall)

    def advance(self, seconds: float) -> Now:
        self.mono += seconds
        self.wall += seconds
        return self()


class SlowVerdict:
    """A lock board whose pulse takes ``takes_s`` of the test clock to come back with
    ``verdict`` (unconfirmed, or a cancellation); the cabinet's ticker runs meanwhile."""

    def __init__(self, core: Core, clock: Clock, takes_s: float,
                 verdict: BaseException) -> None:
        self.core, self.clock, self.takes_s, self.verdict = core, clock, takes_s, verdict
        self.inner = core.board(core.settings.compartment(CID).lock.board)
        self.ticked: list[Emitted] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def pulse(self, channel: int, duration_s: float | None = None) -> PulseReceipt:
        self.ticked += self.core.model.tick(self.clock.advance(self.takes_s))
        raise self.verdict


async def _pulse(core: Core, board: SlowVerdict, clock: Clock, sink: list[Emitted]) -> None:
    await core.poller.poll_once()  # the door is seen closed
    lock = core.settings.compartment(CID).lock
    core.hardware.lock_boards[lock.board] = board  # type: ignore[assignment]

    async def emit(events: list[Emitted]) -> None:
        sink.extend(events)

    unlock = UnlockService(core.settings, core.model, core.hardware,
                           UnlockPolicy(unlock_limits(core.settings)), emit, now=clock)
    await unlock.pulse(CID)


def _kinds(events: list[Emitted]) -> list[str]:
    return [e.kind.value for e in events if e.compartment == CID]


async def test_an_unconfirmed_verdict_after_the_timeout_opens_the_window_from_it(
    core: Core,
) -> None:
    timeout = core.model.setup(CID).timing.open_detect_timeout_s
    clock = Clock()
    board = SlowVerdict(core, clock, timeout + 1.0, PulseUnconfirmed(
        "no reply to the pulse frame", bus="b", address=1, channel=0, duration_s=0.7,
        sent_at=0.0, evidence="read-back timed out"))
    emitted: list[Emitted] = []
    await _pulse(core, board, clock, emitted)
    verdict = clock.mono
    assert board.ticked == []  # no open_not_detected while the verdict was awaited
    assert _kinds(emitted) == ["unlock_pulse_sent", "unlock_pulse_unconfirmed"]
    window = core.model.doors[CID].window
    assert window is not None
    assert window.deadline == pytest.approx(verdict + timeout)
    assert core.model.compartments.get(CID).pending_open is None  # none was declared
    assert _kinds(core.model.tick(clock.advance(timeout))) == []
    assert _kinds(core.model.tick(clock.advance(0.1))) == ["open_not_detected"]


async def test_a_pulse_cancelled_before_its_verdict_ends_its_window_at_the_deadline(
    core: Core,
) -> None:
    timeout = core.model.setup(CID).timing.open_detect_timeout_s
    clock = Clock()
    board = SlowVerdict(core, clock, timeout + 1.0, asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await _pulse(core, board, clock, [])
    assert board.ticked == []
    # No verdict will come: the window does not wait for one forever.
    assert _kinds(core.model.tick(clock.advance(0.1))) == ["open_not_detected"]
    assert core.model.doors[CID].window is None
