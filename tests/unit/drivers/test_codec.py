"""The pure codec: request bytes (checked against pymodbus's encoder as an oracle), CRC,
and the strict reply checks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadDiscreteInputsRequest,
    WriteMultipleCoilsRequest,
    WriteSingleCoilRequest,
)
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

from drivers.errors import BoardRejected, FrameError
from drivers.modbus import codec
from drivers.modbus.registers import crc16

_FRAMER = FramerRTU(DecodePDU(False))


def _pymodbus(pdu: object) -> bytes:
    return bytes(_FRAMER.buildFrame(pdu))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (codec.read_request(1, 1, 0x0010, 13), ReadCoilsRequest(address=0x10, count=13, dev_id=1)),
        (codec.read_request(7, 2, 0, 16), ReadDiscreteInputsRequest(address=0, count=16, dev_id=7)),
        (codec.read_request(9, 3, 0x8000, 1),
         ReadHoldingRegistersRequest(address=0x8000, count=1, dev_id=9)),
        (codec.read_request(247, 4, 3, 125),
         ReadInputRegistersRequest(address=3, count=125, dev_id=247)),
        (codec.write_coil_request(1, 4, True),
         WriteSingleCoilRequest(address=4, bits=[True], dev_id=1)),
        (codec.write_coil_request(1, 4, False),
         WriteSingleCoilRequest(address=4, bits=[False], dev_id=1)),
        (codec.write_register_request(2, 0x4000, 9),
         WriteSingleRegisterRequest(address=0x4000, registers=[9], dev_id=2)),
        (codec.write_coils_request(3, 0, [True, False, True] * 4),
         WriteMultipleCoilsRequest(address=0, bits=[True, False, True] * 4, dev_id=3)),
        (codec.write_registers_request(4, 0x10, [1, 0xFFFF, 7]),
         WriteMultipleRegistersRequest(address=0x10, registers=[1, 0xFFFF, 7], dev_id=4)),
    ],
    ids=["fc01", "fc02", "fc03", "fc04", "fc05-on", "fc05-off", "fc06", "fc15", "fc16"],
)
def test_requests_match_pymodbus_bytes(ours: codec.Request, theirs: object) -> None:
    assert codec.encode_rtu(ours) == _pymodbus(theirs)


def test_raw_coil_value_for_waveshare_flash() -> None:
    req = codec.write_coil_request(1, 0x0203, 7)
    assert req.pdu == bytes([5, 0x02, 0x03, 0x00, 0x07])


@given(st.binary(max_size=64))
def test_table_crc_equals_reference(data: bytes) -> None:
    assert codec.rtu_crc(data) == crc16(data)


def test_known_crc_and_order_on_the_wire() -> None:
    # Read 16 DI from unit 1 at 0: the textbook frame 01 02 00 00 00 10 79 C6.
    assert codec.encode_rtu(codec.read_request(1, 2, 0, 16)).hex() == "010200000010" + "79c6"
    assert codec.rtu_crc_ok(bytes.fromhex("01020000001079c6"))
    assert not codec.rtu_crc_ok(bytes.fromhex("01020000001079c7"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"unit": 0, "function": 2, "address": 0, "count": 1}, "unit"),
        ({"unit": 256, "function": 2, "address": 0, "count": 1}, "unit"),
        ({"unit": 1, "function": 2, "address": 0, "count": 0}, "count"),
        ({"unit": 1, "function": 3, "address": 0, "count": 126}, "count"),
        ({"unit": 1, "function": 2, "address": 0xFFFF, "count": 2}, "count"),
        ({"unit": 1, "function": 5, "address": 0, "count": 1}, "read function"),
    ],
)
def test_impossible_reads_are_value_errors(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        codec.read_request(**kwargs)


def test_bits_decode_exactly_the_requested_count() -> None:
    req = codec.read_request(1, 2, 0, 10)
    assert codec.decode_reply(req, 1, bytes([2, 2, 0b0000_0101, 0b10])) == (
        True, False, True, False, False, False, False, False, False, True,
    )


def test_registers_decode_big_endian() -> None:
    req = codec.read_request(1, 4, 0, 2)
    assert codec.decode_reply(req, 1, bytes([4, 4, 0x01, 0x02, 0xFF, 0xFE])) == (0x0102, 0xFFFE)


@pytest.mark.parametrize(
    ("unit", "pdu", "match"),
    [
        (2, bytes([2, 2, 0, 0]), "unit 2"),
        (1, bytes([1, 2, 0, 0]), "function 1"),
        (1, bytes([2, 1, 0]), "expected 2"),
        (1, bytes([2, 3, 0, 0, 0]), "expected 2"),
        (1, bytes([2, 2, 0]), "expected 2"),
        (1, b"", "empty"),
    ],
)
def test_mismatched_read_replies(unit: int, pdu: bytes, match: str) -> None:
    with pytest.raises(FrameError, match=match) as info:
        codec.decode_reply(codec.read_request(1, 2, 0, 16), unit, pdu)
    assert info.value.address == 1


def test_exception_reply_carries_code() -> None:
    with pytest.raises(BoardRejected, match="illegal data address") as info:
        codec.decode_reply(codec.read_request(1, 3, 0, 1), 1, bytes([0x83, 2]))
    assert info.value.exception_code == 2


def test_write_echo_checks() -> None:
    req = codec.write_coil_request(1, 3, True)
    assert codec.decode_reply(req, 1, req.pdu) == ()
    with pytest.raises(FrameError, match="echo"):
        codec.decode_reply(req, 1, bytes([5, 0, 4, 0xFF, 0]))
    multi = codec.write_registers_request(1, 0x10, [1, 2])
    assert codec.decode_reply(multi, 1, bytes([16, 0, 0x10, 0, 2])) == ()
    with pytest.raises(FrameError):
        codec.decode_reply(multi, 1, bytes([16, 0, 0x10, 0, 3]))


def test_rtu_reply_length_from_the_head() -> None:
    read = codec.read_request(1, 2, 0, 16)
    assert codec.rtu_reply_length(read, b"") is None
    assert codec.rtu_reply_length(read, b"\x01") is None
    assert codec.rtu_reply_length(read, b"\x01\x02") is None
    assert codec.rtu_reply_length(read, b"\x01\x02\x02") == 7
    assert codec.rtu_reply_length(read, b"\x01\x82") == 5
    assert codec.rtu_reply_length(codec.write_coil_request(1, 0, True), b"\x01\x05") == 8
    with pytest.raises(FrameError, match="unit 9"):
        codec.rtu_reply_length(read, b"\x09")
    with pytest.raises(FrameError, match="function 3"):
        codec.rtu_reply_length(read, b"\x01\x03")


def test_mbap_framing() -> None:
    req = codec.read_request(4, 3, 0, 2)
    adu = codec.encode_mbap(req, 0x1234)
    assert adu == bytes([0x12, 0x34, 0, 0, 0, 6, 4, 3, 0, 0, 0, 2])
    reply = bytes([0x12, 0x34, 0, 0, 0, 7, 4, 3, 4, 0, 1, 0, 2])
    assert codec.mbap_reply_length(reply[:6]) == len(reply)
    assert codec.split_mbap(reply) == (0x1234, 4, bytes([3, 4, 0, 1, 0, 2]))
    with pytest.raises(FrameError, match="protocol"):
        codec.split_mbap(bytes([0, 1, 0, 1, 0, 3, 4, 3, 0]))


@given(st.lists(st.booleans(), min_size=1, max_size=64))
def test_pack_unpack_round_trip(bits: list[bool]) -> None:
    assert codec.unpack_bits(codec.pack_bits(bits), len(bits)) == tuple(bits)
