"""One simulated RS-485 line: the boards on it, who answers a frame, bus faults.

:meth:`SimBus.answer` is transport-independent: given the unit address and the request
PDU (function code + data) it returns the reply PDUs of every board that answered, the
extra latency and whether the reply CRC is to be corrupted. The RTU and TCP transports
turn that into bytes (:func:`rtu_frame`, :func:`collide`) and apply line timing.

Who answers
-----------
* Unit 0 is a broadcast: every live board carries out the request, none replies, with
  one exception from the Waveshare protocol: the broadcast read of the address register
  (``00 03 40 00 00 01``) is answered by every Waveshare board on the line, each from
  its own address (with two or more, the replies collide, as on the wire).
* Otherwise every board whose *current* address is the unit answers (an address written
  to holding register 0x4000 takes effect at once). A board with a ``silent`` fault is
  dead: it neither acts nor answers. A ``duplicate_address`` fault adds a second board
  answering with it. Two or more replies on the line at once collide: the master gets a
  garbled frame (see :func:`collide`).
* A request that decodes badly gets exception 01 (unknown function) or 03 (bad value)
  from the board it is addressed to, as real boards answer a frame whose CRC was right.

When a reply leaves
-------------------
A board's ``processing_s`` (``[simulator] processing_s``) plus a ``slow`` fault's
``latency_s`` plus a ``late`` fault's ``delay_s`` (on every reply, or only on replies to
writes with ``writes_only``) delay the reply; the request has been carried out at once.
The reply faults on writes (``drop_reply``, ``garble_reply``, ``short_reply``) carry
the write out and then lose, garble or cut its reply. With a ``count`` these four
faults spoil that many replies and then clear themselves. Every write a board carries
out is recorded in the ground truth (``write_acted``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from drivers.modbus.registers import crc16
from simulator.boards import SUPPORTED_FUNCTIONS, SimBoard, WaveshareRelayBoard, make_decoder
from simulator.config import BusConfig
from simulator.faults import FaultBook

__all__ = ["BusAnswer", "BusStats", "SimBus", "collide", "rtu_frame"]

WRITE_FUNCTIONS = frozenset({5, 6, 15, 16})
#: A ``short_reply`` stops after this many bytes (no reply of a write is that short).
SHORT_REPLY_BYTES = 5
#: The Waveshare broadcast read of the address register: function 03, 0x4000, 1 register.
_ADDRESS_QUERY = bytes([3, 0x40, 0x00, 0x00, 0x01])


def _is_address_query(pdu: bytes) -> bool:
    return pdu == _ADDRESS_QUERY


@dataclass(slots=True)
class BusStats:
    """Counters of one line, as the simulator saw it."""

    requests: int = 0
    replies: int = 0
    broadcasts: int = 0
    no_reply: int = 0
    collisions: int = 0
    corrupted_replies: int = 0
    bad_crc_requests: int = 0
    gap_violations: int = 0
    dropped_replies: int = 0
    short_replies: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BusAnswer:
    """What the boards on the line do about one request."""

    pdus: tuple[bytes, ...]
    latency_s: float = 0.0
    corrupt_crc: bool = False
    broadcast: bool = False
    #: Cut the reply frame to this many bytes (a reply that stops short).
    truncate: int | None = None
    #: The unit byte of the reply when not the request's (the broadcast address read).
    reply_unit: int | None = None


def rtu_frame(unit: int, pdu: bytes, *, corrupt_crc: bool = False) -> bytes:
    """An RTU frame: unit, PDU, CRC (low byte first); the CRC inverted if corrupted."""
    body = bytes([unit]) + pdu
    crc = crc16(body) ^ (0xFFFF if corrupt_crc else 0)
    return body + bytes([crc & 0xFF, crc >> 8])


def collide(frames: Sequence[bytes]) -> bytes:
    """Two drivers on one RS-485 pair at once: the receiver sees neither frame. Emulated
    as the bytewise OR of the frames (the longer one's tail kept) with the last two
    bytes inverted, so the CRC can never check even when the frames were identical."""
    size = max(len(f) for f in frames)
    out = bytearray(size)
    for frame in frames:
        for i, byte in enumerate(frame):
            out[i] |= byte
    out[-2] ^= 0xFF
    out[-1] ^= 0xFF
    return bytes(out)


class SimBus:
    """The boards on one line. Thread-safe: one request at a time, like the wire."""

    def __init__(self, config: BusConfig, boards: Sequence[SimBoard], faults: FaultBook) -> None:
        self.config = config
        self.name = config.name
        self.baudrate = config.baudrate
        self.boards = list(boards)
        self.faults = faults
        self.stats = BusStats()
        self._decoder = make_decoder()
        self._lock = threading.Lock()

    def board(self, name: str) -> SimBoard:
        for board in self.boards:
            if board.name == name:
                return board
        raise KeyError(name)

    def decode(self, pdu: bytes) -> ModbusPDU | ExceptionResponse:
        """Decode a request PDU; a bad one becomes the exception the board answers."""
        fc = pdu[0] if pdu else 0
        request = self._decoder.decode(pdu) if pdu else None
        if request is None:
            code = (
                ExcCodes.ILLEGAL_VALUE if fc in SUPPORTED_FUNCTIONS else ExcCodes.ILLEGAL_FUNCTION
            )
            return ExceptionResponse(fc & 0x7F, code)
        return request

    def answer(self, unit: int, pdu: bytes) -> BusAnswer:
        """Carry out one request on the line; see the module docstring."""
        with self._lock:
            self.stats.requests += 1
            request = self.decode(pdu)
            live = [b for b in self.boards if self.faults.board("silent", b.name) is None]
            if unit == 0:
                self.stats.broadcasts += 1
                if _is_address_query(pdu) and not isinstance(request, ExceptionResponse):
                    return self._address_query(live, request)
                if not isinstance(request, ExceptionResponse):
                    for board in live:
                        self._execute(board, request, pdu)
                return BusAnswer((), broadcast=True)
            is_write = not isinstance(request, ExceptionResponse) and pdu[0] in WRITE_FUNCTIONS
            replies: list[bytes] = []
            latency = 0.0
            corrupt = False
            truncate: int | None = None
            dropped = 0
            for board in live:
                if board.unit != unit:
                    continue
                busy = self.faults.board("busy", board.name)
                response: ModbusPDU
                if busy is not None and not isinstance(request, ExceptionResponse):
                    # A board that refuses everything (in set-up mode, or confused):
                    # it answers, with an exception, and does nothing.
                    response = ExceptionResponse(request.function_code, busy.code)
                elif isinstance(request, ExceptionResponse):
                    response = request
                else:
                    response = self._execute(board, request, pdu)
                reply = bytes([response.function_code]) + response.encode()
                acted = is_write and not response.function_code & 0x80
                if acted and self.faults.take("drop_reply", board.name) is not None:
                    dropped += 1
                    continue
                replies.append(reply)
                if self.faults.board("duplicate_address", board.name) is not None:
                    replies.append(reply)
                latency = max(latency, self._delay(board, is_write))
                corrupt = corrupt or self.faults.board("corrupt_crc", board.name) is not None
                if acted and self.faults.take("garble_reply", board.name) is not None:
                    corrupt = True
                if acted and self.faults.take("short_reply", board.name) is not None:
                    truncate = SHORT_REPLY_BYTES
            self.stats.dropped_replies += dropped
            if not replies:
                self.stats.no_reply += 1
            elif len(replies) > 1:
                self.stats.collisions += 1
            else:
                self.stats.replies += 1
                if corrupt:
                    self.stats.corrupted_replies += 1
                if truncate is not None:
                    self.stats.short_replies += 1
            return BusAnswer(tuple(replies), latency, corrupt, truncate=truncate)

    def _execute(self, board: SimBoard, request: ModbusPDU, pdu: bytes) -> ModbusPDU:
        response = board.execute(request)
        if pdu[0] in WRITE_FUNCTIONS and not response.function_code & 0x80:
            board.world.record_write(board.name, pdu[0], int.from_bytes(pdu[1:3], "big"), pdu)
        return response

    def _delay(self, board: SimBoard, is_write: bool) -> float:
        delay = board.config.processing_s
        slow = self.faults.board("slow", board.name)
        if slow is not None:
            delay += slow.latency_s
        late = self.faults.board("late", board.name)
        if late is not None and (is_write or not late.writes_only):
            self.faults.take("late", board.name)
            delay += late.delay_s
        return delay

    def _address_query(self, live: list[SimBoard], request: ModbusPDU) -> BusAnswer:
        """``00 03 40 00 00 01``: every Waveshare board answers with its address."""
        boards = [b for b in live if isinstance(b, WaveshareRelayBoard)]
        if not boards:
            self.stats.no_reply += 1
            return BusAnswer((), broadcast=True)
        replies: list[bytes] = []
        latency = 0.0
        for board in boards:
            response = board.execute(request)
            replies.append(bytes([response.function_code]) + response.encode())
            latency = max(latency, self._delay(board, False))
        if len(replies) > 1:
            self.stats.collisions += 1
        else:
            self.stats.replies += 1
        return BusAnswer(tuple(replies), latency, broadcast=True, reply_unit=boards[0].unit)

    def rtu_reply(self, unit: int, answer: BusAnswer) -> bytes | None:
        """The bytes the master receives on an RTU line, or None for silence."""
        if not answer.pdus:
            return None
        if answer.reply_unit is not None:
            unit = answer.reply_unit
        frames = [rtu_frame(unit, pdu, corrupt_crc=answer.corrupt_crc) for pdu in answer.pdus]
        data = frames[0] if len(frames) == 1 else collide(frames)
        return data if answer.truncate is None else data[: answer.truncate]
