"""Properties: every valid config survives a round trip through TOML; any single corruption
of a valid config is a ConfigError naming the corrupted key, never another exception."""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from controller.settings import ConfigError, ConfigIssue, load_settings, parse_settings
from tests.unit.settings.toml_text import dumps

ident = st.from_regex(r"[a-z0-9-]{1,32}", fullmatch=True)
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
seconds = st.floats(min_value=0.05, max_value=5.0, allow_nan=False)


@st.composite
def cabinets(draw: st.DrawFn) -> dict[str, Any]:
    """A valid cabinet config as TOML data: one or two lines, lock and probe boards, zones,
    pools and compartments wired to distinct outputs and inputs."""
    max_pulse = draw(st.floats(min_value=0.5, max_value=10.0))
    pulse = draw(st.floats(min_value=0.05, max_value=max_pulse))
    buses = [
        {
            "name": f"line-{i}",
            "port": f"/dev/ttyLOCKER{i}",
            "baudrate": draw(st.sampled_from([9600, 19200, 38400, 115200])),
            "parity": draw(st.sampled_from("NEO")),
            "timeout_s": draw(seconds),
            "retries": draw(st.integers(0, 10)),
        }
        for i in range(draw(st.integers(1, 2)))
    ]
    if draw(st.booleans()):
        buses.append({"name": "gw", "kind": "tcp", "host": "127.0.0.2", "tcp_port": 502,
                      "isolated_interface": "lo"})
    boards: list[dict[str, Any]] = []
    for n in range(draw(st.integers(1, 3))):
        bus = draw(st.sampled_from(buses))["name"]
        board: dict[str, Any] = {
            "name": f"locks-{n}",
            "bus": bus,
            "address": 1 + n,
            "profile": draw(st.sampled_from(["waveshare_relay", "generic_io"])),
            "outputs": draw(st.integers(1, 16)),
            "inputs": draw(st.integers(0, 16)),
        }
        if draw(st.booleans()):
            board["max_pulse_s"] = draw(st.floats(min_value=pulse, max_value=10.0))
        boards.append(board)
    zones: list[dict[str, Any]] = [{"name": "ambient", "kind": "ambient"}]
    if draw(st.booleans()):
        boards.append(
            {
                "name": "probes",
                "bus": buses[0]["name"],
                "address": 100,
                "profile": "temperature_probe",
                "channels": 2,
                "register_map": {"scale": draw(st.sampled_from([0.1, 0.01, 1.0]))},
            }
        )
        low = draw(st.floats(min_value=-40, max_value=5))
        zones.append(
            {
                "name": "cold",
                "kind": draw(st.sampled_from(["chilled", "frozen"])),
                "min_c": low,
                "max_c": low + draw(st.floats(min_value=0.5, max_value=10)),
                "ajar_after_s": draw(st.floats(min_value=1, max_value=120)),
                "probe": {"board": "probes", "channel": draw(st.integers(0, 1))},
            }
        )
    pools = draw(st.lists(st.sampled_from(["grocery", "parcel", "shop"]), min_size=1, unique=True))
    tenants = {}
    for pool in pools:
        tenants[pool] = {
            "expiry_s": draw(st.integers(60, 11 * 86400)),
            "reopen_grace_s": draw(st.integers(0, 600)),
        }
    compartments = []
    for board in (b for b in boards if b["profile"] != "temperature_probe"):
        for channel in range(draw(st.integers(0, board["outputs"]))):
            comp: dict[str, Any] = {
                "id": f"{board['name'][-1]}{channel:02d}",
                "size": draw(st.sampled_from(["S", "M", "L", "XL"])),
                "zone": draw(st.sampled_from(zones))["name"],
                "pool": draw(st.sampled_from(pools)),
                "lock": {"board": board["name"], "channel": channel},
            }
            if channel < board["inputs"]:
                comp["door"] = {
                    "board": board["name"],
                    "channel": channel,
                    "active": draw(st.sampled_from(["high", "low"])),
                }
            compartments.append(comp)
    config: dict[str, Any] = {
        "cabinet": {"site": draw(ident), "id": draw(ident), "name": draw(text)},
        "mqtt": {
            "host": draw(st.sampled_from(["127.0.0.1", "broker.lan"])),
            "port": draw(st.integers(1, 65535)),
            "protocol": draw(st.sampled_from([5, 311])),
        },
        "timing": {"pulse_s": pulse, "max_pulse_s": max_pulse, "poll_interval_s": draw(seconds)},
        "buses": buses,
        "boards": boards,
        "zones": zones,
        "compartments": compartments,
        "tenants": tenants,
        "security": {
            "dispatch_public_keys": {
                "d1": base64.b64encode(bytes(SigningKey(
                    draw(st.binary(min_size=32, max_size=32))).verify_key)).decode()
            }
        },
        "simulator": draw(
            st.dictionaries(st.sampled_from(["seed", "speed", "name"]), st.integers() | text)
        ),
        "log": {"level": draw(st.sampled_from(["debug", "info", "warning", "error"]))},
    }
    if draw(st.booleans()):
        config["mqtt"]["username"] = draw(text)
        config["mqtt"]["password"] = draw(text)
    return config


def load_text(toml: str) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cabinet.toml"
        path.write_text(toml, encoding="utf-8")
        return load_settings(path, env={})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cabinets())
def test_valid_configs_round_trip_through_toml(config: dict[str, Any]) -> None:
    parsed = parse_settings(config)
    from_file = load_text(dumps(config))
    assert from_file == parsed
    again = load_text(dumps(parsed.to_dict(reveal_secrets=True)))
    assert again == parsed
    assert again.config_hash == parsed.config_hash


# -- corruptions -----------------------------------------------------------------------------

#: Free-form tables: anything goes inside them.
OPAQUE = {("simulator",), ("lane", "options")}


def leaves(node: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    if path in OPAQUE:
        return
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from leaves(value, (*path, index))
    else:
        yield path


def tables(node: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    if path in OPAQUE:
        return
    if isinstance(node, dict):
        if path != ("tenants",):  # a new key there is a new pool, which is valid
            yield path
        for key, value in node.items():
            yield from tables(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from tables(value, (*path, index))


def key_text(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def at(node: Any, path: tuple[str | int, ...]) -> Any:
    for item in path:
        node = node[item]
    return node


def error_keys(config: dict[str, Any]) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        parse_settings(config)
    assert info.value.issues
    return info.value.keys


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cabinets(), st.data())
def test_a_wrongly_typed_value_is_named(config: dict[str, Any], data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(list(leaves(config))))
    at(config, path[:-1])[path[-1]] = data.draw(st.sampled_from([{"oops": 1}, [[1]], {"": []}]))
    key = key_text(path)
    keys = error_keys(config)
    assert any(k == key or k.startswith((key + ".", key + "[")) for k in keys), (key, keys)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cabinets(), st.data())
def test_an_unknown_key_is_named(config: dict[str, Any], data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(list(tables(config))))
    name = data.draw(st.sampled_from(["zz_unknown", "Port", "adress"]))
    at(config, path)[name] = data.draw(st.sampled_from([1, "x", True]))
    key = key_text((*path, name))
    assert key in error_keys(config)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cabinets(), st.data())
def test_a_random_scalar_never_crashes(config: dict[str, Any], data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(list(leaves(config))))
    at(config, path[:-1])[path[-1]] = data.draw(
        st.none() | st.booleans() | st.integers() | st.floats() | text
    )
    issues: tuple[ConfigIssue, ...] = ()
    try:
        parse_settings(config)
    except ConfigError as exc:
        issues = exc.issues
    assert all(issue.key for issue in issues)
