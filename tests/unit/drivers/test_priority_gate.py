"""The line's gate: one holder, writes before reads, FIFO within a priority, cancel-safe."""

from __future__ import annotations

import asyncio

from drivers.modbus.line import _PriorityGate


async def test_priority_then_arrival_order() -> None:
    gate = _PriorityGate()
    order: list[str] = []
    await gate.acquire(1)  # a poll is on the wire

    async def user(name: str, prio: int) -> None:
        await gate.acquire(prio)
        order.append(name)
        gate.release()

    tasks = [asyncio.create_task(user(n, p)) for n, p in
             [("poll-a", 1), ("poll-b", 1), ("door-1", 0), ("poll-c", 1), ("door-2", 0)]]
    await asyncio.sleep(0)
    assert gate.waiting == 5
    gate.release()
    await asyncio.gather(*tasks)
    assert order == ["door-1", "door-2", "poll-a", "poll-b", "poll-c"]


async def test_cancelled_waiter_does_not_hold_the_gate() -> None:
    gate = _PriorityGate()
    await gate.acquire(1)
    waiter = asyncio.create_task(gate.acquire(0))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.sleep(0)
    gate.release()
    await asyncio.wait_for(gate.acquire(1), timeout=1)
    gate.release()
