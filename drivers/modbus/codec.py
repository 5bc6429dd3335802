"""Modbus request encoding and strict reply checking: pure functions, no I/O.

The line (:mod:`drivers.modbus.line`) sends what :func:`encode_rtu` / :func:`encode_mbap`
build and hands every received frame to :func:`decode_reply`, which accepts it only if
it is *the* answer to *that* request. The checks are the ones pymodbus 3.16's client
does not make (see ``docs/decisions/0002-modbus-line.md``):

* **Unit id**: the first byte must be the unit the request went to. On a shared line
  another board's reply (a board answering a frame meant for a neighbour because of an
  address clash, or a late reply) is a :class:`~drivers.errors.FrameError`, never
  "skipped and waited for", because skipping turns it into a timeout that hides a
  wiring or addressing fault.
* **Function code**: the reply's function must be the request's, or the request's with
  bit 7 set (exception response, 2-byte PDU: function | 0x80, exception code).
  A reply of another function cannot be delimited (its length is unknown), so the
  line must treat the rest of the input as garbage until the line goes quiet.
* **Byte count**: a read of ``n`` bits must carry exactly ``ceil(n/8)`` data bytes, a
  read of ``n`` registers exactly ``2n``. Boards have been seen answering 16-bit reads
  with one byte; taking that as "the other eight inputs are off" would report doors
  closed that nobody read.
* **Echo**: function 05/06 replies echo address and value byte for byte; 15/16 replies
  echo address and count. Anything else is a reply to another write.
* **CRC** (RTU): low byte first on the wire. A bad CRC is a FrameError, not silence.

RTU frame length is not self-describing: after the unit and the function byte, a read
reply's third byte is the byte count (total ``5 + count``), a write reply is always 8
bytes, an exception reply 5. :func:`rtu_reply_length` computes the length from the
first bytes received so the line can return as soon as the frame is complete instead
of waiting for 3.5 silent characters (on a USB adapter or a pty the silence cannot be
observed reliably anyway: bytes arrive in arbitrary chunks).

Modbus TCP (MBAP) frames carry their length and a transaction id: a reply whose
transaction id is not the request's is stale (it answers an earlier, timed-out request)
and is discarded; the protocol id must be 0.

Value conventions: coils and discrete inputs decode to ``tuple[bool, ...]`` of exactly
the requested count (bit 0 of the first data byte is the lowest address); registers to
``tuple[int, ...]`` of unsigned 16-bit values.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache

from drivers.errors import BoardRejected, FrameError

__all__ = [
    "EXCEPTION_NAMES",
    "MAX_READ_BITS",
    "MAX_READ_REGISTERS",
    "MAX_WRITE_BITS",
    "MAX_WRITE_REGISTERS",
    "Function",
    "Request",
    "decode_reply",
    "encode_mbap",
    "encode_rtu",
    "mbap_reply_length",
    "pack_bits",
    "read_request",
    "rtu_crc",
    "rtu_crc_ok",
    "rtu_reply_length",
    "split_mbap",
    "unpack_bits",
    "write_coil_request",
    "write_coils_request",
    "write_register_request",
    "write_registers_request",
]

MAX_READ_BITS = 2000
MAX_READ_REGISTERS = 125
MAX_WRITE_BITS = 1968
MAX_WRITE_REGISTERS = 123

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class Function(IntEnum):
    READ_COILS = 1
    READ_DISCRETE_INPUTS = 2
    READ_HOLDING_REGISTERS = 3
    READ_INPUT_REGISTERS = 4
    WRITE_SINGLE_COIL = 5
    WRITE_SINGLE_REGISTER = 6
    WRITE_MULTIPLE_COILS = 15
    WRITE_MULTIPLE_REGISTERS = 16


_READ_BITS = (Function.READ_COILS, Function.READ_DISCRETE_INPUTS)
_READ_REGS = (Function.READ_HOLDING_REGISTERS, Function.READ_INPUT_REGISTERS)


@dataclass(frozen=True, slots=True)
class Request:
    """One request. ``pdu`` is function code + data, ready to frame.

    ``quantity`` is the count for reads and multiple writes, the raw 16-bit value for
    05/06.
    """

    unit: int
    function: int
    address: int
    quantity: int
    pdu: bytes

    @property
    def is_read(self) -> bool:
        return self.function <= 4

    @property
    def expects_reply(self) -> bool:
        """Broadcast (unit 0) is never answered."""
        return self.unit != 0

    def describe(self) -> str:
        return f"fc{self.function:02d} unit {self.unit} addr 0x{self.address:04X} q {self.quantity}"


def _check_unit(unit: int, *, write: bool) -> None:
    low = 0 if write else 1
    if not low <= unit <= 255:
        raise ValueError(f"unit must be in {low}..255, got {unit}")


def _check_u16(name: str, value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{name} must be in 0..65535, got {value}")


@lru_cache(maxsize=512)
def read_request(unit: int, function: int, address: int, count: int) -> Request:
    """A read (function 01, 02, 03 or 04) of ``count`` items from ``address``.

    Memoised: a poll reads the same inputs of the same boards every cycle, and a
    :class:`Request` is immutable."""
    _check_unit(unit, write=False)
    _check_u16("address", address)
    if function in _READ_BITS:
        limit = MAX_READ_BITS
    elif function in _READ_REGS:
        limit = MAX_READ_REGISTERS
    else:
        raise ValueError(f"not a read function: {function}")
    if not 1 <= count <= limit or address + count > 0x10000:
        raise ValueError(f"count must be in 1..{limit} within the address space, got {count}")
    pdu = bytes((function, address >> 8, address & 0xFF, count >> 8, count & 0xFF))
    return Request(unit, function, address, count, pdu)


def write_coil_request(unit: int, address: int, value: bool | int) -> Request:
    """Function 05. ``True``/``False`` encode as 0xFF00/0x0000; an ``int`` is sent raw
    (vendor extensions such as the Waveshare flash pulse put a duration there)."""
    _check_unit(unit, write=True)
    _check_u16("address", address)
    raw = (0xFF00 if value else 0x0000) if isinstance(value, bool) else value
    _check_u16("value", raw)
    pdu = bytes((5, address >> 8, address & 0xFF, raw >> 8, raw & 0xFF))
    return Request(unit, 5, address, raw, pdu)


def write_register_request(unit: int, address: int, value: int) -> Request:
    """Function 06."""
    _check_unit(unit, write=True)
    _check_u16("address", address)
    _check_u16("value", value)
    pdu = bytes((6, address >> 8, address & 0xFF, value >> 8, value & 0xFF))
    return Request(unit, 6, address, value, pdu)


def write_coils_request(unit: int, address: int, values: tuple[bool, ...] | list[bool]) -> Request:
    """Function 15."""
    _check_unit(unit, write=True)
    _check_u16("address", address)
    count = len(values)
    if not 1 <= count <= MAX_WRITE_BITS or address + count > 0x10000:
        raise ValueError(f"coil count must be in 1..{MAX_WRITE_BITS}, got {count}")
    data = pack_bits(values)
    pdu = bytes((15, address >> 8, address & 0xFF, count >> 8, count & 0xFF, len(data))) + data
    return Request(unit, 15, address, count, pdu)


def write_registers_request(
    unit: int, address: int, values: tuple[int, ...] | list[int]
) -> Request:
    """Function 16."""
    _check_unit(unit, write=True)
    _check_u16("address", address)
    count = len(values)
    if not 1 <= count <= MAX_WRITE_REGISTERS or address + count > 0x10000:
        raise ValueError(f"register count must be in 1..{MAX_WRITE_REGISTERS}, got {count}")
    for v in values:
        _check_u16("register value", v)
    data = b"".join(v.to_bytes(2, "big") for v in values)
    pdu = bytes((16, address >> 8, address & 0xFF, count >> 8, count & 0xFF, len(data))) + data
    return Request(unit, 16, address, count, pdu)


def pack_bits(values: tuple[bool, ...] | list[bool]) -> bytes:
    """Bits to bytes, bit 0 of byte 0 first (Modbus order)."""
    out = bytearray((len(values) + 7) // 8)
    for i, bit in enumerate(values):
        if bit:
            out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


#: The 8 bits of every byte value, bit 0 first: a poll unpacks 16 inputs with two lookups.
_BYTE_BITS: tuple[tuple[bool, ...], ...] = tuple(
    tuple(bool(byte >> i & 1) for i in range(8)) for byte in range(256)
)


def unpack_bits(data: bytes, count: int) -> tuple[bool, ...]:
    if count > 8 * len(data):
        raise IndexError(f"{count} bits asked of {len(data)} byte(s)")
    table = _BYTE_BITS
    if len(data) == 2:
        bits = table[data[0]] + table[data[1]]
    else:
        bits = tuple(bit for byte in data for bit in table[byte])
    return bits[:count] if len(bits) != count else bits


# -- CRC ----------------------------------------------------------------------------


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _make_table()


def rtu_crc(data: bytes) -> int:
    """Modbus CRC-16, table driven; same value as :func:`drivers.modbus.registers.crc16`."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def rtu_crc_ok(frame: bytes) -> bool:
    """Whether the last two bytes of ``frame`` are the CRC (low byte first) of the rest."""
    return len(frame) >= 4 and rtu_crc(frame[:-2]) == frame[-2] | frame[-1] << 8


