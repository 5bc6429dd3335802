"""One simulated RS-485 line: the boards on it, who answers a frame, bus faults.

:meth:`SimBus.answer` is transport-independent: given the unit address and the request
PDU (function code + data) it returns the reply PDUs of every board that answered, the
extra latency and whether the reply CRC is to be corrupted. The RTU and TCP transports
turn that into bytes (:func:`rtu_frame`, :func:`collide`) and apply line timing.

Who answers
-----------
* Unit 0 is a broadcast: every live board carries out the request, none replies.
* Otherwise every board whose *current* address is the unit answers (an address written
  to holding register 0x4000 takes effect at once). A board with a ``silent`` fault is
  dead: it neither acts nor answers. A ``duplicate_address`` fault adds a second board
  answering with it. Two or more replies on the line at once collide: the master gets a
  garbled frame (see :func:`collide`).
* A request that decodes badly gets exception 01 (unknown function) or 03 (bad value)
  from the board it is addressed to, as real boards answer a frame whose CRC was right.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from drivers.modbus.registers import crc16
from simulator.boards import SUPPORTED_FUNCTIONS, SimBoard, make_decoder
from simulator.config import BusConfig
from simulator.faults import FaultBook

__all__ = ["BusAnswer", "BusStats", "SimBus", "collide", "rtu_frame"]


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

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BusAnswer:
    """What the boards on the line do about one request."""

    pdus: tuple[bytes, ...]
    latency_s: float = 0.0
    corrupt_crc: bool = False
    broadcast: bool = False


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
                if not isinstance(request, ExceptionResponse):
                    for board in live:
                        board.execute(request)
                return BusAnswer((), broadcast=True)
            replies: list[bytes] = []
            latency = 0.0
            corrupt = False
            for board in live:
                if board.unit != unit:
                    continue
                busy = self.faults.board("busy", board.name)
                response: ModbusPDU
                if busy is not None and not isinstance(request, ExceptionResponse):
                    # A board that refuses everything (in set-up mode, or confused):
                    # it answers, with an exception, and does nothing.
                    response = ExceptionResponse(request.function_code, busy.code)
                else:
                    response = (
                        request if isinstance(request, ExceptionResponse)
                        else board.execute(request)
                    )
                reply = bytes([response.function_code]) + response.encode()
                replies.append(reply)
                if self.faults.board("duplicate_address", board.name) is not None:
                    replies.append(reply)
                slow = self.faults.board("slow", board.name)
                if slow is not None:
                    latency = max(latency, slow.latency_s)
                corrupt = corrupt or self.faults.board("corrupt_crc", board.name) is not None
            if not replies:
                self.stats.no_reply += 1
            elif len(replies) > 1:
                self.stats.collisions += 1
            else:
                self.stats.replies += 1
                if corrupt:
                    self.stats.corrupted_replies += 1
            return BusAnswer(tuple(replies), latency, corrupt)

    def rtu_reply(self, unit: int, answer: BusAnswer) -> bytes | None:
        """The bytes the master receives on an RTU line, or None for silence."""
        if not answer.pdus:
            return None
        frames = [rtu_frame(unit, pdu, corrupt_crc=answer.corrupt_crc) for pdu in answer.pdus]
        return frames[0] if len(frames) == 1 else collide(frames)
