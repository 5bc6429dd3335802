"""A tiny raw Modbus RTU master for the simulator's tests: exact bytes, no pymodbus.

The simulator is tested with bytes it did not produce itself, so its framing, CRC and
replies are checked against the wire format, not against a library sharing its
assumptions.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

import serial

from drivers.modbus.registers import crc16

__all__ = ["RawMaster", "crc_ok", "frame", "wait_for"]


def frame(unit: int, pdu: bytes) -> bytes:
    body = bytes([unit]) + pdu
    crc = crc16(body)
    return body + bytes([crc & 0xFF, crc >> 8])


def crc_ok(data: bytes) -> bool:
    if len(data) < 4:
        return False
    crc = crc16(data[:-2])
    return data[-2:] == bytes([crc & 0xFF, crc >> 8])


class RawMaster:
    """Opens a serial path (the simulator's pty) and exchanges raw frames."""

    def __init__(self, path: str, baudrate: int = 19200) -> None:
        self.port = serial.Serial(path, baudrate=baudrate, timeout=1.0)

    def close(self) -> None:
        self.port.close()

    def __enter__(self) -> RawMaster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.port.reset_input_buffer()
        self.port.write(data)
        self.port.flush()

    def receive(self, length: int | None = None, timeout: float = 1.0) -> bytes:
        """``length`` bytes (or fewer at the timeout); with no length, whatever arrives
        until the line has been quiet for 50 ms after the first byte."""
        if length is not None:
            self.port.timeout = timeout
            return bytes(self.port.read(length))
        self.port.timeout = timeout
        first = bytes(self.port.read(1))
        if not first:
            return b""
        self.port.timeout = 0.05
        return first + bytes(self.port.read(512))

    def request(
        self, unit: int, pdu: bytes, length: int | None = None, timeout: float = 1.0
    ) -> bytes:
        self.send(frame(unit, pdu))
        return self.receive(length, timeout)

    # -- helpers for the usual functions ----------------------------------------------

    def read_bits(self, unit: int, fc: int, address: int, count: int) -> list[bool]:
        reply = self.request(unit, struct.pack(">BHH", fc, address, count), 5 + (count + 7) // 8)
        assert crc_ok(reply), reply.hex()
        assert reply[:2] == bytes([unit, fc]), reply.hex()
        bits = []
        for i in range(count):
            bits.append(bool(reply[3 + i // 8] >> (i % 8) & 1))
        return bits

    def read_registers(self, unit: int, fc: int, address: int, count: int) -> list[int]:
        reply = self.request(unit, struct.pack(">BHH", fc, address, count), 5 + 2 * count)
        assert crc_ok(reply), reply.hex()
        assert reply[:3] == bytes([unit, fc, 2 * count]), reply.hex()
        return list(struct.unpack(f">{count}H", reply[3:-2]))

    def write_single(self, unit: int, fc: int, address: int, value: int) -> bytes:
        request = struct.pack(">BHH", fc, address, value)
        reply = self.request(unit, request, 8)
        return reply


def wait_for(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Poll ``predicate`` until true or ``timeout`` (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False
