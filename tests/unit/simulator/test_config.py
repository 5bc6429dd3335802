from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from simulator.config import SimConfigError, load_config, parse_config
from tests.unit.simulator.conftest import SMALL_CABINET

DEMO = Path(__file__).resolve().parents[3] / "deploy" / "sim-cabinet.toml"


def test_demo_config_loads() -> None:
    config = load_config(DEMO)
    assert len(config.compartments) == 12
    assert {b.profile for b in config.boards} == {
        "waveshare_relay",
        "generic_io",
        "temperature_probe",
    }
    assert {c.pool for c in config.compartments} == {"grocery", "parcel", "shop"}
    assert {z.name for z in config.zones} == {"ambient", "chilled", "frozen"}
    assert {s.active for c in config.compartments for s in (c.door, c.latch, c.occupancy) if s} == {
        "high",
        "low",
    }


def test_small_config_parsed(config) -> None:
    io = config.board("io")
    assert io.io_map is not None
    assert io.io_map.outputs.table == "holding_register_bits"
    assert io.io_map.pulse.kind == "register"
    assert io.io_map.pulse.unit_ms == 50
    a01 = config.compartment("A01")
    assert a01.lock.board == "locks"
    assert a01.door is not None
    assert a01.door.active == "high"
    assert config.simulator.initial_parcels == {"B01": 1}


def _broken(old: str, new: str) -> dict:
    assert old in SMALL_CABINET
    return tomllib.loads(SMALL_CABINET.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        (
            'lock = { board = "locks", channel = 0 }',
            'lock = { board = "locks", channel = 9 }',
            "compartments[0].lock.channel",
        ),
        (
            'lock = { board = "locks", channel = 0 }',
            'lock = { board = "nope", channel = 0 }',
            "compartments[0].lock.board",
        ),
        ('profile = "waveshare_relay"', 'profile = "relay9000"', "boards[0].profile"),
        ("address = 3", "address = 1", "boards[1].address"),
        ('zone = "chilled"\npool', 'zone = "tropical"\npool', "compartments[0].zone"),
        ('active = "high" }\nlatch', 'active = "up" }\nlatch', "compartments[0].door.active"),
        (
            "initial_parcels = { B01 = 1 }",
            "initial_parcels = { Z01 = 1 }",
            "simulator.initial_parcels.Z01",
        ),
        (
            'probe = { board = "probes", channel = 1 }',
            'probe = { board = "locks", channel = 1 }',
            "zones[1].probe.board",
        ),
        ("tau_cooling_s = 100.0", "tau_cooling_s = -1.0", "simulator.thermal.tau_cooling_s"),
        ('bus = "rs485-0"\naddress = 1', 'bus = "rs485-9"\naddress = 1', "boards[0].bus"),
    ],
)
def test_errors_name_the_key_and_the_file(old: str, new: str, key: str) -> None:
    with pytest.raises(SimConfigError) as info:
        parse_config(_broken(old, new), source="small.toml")
    assert info.value.key == key
    assert str(info.value).startswith(f"small.toml: {key}: ")


def test_unreadable_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(SimConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[buses]\n")
    with pytest.raises(SimConfigError, match=r"bad\.toml: <toml>"):
        load_config(bad)
