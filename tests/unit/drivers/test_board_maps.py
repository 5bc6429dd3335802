"""Register maps given as data: validation errors name the field; conversions."""

from __future__ import annotations

from typing import Any

import pytest

from drivers.errors import DriverConfigError
from drivers.modbus.boards import (
    GenericIOBoard,
    GenericIOMap,
    ProbeMap,
    PulseSpec,
    TemperatureProbe,
    WaveshareRelayBoard,
    build_board,
    duration_units,
)
from drivers.modbus.line import ModbusLine


@pytest.fixture
def line() -> ModbusLine:
    return ModbusLine("rs485-u", port="/dev/null-never-opened")


def test_design_notes_example_parses() -> None:
    m = GenericIOMap.from_dict(
        {
            "outputs": {"table": "coils", "address": 0},
            "inputs": {"table": "discrete_inputs", "address": 0},
            "pulse": {"kind": "register", "address": 256, "unit_ms": 100},
        }
    )
    assert m == GenericIOMap("coils", 0, "discrete_inputs", 0, PulseSpec("register", 256, 100))


def test_defaults_are_coils_discrete_inputs_daemon_pulse() -> None:
    assert GenericIOMap.from_dict({}) == GenericIOMap()


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"outputs": {"table": "input_registers"}}, "register_map.outputs.table"),
        ({"inputs": {"table": "coils"}}, "register_map.inputs.table"),
        ({"inputs": {"address": -1}}, "register_map.inputs.address"),
        ({"outputs": {"address": 70000}}, "register_map.outputs.address"),
        ({"outputs": {"adress": 1}}, "register_map.outputs.adress"),
        ({"outputs": 3}, "register_map.outputs"),
        ({"pulse": {"kind": "magic"}}, "register_map.pulse.kind"),
        ({"pulse": {"kind": "register"}}, "register_map.pulse.address"),
        ({"pulse": {"kind": "register", "address": 1, "unit_ms": 0}}, "register_map.pulse.unit_ms"),
        ({"pulse": {"kind": "coil", "address": 1, "unit_ms": True}}, "register_map.pulse.unit_ms"),
        ({"extra": 1}, "register_map.extra"),
    ],
)
def test_invalid_generic_map_names_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(DriverConfigError, match=field.replace(".", r"\.")):
        GenericIOMap.from_dict(raw)


def test_map_that_runs_past_the_address_space(line: ModbusLine) -> None:
    with pytest.raises(DriverConfigError, match="outputs runs past"):
        GenericIOBoard(line, 3, {"outputs": {"address": 65530}}, outputs=8, inputs=0)


def test_board_timed_pulse_kinds_set_resolution(line: ModbusLine) -> None:
    board = GenericIOBoard(
        line, 3, {"pulse": {"kind": "register", "address": 256, "unit_ms": 50}},
        outputs=4, inputs=4,
    )
    assert board.board_times_pulse
    assert board.pulse_resolution_s == 0.05
    assert not GenericIOBoard(line, 3, {}, outputs=4, inputs=4).board_times_pulse


@pytest.mark.parametrize(
    ("duration", "unit", "expected"),
    [(0.7, 0.1, 7), (0.71, 0.1, 8), (0.01, 0.1, 1), (0.3, 0.1, 3), (1e6, 0.1, 0xFFFF)],
)
def test_duration_units_round_up(duration: float, unit: float, expected: int) -> None:
    assert duration_units(duration, unit) == expected


def test_probe_map_conversion() -> None:
    m = ProbeMap.from_dict(
        {"table": "input_registers", "address": 0, "scale": 0.1, "offset": 0.0,
         "signed": True, "invalid": -32768}
    )
    assert m.convert(0x00FA) == pytest.approx(25.0)
    assert m.convert(0xFF4C) == pytest.approx(-18.0)
    assert m.convert(0x8000) is None
    unsigned = ProbeMap.from_dict({"signed": False, "scale": 1, "offset": -40})
    assert unsigned.convert(0xFFFF) == 0xFFFF - 40


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"table": "coils"}, "register_map.table"),
        ({"scale": 0}, "register_map.scale"),
        ({"scale": "x"}, "register_map.scale"),
        ({"offset": float("nan")}, "register_map.offset"),
        ({"signed": "yes"}, "register_map.signed"),
        ({"signed": False, "invalid": -1}, "register_map.invalid"),
        ({"invalid": 40000}, "register_map.invalid"),
        ({"unit": "C"}, "register_map.unit"),
    ],
)
def test_invalid_probe_map_names_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(DriverConfigError, match=field.replace(".", r"\.")):
        ProbeMap.from_dict(raw)


