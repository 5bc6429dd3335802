"""The read-only views the daemon uses, the public dict and the config hash."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from controller.settings import (
    GenericIoBoard,
    Settings,
    TemperatureProbeBoard,
    WaveshareRelayBoard,
    load_settings,
    parse_duration,
    parse_settings,
)
from drivers.base import HARD_PULSE_CAP_S
from tests.unit.settings.conftest import INLINE_KEY


@pytest.fixture
def settings(valid_path: Path) -> Settings:
    return load_settings(valid_path, env={})


def test_lookups(settings: Settings) -> None:
    assert settings.compartment("A02").size == "L"
    assert isinstance(settings.board("locks-a"), WaveshareRelayBoard)
    assert isinstance(settings.board("io-b"), GenericIoBoard)
    assert isinstance(settings.board("probes"), TemperatureProbeBoard)
    assert settings.bus("rs485-0").baudrate == 19200
    assert settings.zone("chilled").min_c == 2.0
    for lookup in (settings.compartment, settings.board, settings.bus, settings.zone):
        with pytest.raises(KeyError):
            lookup("nope")


def test_boards_by_bus(settings: Settings) -> None:
    assert [b.name for b in settings.boards_on("rs485-0")] == ["locks-a", "io-b", "probes"]
    assert settings.boards_on("other") == ()
    assert {k: [b.name for b in v] for k, v in settings.boards_by_bus().items()} == {
        "rs485-0": ["locks-a", "io-b", "probes"]
    }


def test_zone_of_and_effective_ajar_delay(settings: Settings) -> None:
    assert settings.zone_of("A01").name == "chilled"
    assert settings.ajar_after_s("A01") == 60.0  # the zone's, shorter
    assert settings.ajar_after_s("A02") == settings.timing.ajar_after_s == 120.0


def test_tenant_durations(settings: Settings) -> None:
    grocery = settings.tenant("grocery")
    assert grocery.expiry_s == 6 * 3600.0
    assert settings.tenant("parcel").expiry_s == 5 * 86400.0


def test_pulse_cap_per_board(valid_data: dict[str, Any]) -> None:
    valid_data["boards"][0]["max_pulse_s"] = 1.0
    settings = parse_settings(valid_data)
    assert settings.max_pulse_s("locks-a") == 1.0
    assert settings.max_pulse_s("io-b") == settings.timing.max_pulse_s == 3.0
    assert settings.max_pulse_s("io-b") <= HARD_PULSE_CAP_S


def test_register_maps(settings: Settings) -> None:
    io = settings.board("io-b")
    assert isinstance(io, GenericIoBoard)
    assert (io.register_map.pulse.kind, io.register_map.pulse.address) == ("register", 256)
    probes = settings.board("probes")
    assert isinstance(probes, TemperatureProbeBoard)
    assert probes.register_map.scale == 0.1
    assert probes.register_map.invalid == -32768


def test_topic_root(settings: Settings) -> None:
    assert settings.topic_root == "lockers/v1/fr-lyon-07/cab-01"


def test_public_dict_omits_secrets(settings: Settings) -> None:
    public = settings.to_public_dict()
    text = json.dumps(public)
    assert "s3cret-pw" not in text
    assert "redispw" not in text
    assert INLINE_KEY not in text
    assert public["mqtt"]["password"] == "***"
    assert public["redis"]["url"] == "redis://:***@127.0.0.1:6379/0"
    assert public["security"]["dispatch_public_keys"]["dispatch-1"].startswith("inline sha256:")
    assert public["mqtt"]["username"] == "cab-01"


def test_repr_does_not_show_secrets(settings: Settings) -> None:
    assert "s3cret-pw" not in repr(settings)
    assert "redispw" not in repr(settings)


def test_to_dict_with_secrets_round_trips(settings: Settings) -> None:
    again = parse_settings(settings.to_dict(reveal_secrets=True))
    assert again == settings
    assert again.mqtt.password == "s3cret-pw"


def test_public_key_bytes(settings: Settings, tmp_path: Path, valid_data: dict[str, Any]) -> None:
    raw = base64.b64decode(INLINE_KEY)
    assert settings.security.public_key("dispatch-1") == raw
    der = bytes.fromhex("302a300506032b6570032100") + raw
    pem = tmp_path / "d2.pem"
    pem.write_text(
        "-----BEGIN PUBLIC KEY-----\n"
        + base64.b64encode(der).decode()
        + "\n-----END PUBLIC KEY-----\n"
    )
    valid_data["security"]["dispatch_public_keys"]["dispatch-2"] = str(pem)
    loaded = parse_settings(valid_data)
    assert loaded.security.public_key("dispatch-2") == raw
    assert loaded.to_public_dict()["security"]["dispatch_public_keys"]["dispatch-2"] == str(pem)


def test_hash_is_stable_and_order_independent(valid_data: dict[str, Any]) -> None:
    first = parse_settings(valid_data)
    reordered = dict(reversed(list(valid_data.items())))
    reordered["mqtt"] = dict(reversed(list(valid_data["mqtt"].items())))
    second = parse_settings(reordered)
    assert first.config_hash == second.config_hash
    assert len(first.config_hash) == 64
    valid_data["timing"]["poll_interval_s"] = 0.2
    assert parse_settings(valid_data).config_hash != first.config_hash


def test_hash_is_the_same_whatever_layer_set_a_value(
    valid_path: Path, valid_data: dict[str, Any]
) -> None:
    via_env = load_settings(valid_path, env={"LOCKER_TIMING__POLL_INTERVAL_S": "0.2"})
    valid_data["timing"]["poll_interval_s"] = 0.2
    assert via_env.config_hash == parse_settings(valid_data).config_hash


def test_simulator_table_is_opaque(settings: Settings) -> None:
    assert settings.simulator["seed"] == 7
    assert settings.simulator["doors"]["stuck"] == ("A02",)
    assert settings.to_dict()["simulator"] == {"seed": 7, "doors": {"stuck": ["A02"]}}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("90s", 90.0), ("1h30m", 5400.0), ("3d", 259200.0), ("2m 30s", 150.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(1.5) == 1.5
    assert parse_duration("2.5") == 2.5
    with pytest.raises(ValueError, match="duration such as"):
        parse_duration("soon")
