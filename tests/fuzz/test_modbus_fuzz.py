"""Fuzzing the Modbus reply handling: whatever a board (or the noise on the line) sends back,
the codec and the line accept it only as *the* answer to *that* request, and otherwise
raise ``FrameError`` or ``BoardRejected`` (or, at the line, ``BoardTimeout`` when no complete
frame arrived), never another exception.

Two levels:

- :func:`drivers.modbus.codec.decode_reply` (and ``rtu_reply_length``, ``mbap_reply_length``,
  ``split_mbap``) fed arbitrary and near-valid replies for every request kind;
- a real :class:`~drivers.modbus.line.ModbusLine` (RTU and MBAP framing) over an in-memory
  transport that answers each request with fuzzed bytes in random chunks.

An accepted reply is checked against an oracle written here independently of the codec
(bitwise CRC, expected byte counts, echo rules, bit and register unpacking).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.errors import BoardRejected, BoardTimeout, FrameError
from drivers.modbus import codec
from drivers.modbus.codec import Request
from drivers.modbus.line import ModbusLine
from drivers.modbus.transport import Transport

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
pytestmark = pytest.mark.timeout(240)


# -- an independent oracle ------------------------------------------------------------------


def crc16(data: bytes) -> int:
    """Modbus CRC-16, bit by bit (not the codec's table)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_crc(body: bytes) -> bytes:
    crc = crc16(body)
    return body + bytes((crc & 0xFF, crc >> 8))


def correct_pdu(req: Request) -> Callable[[bytes], bool]:
    """Whether a reply PDU is a correct, complete answer to ``req``."""

    def check(pdu: bytes) -> bool:
        if not pdu or pdu[0] != req.function:
            return False
        if req.is_read:
            n = (req.quantity + 7) // 8 if req.function in (1, 2) else 2 * req.quantity
            return len(pdu) == 2 + n and pdu[1] == n
        if req.function in (5, 6):
            return pdu == req.pdu
        return pdu == req.pdu[:5]

    return check


def decoded_by_oracle(req: Request, pdu: bytes) -> tuple[Any, ...]:
    if not req.is_read:
        return ()
    data = pdu[2:]
    if req.function in (1, 2):
        return tuple(bool(data[i // 8] >> (i % 8) & 1) for i in range(req.quantity))
    return tuple(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))


def good_reply_pdu(req: Request, payload: bytes) -> bytes:
    """A correct reply PDU to ``req``, its data bytes taken from ``payload``."""
    if req.is_read:
        n = (req.quantity + 7) // 8 if req.function in (1, 2) else 2 * req.quantity
        data = (payload * (n // max(len(payload), 1) + 1))[:n] if payload else bytes(n)
        return bytes((req.function, n)) + data
    if req.function in (5, 6):
        return req.pdu
    return req.pdu[:5]


# -- requests of every kind -----------------------------------------------------------------

UNITS = st.integers(1, 247)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    unit = draw(UNITS)
    kind = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 15, 16]))
    if kind in (1, 2):
        count = draw(st.integers(1, 64) | st.just(codec.MAX_READ_BITS))
        return codec.read_request(unit, kind, draw(st.integers(0, 0x10000 - count)), count)
    if kind in (3, 4):
        count = draw(st.integers(1, codec.MAX_READ_REGISTERS))
        return codec.read_request(unit, kind, draw(st.integers(0, 0x10000 - count)), count)
    address = draw(st.integers(0, 0xFFF0))
    if kind == 5:
        return codec.write_coil_request(unit, address, draw(st.booleans() | st.integers(0, 0xFFFF)))
    if kind == 6:
        return codec.write_register_request(unit, address, draw(st.integers(0, 0xFFFF)))
    if kind == 15:
        return codec.write_coils_request(unit, address, draw(st.lists(st.booleans(), min_size=1,
                                                                      max_size=16)))
    return codec.write_registers_request(unit, address, draw(st.lists(
        st.integers(0, 0xFFFF), min_size=1, max_size=8)))


@st.composite
def near_valid(draw: st.DrawFn, good: bytes) -> bytes:
    """``good`` with a few byte edits (or none)."""
    data = bytearray(good)
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["insert", "delete", "replace", "flip", "truncate"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "insert":
            data.insert(i, draw(st.integers(0, 255)))
        elif not data:
            continue
        elif kind == "delete":
            del data[i]
        elif kind == "replace":
            data[i] = draw(st.integers(0, 255))
        elif kind == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        else:
            del data[i:]
    return bytes(data)


@st.composite
def reply_pdus(draw: st.DrawFn, req: Request) -> bytes:
    good = good_reply_pdu(req, draw(st.binary(max_size=8)))
    return draw(
        st.binary(max_size=300)
        | near_valid(good)
        | st.builds(lambda code: bytes((req.function | 0x80, code)), st.integers(0, 255))
        | st.just(good)
    )


def assert_accepted_correctly(req: Request, pdu: bytes, result: tuple[Any, ...]) -> None:
    assert correct_pdu(req)(pdu), f"{req.describe()}: accepted {pdu.hex()}"
    assert result == decoded_by_oracle(req, pdu)
    if req.is_read:
        assert len(result) == req.quantity


# -- the codec ------------------------------------------------------------------------------


@FUZZ
@given(data=st.data(), req=requests())
def test_decode_reply_accepts_only_the_answer_to_the_request(
    data: st.DataObject, req: Request,
) -> None:
    unit = data.draw(st.just(req.unit) | st.integers(0, 255), label="unit")
    pdu = data.draw(reply_pdus(req), label="pdu")
    try:
        result = codec.decode_reply(req, unit, pdu)
    except BoardRejected as exc:
        rejected: BoardRejected | None = exc
    except FrameError:
        return
    else:
        rejected = None
    if rejected is not None:
        assert unit == req.unit
        assert pdu[0] == req.function | 0x80
        assert len(pdu) == 2
        assert rejected.exception_code == pdu[1]
        return
    assert unit == req.unit
    assert_accepted_correctly(req, pdu, result)


@FUZZ
@given(data=st.data(), req=requests())
def test_rtu_frame_length_is_known_or_refused(data: st.DataObject, req: Request) -> None:
    head = data.draw(st.binary(max_size=6) | st.just(bytes((req.unit, req.function)))
                     .map(lambda b: b + data.draw(st.binary(max_size=3))), label="head")
    try:
        n = codec.rtu_reply_length(req, head)
    except FrameError:
        assert head[0] != req.unit or (len(head) >= 2 and head[1] not in
                                       (req.function, req.function | 0x80))
        return
    if n is not None:
        assert 5 <= n <= 5 + 255


@FUZZ
@given(frame=st.binary(max_size=300))
def test_mbap_length_and_split_raise_only_frame_error(frame: bytes) -> None:
    try:
        n = codec.mbap_reply_length(frame)
        if n is None or len(frame) < n:
            return
        tid, unit, pdu = codec.split_mbap(frame[:n])
    except FrameError:
        return
    assert 0 <= tid <= 0xFFFF
    assert 0 <= unit <= 255
    assert len(pdu) == n - 7


# -- the line, over an in-memory transport ----------------------------------------------------


class ScriptedTransport(Transport):
    """Answers each written request with the bytes ``reply(adu)`` returns, in chunks."""

    def __init__(self, on_data: Callable[[bytes], None], on_lost: Callable[[Exception], None],
                 reply: Callable[[bytes], list[bytes]]) -> None:
        super().__init__(on_data, on_lost)
        self._reply = reply
        self.written: list[bytes] = []

    async def open(self) -> None:
        return None

    async def write(self, data: bytes) -> None:
        self.written.append(data)
        loop = asyncio.get_running_loop()
        for chunk in self._reply(data):
            loop.call_soon(self._on_data, chunk)

    def close(self) -> None:
        return None


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if data[a:b]]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), req=requests(), framing=st.sampled_from(["rtu", "socket"]))
def test_the_line_accepts_only_the_answer_to_the_request(
    data: st.DataObject, req: Request, framing: str,
) -> None:
    pdu = data.draw(reply_pdus(req), label="pdu")
    unit = data.draw(st.just(req.unit) | UNITS, label="unit")
    fix_crc = data.draw(st.booleans(), label="fix_crc")
    noise = data.draw(st.binary(max_size=12), label="noise") if data.draw(
        st.booleans(), label="raw") else None
    cuts = data.draw(st.lists(st.integers(0, 400), max_size=4), label="cuts")
    sent: list[bytes] = []

    def reply(adu: bytes) -> list[bytes]:
        if noise is not None:
            frame = noise
        elif framing == "rtu":
            body = bytes((unit,)) + pdu
            frame = with_crc(body) if fix_crc else body + b"\x00\x00"
        else:
            tid = adu[:2]
            frame = tid + b"\x00\x00" + (len(pdu) + 1).to_bytes(2, "big") + bytes((unit,)) + pdu
        sent.append(frame)
        return _chunks(frame, cuts)

    async def scenario() -> tuple[Any, ...] | BaseException:
        line = ModbusLine("fuzz", host="127.0.0.1", tcp_port=1, framing=framing,  # type: ignore[arg-type]
                          timeout=0.02, retries=0, settle_s=0.0)
        line._transport = ScriptedTransport(line._on_data, line._on_lost, reply)
        try:
            return await line.execute(req, log_failures=False)
        except (FrameError, BoardRejected, BoardTimeout) as exc:
            return exc
        finally:
            await line.close()

    outcome = asyncio.run(scenario())
    if isinstance(outcome, BaseException):
        return
    # Accepted: what the line consumed must be a correct, well-framed answer from the
    # right unit (bytes after a complete frame are discarded as stray).
    (frame,) = sent
    if framing == "rtu":
        n = 5 + (frame[2] if req.is_read else 3)
        frame = frame[:n]
        assert frame[0] == req.unit
        assert crc16(frame[:-2]) == frame[-2] | frame[-1] << 8
        assert_accepted_correctly(req, frame[1:-2], outcome)
    else:
        frame = frame[:6 + int.from_bytes(frame[4:6], "big")]
        assert frame[2:4] == b"\x00\x00"
        assert frame[6] == req.unit
        assert_accepted_correctly(req, frame[7:], outcome)
