"""Late replies over a real pty: a board that answers after the line's timeout.

RTU has no transaction id. Each reply of the boards below carries the sequence number of
the request it answers (holding register 0 reads the number of requests received so
far), so a reply taken for the answer to a later request is caught: a value returned
must be the number of the last request sent when it returned.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from drivers.errors import BoardLate, BoardTimeout
from drivers.modbus.line import ModbusLine
from tests.support.rtu_responder import RtuResponder, Send, frame

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TIMEOUT = 0.05


class Numbered:
    """Unit 1: answers a read of holding register 0 with the request's own number
    (1, 2, ...), ``delay(n)`` seconds after request ``n`` arrived."""

    def __init__(self, delay: float | list[float]) -> None:
        self.delay = delay
        self.received = 0

    def __call__(self, req: bytes) -> list[Send]:
        if req[0] != 1 or req[1] != 3:
            return []
        self.received += 1
        n = self.received
        delay = self.delay if isinstance(self.delay, float) else (
            self.delay[n - 1] if n <= len(self.delay) else 0.0
        )
        return [Send(frame(1, bytes([3, 2, n >> 8, n & 0xFF])), delay=delay)]


@asynccontextmanager
async def wired(
    board: Numbered, **line_kw: float | int | None
) -> AsyncIterator[ModbusLine]:
    async with RtuResponder(board) as responder:
        kw: dict[str, float | int | None] = {"timeout": TIMEOUT, "retries": 2, "settle_s": 0.01}
        kw.update(line_kw)
        line = ModbusLine("rs485-late", port=responder.port, baudrate=19200, **kw)  # type: ignore[arg-type]
        async with line:
            yield line


async def _read_fresh(line: ModbusLine, board: Numbered) -> int | None:
    """One read; None if it failed. A value must answer the last request sent."""
    try:
        (value,) = await line.read_holding_registers(1, 0, 1)
    except BoardTimeout:
        return None
    assert value == board.received, (
        f"stale reading: got the reply to request {value}, the last request was "
        f"{board.received}"
    )
    return value


async def test_board_always_twice_the_timeout_late_never_gives_a_stale_reading() -> None:
    board = Numbered(2 * TIMEOUT)
    async with wired(board) as line:
        results = [await _read_fresh(line, board) for _ in range(5)]
        stats = line.stats()
    assert results == [None] * 5
    unit = stats.units[1]
    # Every attempt's reply came late and was discarded (the last one may still be
    # on its way when the test ends): 3 attempts on the first read, then one per read
    # (a failing unit gets no retry on a read).
    assert unit.late_replies >= 3 + 4 - 1
    assert unit.retries == 2
    assert stats.late_replies == unit.late_replies
    assert unit.ok == 0
    assert unit.degraded
    assert stats.degraded == (1,)


async def test_degraded_board_reads_raise_board_late_and_recover_once_on_time() -> None:
    # Three transactions, all late: three attempts for the first, then one each (a
    # failing unit gets no retry on a read).
    late_first = [2 * TIMEOUT] * 5
    board = Numbered(late_first)
    async with wired(board) as line:
        for _ in range(3):
            with pytest.raises(BoardTimeout):
                await line.read_holding_registers(1, 0, 1)
        assert line.stats().units[1].degraded
        # On time from now on, but a degraded board's reply is not trusted yet: the
        # first transaction still sees the last late reply come in, the next two are
        # clean but the board is still degraded, the third clean one clears it.
        errors = []
        for _ in range(3):
            with pytest.raises(BoardLate) as info:
                await line.read_holding_registers(1, 0, 1)
            errors.append(info.value)
        assert line.stats().units[1].degraded
        assert await _read_fresh(line, board) == board.received
        assert not line.stats().units[1].degraded
    assert all(e.address == 1 and e.bus == "rs485-late" for e in errors)


async def test_one_late_reply_is_discarded_and_the_retry_returns_fresh_data() -> None:
    board = Numbered([2 * TIMEOUT])  # only the first request is answered late
    async with wired(board) as line:
        value = await _read_fresh(line, board)
        stats = line.stats().units[1]
    assert value == 2  # the retry's own reply, not the late reply to request 1
    assert stats.late_replies == 1
    assert stats.retries == 1
    assert not stats.degraded


async def test_late_reply_beyond_the_window_makes_the_board_degraded() -> None:
    # A window shorter than the board's lateness: the previous reply can answer the
    # retry (the residual risk of RTU); the reply that then arrives while the line is
    # idle is counted late, the window stretches to the lateness seen, and the board
    # becomes degraded: from then on no reading of it is returned.
    board = Numbered(2 * TIMEOUT)
    async with wired(board, late_window_s=0.0, retries=1) as line:
        def degraded() -> bool:
            unit = line.stats().units.get(1)
            return unit is not None and unit.degraded

        reads = 0
        while reads < 20 and not degraded():
            reads += 1
            try:
                await line.read_holding_registers(1, 0, 1)
            except BoardTimeout:
                pass
        assert degraded(), f"not degraded after {reads} reads"
        for _ in range(3):
            with pytest.raises(BoardLate):
                await line.read_holding_registers(1, 0, 1)
        stats = line.stats().units[1]
    assert stats.late_replies >= 3


async def test_late_window_is_configurable_and_checked() -> None:
    line = ModbusLine.from_config(
        {"name": "b", "kind": "rtu", "port": "/dev/null", "timeout_s": 0.2,
         "late_window_s": 0.7, "degraded_after": 5}
    )
    assert (line.late_window_s, line.degraded_after) == (0.7, 5)
    from drivers.errors import DriverConfigError

    with pytest.raises(DriverConfigError, match="late_window_s"):
        ModbusLine("b", port="/dev/null", late_window_s=-1)
    with pytest.raises(DriverConfigError, match="degraded_after"):
        ModbusLine("b", port="/dev/null", degraded_after=0)


async def test_stretched_window_returns_to_the_configured_one_once_on_time() -> None:
    board = Numbered(2 * TIMEOUT)  # late, later than the (zero) window

    async def read_until(condition: Callable[[], bool]) -> int:
        reads = 0
        while reads < 20 and not condition():
            reads += 1
            try:
                await line.read_holding_registers(1, 0, 1)
            except BoardTimeout:
                pass
        assert condition(), f"still not so after {reads} reads"
        return reads

    async with wired(board, late_window_s=0.0, retries=0) as line:
        await read_until(lambda: line._late_window(1, TIMEOUT) > 0.0)  # stretched
        board.delay = 0.0  # on time from now on
        await read_until(lambda: line._late_window(1, TIMEOUT) == 0.0)
        assert not line.stats().units[1].degraded
