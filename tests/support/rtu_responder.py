"""A raw Modbus RTU responder on a real pty pair, for driver tests.

It does not use pymodbus on purpose: a test must be able to send *exact* bytes (a late
reply, a reply with the wrong byte count, a bad CRC, another unit's address) and to
measure when each request arrived, so that the driver under test is checked against
the wire, not against a library that shares its assumptions.

The responder owns the master side of ``os.openpty()``; the driver opens the slave
side by its path (:attr:`RtuResponder.port`), exactly like a USB RS-485 adapter.
Requests are delimited by their length (known from the function code), not by timing,
because a pty delivers bytes in whatever chunks the kernel likes.

A *handler* decides the answer: it receives the request frame (CRC checked) and
returns a list of :class:`Send` actions (bytes, each after a delay), or an empty list
for silence. :class:`BoardModel` is a well-behaved Waveshare-style board (coils,
discrete inputs, holding and input registers, flash pulses) usable as a handler.
"""

from __future__ import annotations

import asyncio
import os
import time
import tty
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from drivers.modbus.registers import WAVESHARE, crc16

__all__ = [
    "BoardModel",
    "Line",
    "ReceivedRequest",
    "RtuResponder",
    "Send",
    "exception_reply",
    "frame",
    "request_len",
]


def frame(unit: int, pdu: bytes) -> bytes:
    """``unit + pdu + CRC`` (low byte first), a complete RTU frame."""
    body = bytes([unit]) + pdu
    return body + crc16(body).to_bytes(2, "little")


def exception_reply(unit: int, function: int, code: int) -> bytes:
    return frame(unit, bytes([function | 0x80, code]))


def request_len(buf: bytes) -> int | None:
    """Length of the request at the start of ``buf``, or None while it is incomplete."""
    if len(buf) < 2:
        return None
    fc = buf[1]
    if fc in (1, 2, 3, 4, 5, 6):
        return 8
    if fc in (15, 16):
        if len(buf) < 7:
            return None
        return 9 + buf[6]
    # Unknown function: take what we have, the handler will see it as garbage.
    return len(buf)


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``data`` on the line ``delay`` seconds after the request was complete."""

    data: bytes
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """A request as the responder saw it: first and last byte times (monotonic)."""

    first_byte_at: float
    complete_at: float
    data: bytes

    @property
    def unit(self) -> int:
        return self.data[0]

    @property
    def function(self) -> int:
        return self.data[1]


Handler = Callable[[bytes], Sequence[Send]]


class RtuResponder:
    """Serve ``handler`` on a fresh pty pair; an async context manager.

    ``requests`` records every request received, with times; ``bad_frames`` counts
    requests whose CRC did not match (they are not passed to the handler).
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[ReceivedRequest] = []
        #: ``(monotonic time, bytes)`` of everything the responder wrote.
        self.sent: list[tuple[float, bytes]] = []
        #: When each of those writes began: with a master in another thread, the time
        #: after a write can be taken late (the master may run first), the time before it
        #: never is.
        self.wrote_from: list[float] = []
        self.bad_frames = 0
        self._master = -1
        self._slave = -1
        self._buf = b""
        self._first_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[asyncio.TimerHandle] = set()
        self._arrived = asyncio.Event()
        self.port = ""

    async def __aenter__(self) -> RtuResponder:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._master, self._on_readable)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        if self._master >= 0:
            if self._loop is not None:
                self._loop.remove_reader(self._master)
            os.close(self._master)
            self._master = -1
        if self._slave >= 0:
            os.close(self._slave)
            self._slave = -1

    async def wait_for_requests(self, count: int) -> None:
        """Return once ``count`` requests have arrived (bound it with the test timeout)."""
        while len(self.requests) < count:
            self._arrived.clear()
            await self._arrived.wait()

    def write(self, data: bytes) -> None:
        """Put bytes on the line now (unsolicited noise, a late reply)."""
        if self._master >= 0:
            before = time.monotonic()
            os.write(self._master, data)
            self.sent.append((time.monotonic(), data))
            self.wrote_from.append(before)

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        now = time.monotonic()
        if not self._buf:
            self._first_at = now
        self._buf += chunk
        while (n := request_len(self._buf)) is not None and len(self._buf) >= n:
            req, self._buf = self._buf[:n], self._buf[n:]
            first, self._first_at = self._first_at, now
            if crc16(req[:-2]).to_bytes(2, "little") != req[-2:]:
                self.bad_frames += 1
                continue
            self.requests.append(ReceivedRequest(first, now, req))
            self._arrived.set()
            for action in self.handler(req):
                self._schedule(action)

    def _schedule(self, action: Send) -> None:
        assert self._loop is not None
        if action.delay <= 0:
            self.write(action.data)
            return

        def fire() -> None:
            self._pending.discard(handle)
            self.write(action.data)

        handle = self._loop.call_later(action.delay, fire)
        self._pending.add(handle)