# -- framing ------------------------------------------------------------------------


@lru_cache(maxsize=512)
def encode_rtu(req: Request) -> bytes:
    """The RTU frame of ``req`` (memoised: the same polls go out every cycle)."""
    body = bytes((req.unit,)) + req.pdu
    crc = rtu_crc(body)
    return body + bytes((crc & 0xFF, crc >> 8))


def encode_mbap(req: Request, tid: int) -> bytes:
    """MBAP header (transaction id, protocol 0, length, unit) + PDU."""
    _check_u16("transaction id", tid)
    n = len(req.pdu) + 1
    return bytes((tid >> 8, tid & 0xFF, 0, 0, n >> 8, n & 0xFF, req.unit)) + req.pdu


def rtu_reply_length(req: Request, head: bytes | bytearray) -> int | None:
    """Total length of the RTU reply to ``req`` that starts with ``head``, or ``None``
    while too few bytes are in to tell. Raises FrameError as soon as the head shows the
    reply is not for this request (unit or function), since its length is then
    unknowable."""
    if not head:
        return None
    if head[0] != req.unit:
        raise FrameError(
            f"reply from unit {head[0]} to a request for unit {req.unit}", address=req.unit
        )
    if len(head) < 2:
        return None
    fc = head[1]
    if fc == req.function | 0x80:
        return 5
    if fc != req.function:
        raise FrameError(
            f"reply with function {fc} to a request with function {req.function}",
            address=req.unit,
        )
    if req.is_read:
        if len(head) < 3:
            return None
        return 5 + head[2]
    return 8


