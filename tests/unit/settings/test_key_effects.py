"""Every documented key has an effect; a setting that nothing reads does not exist.

Three checks:

- the reference (docs/configuration.md) names only keys the models know (the other way
  round is ``test_docs.py``);
- every key of a ``[[buses]]`` or ``[[boards]]`` table changes the typed settings the
  driver backend receives (:class:`drivers.config.BusParams`,
  :class:`drivers.config.BoardParams`) when its value changes;
- every other key is read by the code outside the settings package (its name is accessed
  as an attribute or used as a key there), or is on :data:`NOT_READ_BY_NAME` with the
  reason it has an effect all the same.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from controller.settings import (
    BusConfig,
    GenericIoBoard,
    TemperatureProbeBoard,
    WaveshareRelayBoard,
    describe_keys,
)
from controller.settings.validate import convert

REPO = Path(__file__).resolve().parents[3]
DOC = REPO / "docs" / "configuration.md"

#: Keys whose effect does not show as a read of their name, and why they do something.
NOT_READ_BY_NAME: dict[str, str] = {
    "simulator": "free-form table handed whole to locker-sim (simulator/cabinet.py)",
    "tenants": "the pools: Settings.tenant(pool) and `pool in settings.tenants`",
    "boards[].bus": "Hardware places the board on that bus (test_board_bus_places_the_board)",
}

_LEAF = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _names_read_outside_settings() -> set[str]:
    names: set[str] = set()
    for root in ("controller", "drivers", "simulator"):
        for path in (REPO / root).rglob("*.py"):
            if "settings" in path.relative_to(REPO).parts[:2]:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Attribute):
                    names.add(node.attr)
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    names.add(node.value)
    return names


def test_the_reference_documents_only_keys_that_exist() -> None:
    documented = set(re.findall(r"^\| `([^`]+)` \|", DOC.read_text(encoding="utf-8"), re.M))
    known = {doc.key for doc in describe_keys()}
    assert documented - known == set()


def test_every_key_outside_the_hardware_tables_is_read() -> None:
    read = _names_read_outside_settings()
    unread = []
    for doc in describe_keys():
        if doc.key.startswith(("buses", "boards")) or doc.key in NOT_READ_BY_NAME:
            continue
        if doc.key.split(".")[0] == "simulator":
            continue
        leaf = _LEAF.findall(doc.key)[-1]
        if leaf not in read:
            unread.append(doc.key)
    assert unread == [], f"documented keys that nothing reads: {unread}"


# -- the hardware tables: each key reaches the driver's typed settings ----------------------

RTU: dict[str, Any] = {"name": "rs485-0", "kind": "rtu", "port": "/dev/ttyLOCKER0"}
TCP: dict[str, Any] = {"name": "gw-0", "kind": "tcp", "host": "10.0.0.2"}
BUS_CHANGES: dict[str, tuple[dict[str, Any], Any]] = {
    "name": (RTU, "rs485-1"),
    "kind": (TCP, None),  # the same bus as rtu: see test below
    "port": (RTU, "/dev/ttyLOCKER1"),
    "baudrate": (RTU, 38400),
    "parity": (RTU, "E"),
    "stopbits": (RTU, 2),
    "bytesize": (RTU, 7),
    "host": (TCP, "10.0.0.3"),
    "tcp_port": (TCP, 5020),
    "timeout_s": (RTU, 0.5),
    "retries": (RTU, 0),
    "frame_gap_s": (RTU, 0.02),
    "settle_s": (RTU, 0.01),
    "late_window_s": (RTU, 0.9),
    "degraded_after": (RTU, 7),
}


#: Bus keys read by the deployment checks, not by the driver.
CHECKED_ONLY = {"isolated_interface"}


def test_every_bus_key_is_in_the_table_of_changes() -> None:
    assert set(BUS_CHANGES) | CHECKED_ONLY == set(BusConfig.__struct_fields__)


def test_isolated_interface_decides_whether_a_tcp_bus_off_loopback_is_accepted() -> None:
    from controller.settings.deployment import deployment_issues

    class _Stub:  # only what the check reads
        def __init__(self, bus: BusConfig) -> None:
            self.buses = [bus]
            self.mqtt = type("M", (), {"tls": None})()
            self.security = type("S", (), {"require_signed_commands": True})()
            self.lane = type("L", (), {"backend": "mock", "scanner": None})()

    # 10.0.0.2 on loopback's network: the link is declared (no `host` issue), and checked.
    open_bus = _Stub(convert(BusConfig, TCP))
    declared = _Stub(convert(BusConfig, {**TCP, "isolated_interface": "lo"}))
    open_locs = [loc for loc, _ in deployment_issues(open_bus)]  # type: ignore[arg-type]
    declared_locs = [loc for loc, _ in deployment_issues(declared)]  # type: ignore[arg-type]
    assert ("buses", 0, "host") in open_locs
    assert ("buses", 0, "host") not in declared_locs
    assert ("buses", 0, "isolated_interface") in declared_locs


@pytest.mark.parametrize("key", sorted(BUS_CHANGES))
def test_a_changed_bus_key_changes_what_the_line_receives(key: str) -> None:
    base, value = BUS_CHANGES[key]
    if key == "kind":
        before = convert(BusConfig, RTU).to_driver()
        after = convert(BusConfig, {**TCP}).to_driver()
    else:
        before = convert(BusConfig, base).to_driver()
        after = convert(BusConfig, {**base, key: value}).to_driver()
        assert getattr(after, key) == value
    assert before != after


WAVESHARE: dict[str, Any] = {"name": "locks-a", "bus": "rs485-0", "address": 1,
                             "profile": "waveshare_relay", "outputs": 16}
GENERIC: dict[str, Any] = {"name": "io-b", "bus": "rs485-0", "address": 3,
                           "profile": "generic_io", "outputs": 8, "inputs": 8}
PROBE: dict[str, Any] = {"name": "probes", "bus": "rs485-0", "address": 10,
                         "profile": "temperature_probe", "channels": 2}
REGISTER_PULSE = {"pulse": {"kind": "register", "address": 100, "unit_ms": 10}}
#: key path in the reference -> (board table, the same table with the key changed)
BOARD_CHANGES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "boards[].name": (WAVESHARE, {**WAVESHARE, "name": "locks-z"}),
    "boards[].address": (WAVESHARE, {**WAVESHARE, "address": 2}),
    "boards[].outputs": (WAVESHARE, {**WAVESHARE, "outputs": 8}),
    "boards[].inputs": (WAVESHARE, {**WAVESHARE, "inputs": 8}),
    "boards[].profile": (WAVESHARE, {**GENERIC, "name": "locks-a", "address": 1,
                                     "outputs": 16, "inputs": 0}),
    "boards[].max_pulse_s": (WAVESHARE, {**WAVESHARE, "max_pulse_s": 1.5}),
    "boards[].channels": (PROBE, {**PROBE, "channels": 4}),
    "boards[].register_map.outputs.table": (
        GENERIC, {**GENERIC, "register_map": {"outputs": {"table": "holding_register_bits"}}}),
    "boards[].register_map.outputs.address": (
        GENERIC, {**GENERIC, "register_map": {"outputs": {"table": "coils", "address": 16}}}),
    "boards[].register_map.inputs.table": (
        GENERIC, {**GENERIC, "register_map": {"inputs": {"table": "input_register_bits"}}}),
    "boards[].register_map.inputs.address": (
        GENERIC,
        {**GENERIC, "register_map": {"inputs": {"table": "discrete_inputs", "address": 32}}}),
    "boards[].register_map.pulse.kind": (GENERIC, {**GENERIC, "register_map": REGISTER_PULSE}),
    "boards[].register_map.pulse.address": (
        {**GENERIC, "register_map": REGISTER_PULSE},
        {**GENERIC, "register_map": {"pulse": {**REGISTER_PULSE["pulse"], "address": 200}}}),
    "boards[].register_map.pulse.unit_ms": (
        {**GENERIC, "register_map": REGISTER_PULSE},
        {**GENERIC, "register_map": {"pulse": {**REGISTER_PULSE["pulse"], "unit_ms": 100}}}),
    "boards[].register_map.table": (
        PROBE, {**PROBE, "register_map": {"table": "holding_registers"}}),
    "boards[].register_map.address": (PROBE, {**PROBE, "register_map": {"address": 7}}),
    "boards[].register_map.scale": (PROBE, {**PROBE, "register_map": {"scale": 0.5}}),
    "boards[].register_map.offset": (PROBE, {**PROBE, "register_map": {"offset": -2.0}}),
    "boards[].register_map.signed": (PROBE, {**PROBE, "register_map": {"signed": False,
                                                                       "invalid": None}}),
    "boards[].register_map.invalid": (PROBE, {**PROBE, "register_map": {"invalid": None}}),
}
_BOARD_MODELS = {"waveshare_relay": WaveshareRelayBoard, "generic_io": GenericIoBoard,
                 "temperature_probe": TemperatureProbeBoard}


def _params(table: dict[str, Any]) -> Any:
    return convert(_BOARD_MODELS[table["profile"]], table).to_driver(max_pulse_s=0.7)


def test_every_board_leaf_key_is_in_the_table_of_changes() -> None:
    leaves = set()
    keys = [d.key for d in describe_keys() if d.key.startswith("boards[].")]
    for key in keys:
        if not any(other.startswith(key + ".") for other in keys):
            leaves.add(key)
    assert leaves - set(NOT_READ_BY_NAME) == set(BOARD_CHANGES)


@pytest.mark.parametrize("key", sorted(BOARD_CHANGES))
def test_a_changed_board_key_changes_what_the_board_receives(key: str) -> None:
    before, after = BOARD_CHANGES[key]
    assert _params(before) != _params(after)


def test_a_board_without_its_own_cap_gets_the_cabinets() -> None:
    assert _params(WAVESHARE).max_pulse_s == 0.7
    assert _params({**WAVESHARE, "max_pulse_s": 1.5}).max_pulse_s == 1.5


def test_board_bus_places_the_board() -> None:
    from controller.services.hardware import Hardware
    from controller.settings import parse_settings

    data = {
        "cabinet": {"site": "s", "id": "c"},
        "security": {"require_signed_commands": False},
        "buses": [{**RTU}, {**RTU, "name": "rs485-1", "port": "/dev/ttyLOCKER1"}],
        "boards": [WAVESHARE, {**WAVESHARE, "name": "locks-b", "bus": "rs485-1"}],
    }
    hardware = Hardware(parse_settings(data, check_files=False), "fake")
    hardware.open()
    assert [n for n, _ in hardware.boards_on("rs485-1")] == ["locks-b"]
    assert [n for n, _ in hardware.boards_on("rs485-0")] == ["locks-a"]