def _pack_bits(bits: Sequence[bool]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


@dataclass
class BoardModel:
    """A well-behaved Waveshare-style board at ``unit`` (a handler for the responder).

    Coils 0..outputs-1 are relays; discrete inputs 0..inputs-1; holding registers hold
    the address (0x4000) and version (0x8000); flash writes on 0x0200+ch record
    ``(channel, units)`` in ``flashes`` and energise the relay for the time (a coil
    read shows it on; ``coils`` keeps the held state). Other units are ignored,
    broadcast (unit 0) is executed without reply.

    ``write_faults`` spoils the replies of the next writes (functions 05, 06, 15, 16),
    one entry per write frame, in order: ``"drop"`` (carried out, no reply), ``"lose"``
    (the frame never reached the board: not carried out, no reply), ``"garble"``
    (carried out, reply with a bad CRC), ``"short"`` (carried out, the reply cut after
    5 bytes), ``("late", seconds)`` (carried out, the reply that much later).
    """

    unit: int = 1
    outputs: int = 8
    inputs: int = 8
    version: int = 100
    coils: list[bool] = field(default_factory=list)
    discrete: list[bool] = field(default_factory=list)
    holding: dict[int, int] = field(default_factory=dict)
    input_registers: dict[int, int] = field(default_factory=dict)
    flashes: list[tuple[int, int]] = field(default_factory=list)
    #: ``(monotonic time, coil, on)`` of every relay write (05 and 15, not flashes).
    coil_writes: list[tuple[float, int, bool]] = field(default_factory=list)
    #: When set, the board does not answer (``"silent"``) or answers every request
    #: with this exception code (an ``int``).
    fault: str | int | None = None
    write_faults: list[str | tuple[str, float]] = field(default_factory=list)
    #: ``monotonic`` time until which a flash keeps each relay energised.
    flash_until: dict[int, float] = field(default_factory=dict)
    #: Every write frame received (``(monotonic time, request bytes)``), acted on or not.
    writes: list[tuple[float, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.coils = self.coils or [False] * self.outputs
        self.discrete = self.discrete or [False] * self.inputs
        self.holding.setdefault(WAVESHARE.address_register, self.unit)
        self.holding.setdefault(WAVESHARE.version_register, self.version)

    def __call__(self, req: bytes) -> list[Send]:
        unit, fc = req[0], req[1]
        if unit not in (0, self.unit) or self.fault == "silent":
            return []
        if isinstance(self.fault, int):
            return [] if unit == 0 else [Send(exception_reply(self.unit, fc, self.fault))]
        spoil: str | tuple[str, float] | None = None
        if fc in (5, 6, 15, 16):
            self.writes.append((time.monotonic(), req))
            if self.write_faults:
                spoil = self.write_faults.pop(0)
        if spoil == "lose":
            return []
        reply = self._execute(fc, req[2:-2])
        if unit == 0 or reply is None:
            return []
        data = frame(self.unit, reply)
        if spoil == "drop":
            return []
        if spoil == "garble":
            return [Send(data[:-1] + bytes([data[-1] ^ 0xFF]))]
        if spoil == "short":
            return [Send(data[:5])]
        if isinstance(spoil, tuple):
            return [Send(data, delay=spoil[1])]
        return [Send(data)]

    def coil(self, channel: int) -> bool:
        """Whether relay ``channel`` is energised now (held on, or inside a flash)."""
        return self.coils[channel] or time.monotonic() < self.flash_until.get(channel, 0.0)

    def _execute(self, fc: int, data: bytes) -> bytes | None:
        def exc(code: int) -> bytes:
            return bytes([fc | 0x80, code])

        addr = int.from_bytes(data[0:2], "big")
        value = int.from_bytes(data[2:4], "big")
        if fc in (1, 2):
            table = (
                [self.coil(ch) for ch in range(self.outputs)] if fc == 1 else self.discrete
            )
            if value < 1 or addr + value > len(table):
                return exc(2)
            packed = _pack_bits(table[addr : addr + value])
            return bytes([fc, len(packed)]) + packed
        if fc in (3, 4):
            regs = self.holding if fc == 3 else self.input_registers
            if value < 1 or any(a not in regs for a in range(addr, addr + value)):
                return exc(2)
            body = b"".join(regs[a].to_bytes(2, "big") for a in range(addr, addr + value))
            return bytes([fc, len(body)]) + body
        if fc == 5:
            if value not in (0x0000, 0xFF00) and not (
                WAVESHARE.flash_on_base <= addr < WAVESHARE.flash_on_base + self.outputs
            ):
                return exc(3)
            if addr == WAVESHARE.all_relays_coil:
                self.coils = [value == 0xFF00] * self.outputs
                self.flash_until.clear()
                now = time.monotonic()
                self.coil_writes.extend((now, ch, value == 0xFF00) for ch in range(self.outputs))
            elif WAVESHARE.flash_on_base <= addr < WAVESHARE.flash_on_base + self.outputs:
                self.flashes.append((addr - WAVESHARE.flash_on_base, value))
                self.flash_until[addr - WAVESHARE.flash_on_base] = (
                    time.monotonic() + value * WAVESHARE.flash_unit_s
                )
            elif addr < self.outputs:
                self.coils[addr] = value == 0xFF00
                self.coil_writes.append((time.monotonic(), addr, value == 0xFF00))
            else:
                return exc(2)
            return bytes([fc]) + data[:4]
        if fc == 6:
            self.holding[addr] = value
            if addr == WAVESHARE.address_register:
                self.unit = value
            return bytes([fc]) + data[:4]
        if fc == 15:
            nbytes = data[4]
            bits = data[5 : 5 + nbytes]
            if addr + value > self.outputs:
                return exc(2)
            for i in range(value):
                self.coils[addr + i] = bool(bits[i // 8] >> (i % 8) & 1)
                self.coil_writes.append((time.monotonic(), addr + i, self.coils[addr + i]))
            return bytes([fc]) + data[:4]
        if fc == 16:
            for i in range(value):
                self.holding[addr + i] = int.from_bytes(data[5 + 2 * i : 7 + 2 * i], "big")
            return bytes([fc]) + data[:4]
        return exc(1)



@dataclass
class Line:
    """Several handlers on one line: every handler sees every request (like boards on
    a real RS-485 pair); their answers are all sent, in order."""

    handlers: list[Handler]

    def __call__(self, req: bytes) -> list[Send]:
        out: list[Send] = []
        for handler in self.handlers:
            out.extend(handler(req))
        return out
