"""Every class of configuration error gives one ConfigError whose issues name the key (and,
from a file, the file and the line)."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.settings import (
    ConfigError,
    ConfigIssue,
    load_settings,
    parse_settings,
)
from tests.unit.settings.conftest import VALID_TOML


def issues_of(data: dict[str, Any]) -> dict[str, str]:
    """key -> message of the issues ``data`` raises."""
    with pytest.raises(ConfigError) as info:
        parse_settings(data, source="cabinet.toml")
    return {issue.key: issue.message for issue in info.value.issues}


def file_error(write: Callable[[str], Path], text: str) -> ConfigError:
    path = write(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    return info.value


def test_the_valid_config_loads(valid_path: Path) -> None:
    settings = load_settings(valid_path, env={})
    assert [c.id for c in settings.compartments] == ["A01", "A02", "A03"]


# -- the message format ---------------------------------------------------------------------


def test_issue_str_names_file_key_message_and_line() -> None:
    issue = ConfigIssue("cabinet.toml", "compartments[2].door.active", "must be 'high' or 'low'")
    assert str(issue) == "cabinet.toml: compartments[2].door.active: must be 'high' or 'low'"
    assert (
        str(ConfigIssue("c.toml", "mqtt.port", "bad", line=4)) == "c.toml: mqtt.port: bad (line 4)"
    )


def test_bad_polarity_reads_like_the_documented_example(
    write_config: Callable[[str], Path],
) -> None:
    text = VALID_TOML.replace('channel = 2, active = "low"', 'channel = 2, active = "hi"')
    error = file_error(write_config, text)
    (issue,) = error.issues
    assert issue.key == "compartments[1].door.active"
    assert issue.message == "must be 'high' or 'low' (got 'hi')"
    assert issue.source.endswith("cabinet.toml")
    assert (
        issue.line
        == text.splitlines().index('door = { board = "locks-a", channel = 2, active = "hi" }') + 1
    )
    assert str(error).startswith(
        f"{issue.source}: compartments[1].door.active: must be 'high' or 'low' (got 'hi')"
    )


def test_config_error_is_a_value_error_with_one_line_per_issue(
    valid_data: dict[str, Any],
) -> None:
    valid_data["mqtt"]["port"] = "x"
    valid_data["timing"]["pulse_s"] = -1
    with pytest.raises(ValueError, match=r"mqtt\.port") as info:
        parse_settings(valid_data, source="cabinet.toml")
    assert isinstance(info.value, ConfigError)
    assert len(str(info.value).splitlines()) == 2
    assert info.value.keys == ("mqtt.port", "timing.pulse_s")


# -- TOML syntax and unreadable files -------------------------------------------------------


def test_toml_syntax_error_names_file_line_and_column(
    write_config: Callable[[str], Path],
) -> None:
    text = VALID_TOML.replace('host = "broker.lan"', "host = broker.lan")
    error = file_error(write_config, text)
    (issue,) = error.issues
    assert issue.line == text.splitlines().index("host = broker.lan") + 1
    assert issue.column == 8
    assert issue.message.startswith("invalid TOML")
    assert str(error).startswith(str(write_config(text)) + ": invalid TOML")
    assert f"(line {issue.line}, column 8)" in str(error)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "nope.toml", env={})


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "cabinet.toml"
    path.write_bytes(b'[cabinet]\nname = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8") as caught:
        load_settings(path, env={})
    (issue,) = caught.value.issues
    assert (issue.line, issue.column) == (2, 9)  # where the editor shows the bad byte
    assert "0xff" in issue.message


def test_a_byte_order_mark_is_named(tmp_path: Path) -> None:
    """Editors on some systems save UTF-8 with a BOM; TOML refuses it: say so, not
    "invalid TOML at line 1, column 1"."""
    path = tmp_path / "cabinet.toml"
    path.write_bytes(b'\xef\xbb\xbf[cabinet]\nid = "c1"\n')
    with pytest.raises(ConfigError, match="byte order mark"):
        load_settings(path, env={})


# -- unknown keys at each level ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "bad_key"),
    [
        ((), "cabinett"),
        (("cabinet",), "sight"),
        (("mqtt",), "hots"),
        (("timing",), "poll_intervall_s"),
        (("buses", 0), "baud"),
        (("boards", 0), "adress"),
        (("boards", 1, "register_map"), "output"),
        (("boards", 1, "register_map", "pulse"), "units_ms"),
        (("boards", 2, "register_map"), "scal"),
        (("zones", 1, "probe"), "chanel"),
        (("compartments", 0), "sise"),
        (("compartments", 0, "door"), "polarity"),
        (("security",), "require_signed"),
        (("tenants", "grocery"), "pickup_window_s"),
    ],
)
def test_unknown_key_is_an_error_at_every_level(
    valid_data: dict[str, Any], path: tuple[str | int, ...], bad_key: str
) -> None:
    node: Any = valid_data
    for item in path:
        node = node.setdefault(item, {}) if isinstance(item, str) else node[item]
    node[bad_key] = 1
    issues = issues_of(valid_data)
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    key = f"{key}.{bad_key}" if key else bad_key
    assert key in issues
    assert issues[key].startswith("unknown key")


def test_unknown_key_suggests_the_close_one(valid_data: dict[str, Any]) -> None:
    valid_data["boards"][0]["adress"] = 4
    assert issues_of(valid_data) == {"boards[0].adress": "unknown key (did you mean 'address'?)"}


def test_lane_and_log_unknown_keys(valid_data: dict[str, Any]) -> None:
    valid_data["lane"] = {"inputs": {"vehicel": {"pin": 3}}}
    valid_data["log"] = {"lvl": "info"}
    issues = issues_of(valid_data)
    assert set(issues) == {"lane.inputs.vehicel", "log.lvl"}


# -- wrong types and values ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("mqtt", "port"), "eighty", "must be a whole number"),
        (("mqtt", "port"), 70000, "must be less than or equal to 65535"),
        (("mqtt", "protocol"), 4, "must be 5 or 311 (got 4)"),
        (("mqtt", "topic_root"), "lockers/#", "must not contain"),
        (("timing", "poll_interval_s"), True, "must be a number (got true)"),
        (("timing", "poll_interval_s"), "fast", "must be seconds or a duration"),
        (("timing", "poll_interval_s"), [0.1], "must be a valid number"),
        (("boards",), "x", "must be an array of tables (got 'x')"),
        (("cabinet",), 3, "must be a table (got 3)"),
        (("timing", "command_max_ttl_s"), 60, "less than or equal to 30"),
        (("cabinet", "site"), "Lyon 7", "must match"),
        (("cabinet", "timezone"), "Europe/Lyon", "unknown time zone"),
        (("redis", "url"), "http://x", "must start with redis://"),
        (("buses", 0, "parity"), "X", "must be 'N', 'E' or 'O'"),
        (("buses", 0, "baudrate"), 12345, "must be one of 1200"),
        (("boards", 0, "address"), 0, "greater than or equal to 1"),
        (("boards", 0, "address"), 256, "less than or equal to 255"),
        (("boards", 0, "profile"), "relay16", "must be 'waveshare_relay'"),
        (("compartments", 0, "id"), "a01", "must match"),
        (("compartments", 0, "size"), "XXL", "must be 'S', 'M', 'L' or 'XL'"),
        (("compartments", 0, "lock", "channel"), -1, "greater than or equal to 0"),
        (("zones", 0, "kind"), "cold", "must be 'ambient', 'chilled' or 'frozen'"),
        (("log", "format"), "xml", "must be 'json' or 'text'"),
    ],
)
def test_wrong_value_is_named(
    valid_data: dict[str, Any], path: tuple[str | int, ...], value: object, expected: str
) -> None:
    node: Any = valid_data
    for item in path[:-1]:
        node = node.setdefault(item, {}) if isinstance(item, str) else node[item]
    node[path[-1]] = value
    issues = issues_of(valid_data)
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    assert key in issues, issues
    assert expected in issues[key]


def test_missing_required_key(valid_data: dict[str, Any]) -> None:
    del valid_data["cabinet"]["site"]
    del valid_data["compartments"][1]["lock"]
    del valid_data["boards"][0]["profile"]
    assert issues_of(valid_data) == {
        "cabinet.site": "missing (required)",
        "compartments[1].lock": "missing (required)",
        "boards[0].profile": "missing (required)",
    }


def test_missing_cabinet_section() -> None:
    assert issues_of({}) == {
        "cabinet": "missing (required)",
        "security.dispatch_public_keys": (
            "missing: require_signed_commands = true needs at least one key"
        ),
    }


def test_bad_pool_name_is_named(valid_data: dict[str, Any]) -> None:
    valid_data["tenants"]["Bad Pool"] = {}
    assert issues_of(valid_data) == {
        "tenants.Bad Pool": "key name must match ^[a-z0-9][a-z0-9_-]{0,31}$ (got 'Bad Pool')"
    }


def test_a_password_is_never_echoed(valid_data: dict[str, Any]) -> None:
    valid_data["mqtt"]["password"] = 12345678
    issues = issues_of(valid_data)
    assert "12345678" not in issues["mqtt.password"]


def test_password_without_username(valid_data: dict[str, Any]) -> None:
    del valid_data["mqtt"]["username"]
    assert issues_of(valid_data) == {"mqtt.password": "set, but username is not"}


def test_rtu_bus_needs_a_port_and_refuses_tcp_keys(valid_data: dict[str, Any]) -> None:
    del valid_data["buses"][0]["port"]
    assert issues_of(valid_data) == {"buses[0].port": "missing (required for kind = 'rtu')"}
    valid_data["buses"][0] = {"name": "gw", "kind": "tcp", "host": "10.0.0.2", "baudrate": 19200}
    assert issues_of(valid_data)["buses[0].baudrate"] == "not used by kind = 'tcp'"


def test_cold_zone_needs_range_and_probe(valid_data: dict[str, Any]) -> None:
    del valid_data["zones"][1]["probe"]
    assert issues_of(valid_data) == {"zones[1].probe": "missing (required for a chilled zone)"}
    valid_data["zones"][1]["probe"] = {"board": "probes", "channel": 0}
    valid_data["zones"][1]["min_c"] = 5.0
    assert issues_of(valid_data) == {"zones[1].max_c": "must be > min_c (5.0)"}


def test_register_pulse_needs_its_address(valid_data: dict[str, Any]) -> None:
    del valid_data["boards"][1]["register_map"]["pulse"]["address"]
    assert issues_of(valid_data) == {
        "boards[1].register_map.pulse.address": "missing (required for kind = 'register')"
    }


def test_signed_commands_need_a_key(valid_data: dict[str, Any]) -> None:
    valid_data["security"]["dispatch_public_keys"] = {}
    assert "security.dispatch_public_keys" in issues_of(valid_data)
    valid_data["security"]["require_signed_commands"] = False
    parse_settings(valid_data)


def test_dispatch_key_must_be_a_key(valid_data: dict[str, Any], tmp_path: Path) -> None:
    not_pem = tmp_path / "k.pem"
    not_pem.write_text("hello")
    valid_data["security"]["dispatch_public_keys"] = {"d1": str(not_pem), "d2": "nope/none.pem"}
    issues = issues_of(valid_data)
    assert "not a PEM Ed25519 public key" in issues["security.dispatch_public_keys.d1"]
    assert "cannot read" in issues["security.dispatch_public_keys.d2"]


def test_tls_files_are_checked_only_when_set(valid_data: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    valid_data["mqtt"]["tls"] = {"ca_file": str(tmp_path / "ca.pem")}
    parse_settings(valid_data)
    valid_data["mqtt"]["tls"] = {"ca_file": str(tmp_path / "missing.pem")}
    assert "file not found" in issues_of(valid_data)["mqtt.tls.ca_file"]
    parse_settings(valid_data, check_files=False)
    valid_data["mqtt"]["tls"] = {"cert_file": str(tmp_path / "ca.pem")}
    assert "set both or neither" in issues_of(valid_data)["mqtt.tls"]


def test_relative_tls_path_is_relative_to_the_config_file(
    write_config: Callable[[str], Path],
) -> None:
    path = write_config(VALID_TOML + '\n[mqtt.tls]\nca_file = "tls/ca.pem"\n')
    (path.parent / "tls").mkdir()
    (path.parent / "tls" / "ca.pem").write_text("x")
    settings = load_settings(path, env={})
    assert settings.mqtt.tls is not None
    assert settings.mqtt.tls.ca_file == path.parent / "tls" / "ca.pem"


# -- cross-section checks ------------------------------------------------------------------


def test_board_on_unknown_bus(valid_data: dict[str, Any]) -> None:
    valid_data["boards"][1]["bus"] = "rs485-9"
    assert issues_of(valid_data) == {
        "boards[1].bus": "unknown bus 'rs485-9' (did you mean 'rs485-0'?)"
    }


def test_compartment_names_unknown_board_zone_and_pool(valid_data: dict[str, Any]) -> None:
    comp = valid_data["compartments"][2]
    comp["lock"]["board"] = "locks-z"
    comp["zone"] = "frozen"
    comp["pool"] = "shop"
    comp["occupancy"] = {"board": "nowhere", "channel": 0, "active": "high"}
    issues = issues_of(valid_data)
    assert issues["compartments[2].lock.board"].startswith("unknown board 'locks-z'")
    assert issues["compartments[2].zone"].startswith("unknown zone 'frozen'")
    assert issues["compartments[2].pool"].startswith("unknown pool 'shop'")
    assert issues["compartments[2].occupancy.board"].startswith("unknown board 'nowhere'")


def test_channel_outside_the_board(valid_data: dict[str, Any]) -> None:
    valid_data["compartments"][0]["lock"]["channel"] = 16
    valid_data["compartments"][0]["occupancy"]["channel"] = 8
    issues = issues_of(valid_data)
    assert issues["compartments[0].lock.channel"] == "locks-a has outputs 0..15 (got 16)"
    assert issues["compartments[0].occupancy.channel"] == "io-b has inputs 0..7 (got 8)"


def test_lock_on_a_board_without_outputs(valid_data: dict[str, Any]) -> None:
    valid_data["compartments"][2]["lock"] = {"board": "probes", "channel": 0}
    assert issues_of(valid_data) == {"compartments[2].lock.board": "probes has no outputs"}


def test_same_lock_output_used_twice(valid_data: dict[str, Any]) -> None:
    valid_data["compartments"][2]["lock"] = {"board": "locks-a", "channel": 0}
    assert issues_of(valid_data) == {
        "compartments[2].lock": "locks-a channel 0 already used by compartments[0] (A01)"
    }


def test_same_input_used_by_two_compartments(valid_data: dict[str, Any]) -> None:
    valid_data["compartments"][1]["door"] = {"board": "locks-a", "channel": 0, "active": "high"}
    assert issues_of(valid_data) == {
        "compartments[1].door": "locks-a input 0 already used by compartments[0] (A01) door"
    }


def test_one_compartment_may_share_an_input_between_door_and_latch(
    valid_data: dict[str, Any],
) -> None:
    valid_data["compartments"][0]["latch"]["channel"] = 0
    parse_settings(valid_data)


@pytest.mark.parametrize(
    ("section", "attr", "value"),
    [("buses", "name", "rs485-0"), ("boards", "name", "locks-a"), ("zones", "name", "ambient")],
)
def test_duplicate_names(valid_data: dict[str, Any], section: str, attr: str, value: str) -> None:
    valid_data[section].append({**valid_data[section][0], attr: value})
    if section == "boards":
        valid_data[section][-1]["address"] = 99
    issues = issues_of(valid_data)
    index = len(valid_data[section]) - 1
    assert issues[f"{section}[{index}].{attr}"] == f"{value!r} already used by {section}[0]"


def test_duplicate_compartment_id(valid_data: dict[str, Any]) -> None:
    valid_data["compartments"][2]["id"] = "A01"
    assert issues_of(valid_data) == {"compartments[2].id": "'A01' already used by compartments[0]"}


def test_two_boards_at_one_address_on_one_bus(valid_data: dict[str, Any]) -> None:
    valid_data["boards"][1]["address"] = 1
    assert issues_of(valid_data) == {
        "boards[1].address": "address 1 on rs485-0 already used by boards[0] (locks-a)"
    }


def test_same_address_on_two_buses_is_fine(valid_data: dict[str, Any]) -> None:
    valid_data["buses"].append({"name": "rs485-1", "port": "/dev/ttyLOCKER1"})
    valid_data["boards"][1]["bus"] = "rs485-1"
    valid_data["boards"][1]["address"] = 1
    parse_settings(valid_data)


def test_probe_must_be_a_temperature_probe_board(valid_data: dict[str, Any]) -> None:
    valid_data["zones"][1]["probe"] = {"board": "locks-a", "channel": 0}
    assert issues_of(valid_data) == {
        "zones[1].probe.board": "locks-a is a waveshare_relay board, not a temperature_probe"
    }
    valid_data["zones"][1]["probe"] = {"board": "probes", "channel": 3}
    assert issues_of(valid_data) == {"zones[1].probe.channel": "probes has channels 0..2 (got 3)"}


def test_pulse_caps(valid_data: dict[str, Any]) -> None:
    valid_data["timing"]["max_pulse_s"] = 12.0
    assert "less than or equal to 10" in issues_of(valid_data)["timing.max_pulse_s"]
    valid_data["timing"]["max_pulse_s"] = 1.0
    valid_data["timing"]["pulse_s"] = 1.5
    assert issues_of(valid_data) == {"timing.pulse_s": "must be <= max_pulse_s (1.0)"}
    valid_data["timing"] = {"pulse_s": 0.7}
    valid_data["boards"][0]["max_pulse_s"] = 11
    assert "less than or equal to 10" in issues_of(valid_data)["boards[0].max_pulse_s"]
    valid_data["boards"][0]["max_pulse_s"] = 0.5
    assert issues_of(valid_data) == {"boards[0].max_pulse_s": "must be >= timing.pulse_s (0.7)"}


def test_zone_may_only_shorten_ajar_delay(valid_data: dict[str, Any]) -> None:
    valid_data["zones"][1]["ajar_after_s"] = "5m"
    assert issues_of(valid_data)["zones[1].ajar_after_s"].startswith(
        "must be <= timing.ajar_after_s (120.0)"
    )


def test_lane_pin_used_twice(valid_data: dict[str, Any]) -> None:
    valid_data["lane"] = {
        "backend": "gpiod",
        "inputs": {"vehicle": {"pin": 17}},
        "outputs": {"buzzer": {"pin": 17}},
    }
    assert issues_of(valid_data) == {
        "lane.outputs.buzzer": "pin 17 already used by lane.inputs.vehicle"
    }


def test_tenant_expiry_must_be_a_positive_duration(valid_data: dict[str, Any]) -> None:
    valid_data["tenants"]["parcel"]["expiry_s"] = 0
    assert "tenants.parcel.expiry_s" in issues_of(valid_data)


def test_all_cross_issues_are_reported_together_with_lines(
    write_config: Callable[[str], Path],
) -> None:
    text = VALID_TOML.replace('bus = "rs485-0"\naddress = 3', 'bus = "rs485-5"\naddress = 3')
    text = text.replace(
        'lock = { board = "io-b", channel = 0 }', 'lock = { board = "locks-a", channel = 1 }'
    )
    error = file_error(write_config, text)
    assert error.keys == ("boards[1].bus", "compartments[2].lock")
    lines = text.splitlines()
    assert error.issues[0].line == lines.index('bus = "rs485-5"') + 1
    assert error.issues[1].line == len(lines) - lines[::-1].index(
        'lock = { board = "locks-a", channel = 1 }'
    )


def test_direct_struct_validation_still_runs_cross_checks(valid_data: dict[str, Any]) -> None:
    from controller.settings import Settings
    from controller.settings.validate import convert

    valid_data["boards"][1]["bus"] = "nowhere"
    with pytest.raises(ConfigError, match=r"boards\[1\].bus: unknown bus"):
        convert(Settings, valid_data)


# 32 bytes that are no usable key: the identity point and a point of order 8 (small
# order: a lax check accepts forgeries under them), and bytes off the curve.
UNUSABLE_KEYS = {
    "identity": bytes([1]) + bytes(31),
    "order 8": bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
    "off the curve": bytes(range(32)),
}


@pytest.mark.parametrize("name", sorted(UNUSABLE_KEYS))
def test_a_key_of_small_order_or_off_the_curve_is_refused(
        name: str, tmp_path: Path, valid_data: dict[str, Any]) -> None:
    raw = UNUSABLE_KEYS[name]
    pem = tmp_path / "bad.pem"
    pem.write_text("-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(
        bytes.fromhex("302a300506032b6570032100") + raw).decode() + "\n-----END PUBLIC KEY-----\n")
    for ref in (base64.b64encode(raw).decode(), str(pem)):
        valid_data["security"]["dispatch_public_keys"] = {"d1": ref}
        issues = issues_of(valid_data)
        assert list(issues) == ["security.dispatch_public_keys.d1"]
        assert "not a usable Ed25519 public key" in issues["security.dispatch_public_keys.d1"]


# -- what an outside fuzzer of the checker found -----------------------------------------------


def test_an_integer_of_thousands_of_digits_is_an_issue_not_a_traceback(
    tmp_path: Path, valid_path: Path,
) -> None:
    huge = "1" + "0" * 4300
    path = tmp_path / "huge.toml"
    path.write_text(valid_path.read_text() + f"\n[log]\nlevel = \"info\"\nx = {huge}\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(path, env={})
    with pytest.raises(ConfigError, match=r"mqtt\.port"):
        load_settings(valid_path, env={}, overrides={"mqtt.port": huge})
    # A text key takes the digits as text (or refuses them by length): no traceback.
    with contextlib.suppress(ConfigError):
        load_settings(valid_path, env={"LOCKER_MQTT__USERNAME": huge})


def test_a_file_name_too_long_is_an_issue_not_a_traceback(valid_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.tls\.ca_file.*cannot read .*too long"):
        load_settings(valid_path, env={}, overrides={"mqtt.tls.ca_file": "x" * 300})


@pytest.mark.parametrize("value", ["5.0", "311.0", "true"])
def test_a_choice_of_numbers_takes_whole_numbers_only(valid_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.protocol"):
        load_settings(valid_path, env={}, overrides={"mqtt.protocol": value})


@pytest.mark.parametrize("value", ['"\u0661\u0662s"', '"\uff11\uff12s"', '"\u0661\u0662"'])
def test_a_duration_is_written_in_ascii_digits(valid_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"timing\.pulse_gap_s"):
        load_settings(valid_path, env={}, overrides={"timing.pulse_gap_s": value})


def test_a_misspelt_profile_does_not_hide_the_boards_other_keys(
    valid_data: dict[str, Any],
) -> None:
    board = valid_data["boards"][0]
    board["profle"] = board.pop("profile")
    board["adress"] = board.pop("address")
    assert issues_of(valid_data) == {
        "boards[0].profile": "missing (required)",
        "boards[0].profle": "unknown key (did you mean 'profile'?)",
        "boards[0].adress": "unknown key (did you mean 'address'?)",
    }
    board["profile"] = "waveshare"
    del board["profle"]
    issues = issues_of(valid_data)
    assert issues["boards[0].profile"].startswith("must be 'waveshare_relay' or")
    assert issues["boards[0].adress"] == "unknown key (did you mean 'address'?)"


@pytest.mark.parametrize("value", ['""', '"."', '"keys/.."'])
def test_a_code_key_path_that_names_no_file_is_refused(valid_path: Path, value: str) -> None:
    """An empty path read as the config's own directory: the start then failed on it."""
    with pytest.raises(ConfigError, match=r"security\.code_key_file: must name the key's file"):
        load_settings(valid_path, env={}, overrides={"security.code_key_file": value})


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("buses[0].baudrate", "buses is an array: set it whole"),
        ("compartments[1].door.active", "compartments is an array: set it whole"),
        ("mqtt[0].port", "mqtt takes no index"),
    ],
)
def test_an_indexed_key_is_told_to_set_the_array_whole(
    valid_path: Path, key: str, message: str
) -> None:
    """It suggested ``buses.baudrate`` before, a key that is refused in turn."""
    with pytest.raises(ConfigError) as caught:
        load_settings(valid_path, env={}, overrides={key: "1"})
    (issue,) = caught.value.issues
    assert message in issue.message
    assert "did you mean" not in issue.message
