"""The serial transport's reading of a port that reports readiness with nothing to read.

pyserial leaves VMIN = VTIME = 0, so a read after the input was flushed returns 0 bytes
instead of EAGAIN: one such read is not a lost port; a port that keeps doing it is."""

from __future__ import annotations

import os

from drivers.modbus.transport import _EMPTY_READS_LIMIT, SerialTransport


def _transport(received: list[bytes], lost: list[Exception]) -> tuple[SerialTransport, int]:
    t = SerialTransport(received.append, lost.append, port="unused", baudrate=19200,
                         bytesize=8, parity="N", stopbits=1)
    r, w = os.pipe()
    t._fd = r
    return t, w


def test_empty_reads_are_a_lost_port_only_when_they_persist() -> None:
    received: list[bytes] = []
    lost: list[Exception] = []
    t, w = _transport(received, lost)
    try:
        os.write(w, b"\x01\x03")
        t._readable()
        assert received == [b"\x01\x03"]
        os.close(w)  # from now on every read returns 0 bytes
        for _ in range(_EMPTY_READS_LIMIT):
            t._readable()
        assert lost == []
        t._readable()
        assert len(lost) == 1
        assert isinstance(lost[0], EOFError)
    finally:
        os.close(t._fd)