def mbap_reply_length(head: bytes | bytearray) -> int | None:
    """Total length of the MBAP frame starting with ``head``, or ``None`` if unknown yet."""
    if len(head) < 6:
        return None
    n = head[4] << 8 | head[5]
    if not 2 <= n <= 254:
        raise FrameError(f"MBAP length field {n} out of range")
    return 6 + n


def split_mbap(frame: bytes) -> tuple[int, int, bytes]:
    """``(transaction id, unit, pdu)`` of a complete MBAP frame."""
    if frame[2] or frame[3]:
        raise FrameError(f"MBAP protocol id {frame[2] << 8 | frame[3]} is not 0")
    return frame[0] << 8 | frame[1], frame[6], bytes(frame[7:])


# -- reply checking -----------------------------------------------------------------


def decode_reply(req: Request, unit: int, pdu: bytes) -> tuple[bool, ...] | tuple[int, ...]:
    """Check that ``pdu`` (from ``unit``) answers ``req`` and decode it.

    Returns the bits or registers of a read; an empty tuple for a write (whose echo was
    checked). Raises :class:`~drivers.errors.BoardRejected` for an exception response
    and :class:`~drivers.errors.FrameError` for anything else that does not match.
    """
    where = req.unit
    if unit != req.unit:
        raise FrameError(f"reply from unit {unit} to a request for unit {req.unit}", address=where)
    if not pdu:
        raise FrameError("empty reply", address=where)
    fc = pdu[0]
    if fc == req.function | 0x80:
        if len(pdu) != 2:
            raise FrameError(f"exception reply of {len(pdu)} bytes, expected 2", address=where)
        code = pdu[1]
        name = EXCEPTION_NAMES.get(code, "unknown exception")
        raise BoardRejected(
            f"{req.describe()} rejected: exception {code} ({name})",
            address=where,
            exception_code=code,
        )
    if fc != req.function:
        raise FrameError(
            f"reply with function {fc} to a request with function {req.function}", address=where
        )
    if req.is_read:
        if len(pdu) < 2:
            raise FrameError("read reply without byte count", address=where)
        bits = req.function in _READ_BITS
        expected = (req.quantity + 7) // 8 if bits else 2 * req.quantity
        if pdu[1] != expected or len(pdu) != 2 + expected:
            raise FrameError(
                f"{req.describe()}: reply carries {pdu[1]} bytes ({len(pdu) - 2} present), "
                f"expected {expected}",
                address=where,
            )
        data = pdu[2:]
        if req.function in _READ_BITS:
            return unpack_bits(data, req.quantity)
        return tuple(data[i] << 8 | data[i + 1] for i in range(0, len(data), 2))
    if req.function in (5, 6):
        if pdu != req.pdu:
            raise FrameError(
                f"{req.describe()}: echo {pdu.hex()} differs from request {req.pdu.hex()}",
                address=where,
            )
        return ()
    if pdu[:5] != req.pdu[:5] or len(pdu) != 5:
        raise FrameError(
            f"{req.describe()}: echo {pdu.hex()} differs from address/count of the request",
            address=where,
        )
    return ()
