"""A Modbus master this project did not write (Debian's ``mbpoll``, on libmodbus) reads
the simulator over its pty. mbpoll's ``-r`` is 1-based; ``-t 0`` is coils ("discrete
output"), ``-t 1`` discrete inputs, ``-t 3`` input registers."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from simulator.cabinet import SimCabinet

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("mbpoll") is None, reason="mbpoll is not installed (apt install mbpoll)"
    ),
]

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "sim-cabinet.toml"
BUS = "rs485-0"
#: "[3]: \t65352 (-184)": the raw value, then the signed reading when it differs.
LINE = re.compile(r"^\[(\d+)\]:\s+(-?\d+)(?:\s+\((-?\d+)\))?\s*$", re.MULTILINE)


@pytest.fixture
async def cab() -> AsyncIterator[SimCabinet]:
    async with SimCabinet.from_file(DEMO, emulate_timing=True, make_links=False) as cabinet:
        yield cabinet


async def mbpoll(
    port: str, unit: int, table: str, count: int, *extra: str
) -> tuple[int, dict[int, int], str]:
    """Run mbpoll once; return its exit code, {reference: value} and its output."""
    argv = ["mbpoll", "-m", "rtu", "-b", "19200", "-P", "none", "-a", str(unit), "-t", table]
    argv += ["-r", "1", "-c", str(count), "-o", "0.5", "-1", *extra, port]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 15)
    except TimeoutError:
        proc.kill()  # by its pid, ours
        await proc.wait()
        raise
    text = out.decode(errors="replace")
    values = {int(ref): int(value) for ref, value, _signed in LINE.findall(text)}
    return proc.returncode or 0, values, text


async def test_mbpoll_reads_coils(cab: SimCabinet) -> None:
    cab.world.set_output("locks-a", 4, True)  # relay 5 on
    rc, values, text = await mbpoll(cab.serial_path(BUS), 1, "0", 16)
    assert rc == 0, text
    assert values == {ref: int(ref == 5) for ref in range(1, 17)}, text


async def test_mbpoll_reads_discrete_inputs(cab: SimCabinet) -> None:
    cab.world.door("B03").force_open()
    rc, values, text = await mbpoll(cab.serial_path(BUS), 2, "1", 16)
    assert rc == 0, text
    # B01..B06 doors normally closed (closed = 1), B03 open; input 9 = B04's latch, active low
    expected = {1: 1, 2: 1, 3: 0, 4: 1, 5: 1, 6: 1, 9: 1}
    assert values == {ref: expected.get(ref, 0) for ref in range(1, 17)}, text


async def test_mbpoll_reads_the_probes(cab: SimCabinet) -> None:
    cab.world.zone("frozen").set_temperature(-18.4)
    rc, values, text = await mbpoll(cab.serial_path(BUS), 10, "3", 3)
    assert rc == 0, text
    assert len(values) == 3, text
    assert values[1] == pytest.approx(210, abs=1)
    assert values[2] == pytest.approx(30, abs=1)
    assert values[3] - 0x10000 == pytest.approx(-184, abs=1)  # two's complement


async def test_mbpoll_times_out_on_a_silent_board(cab: SimCabinet) -> None:
    cab.faults.set("silent", board="locks-a")
    rc, values, text = await mbpoll(cab.serial_path(BUS), 1, "0", 16)
    assert rc != 0, text
    assert values == {}
    assert "timed out" in text.lower(), text
