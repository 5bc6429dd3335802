"""defaults < file < environment < flags; typos in any layer are errors; frozen after load."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.settings import NON_CONFIG_ENV_VARS, ConfigError, load_settings
from tests.unit.settings.conftest import VALID_TOML


def test_defaults_fill_what_the_file_leaves_out(valid_path: Path) -> None:
    settings = load_settings(valid_path, env={})
    assert settings.mqtt.port == 1883
    assert settings.mqtt.protocol == 5
    assert settings.mqtt.topic_root == "lockers/v1"
    assert settings.timing.pulse_s == 0.7
    assert settings.timing.max_concurrent_pulses == 1
    assert settings.timing.unknown_after_failed_polls == 3
    assert settings.log.format == "json"
    assert settings.lane.backend == "mock"


def test_derived_defaults(valid_path: Path) -> None:
    settings = load_settings(valid_path, env={})
    assert settings.mqtt.client_id == "locker-fr-lyon-07-cab-01"
    assert settings.redis.key_prefix == "locker:fr-lyon-07:cab-01:"


def test_file_beats_defaults_env_beats_file_flags_beat_env(valid_path: Path) -> None:
    env = {"LOCKER_MQTT__HOST": "env-host", "LOCKER_MQTT__PORT": "1884"}
    assert load_settings(valid_path, env={}).mqtt.host == "broker.lan"
    settings = load_settings(valid_path, env=env)
    assert (settings.mqtt.host, settings.mqtt.port) == ("env-host", 1884)
    settings = load_settings(valid_path, env=env, overrides={"mqtt.host": "flag-host"})
    assert (settings.mqtt.host, settings.mqtt.port) == ("flag-host", 1884)


def test_env_values_are_read_per_field_type(valid_path: Path) -> None:
    env = {
        "LOCKER_TIMING__POLL_INTERVAL_S": "0.2",
        "LOCKER_TIMING__AJAR_AFTER_S": "3m",
        "LOCKER_MQTT__PROTOCOL": "311",
        "LOCKER_MQTT__USERNAME": "12345",  # text field: stays text
        "LOCKER_MQTT__PASSWORD": "true",  # text field: stays text
        "LOCKER_SECURITY__REQUIRE_SIGNED_COMMANDS": "false",
        "LOCKER_LOG__LEVEL": "DEBUG",
        "LOCKER_CABINET__NAME": "[not an array]",
        "LOCKER_TENANTS__PARCEL__REOPEN_GRACE_S": "30",
        "LOCKER_MQTT__TLS": "{ }",
    }
    settings = load_settings(valid_path, env=env)
    assert settings.timing.poll_interval_s == 0.2
    assert settings.timing.ajar_after_s == 180.0
    assert settings.mqtt.protocol == 311
    assert settings.mqtt.username == "12345"
    assert settings.mqtt.password == "true"
    assert settings.security.require_signed_commands is False
    assert settings.log.level == "debug"
    assert settings.cabinet.name == "[not an array]"
    assert settings.tenants["parcel"].reopen_grace_s == 30.0
    assert settings.tenants["parcel"].expiry_s == 5 * 86400  # merged, not replaced
    assert settings.mqtt.tls is not None


def test_env_table_value_merges_into_the_file_table(valid_path: Path) -> None:
    settings = load_settings(valid_path, env={"LOCKER_MQTT": "{ port = 8883 }"})
    assert (settings.mqtt.host, settings.mqtt.port) == ("broker.lan", 8883)


def test_env_can_replace_an_array_of_tables_whole(valid_path: Path) -> None:
    env = {"LOCKER_BUSES": '[{ name = "rs485-0", port = "/dev/ttyUSB0" }]'}
    assert load_settings(valid_path, env=env).bus("rs485-0").port == "/dev/ttyUSB0"


def test_bad_env_value_names_the_variable_and_key(valid_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(valid_path, env={"LOCKER_TIMING__POLL_INTERVAL_S": "fast"})
    (issue,) = info.value.issues
    assert issue.source == "$LOCKER_TIMING__POLL_INTERVAL_S"
    assert issue.key == "timing.poll_interval_s"
    assert issue.line is None
    assert str(issue).startswith("$LOCKER_TIMING__POLL_INTERVAL_S: timing.poll_interval_s: must")


def test_env_typo_is_an_error_with_a_suggestion(valid_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(valid_path, env={"LOCKER_MQTT__HOTS": "x", "LOCKER_TIMNG__PULSE_S": "1"})
    messages = {issue.key: issue.message for issue in info.value.issues}
    assert messages["LOCKER_MQTT__HOTS"].endswith("(did you mean LOCKER_MQTT__HOST?)")
    assert messages["LOCKER_TIMNG__PULSE_S"].endswith("(did you mean LOCKER_TIMING__PULSE_S?)")
    assert {issue.source for issue in info.value.issues} == {"environment"}


@pytest.mark.parametrize(
    "name",
    ["LOCKER_MQTTHOST", "LOCKER_MQTT__", "LOCKER_MQTT__HOST__X", "LOCKER_BOARDS__0__NAME"],
)
def test_env_names_that_are_no_key(valid_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(valid_path, env={name: "x"})


def test_documented_non_config_variables_and_others_are_ignored(valid_path: Path) -> None:
    assert "LOCKER_CONFIG" in NON_CONFIG_ENV_VARS
    env = {"LOCKER_CONFIG": "/etc/locker/cabinet.toml", "PATH": "/bin", "LOCKERX": "1"}
    load_settings(valid_path, env=env)


def test_env_defaults_to_os_environ(valid_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKER_MQTT__HOST", "from-environ")
    assert load_settings(valid_path).mqtt.host == "from-environ"


def test_flag_typo_and_bad_flag_value(valid_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(valid_path, env={}, overrides={"mqtt.hots": "x", "mqtt.port": "http"})
    assert [(i.source, i.key) for i in info.value.issues] == [
        ("flags", "mqtt.hots"),
        ("flags", "mqtt.port"),
    ]
    assert "did you mean mqtt.host?" in info.value.issues[0].message


def test_flags_accept_typed_values(valid_path: Path) -> None:
    settings = load_settings(
        valid_path, env={}, overrides={"timing.max_concurrent_pulses": 2, "log.format": "text"}
    )
    assert settings.timing.max_concurrent_pulses == 2
    assert settings.log.format == "text"


def test_a_cross_check_broken_by_a_layer_names_that_layer(valid_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(valid_path, env={}, overrides={"timing.pulse_s": "5"})
    (issue,) = info.value.issues
    assert (issue.source, issue.key) == ("flags", "timing.pulse_s")


def test_no_file_means_defaults_and_layers_only() -> None:
    env = {
        "LOCKER_CABINET__SITE": "lab",
        "LOCKER_CABINET__ID": "bench-1",
        "LOCKER_SECURITY__REQUIRE_SIGNED_COMMANDS": "false",
        "LOCKER_REDIS__URL": "memory://",
    }
    settings = load_settings(None, env=env)
    assert settings.topic_root == "lockers/v1/lab/bench-1"
    assert settings.redis.is_memory
    assert settings.compartments == ()


def test_missing_key_without_a_file_names_the_defaults_layer() -> None:
    with pytest.raises(ConfigError, match=r"^<defaults>: cabinet: missing"):
        load_settings(None, env={"LOCKER_SECURITY__REQUIRE_SIGNED_COMMANDS": "false"})


def test_layer_issues_and_file_issues_come_together(write_config) -> None:  # type: ignore[no-untyped-def]
    path = write_config(VALID_TOML.replace("baudrate = 19200", "baudrate = 19201"))
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={"LOCKER_NOPE": "1"})
    assert info.value.keys == ("LOCKER_NOPE", "buses[0].baudrate")


# -- frozen ---------------------------------------------------------------------------------


def test_settings_are_frozen(valid_path: Path) -> None:
    settings = load_settings(valid_path, env={})
    with pytest.raises(AttributeError):
        settings.mqtt.host = "elsewhere"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        settings.timing = settings.timing  # type: ignore[misc]
    with pytest.raises(AttributeError):
        settings.compartments[0].lock.channel = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.tenants["shop"] = settings.tenants["parcel"]  # type: ignore[index]
    with pytest.raises(TypeError):
        settings.simulator["doors"]["stuck"] = []  # type: ignore[index]
    with pytest.raises(AttributeError):
        settings.compartments.append(settings.compartments[0])  # type: ignore[attr-defined]
    assert isinstance(settings.simulator["doors"]["stuck"], tuple)
    assert hash(settings)  # frozen models hash


def test_a_quoted_text_value_is_its_text(valid_path: Path) -> None:
    """Read as TOML first: a TOML string is the text inside its quotes, for text keys as
    for the others (a technician copies ``level = "debug"`` from the file)."""
    settings = load_settings(valid_path, overrides={
        "log.level": '"debug"',
        "redis.url": '"redis://127.0.0.1:6390/0"',
        "mqtt.username": "'literal'",
        "mqtt.password": '"12345"',
    })
    assert settings.log.level == "debug"
    assert settings.redis.url == "redis://127.0.0.1:6390/0"
    assert settings.mqtt.username == "literal"
    assert settings.mqtt.password == "12345"
    env = {"LOCKER_LOG__LEVEL": '"warning"', "LOCKER_MQTT__USERNAME": '"a b"'}
    settings = load_settings(valid_path, env=env)
    assert settings.log.level == "warning"
    assert settings.mqtt.username == "a b"


def test_a_cross_key_issue_names_the_variable_or_flag_that_set_the_key(
    valid_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"flags: mqtt\.reconnect_min_s: must be <= "):
        load_settings(valid_path, env={}, overrides={"mqtt.reconnect_min_s": "5"})
    sim = Path(__file__).resolve().parents[3] / "deploy" / "sim-cabinet.toml"
    with pytest.raises(ConfigError,
                       match=r"\$LOCKER_MQTT__PASSWORD: mqtt\.password: set, but username"):
        load_settings(sim, env={"LOCKER_MQTT__PASSWORD": "secret"}, check_files=False)
