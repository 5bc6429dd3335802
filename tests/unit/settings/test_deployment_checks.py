"""The deployment checks (``controller.settings.deployment``, run at every load): when a
configuration is a production one, a Modbus TCP bus on an isolated link that is not there,
and cabinet TLS keys that someone other than the daemon can read or replace."""

from __future__ import annotations

import ipaddress
import os
import pty
import pwd
import socket
from pathlib import Path
from typing import Any

import pytest

from controller.settings import ConfigError, parse_settings
from controller.settings.deployment import (
    DAEMON_USER,
    interface_networks,
    is_real_serial_device,
    key_file_issue,
    trusted_owners,
)

SERIAL = "/dev/ttyS0"
needs_serial = pytest.mark.skipif(not is_real_serial_device(SERIAL),
                                  reason=f"{SERIAL} is no serial device on this machine")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def _issues(data: dict[str, Any], base: Path | None = None) -> dict[str, str]:
    try:
        parse_settings(data, base_dir=base)
    except ConfigError as exc:
        return {i.key: i.message for i in exc.issues}
    return {}


def _on_port(data: dict[str, Any], port: str) -> dict[str, Any]:
    data["buses"][0]["port"] = port
    return data


# -- what is production ----------------------------------------------------------------


@pytest.mark.integration  # a pty, as the simulator's lines are
def test_a_config_on_a_pty_with_a_mock_lane_is_a_lab(valid_data: dict[str, Any]) -> None:
    parent, child = pty.openpty()
    try:
        assert _issues(_on_port(valid_data, os.ttyname(child))) == {}
    finally:
        os.close(parent)
        os.close(child)


def test_an_absent_device_does_not_make_production(valid_data: dict[str, Any]) -> None:
    # /dev/ttyLOCKER0 is not on this machine: a config checked away from the cabinet.
    assert _issues(valid_data) == {}


@needs_serial
def test_a_real_serial_line_makes_production_whatever_the_lane(
    valid_data: dict[str, Any], tmp_path: Path,
) -> None:
    # A udev-style link to a real serial device, the lane left on its mock backend.
    link = tmp_path / "ttyLOCKER0"
    link.symlink_to(SERIAL)
    issues = _issues(_on_port(valid_data, str(link)))
    assert "mqtt.tls" in issues
    assert "production cabinet" in issues["mqtt.tls"]
    valid_data["security"]["require_signed_commands"] = False
    issues = _issues(valid_data)
    assert "security.require_signed_commands" in issues
    assert "broker credentials alone" in issues["security.require_signed_commands"]


@needs_serial
def test_a_real_scanner_makes_production(valid_data: dict[str, Any]) -> None:
    valid_data["lane"] = {"backend": "simulator", "scanner": {"port": SERIAL}}
    assert "mqtt.tls" in _issues(valid_data)


def test_a_modbus_gateway_off_loopback_makes_production(valid_data: dict[str, Any]) -> None:
    valid_data["buses"].insert(0, {"name": "gw", "kind": "tcp", "host": "127.0.0.1"})
    assert "mqtt.tls" not in _issues(valid_data)
    valid_data["buses"][0]["host"] = "10.0.0.5"
    assert "mqtt.tls" in _issues(valid_data)


# -- isolated_interface ------------------------------------------------------------------


def _gateway(data: dict[str, Any], host: str, interface: str) -> dict[str, Any]:
    data["buses"].insert(0, {"name": "gw", "kind": "tcp", "host": host,
                             "isolated_interface": interface})
    return data


@pytest.mark.parametrize(("host", "interface", "says"), [
    ("10.0.0.5", "ethnothere0", "no network interface"),
    ("10.0.0.5", "lo", "is not on lo"),
    ("gateway.lan", "lo", "is a name"),
])
def test_an_isolated_link_that_is_not_there_is_refused(
    valid_data: dict[str, Any], host: str, interface: str, says: str,
) -> None:
    issues = _issues(_gateway(valid_data, host, interface))
    assert "buses[0].isolated_interface" in issues
    assert says in issues["buses[0].isolated_interface"]


def test_an_isolated_interface_without_an_address_is_refused(
    valid_data: dict[str, Any],
) -> None:
    # An interface that is there but has no address (a dummy or ifb, a link not configured
    # yet): no connected route sends the gateway's traffic out of it; the default route
    # would carry it over the shared network instead.
    for _, name in socket.if_nameindex():
        if not interface_networks(name):
            break
    else:
        pytest.skip("every interface of this machine has an address")
    issues = _issues(_gateway(valid_data, "8.8.8.8", name))
    message = issues["buses[0].isolated_interface"]
    assert f"{name!r} has no address" in message
    assert f"dev {name}" in message  # what to fix


def test_a_gateway_on_the_declared_interfaces_network_passes_that_check(
    valid_data: dict[str, Any],
) -> None:
    for _, name in socket.if_nameindex():
        nets = [n for n in interface_networks(name)
                if n.version == 4 and not n.is_loopback and n.num_addresses > 2]
        if nets:
            break
    else:
        pytest.skip("no interface with an IPv4 network on this machine")
    host = str(nets[0].network_address + 1)
    assert ipaddress.ip_address(host) in nets[0]
    issues = _issues(_gateway(valid_data, host, name))
    assert "buses[0].isolated_interface" not in issues
    assert "buses[0].host" not in issues


# -- the cabinet's TLS key ----------------------------------------------------------------


def _with_tls(data: dict[str, Any], tmp_path: Path) -> Path:
    for name in ("ca.crt", "cabinet.crt", "cabinet.key"):
        (tmp_path / name).write_text("-----BEGIN X-----\n-----END X-----\n")
    key = tmp_path / "cabinet.key"
    key.chmod(0o600)
    data["mqtt"]["tls"] = {"ca_file": "ca.crt", "cert_file": "cabinet.crt",
                           "key_file": "cabinet.key"}
    return key


@pytest.mark.parametrize("mode", [0o640, 0o620, 0o604, 0o644])
def test_a_tls_key_its_group_or_others_can_reach_is_refused(
    valid_data: dict[str, Any], tmp_path: Path, mode: int,
) -> None:
    key = _with_tls(valid_data, tmp_path)
    assert "mqtt.tls.key_file" not in _issues(valid_data, tmp_path)
    key.chmod(mode)
    issues = _issues(valid_data, tmp_path)
    assert "mqtt.tls.key_file" in issues
    assert "chmod 0600" in issues["mqtt.tls.key_file"]


@needs_root
def test_a_tls_key_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    # The daemon (uid 65534 here) may trust a key of its own or root's, never 4242's:
    # 4242 could read it, or put a key of its choosing in its place.
    key = tmp_path / "cabinet.key"
    key.write_text("-----BEGIN X-----\n-----END X-----\n")
    key.chmod(0o600)
    daemon = frozenset({0, 65534})
    for owner in (0, 65534):
        os.chown(key, owner, owner)
        assert key_file_issue(str(key), daemon) is None
    os.chown(key, 4242, 4242)
    issue = key_file_issue(str(key), daemon)
    assert issue is not None
    assert "owned by uid 4242" in issue


def test_who_may_own_the_keys() -> None:
    owners = trusted_owners()
    if os.geteuid() != 0:
        assert owners == {0, os.geteuid()}
        return
    # As root (an administrator's check): root and the daemon's account, when it exists.
    try:
        daemon = pwd.getpwnam(DAEMON_USER).pw_uid
    except KeyError:
        assert owners is None
    else:
        assert owners == {0, daemon}
