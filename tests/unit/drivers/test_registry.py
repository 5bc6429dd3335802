"""Backends by name, imported lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

from drivers import registry
from drivers.base import LockBoard, SensorBoard
from drivers.errors import BackendUnavailable
from drivers.fake import FakeBus, FakeLockBoard, FakeSensorBoard
from drivers.modbus.boards import WaveshareRelayBoard
from drivers.modbus.line import ModbusLine


def test_unknown_backend_names_the_known_ones() -> None:
    with pytest.raises(BackendUnavailable, match="fake, modbus"):
        registry.load_backend("canbus")


def test_missing_library_is_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.BACKENDS, "ghost", "drivers.does_not_exist")
    with pytest.raises(BackendUnavailable, match="ghost") as info:
        registry.load_backend("ghost")
    assert isinstance(info.value.__cause__, ImportError)


def test_backend_without_factories_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.BACKENDS, "bare", "drivers.errors")
    with pytest.raises(BackendUnavailable, match="open_bus"):
        registry.load_backend("bare")


async def test_fake_backend_builds_boards_from_config() -> None:
    backend = registry.load_backend("fake")
    bus = backend.open_bus({"name": "rs485-0", "kind": "rtu", "port": "/dev/x"})
    assert isinstance(bus, FakeBus)
    locks = backend.create_board(bus, {"name": "locks-a", "address": 1,
                                       "profile": "waveshare_relay", "outputs": 16,
                                       "inputs": 16})
    io = backend.create_board(bus, {"name": "io-b", "address": 3, "profile": "generic_io",
                                    "outputs": 8, "inputs": 8,
                                    "register_map": {"pulse": {"kind": "daemon"}}})
    probe = backend.create_board(bus, {"name": "probes", "address": 10,
                                       "profile": "temperature_probe", "channels": 3})
    assert isinstance(locks, FakeLockBoard)
    assert locks.board_times_pulse
    assert isinstance(io, FakeLockBoard)
    assert not io.board_times_pulse
    assert isinstance(probe, FakeSensorBoard)
    assert isinstance(probe, SensorBoard)
    assert bus.boards[1] is locks
    await bus.close()
    await bus.close()


def test_modbus_backend_builds_a_line_and_boards() -> None:
    backend = registry.load_backend("modbus")
    line = backend.open_bus({"name": "rs485-0", "kind": "rtu", "port": "/dev/ttyLOCKER0"})
    assert isinstance(line, ModbusLine)
    assert not line.connected  # lazily opened
    board = backend.create_board(line, {"name": "locks-a", "address": 1,
                                        "profile": "waveshare_relay", "outputs": 16})
    assert isinstance(board, WaveshareRelayBoard)
    assert isinstance(board, LockBoard)


@pytest.mark.integration  # runs a Python process of its own
def test_registry_imports_no_backend_until_asked() -> None:
    code = (
        "import sys, drivers.registry; "
        "print(' '.join(m for m in sys.modules if m.split('.')[0] in "
        "('serial', 'pymodbus') or m.startswith('drivers.modbus') or m == 'drivers.fake'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30)
    assert out.stdout.split() == []
