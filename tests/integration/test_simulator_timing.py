"""Line timing emulation: replies never come earlier than a real line allows.

Lower bounds only: a loaded machine may always be slower, never faster.
"""

from __future__ import annotations

import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.modbus.registers import frame_time, silent_interval, transaction_time
from simulator.cabinet import SimCabinet
from tests.unit.simulator.rtu_master import RawMaster, crc_ok

pytestmark = pytest.mark.integration

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "sim-cabinet.toml"
BUS = "rs485-0"
BAUD = 19200


@pytest.fixture
async def cab() -> AsyncIterator[SimCabinet]:
    async with SimCabinet.from_file(DEMO, emulate_timing=True, make_links=False) as cabinet:
        yield cabinet


@pytest.mark.parametrize(
    ("unit", "pdu", "reply_len"),
    [
        (1, struct.pack(">BHH", 2, 0, 16), 7),  # read 16 inputs
        (10, struct.pack(">BHH", 4, 0, 3), 11),  # read 3 probes
        (1, struct.pack(">BHH", 5, 0x0200, 7), 8),  # flash pulse
    ],
)
def test_reply_no_earlier_than_the_physical_minimum(
    cab: SimCabinet, unit: int, pdu: bytes, reply_len: int
) -> None:
    minimum = frame_time(8, BAUD) + silent_interval(BAUD) + frame_time(reply_len, BAUD)
    with RawMaster(cab.serial_path(BUS), BAUD) as master:
        for _ in range(20):
            started = time.perf_counter()
            reply = master.request(unit, pdu, reply_len)
            elapsed = time.perf_counter() - started
            assert crc_ok(reply)
            assert elapsed >= minimum, (
                f"reply after {elapsed * 1e3:.3f} ms < {minimum * 1e3:.3f} ms"
            )
            time.sleep(silent_interval(BAUD))


def test_throughput_stays_under_the_line_limit(cab: SimCabinet) -> None:
    count = 100
    request = struct.pack(">BHH", 2, 0, 16)
    with RawMaster(cab.serial_path(BUS), BAUD) as master:
        started = time.perf_counter()
        for _ in range(count):
            assert crc_ok(master.request(1, request, 7))
            time.sleep(silent_interval(BAUD))
        elapsed = time.perf_counter() - started
    physical = count * transaction_time(8, 7, BAUD)
    assert elapsed >= physical * 0.999
    print(f"\n{count} transactions in {elapsed * 1e3:.1f} ms, line limit {physical * 1e3:.1f} ms")
