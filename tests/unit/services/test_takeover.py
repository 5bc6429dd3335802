"""The session-takeover alarm: raised once per incident, only for repeated takeovers within
the window, cleared after a quiet period (time injected, no sleeping)."""

from __future__ import annotations

import asyncio
from typing import Any

from controller.services.takeover import TakeoverWatch


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _settle(events: list[Any], count: int) -> None:
    async with asyncio.timeout(5):
        while len(events) < count:  # noqa: ASYNC110 - the watch runs on this loop
            await asyncio.sleep(0)


async def test_repeated_takeovers_raise_one_alarm_and_a_quiet_period_clears_it() -> None:
    clock, events = Clock(), []

    async def emit(batch: Any) -> None:
        events.extend(batch)

    watch = TakeoverWatch(emit, threshold=3, window_s=60, clear_after_s=300,
                          monotonic=clock, wall=clock)
    task = asyncio.create_task(watch.run())
    try:
        watch.note(1)
        clock.now += 100  # two takeovers, far apart: an honest restart race, no alarm
        watch.note(2)
        clock.now += 10
        watch.note(3)
        await asyncio.sleep(0)
        assert events == []
        clock.now += 10
        watch.note(4)  # 2, 3, 4 within 60 s
        await _settle(events, 1)
        assert events[0].kind == "alarm_raised"
        assert events[0].data["alarm"] == "session_takeover"
        for n in range(5, 10):  # the thief keeps going: still one alarm
            watch.note(n)
        await asyncio.sleep(0)
        assert len(events) == 1
        clock.now += 301
        watch.note(9)  # wakes the watch; no new takeover
        await _settle(events, 2)
        assert events[1].kind == "alarm_cleared"
        assert watch.active is False
    finally:
        task.cancel()
