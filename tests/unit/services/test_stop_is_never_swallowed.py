"""A stop that arrives as the outbox pump is woken (an event committed just before the stop,
as ``config_applied`` is before the restart) still ends the pump: the cancellation is never
swallowed, so the daemon's task group, hence the restart, never hangs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from controller.services.reporting import OutboxPump

pytestmark = pytest.mark.timeout(30)


class _EmptyOutbox:
    async def pending(self, limit: int) -> list[Any]:
        return []

    async def ack(self, event_id: str) -> None:
        raise AssertionError("nothing to ack")


async def _connected() -> None:
    return None


async def _publish(topic: str, payload: bytes) -> None:
    raise AssertionError("nothing to publish")


@pytest.mark.parametrize("round_", range(20))
async def test_cancel_as_the_pump_is_woken_ends_it(round_: int) -> None:
    pump = OutboxPump(_EmptyOutbox(), _publish, "t", wait_connected=_connected,  # type: ignore[arg-type]
                      idle_recheck_s=60.0)
    task = asyncio.get_running_loop().create_task(pump.run())
    for _ in range(round_ % 5 + 2):  # let it reach its idle wait
        await asyncio.sleep(0)
    pump.wake()   # an event was committed ...
    task.cancel()  # ... and the daemon stops, in the same turn of the loop
    done, _ = await asyncio.wait({task}, timeout=2.0)
    assert task in done, "the pump swallowed its cancellation and runs on"
    assert task.cancelled()


async def test_a_cancel_a_library_swallowed_still_ends_the_pump() -> None:
    swallowed = asyncio.Event()

    async def connected_eating_the_cancel() -> None:
        if swallowed.is_set():
            return
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            swallowed.set()  # as a library call might: the cancel is lost here

    pump = OutboxPump(_EmptyOutbox(), _publish, "t",  # type: ignore[arg-type]
                      wait_connected=connected_eating_the_cancel, idle_recheck_s=60.0)
    task = asyncio.get_running_loop().create_task(pump.run())
    await asyncio.sleep(0.01)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2.0)
    assert swallowed.is_set()
    assert task in done, "the pump ran on after its cancellation was swallowed"
    assert task.cancelled()


async def test_the_daemon_stop_asks_again_a_task_that_lost_its_cancellation() -> None:
    """Any of the daemon's loops can lose a cancellation inside a library call; the stop
    cancels again the tasks still running, so it ends (here within two rounds)."""
    from controller.daemon.app import _cancel_all

    lost = 0

    async def loop_that_loses_one() -> None:
        nonlocal lost
        while True:  # bounded: ends at the second cancellation
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if lost:
                    raise
                lost += 1  # as wait_for does when the answer and the cancel meet
                asyncio.current_task().uncancel()  # type: ignore[union-attr]

    async def plain() -> None:
        await asyncio.Event().wait()

    tasks = [asyncio.ensure_future(loop_that_loses_one()), asyncio.ensure_future(plain())]
    await asyncio.sleep(0.05)
    await _cancel_all(tasks, every_s=0.1, rounds=5)
    assert all(task.done() for task in tasks)
    assert lost == 1
