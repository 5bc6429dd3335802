"""The poller on the simulated cabinet's RS-485 line (a real pty, line timing emulated):
a quiet cabinet's polls are read by the line's thread (decision 0025), the watchdog's
freshness keeps up meanwhile, and a door moved during a quiet run is reported at once,
from the reply that ended the run."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.domain.cabinet_model import CabinetModel, Emitted, Now
from controller.domain.events import EventKind
from controller.services.hardware import Hardware
from controller.services.poller import Poller
from controller.services.setup import compartment_setups
from controller.settings import load_settings
from simulator.cabinet import SimCabinet

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "sim-cabinet.toml"


def _now() -> Now:
    return Now(time.monotonic(), time.time())


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # bounded by the deadline
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def line_thread() -> bool:
    return any(t.name == "line-rs485-0" for t in threading.enumerate())


async def test_a_quiet_cabinet_is_read_by_the_line_thread_and_a_moved_door_reported(
    tmp_path: Path,
) -> None:
    async with SimCabinet.from_file(CONFIG, emulate_timing=True, link_dir=tmp_path) as cab:
        text = CONFIG.read_text(encoding="utf-8")
        assert 'port = "/tmp/locker-sim/ttyLOCKER0"' in text
        config = tmp_path / "cabinet.toml"
        config.write_text(text.replace('port = "/tmp/locker-sim/ttyLOCKER0"',
                                       f'port = "{cab.serial_path("rs485-0")}"'),
                          encoding="utf-8")
        settings = load_settings(config, env={})
        hardware = Hardware(settings, "modbus")
        hardware.open()
        model = CabinetModel(compartment_setups(settings))
        emitted: list[Emitted] = []

        async def emit(events: list[Emitted]) -> None:
            emitted.extend(events)

        poller = Poller(model, hardware, emit, now=_now, interval_s=0.05)
        task = asyncio.create_task(poller.run())
        try:
            line = hardware.buses["rs485-0"]
            await until(line_thread)  # settled: the line's thread reads the polls
            cycles, done = poller.cycles, line.stats().ok
            await until(lambda: poller.cycles >= cycles + 20)
            assert poller.fresh(time.monotonic())  # the watchdog would be fed
            await until(lambda: line.stats().ok > done)  # counted, once a run hands back
            assert not [e for e in emitted if e.kind is EventKind.DOOR_OPENED]

            cab.world.door("A01").force_open()
            await until(lambda: any(e.kind is EventKind.DOOR_OPENED for e in emitted))
            opened = [e for e in emitted if e.kind is EventKind.DOOR_OPENED]
            assert [e.compartment for e in opened] == ["A01"]
            assert opened[0].data()["authorised"] is False
            cab.world.door("A01").close()
            await until(lambda: any(e.kind is EventKind.DOOR_CLOSED for e in emitted))
            # Quiet again afterwards: the line's thread takes the polls back.
            cycles = poller.cycles
            await until(lambda: poller.cycles >= cycles + 20)
            assert line.stats().frame_errors == 0
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await hardware.close()
    assert not line_thread()
