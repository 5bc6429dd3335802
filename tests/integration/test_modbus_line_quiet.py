"""The quiet run (:meth:`ModbusLine.run_quiet`) against an RTU responder on a real pty.

Unchanged polls are read by the line's thread; anything else (a changed, garbled or
missing reply, a waiting door write, stray input, a close, a cancel) hands the line back
to the loop, whose ordinary rules then apply. No assertion here is on speed; the only
time check is the silent interval, a lower bound the wire requires.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest

from drivers.errors import BoardTimeout, FrameError
from drivers.modbus.line import ModbusLine, QuietPlan
from drivers.modbus.registers import silent_interval
from tests.support.rtu_responder import BoardModel, Line, RtuResponder, Send

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]  # a pty per test

UNITS = (1, 2, 3)


class Boards:
    """Three boards on one line; ``after(n, fn)`` runs ``fn`` once request ``n`` came
    (1-based), before it is answered; ``silent`` units do not answer."""

    def __init__(self) -> None:
        self.models = {u: BoardModel(unit=u, outputs=8, inputs=16) for u in UNITS}
        self.line = Line(list(self.models.values()))
        self.count = 0
        self.hooks: dict[int, list[object]] = {}
        self.silent: set[int] = set()
        self.garble: set[int] = set()

    def after(self, n: int, fn: object) -> None:
        self.hooks.setdefault(n, []).append(fn)

    def __call__(self, req: bytes) -> list[Send]:
        self.count += 1
        for fn in self.hooks.pop(self.count, []):
            fn()  # type: ignore[operator]
        if req[0] in self.silent:
            return []
        out = self.line(req)
        if req[0] in self.garble:
            return [Send(s.data[:-1] + bytes([s.data[-1] ^ 0x01]), s.delay) for s in out]
        return out


@asynccontextmanager
async def wired(boards: Boards, *, timeout_s: float = 0.5,
                retries: int = 1) -> AsyncIterator[tuple[RtuResponder, ModbusLine]]:
    async with RtuResponder(boards) as responder:
        line = ModbusLine("rs485-q", port=responder.port, baudrate=19200,
                          timeout=timeout_s, retries=retries, settle_s=0.02)
        async with line:
            yield responder, line


async def quiet_plan(line: ModbusLine) -> QuietPlan:
    """Two cycles on the loop: the first makes the replies known, the second is recorded."""
    for _ in range(2):
        line.watch()
        for unit in UNITS:
            await line.read_discrete_inputs(unit, 0, 16)
        plan = line.watched()
    assert plan is not None
    return plan


async def run(line: ModbusLine, plan: QuietPlan, *, budget_s: float = 0.3,
              interval_s: float = 0.0, cycles: list[float] | None = None):  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    seen = cycles if cycles is not None else []
    return await line.run_quiet(plan, next_start=loop.time(), interval_s=interval_s,
                                budget_s=budget_s, on_cycle=seen.append)


def gaps(responder: RtuResponder) -> list[float]:
    """Silence before each request after the first, from the reply before it. The master
    runs in its own thread here, so each end is taken on the side that can only make the
    silence look longer than it was: the reply from when its write began, the request
    from when the responder read its first byte. A silence shorter than the interval
    still shows (to within the write's own few microseconds), a busy machine cannot
    fake one."""
    out = []
    for req in responder.requests[1:]:
        before = [t for t in responder.wrote_from if t <= req.first_byte_at]
        if before:
            out.append(req.first_byte_at - before[-1])
    return out


async def test_unchanged_polls_are_read_by_the_thread_and_counted() -> None:
    boards = Boards()
    async with wired(boards) as (responder, line):
        plan = await quiet_plan(line)
        before = line.stats()
        requests_before = len(responder.requests)
        cycles: list[float] = []
        result = await run(line, plan, budget_s=1.0, cycles=cycles)
        assert result is not None
        assert result.reason == "budget"
        assert result.index == 0
        assert result.resume is None
        assert result.cycles == len(cycles) >= 2
        assert result.counts == [result.cycles] * 3
        after = line.stats()
        # Every read on the wire is counted, as ok, for its unit.
        on_wire = len(responder.requests) - requests_before
        assert on_wire == 3 * result.cycles
        assert after.transactions - before.transactions == on_wire
        assert after.ok - before.ok == on_wire
        assert after.timeouts == after.frame_errors == after.stray_bytes == 0
        # The loop's path goes on as before.
        assert await line.read_discrete_inputs(2, 0, 16) == (False,) * 16
    assert min(gaps(responder)) >= silent_interval(19200)
    assert not [t for t in threading.enumerate() if t.name == "line-rs485-q"]


async def test_a_changed_reply_is_resumed_on_the_loop_without_a_new_request() -> None:
    boards = Boards()
    async with wired(boards) as (responder, line):
        plan = await quiet_plan(line)
        n = boards.count
        # The 5th request of the run (unit 2, second cycle) reads a door that moved.
        boards.after(n + 5, lambda: boards.models[2].discrete.__setitem__(4, True))
        result = await run(line, plan, budget_s=5.0)
        assert result is not None
        assert result.reason == "changed"
        assert result.cycles == 1
        assert result.index == 1
        assert result.resume is not None
        assert result.resume.request.unit == 2
        on_wire = len(responder.requests)
        levels = await line.read_discrete_inputs(2, 0, 16)
        assert levels == tuple(i == 4 for i in range(16))
        assert len(responder.requests) == on_wire  # taken from the run, not asked again
        stats = line.stats()
        assert stats.timeouts == stats.frame_errors == stats.stray_bytes == 0


async def test_a_waiting_door_write_ends_the_run_within_one_transaction() -> None:
    boards = Boards()
    async with wired(boards) as (responder, line):
        plan = await quiet_plan(line)
        task = asyncio.create_task(run(line, plan, budget_s=20.0, interval_s=0.01))
        start = len(responder.requests)
        await responder.wait_for_requests(start + 4)
        asked = len(responder.requests) - start
        await line.write_coil(3, 0x0200 + 1, 7)  # a Waveshare flash pulse
        result = await task
        assert result is not None
        assert result.reason == "waiting"
        functions = [r.function for r in responder.requests[start:]]
        write_at = functions.index(5)
        # Only reads before it: those seen when the write was asked for, the one then on
        # the wire (not yet seen), and at most one the thread had begun to send.
        assert set(functions[:write_at]) == {2}
        assert write_at <= asked + 2
        assert boards.models[3].coil(1)


async def test_a_silent_board_times_out_on_the_loop_with_its_late_window() -> None:
    boards = Boards()
    async with wired(boards, timeout_s=0.3, retries=1) as (_responder, line):
        plan = await quiet_plan(line)
        n = boards.count
        boards.after(n + 4, lambda: boards.silent.add(1))  # unit 1, second cycle
        result = await run(line, plan, budget_s=5.0)
        assert result is not None
        assert result.reason == "changed"
        assert result.resume is not None
        assert result.resume.rx == b""
        with pytest.raises(BoardTimeout):
            await line.read_discrete_inputs(1, 0, 16)
        stats = line.stats()
        assert stats.timeouts == 2
        assert stats.retries == 1
        assert stats.units[1].failing
        # A failing unit is never read by a quiet run.
        assert await run(line, plan) is None
        boards.silent.clear()
        assert await line.read_discrete_inputs(1, 0, 16) == (False,) * 16


async def test_a_garbled_reply_is_a_frame_error_on_the_loop() -> None:
    boards = Boards()
    async with wired(boards, retries=0) as (_responder, line):
        plan = await quiet_plan(line)
        n = boards.count
        boards.after(n + 2, lambda: boards.garble.add(2))
        result = await run(line, plan, budget_s=5.0)
        assert result is not None
        assert result.reason == "changed"
        with pytest.raises(FrameError, match="CRC"):
            await line.read_discrete_inputs(2, 0, 16)
        boards.garble.clear()
        assert await line.read_discrete_inputs(2, 0, 16) == (False,) * 16
        assert line.stats().frame_errors == 1


async def test_stray_input_ends_the_run_and_is_drained_by_the_loop() -> None:
    boards = Boards()
    async with wired(boards) as (responder, line):
        plan = await quiet_plan(line)
        cycles: list[float] = []
        task = asyncio.create_task(run(line, plan, budget_s=20.0, interval_s=2.0,
                                       cycles=cycles))
        async with asyncio.timeout(5):
            while not cycles:  # noqa: ASYNC110 - a cycle read, the run in its pause
                await asyncio.sleep(0.005)
        responder.write(b"\x00\xff\x13")
        result = await task
        assert result is not None
        assert result.reason == "input"
        async with asyncio.timeout(5):
            while line.stats().stray_bytes < 3:  # noqa: ASYNC110 - until the loop read them
                await asyncio.sleep(0.005)
        assert await line.read_discrete_inputs(3, 0, 16) == (False,) * 16


async def test_another_request_first_gives_up_the_handed_back_reply() -> None:
    boards = Boards()
    async with wired(boards) as (responder, line):
        plan = await quiet_plan(line)
        boards.after(boards.count + 2, lambda: boards.models[2].discrete.__setitem__(0, True))
        result = await run(line, plan, budget_s=5.0)
        assert result is not None
        assert result.resume is not None
        await line.write_coil(1, 0x0200 + 2, 5)  # the door write goes first
        on_wire = len(responder.requests)
        assert (await line.read_discrete_inputs(2, 0, 16))[0] is True
        assert len(responder.requests) == on_wire + 1  # read again: the reply was let go
        stats = line.stats()
        assert stats.timeouts == stats.frame_errors == stats.late_replies == 0


async def test_close_during_a_quiet_run_ends_its_thread() -> None:
    boards = Boards()
    async with RtuResponder(boards) as responder:
        line = ModbusLine("rs485-q", port=responder.port, baudrate=19200, timeout=0.1)
        await line.connect()
        plan = await quiet_plan(line)
        task = asyncio.create_task(run(line, plan, budget_s=20.0, interval_s=0.01))
        await responder.wait_for_requests(boards.count + 2)
        await line.close()
        await asyncio.wait_for(task, 5)
    assert not [t for t in threading.enumerate() if t.name == "line-rs485-q"]


async def test_a_cancelled_run_gives_the_line_back() -> None:
    boards = Boards()
    async with wired(boards) as (responder, line):
        plan = await quiet_plan(line)
        task = asyncio.create_task(run(line, plan, budget_s=20.0, interval_s=0.01))
        await responder.wait_for_requests(boards.count + 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for unit in UNITS:
            assert await line.read_discrete_inputs(unit, 0, 16) == (False,) * 16
        result = await run(line, plan, budget_s=0.1)
        assert result is not None
        assert result.reason == "budget"


@pytest.mark.parametrize("first", [(), (1,)])
async def test_no_quiet_run_without_a_plan_of_unchanged_reads(first: Sequence[int]) -> None:
    boards = Boards()
    async with wired(boards) as (_, line):
        for unit in first:
            await line.read_discrete_inputs(unit, 0, 16)
        line.watch()
        for unit in UNITS:  # first replies (or a write among the reads): nothing to compare
            await line.read_discrete_inputs(unit, 0, 16)
        await line.write_coil(1, 0x0200 + 1, 3)
        assert line.watched() is None
