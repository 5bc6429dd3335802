"""Every line setting of a ``[[buses]]`` table reaches the line that owns the bus, and the
line's late-reply counters reach telemetry."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.contract.messages import BusStats, from_builtins
from controller.services.hardware import Hardware
from controller.settings import ConfigError, load_settings
from drivers.modbus.line import ModbusLine
from drivers.modbus.registers import silent_interval

ROOT = Path(__file__).resolve().parents[3]
SIM = ROOT / "deploy" / "sim-cabinet.toml"


def _cabinet(tmp_path: Path, extra: str) -> Path:
    text = SIM.read_text()
    anchor = 'baudrate = 19200\n'
    assert anchor in text
    path = tmp_path / "cabinet.toml"
    path.write_text(text.replace(anchor, anchor + extra, 1))
    return path


def _line(tmp_path: Path, extra: str) -> ModbusLine:
    settings = load_settings(_cabinet(tmp_path, extra), env={}, check_files=False)
    hardware = Hardware(settings, "modbus")
    hardware.open()  # builds the lines; they open lazily, so no port is touched
    line = hardware.buses["rs485-0"]
    assert isinstance(line, ModbusLine)
    return line


def test_line_settings_reach_the_line(tmp_path: Path) -> None:
    line = _line(tmp_path, "frame_gap_s = 0.02\nsettle_s = 0.03\nlate_window_s = 0.9\n"
                           "degraded_after = 5\ntimeout_s = 0.2\nretries = 1\n")
    assert line._gap == pytest.approx(0.02)
    assert line.settle_s == pytest.approx(0.03)
    assert line.late_window_s == pytest.approx(0.9)
    assert line.degraded_after == 5
    assert line.timeout == pytest.approx(0.2)
    assert line.retries == 1


def test_unset_line_settings_keep_the_line_defaults(tmp_path: Path) -> None:
    line = _line(tmp_path, "")
    assert line._gap == pytest.approx(silent_interval(19200))  # 3.5 characters
    assert line.late_window_s is None  # twice the attempt's timeout, decided per attempt
    assert line.degraded_after == 3


@pytest.mark.parametrize("extra", ["late_window_s = -1\n", "degraded_after = 0\n",
                                   "frame_gap_s = 5\n", "settle_s = \"soon\"\n"])
def test_out_of_range_line_settings_are_refused_naming_the_key(
        tmp_path: Path, extra: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_cabinet(tmp_path, extra), env={}, check_files=False)
    assert extra.split(" ")[0] in str(info.value)


def test_bus_stats_carry_late_replies_and_degraded_units(tmp_path: Path) -> None:
    settings = load_settings(_cabinet(tmp_path, ""), env={}, check_files=False)
    hardware = Hardware(settings, "modbus")
    hardware.open()
    [stats] = hardware.bus_stats()
    assert stats["late_replies"] == 0
    assert stats["degraded_units"] == []
    from_builtins(BusStats, stats)  # what telemetry sends is what the contract says
