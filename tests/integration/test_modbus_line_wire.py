"""ModbusLine against a misbehaving RTU server over a real pty pair.

The responder sends exact bytes, so each test shows one wire fault and what the line
makes of it. Nothing here asserts how fast something happened; the only time check is
a lower bound (the silent interval), which is a correctness property of the wire.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import pytest

from drivers.errors import BoardRejected, BoardTimeout, BusClosed, BusError, FrameError
from drivers.modbus.line import ModbusLine
from drivers.modbus.registers import silent_interval
from tests.support.rtu_responder import (
    BoardModel,
    Line,
    RtuResponder,
    Send,
    exception_reply,
    frame,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]  # a pty per test

Handler = Callable[[bytes], Sequence[Send]]


@asynccontextmanager
async def wired(
    handler: Handler, *, timeout_s: float = 0.1, retries: int = 0, settle_s: float = 0.05,
    late_window_s: float | None = None, degraded_after: int = 3,
) -> AsyncIterator[tuple[RtuResponder, ModbusLine]]:
    async with RtuResponder(handler) as responder:
        line = ModbusLine(
            "rs485-t", port=responder.port, baudrate=19200,
            timeout=timeout_s, retries=retries, settle_s=settle_s,
            late_window_s=late_window_s, degraded_after=degraded_after,
        )
        async with line:
            yield responder, line


def di_reply(unit: int, byte0: int, byte1: int = 0) -> bytes:
    return frame(unit, bytes([2, 2, byte0, byte1]))


class Scripted:
    """Answers request ``i`` with ``script[i]`` (a list of Sends); afterwards like a
    healthy board whose inputs read 0x0001."""

    def __init__(self, *script: list[Send]) -> None:
        self.script = list(script)
        self.model = BoardModel(unit=1, inputs=16)
        self.model.discrete[0] = True

    def __call__(self, req: bytes) -> list[Send]:
        if self.script:
            return self.script.pop(0)
        return self.model(req)


async def test_healthy_read_and_write() -> None:
    model = BoardModel(unit=1, outputs=8, inputs=16)
    model.discrete[3] = True
    async with wired(model) as (_, line):
        levels = await line.read_discrete_inputs(1, 0, 16)
        await line.write_coil(1, 5, True)
        await line.write_coils(1, 0, [True, False, True])
        await line.write_registers(1, 0x10, [7, 8])
        regs = await line.read_holding_registers(1, 0x10, 2)
    assert levels == tuple(i == 3 for i in range(16))
    assert model.coils[:6] == [True, False, True, False, False, True]
    assert regs == (7, 8)
    stats = line.stats()
    assert (stats.transactions, stats.ok, stats.timeouts, stats.frame_errors) == (5, 5, 0, 0)
    assert stats.units[1].ok == 5


async def test_late_reply_after_timeout_is_not_taken_for_the_next_answer() -> None:
    stale = di_reply(1, 0xFF, 0xFF)
    handler = Scripted([Send(stale, delay=0.15)])  # later than the 0.1 s timeout
    async with wired(handler, timeout_s=0.1, settle_s=0.1) as (_, line):
        with pytest.raises(BoardTimeout):
            await line.read_discrete_inputs(1, 0, 16)
        levels = await line.read_discrete_inputs(1, 0, 16)
    assert levels == (True,) + (False,) * 15
    assert line.stats().stray_bytes >= len(stale)


async def test_late_reply_beyond_the_window_colliding_with_another_units_request() -> None:
    # Unit 1 answers 0.16 s late, after a (deliberately short) late window, while the
    # request to unit 2 waits for its (slow) reply: the stale frame is never decoded as
    # unit 2's answer, and is charged to unit 1 (late), not to unit 2; unit 2, too slow
    # itself, times out on its own account.
    def handler(req: bytes) -> list[Send]:
        if req[0] == 1:
            return [Send(di_reply(1, 0xFF, 0xFF), delay=0.16)]
        return [Send(di_reply(2, 0x00, 0x00), delay=0.3)]

    async with wired(handler, timeout_s=0.1, settle_s=0.01, late_window_s=0.02,
                     retries=0) as (_, line):
        with pytest.raises(BoardTimeout):
            await line.read_discrete_inputs(1, 0, 16)
        with pytest.raises(BoardTimeout):
            await line.read_discrete_inputs(2, 0, 16, priority=False)
        stats = line.stats()
    assert stats.units[1].late_replies >= 1
    assert stats.units[2].frame_errors == 0


async def test_wrong_byte_count_is_a_frame_error_and_the_line_recovers() -> None:
    handler = Scripted([Send(frame(1, bytes([2, 1, 0x55])))])  # 1 byte for 16 inputs
    async with wired(handler) as (_, line):
        with pytest.raises(FrameError, match="expected 2") as info:
            await line.read_discrete_inputs(1, 0, 16)
        assert info.value.bus == "rs485-t"
        assert info.value.address == 1
        assert await line.read_discrete_inputs(1, 0, 16) == (True,) + (False,) * 15


@pytest.mark.parametrize(
    ("bad_reply", "match"),
    [
        (frame(1, bytes([1, 2, 0x55, 0x00])), "function 1"),  # coils reply to a DI read
        (frame(2, bytes([2, 2, 0x55, 0x00])), "unit 2"),  # another board's reply
        (di_reply(1, 0x55)[:-1] + bytes([di_reply(1, 0x55)[-1] ^ 0xFF]), "CRC"),
    ],
    ids=["wrong-function", "wrong-unit", "bad-crc"],
)
async def test_mismatched_replies_are_frame_errors(bad_reply: bytes, match: str) -> None:
    handler = Scripted([Send(bad_reply)])
    async with wired(handler) as (_, line):
        with pytest.raises(FrameError, match=match):
            await line.read_discrete_inputs(1, 0, 16)
        assert await line.read_discrete_inputs(1, 0, 16) == (True,) + (False,) * 15
    assert line.stats().frame_errors == 1


def _flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[index] ^= mask
    return bytes(out)


async def test_a_reply_like_the_last_good_one_is_taken_any_other_is_checked_in_full() -> None:
    # The line takes a reply equal byte for byte to the last good reply to the same
    # request without checking it again. A reply that differs from it by one bit is
    # checked in full, whether the bit is in the data (the CRC no longer matches) or in
    # the CRC itself; a good reply with new data is decoded anew.
    good = di_reply(1, 0x01)
    handler = Scripted(
        [Send(good)], [Send(good)],
        [Send(_flip(good, 3))],           # an input flipped, the old CRC kept
        [Send(_flip(good, len(good) - 1, 0x80))],  # the CRC damaged
        [Send(good)],
        [Send(di_reply(1, 0x03))],        # input 1 changed too: a new good reply
        [Send(_flip(di_reply(1, 0x03), 4))],
        [Send(good)],
    )
    one = (True,) + (False,) * 15
    async with wired(handler) as (_, line):
        assert await line.read_discrete_inputs(1, 0, 16) == one
        assert await line.read_discrete_inputs(1, 0, 16) == one
        for _ in range(2):
            with pytest.raises(FrameError, match="CRC"):
                await line.read_discrete_inputs(1, 0, 16)
        assert await line.read_discrete_inputs(1, 0, 16) == one
        assert await line.read_discrete_inputs(1, 0, 16) == (True, True) + (False,) * 14
        with pytest.raises(FrameError, match="CRC"):
            await line.read_discrete_inputs(1, 0, 16)
        assert await line.read_discrete_inputs(1, 0, 16) == one
    stats = line.stats()
    assert (stats.transactions, stats.ok, stats.frame_errors) == (8, 5, 3)


async def test_the_same_reply_to_another_request_is_decoded_for_that_request() -> None:
    # 16 and 9 inputs both come in two data bytes: the same bytes answer both reads, and
    # each read gets its own count of inputs (nothing remembered for one serves the other).
    reply = di_reply(1, 0xFF, 0xFF)
    handler = Scripted([Send(reply)], [Send(reply)], [Send(reply)], [Send(reply)])
    async with wired(handler) as (_, line):
        assert await line.read_discrete_inputs(1, 0, 16) == (True,) * 16
        assert await line.read_discrete_inputs(1, 0, 9) == (True,) * 9
        assert await line.read_discrete_inputs(1, 0, 16) == (True,) * 16
        assert await line.read_discrete_inputs(1, 0, 9) == (True,) * 9


async def test_write_echo_must_match() -> None:
    req_echo_wrong = frame(1, bytes([5, 0x02, 0x03, 0x00, 0x08]))  # value 8, not 7
    handler = Scripted([Send(req_echo_wrong)])
    async with wired(handler) as (_, line):
        with pytest.raises(FrameError, match="echo"):
            await line.write_coil(1, 0x0203, 7)


async def test_exception_response_is_board_rejected_and_not_retried() -> None:
    handler = Scripted([Send(exception_reply(1, 2, 2))])
    async with wired(handler, retries=2) as (responder, line):
        with pytest.raises(BoardRejected) as info:
            await line.read_discrete_inputs(1, 0, 16)
    assert info.value.exception_code == 2
    assert info.value.address == 1
    assert len(responder.requests) == 1
    assert line.stats().exceptions == 1


async def test_silent_board_times_out_after_retry_budget_and_line_serves_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    other = BoardModel(unit=2, inputs=8)
    other.discrete[1] = True
    async with wired(Line([other]), timeout_s=0.05, retries=2, settle_s=0.01) as (responder, line):
        with caplog.at_level(logging.INFO, logger="drivers.modbus.line"):
            for _ in range(2):
                with pytest.raises(BoardTimeout) as info:
                    await line.read_discrete_inputs(1, 0, 8)
            assert await line.read_discrete_inputs(2, 0, 8) == (False, True) + (False,) * 6
    assert info.value.address == 1
    assert info.value.bus == "rs485-t"
    to_unit_1 = [r for r in responder.requests if r.unit == 1]
    # The first read: 1 try + 2 retries. The unit is failing from then on: a read of it
    # gets one attempt, the line's time goes to the boards that answer.
    assert len(to_unit_1) == 3 + 1
    stats = line.stats()
    assert stats.units[1].timeouts == 4
    assert stats.units[1].retries == 2
    assert stats.units[1].failing
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per incident, not per failed poll


async def test_recovery_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    handler = Scripted([], [])  # two silent requests, then healthy
    async with wired(handler, timeout_s=0.05, settle_s=0.01) as (_, line):
        with caplog.at_level(logging.INFO, logger="drivers.modbus.line"):
            for _ in range(2):
                with pytest.raises(BoardTimeout):
                    await line.read_discrete_inputs(1, 0, 16)
            for _ in range(3):
                await line.read_discrete_inputs(1, 0, 16)
    levels = [r.levelno for r in caplog.records]
    assert levels == [logging.WARNING, logging.INFO]
    assert not line.stats().units[1].failing


async def test_silent_interval_is_honoured_between_frames() -> None:
    model = BoardModel(unit=1, inputs=16)
    async with wired(model) as (responder, line):
        for _ in range(20):
            await line.read_discrete_inputs(1, 0, 16)
    gap = silent_interval(19200)
    replies = [t for t, _ in responder.sent]
    requests = [r.first_byte_at for r in responder.requests]
    assert len(replies) == 20
    measured = [requests[i + 1] - replies[i] for i in range(19)]
    assert min(measured) >= gap


async def test_door_write_overtakes_queued_polls() -> None:
    model = BoardModel(unit=1, inputs=16)

    def slow(req: bytes) -> list[Send]:
        return [Send(s.data, delay=0.02) for s in model(req)]

    async with wired(slow) as (responder, line):
        polls = [asyncio.create_task(line.read_discrete_inputs(1, 0, 16)) for _ in range(5)]
        await responder.wait_for_requests(1)  # the first poll is on the wire
        assert line.waiting == 4
        await line.write_coil(1, 0x0203, 5)
        await asyncio.gather(*polls)
    functions = [r.function for r in responder.requests]
    assert functions == [2, 5, 2, 2, 2, 2]


async def test_broadcast_write_expects_no_reply() -> None:
    model = BoardModel(unit=1)
    async with wired(model, timeout_s=0.05) as (responder, line):
        await line.write_coil(0, 2, True)
        await line.read_coils(1, 0, 8)
    assert model.coils[2] is True
    assert [r.unit for r in responder.requests] == [0, 1]
    assert line.stats().timeouts == 0


async def test_garbage_while_idle_is_discarded() -> None:
    model = BoardModel(unit=1, inputs=16)
    async with wired(model) as (responder, line):
        await line.read_discrete_inputs(1, 0, 16)
        responder.write(frame(1, b"\x02\x02\xff\xff"))
        async with asyncio.timeout(5):
            while line.stats().stray_bytes < 7:  # noqa: ASYNC110 - until the line read them
                await asyncio.sleep(0.005)
        assert await line.read_discrete_inputs(1, 0, 16) == (False,) * 16
    assert line.stats().stray_bytes == 7


async def test_missing_port_is_a_bus_error_and_close_is_idempotent() -> None:
    line = ModbusLine("rs485-x", port="/dev/nonexistent-locker-port")
    with pytest.raises(BusError) as info:
        await line.connect()
    assert info.value.bus == "rs485-x"
    await line.close()
    await line.close()
    with pytest.raises(BusClosed):
        await line.read_coils(1, 0, 1)


async def test_close_fails_a_pending_transaction_with_bus_closed() -> None:
    async with wired(lambda req: [], timeout_s=1.0) as (responder, line):
        task = asyncio.create_task(line.read_coils(1, 0, 1))
        async with asyncio.timeout(5):
            await responder.wait_for_requests(1)  # the transaction is on the wire
        await line.close()
        with pytest.raises(BusClosed):
            await task


# -- Modbus TCP (MBAP) through a loopback "gateway" -----------------------------------


async def test_tcp_gateway_discards_stale_transaction_ids() -> None:
    model = BoardModel(unit=4, inputs=8)
    model.discrete[0] = True
    first = True

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal first
        try:
            while True:
                head = await reader.readexactly(7)
                pdu = await reader.readexactly((head[4] << 8 | head[5]) - 1)
                rtu = model(bytes([head[6]]) + pdu + b"\0\0")
                body = rtu[0].data[:-2] if rtu else b""
                if first:  # a stale reply with another transaction id comes first
                    first = False
                    stale = bytes([2, 1, 0xFF])
                    writer.write(bytes([0x77, 0x77, 0, 0, 0, 4, 4]) + stale)
                n = len(body)
                writer.write(head[:4] + n.to_bytes(2, "big") + body)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with ModbusLine("gw", host="127.0.0.1", tcp_port=port, timeout=0.5) as line:
            assert await line.read_discrete_inputs(4, 0, 8) == (True,) + (False,) * 7
            await line.write_coil(4, 1, True)
        assert model.coils[1] is True
        assert line.stats().stray_bytes == 10
    finally:
        server.close()
        await server.wait_closed()
