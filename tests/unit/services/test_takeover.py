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


async def _watching(clock: Clock) -> tuple[TakeoverWatch, list[Any], asyncio.Task[None]]:
    events: list[Any] = []

    async def emit(batch: Any) -> None:
        events.extend(batch)

    watch = TakeoverWatch(emit, threshold=3, window_s=60, clear_after_s=300,
                          monotonic=clock, wall=clock)
    return watch, events, asyncio.create_task(watch.run())


async def test_two_takeovers_within_the_window_are_no_incident_and_a_third_is() -> None:
    clock = Clock()
    watch, events, task = await _watching(clock)
    try:
        watch.note(1)
        clock.now += 59
        watch.note(2)  # two within 60 s: an honest restart race
        for _ in range(5):
            await asyncio.sleep(0)
        assert events == []
        clock.now += 1
        watch.note(3)  # the third, 60 s after the first: inside the window (inclusive)
        await _settle(events, 1)
        assert events[0].kind == "alarm_raised"
        assert events[0].data["takeovers"] == 3
    finally:
        task.cancel()


async def test_three_takeovers_within_the_window_raise_even_if_the_watch_runs_late() -> None:
    # The three happened within 59 s; the loop was busy and the watch looks at them at 61 s.
    clock = Clock()
    watch, events, task = await _watching(clock)
    try:
        watch.note(1)
        clock.now += 30
        watch.note(2)
        clock.now += 29
        watch.note(3)
        clock.now += 2  # before the watch task had a turn
        await _settle(events, 1)
        assert events[0].kind == "alarm_raised"
    finally:
        task.cancel()


async def test_takeovers_older_than_the_window_age_out() -> None:
    clock = Clock()
    watch, events, task = await _watching(clock)
    try:
        watch.note(1)
        clock.now += 30
        watch.note(2)
        clock.now += 65  # the first is now 95 s old: out of the window
        watch.note(3)
        clock.now += 5
        watch.note(4)  # 2, 3, 4 span 70 s: still no incident
        for _ in range(5):
            await asyncio.sleep(0)
        assert events == []
        clock.now += 10
        watch.note(5)  # 3, 4, 5 within 15 s
        await _settle(events, 1)
        assert [e.kind for e in events] == ["alarm_raised"]
    finally:
        task.cancel()
