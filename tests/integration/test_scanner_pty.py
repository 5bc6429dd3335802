"""The production CodeScanner reading a simulated scanner through a real pty and pyserial.

Waits are bounded (``asyncio.timeout``) so a fault fails the test instead of hanging it;
no assertion depends on elapsed time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeVar

import pytest

from drivers.scanner import CodeScanner, ScannedCode, ScannerStatus, ScanRejected
from simulator.scanner import SimScanner

pytestmark = pytest.mark.integration  # a pty per test

WAIT = 5.0
T = TypeVar("T")


async def next_event(scanner: CodeScanner, kind: type[T]) -> T:
    """The next event of ``kind``, skipping others (bounded)."""
    async with asyncio.timeout(WAIT):
        async for event in scanner:
            if isinstance(event, kind):
                return event
    raise AssertionError("scanner ended")


@pytest.fixture
def sim(tmp_path: Path) -> AsyncIterator[SimScanner]:
    with SimScanner(link=tmp_path / "ttyScanner") as s:
        yield s  # type: ignore[misc]


@pytest.fixture
async def scanner(sim: SimScanner) -> AsyncIterator[CodeScanner]:
    async with CodeScanner(sim.serial_path, backoff_initial_s=0.02, backoff_max_s=0.1) as sc:
        status = await next_event(sc, ScannerStatus)
        assert status.connected
        yield sc


@pytest.mark.parametrize("suffix", [b"\r", b"\r\n", b"\n"])
async def test_codes_read_with_any_usual_suffix(
    sim: SimScanner, scanner: CodeScanner, suffix: bytes
) -> None:
    sim.scan("PK-493817", suffix)
    sim.scan("QR:7f3a9c", suffix)
    first = await next_event(scanner, ScannedCode)
    second = await next_event(scanner, ScannedCode)
    assert (first.code, second.code) == ("PK-493817", "QR:7f3a9c")
    assert first.length == 9
    assert first.fingerprint == scanner.fingerprint("PK-493817")
    assert "PK-493817" not in repr(first)
    assert scanner.codes == 2


async def test_code_split_across_reads(sim: SimScanner, scanner: CodeScanner) -> None:
    sim.send_raw(b"12345")
    await asyncio.sleep(0)
    sim.send_raw(b"678\r")
    assert (await next_event(scanner, ScannedCode)).code == "12345678"


async def test_explicit_crlf_terminator(sim: SimScanner) -> None:
    async with CodeScanner(sim.serial_path, terminator=b"\r\n") as sc:
        await next_event(sc, ScannerStatus)
        sim.scan("AB", b"\r\n")
        sim.scan("CD\rEF", b"\r\n")  # a lone CR is inside the line: not text
        assert (await next_event(sc, ScannedCode)).code == "AB"
        assert (await next_event(sc, ScanRejected)).reason == "not_text"


async def test_overlong_line_rejected_then_next_code_read(sim: SimScanner) -> None:
    async with CodeScanner(sim.serial_path, max_length=16) as sc:
        await next_event(sc, ScannerStatus)
        sim.send_raw(b"X" * 100)
        sim.send_raw(b"Y" * 100 + b"\r")
        sim.scan("OK-1")
        rejected = await next_event(sc, ScanRejected)
        assert rejected.reason == "line_too_long"
        assert rejected.length > 16
        assert (await next_event(sc, ScannedCode)).code == "OK-1"
        assert sc.rejected == 1


async def test_garbage_rejected_without_content(sim: SimScanner, scanner: CodeScanner) -> None:
    sim.send_raw(b"\x00\x1b[2J\r")
    sim.send_raw(b"\xff\xfe\xfd\r")
    sim.scan("GOOD")
    first = await next_event(scanner, ScanRejected)
    second = await next_event(scanner, ScanRejected)
    assert (first.reason, second.reason) == ("not_text", "not_text")
    assert (await next_event(scanner, ScannedCode)).code == "GOOD"


async def test_unplug_and_replug(sim: SimScanner, scanner: CodeScanner) -> None:
    sim.scan("BEFORE")
    assert (await next_event(scanner, ScannedCode)).code == "BEFORE"
    sim.unplug()
    lost = await next_event(scanner, ScannerStatus)
    assert lost.connected is False
    assert scanner.connected is False
    sim.replug()
    back = await next_event(scanner, ScannerStatus)
    assert back.connected is True
    sim.scan("AFTER")
    assert (await next_event(scanner, ScannedCode)).code == "AFTER"
    assert scanner.reconnects == 1


async def test_scanner_absent_at_start_connects_when_plugged(tmp_path: Path) -> None:
    link = tmp_path / "ttyScanner"
    sim = SimScanner(link=link)
    sim.unplug()
    try:
        async with CodeScanner(str(link), backoff_initial_s=0.01, backoff_max_s=0.05) as sc:
            await asyncio.sleep(0.05)  # let a few attempts fail (not asserted on)
            assert sc.connected is False
            sim.replug()
            assert (await next_event(sc, ScannerStatus)).connected
            sim.scan("LATE")
            assert (await next_event(sc, ScannedCode)).code == "LATE"
    finally:
        sim.close()


async def test_codes_never_logged(
    sim: SimScanner, scanner: CodeScanner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sim.scan("SECRET-771204")
    sim.send_raw(b"SECRET\x07\r")
    code = await next_event(scanner, ScannedCode)
    await next_event(scanner, ScanRejected)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "SECRET" not in text
    assert code.fingerprint in text


async def test_close_twice_ends_iteration(sim: SimScanner) -> None:
    sc = CodeScanner(sim.serial_path)
    await sc.start()
    await next_event(sc, ScannerStatus)
    await sc.close()
    await sc.close()
    assert [e async for e in sc] == []
    assert sc.connected is False
