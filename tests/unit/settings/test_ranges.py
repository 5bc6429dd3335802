"""Absurd values are refused, with the key and the file named: every number has a sane
range, booleans are booleans, a number is not text, and a security setting is never guessed.
Text from the environment and from --set is still read as TOML (``true``, ``5``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.settings import ConfigError, describe_keys, load_settings
from tests.unit.settings.conftest import VALID_TOML

#: Numbers whose range is a set of values checked by a validator, not a bound pair.
CHECKED_OTHERWISE = {"buses[].baudrate"}


def _numeric(type_text: str) -> bool:
    return type_text.split(" (")[0] in ("integer", "number", "seconds")


def test_every_number_has_a_lower_and_an_upper_bound() -> None:
    unbounded = []
    for doc in describe_keys():
        if not _numeric(doc.type) or doc.key in CHECKED_OTHERWISE:
            continue
        bounds = doc.type.partition(" (")[2]
        if not (re.search(r"(>=|>) ", bounds) and re.search(r"(<=|<) ", bounds)):
            unbounded.append(f"{doc.key}: {doc.type}")
    assert unbounded == []


def _with(text: str, section: str, line: str) -> str:
    header = f"[{section}]\n"
    assert header in text
    return text.replace(header, header + line + "\n", 1)


def _refused(path: Path, key: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    message = str(caught.value)
    assert key in caught.value.keys, message
    assert str(path) in message, message
    return message


@pytest.mark.parametrize(("section", "line", "key"), [
    ("timing", "telemetry_interval_s = 100000000000000000000000000",
     "timing.telemetry_interval_s"),
    ("timing", "telemetry_interval_s = inf", "timing.telemetry_interval_s"),
    ("timing", "pulse_s = nan", "timing.pulse_s"),
    ("timing", "ajar_after_s = 1e12", "timing.ajar_after_s"),
    ("timing", "compartment_cooldown_s = 1e9", "timing.compartment_cooldown_s"),
    ("timing", "state_coalesce_s = 86400", "timing.state_coalesce_s"),
    ("security", "code_lockout_s = 1e30", "security.code_lockout_s"),
    ("security", 'code_max_attempts = "5"', "security.code_max_attempts"),
    ("security", "code_max_attempts = 5.0", "security.code_max_attempts"),
    ("mqtt", 'port = "1883"', "mqtt.port"),
    ("tenants.grocery", "reopen_grace_s = 1e15", "tenants.grocery.reopen_grace_s"),
])
def test_an_absurd_number_is_refused_naming_key_and_file(
    write_config: Callable[[str], Path], section: str, line: str, key: str,
) -> None:
    _refused(write_config(_with(VALID_TOML, section, line)), key)


@pytest.mark.parametrize("value", ['"yes"', '"true"', "1", '"on"', "0"])
def test_a_security_boolean_is_never_guessed(
    write_config: Callable[[str], Path], value: str,
) -> None:
    path = write_config(_with(VALID_TOML, "security", f"require_signed_commands = {value}"))
    message = _refused(path, "security.require_signed_commands")
    assert "true or false" in message


def test_every_boolean_key_is_strict(write_config: Callable[[str], Path]) -> None:
    text = VALID_TOML.replace(
        'outputs = {{ table = "coils", address = 0 }}'.replace("{{", "{").replace("}}", "}"),
        'outputs = { table = "coils", address = 0 }')
    text += ('\n[lane]\nbackend = "mock"\n[lane.outputs.buzzer]\npin = 26\n'
             'active_low = "no"\n')
    _refused(write_config(text), "lane.outputs.buzzer.active_low")


def test_booleans_and_numbers_from_the_environment_and_flags_still_read(
    valid_path: Path,
) -> None:
    settings = load_settings(
        valid_path, env={"LOCKER_SECURITY__REQUIRE_SIGNED_COMMANDS": "false"},
        overrides={"security.code_max_attempts": "7", "timing.telemetry_interval_s": "2m"})
    assert settings.security.require_signed_commands is False
    assert settings.security.code_max_attempts == 7
    assert settings.timing.telemetry_interval_s == 120.0
    with pytest.raises(ConfigError) as caught:
        load_settings(valid_path, env={},
                      overrides={"security.require_signed_commands": "yes"})
    assert "security.require_signed_commands" in caught.value.keys
    with pytest.raises(ConfigError) as caught:
        load_settings(valid_path, env={},
                      overrides={"timing.telemetry_interval_s": "1e26"})
    assert "timing.telemetry_interval_s" in caught.value.keys