def test_build_board_from_config_tables(line: ModbusLine) -> None:
    ws = build_board(line, {"name": "locks-a", "address": 1, "profile": "waveshare_relay",
                            "outputs": 16, "inputs": 16})
    assert isinstance(ws, WaveshareRelayBoard)
    assert (ws.bus, ws.address, ws.outputs, ws.inputs) == ("rs485-u", 1, 16, 16)
    io = build_board(line, {"name": "io-b", "address": 3, "profile": "generic_io",
                            "outputs": 8, "inputs": 8,
                            "register_map": {"pulse": {"kind": "daemon"}}})
    assert isinstance(io, GenericIOBoard)
    probe = build_board(line, {"name": "probes", "address": 10, "profile": "temperature_probe",
                               "channels": 3, "register_map": {"invalid": -32768}})
    assert isinstance(probe, TemperatureProbe)
    assert probe.channels == 3


@pytest.mark.parametrize(
    ("cfg", "field"),
    [
        ({"name": "b", "address": 0, "profile": "waveshare_relay"}, r"boards\[b\]\.address"),
        ({"name": "b", "address": 300, "profile": "waveshare_relay"}, r"boards\[b\]\.address"),
        ({"name": "b", "address": 1, "profile": "plc"}, r"boards\[b\]\.profile"),
        ({"name": "b", "address": 1, "profile": "generic_io", "inputs": 1},
         r"boards\[b\]\.outputs"),
        ({"name": "b", "address": 1, "profile": "temperature_probe"}, r"boards\[b\]\.channels"),
        ({"name": "b", "address": 1, "profile": "generic_io", "outputs": 1, "inputs": 1,
          "register_map": {"inputs": {"table": "x"}}}, r"boards\[b\]\.register_map\.inputs\.table"),
        ({"name": "b", "address": 1, "profile": "waveshare_relay", "max_pulse_s": 60},
         "max_pulse_s"),
    ],
)
def test_build_board_errors_name_the_key(line: ModbusLine, cfg: dict[str, Any], field: str) -> None:
    with pytest.raises(DriverConfigError, match=field):
        build_board(line, cfg)


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"name": "x", "kind": "rtu"}, "port"),
        ({"name": "x", "kind": "can", "port": "/dev/x"}, "kind"),
        ({"name": "x", "kind": "rtu", "port": "/dev/x", "baudrate": "fast"}, "fast"),
        ({"name": "x", "kind": "rtu", "port": "/dev/x", "parity": "M"}, "parity"),
        ({"name": "x", "kind": "tcp"}, "host"),
        ({"name": "x", "kind": "rtu", "port": "/dev/x", "timeout_s": 0}, "timeout"),
    ],
)
def test_line_from_config_errors(cfg: dict[str, Any], match: str) -> None:
    with pytest.raises(DriverConfigError, match=match):
        ModbusLine.from_config(cfg)


def test_line_from_config() -> None:
    rtu = ModbusLine.from_config({"name": "rs485-0", "kind": "rtu", "port": "/dev/ttyLOCKER0",
                                  "baudrate": 9600})
    assert (rtu.name, rtu.port, rtu.baudrate, rtu.framing) == ("rs485-0", "/dev/ttyLOCKER0",
                                                               9600, "rtu")
    tcp = ModbusLine.from_config({"name": "gw", "kind": "tcp", "host": "127.0.0.1",
                                  "tcp_port": 1502})
    assert (tcp.host, tcp.tcp_port, tcp.framing) == ("127.0.0.1", 1502, "socket")
