"""``locker-controller --check`` (the same checks run at every start) against the ways a
cabinet is attacked around the signature: a Modbus TCP bus on a shared network, a cabinet
TLS key others can read, plaintext MQTT in a production configuration; and, with
``lockerctl config check``, the files the start refuses: a store socket others can write, a
code key others can read or in a directory others can write."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from controller.security.codes import CodeKey

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
SIM = (ROOT / "deploy" / "sim-cabinet.toml").read_text()
KEY = base64.b64encode(Ed25519PrivateKey.generate().public_key().public_bytes(
    Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).decode()


def check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "cabinet.toml"
    config.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKER_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "controller.daemon", "--config", str(config),
                           "--check"], capture_output=True, text=True, timeout=60, env=env,
                          check=False, cwd=tmp_path)


def with_tcp_bus(host: str, extra: str = "") -> str:
    return SIM.replace('''[[buses]]
name = "rs485-0"''', f'''[[buses]]
name = "gateway"
kind = "tcp"
host = "{host}"
{extra}
[[buses]]
name = "rs485-0"''', 1)


def production(text: str) -> str:
    """The simulator's cabinet turned into a production one: signed commands, real GPIO."""
    keys = f'dispatch_public_keys = {{ d1 = "{KEY}" }}'
    text = text.replace("require_signed_commands = false",
                        f"require_signed_commands = true\n{keys}")
    return text.replace('backend = "simulator"\noptions = { port = 7420 }', 'backend = "gpiod"')


def test_the_simulator_config_passes(tmp_path: Path) -> None:
    result = check(tmp_path, SIM)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("host", ["10.0.0.5", "gateway.lan", "192.168.1.20"])
def test_a_modbus_tcp_bus_on_a_network_is_refused(tmp_path: Path, host: str) -> None:
    result = check(tmp_path, with_tcp_bus(host))
    assert result.returncode == 2
    assert "buses[0].host" in result.stderr
    assert "no authentication" in result.stderr


@pytest.mark.parametrize(("host", "extra"), [("127.0.0.1", ""), ("localhost", "")])
def test_a_modbus_tcp_bus_on_loopback_passes(tmp_path: Path, host: str, extra: str) -> None:
    result = check(tmp_path, with_tcp_bus(host, extra))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("interface", ["ethnothere9", "lo"])
def test_an_isolated_link_this_machine_does_not_have_is_refused(
    tmp_path: Path, interface: str,
) -> None:
    # No such interface, or one the gateway's address is not on.
    result = check(tmp_path, with_tcp_bus("10.0.0.5", f'isolated_interface = "{interface}"'))
    assert result.returncode == 2
    assert "buses[0].isolated_interface" in result.stderr
    assert "buses[0].host" not in result.stderr
    # A gateway off loopback is a real cabinet: plaintext and unsigned are refused too.
    assert "mqtt.tls: missing: a production cabinet" in result.stderr
    assert "security.require_signed_commands" in result.stderr


def test_a_cabinet_key_others_can_read_is_refused(tmp_path: Path) -> None:
    for name in ("ca.crt", "cabinet.crt", "cabinet.key"):
        (tmp_path / name).write_text("-----BEGIN X-----\n-----END X-----\n")
    key = tmp_path / "cabinet.key"
    text = SIM.replace("[redis]", f'''[mqtt.tls]
ca_file = "{tmp_path / 'ca.crt'}"
cert_file = "{tmp_path / 'cabinet.crt'}"
key_file = "{key}"

[redis]''', 1)
    key.chmod(0o644)
    result = check(tmp_path, text)
    assert result.returncode == 2
    assert "mqtt.tls.key_file" in result.stderr
    assert "accessible by every local user" in result.stderr
    key.chmod(0o600)
    assert check(tmp_path, text).returncode == 0


def test_plaintext_mqtt_is_refused_in_a_production_config_only(tmp_path: Path) -> None:
    result = check(tmp_path, production(SIM))
    assert result.returncode == 2
    assert "mqtt.tls: missing: a production cabinet" in result.stderr
    # The same config on the simulator's lane is a lab rig: plaintext is allowed there.
    lab = production(SIM).replace('backend = "gpiod"',
                                  'backend = "simulator"\noptions = { port = 7420 }')
    assert check(tmp_path, lab).returncode == 0


# -- --check refuses what the start refuses on this machine's files ---------------------


BIN = Path(sys.executable).parent


def both_checks(tmp_path: Path, text: str) -> list[subprocess.CompletedProcess[str]]:
    """``locker-controller --check`` and ``lockerctl config check`` (the console scripts)
    on ``text``."""
    config = tmp_path / "cabinet.toml"
    config.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCKER_", "STATE_DIR"))}
    env["PYTHONPATH"] = str(ROOT)
    return [subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env,
                           check=False, cwd=tmp_path)
            for argv in ([str(BIN / "locker-controller"), "--config", str(config), "--check"],
                         [str(BIN / "lockerctl"), "config", "check", str(config)])]


def on_store(text: str, url: str, code_key: Path | None = None) -> str:
    text = text.replace('url = "memory://"', f'url = "{url}"', 1)
    if code_key is not None:
        text = text.replace("[security]", f'[security]\ncode_key_file = "{code_key}"', 1)
    return text


@pytest.fixture
def private(tmp_path: Path) -> Path:
    directory = tmp_path / "private"
    directory.mkdir(mode=0o700)
    return directory


def listening(path: Path, mode: int) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    path.chmod(mode)
    return server


def test_check_refuses_a_store_socket_every_user_can_write(tmp_path: Path,
                                                            private: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    key = private / "code.key"
    with listening(shared / "redis.sock", 0o777):
        for result in both_checks(tmp_path, on_store(SIM, f"unix://{shared}/redis.sock?db=0",
                                                     key)):
            assert result.returncode == 2, (result.args, result.stdout, result.stderr)
            assert "redis.url" in result.stderr
            assert "writable by every local user" in result.stderr
    # (control) the same store on a private socket passes both.
    with listening(private / "redis.sock", 0o770):
        for result in both_checks(tmp_path, on_store(SIM, f"unix://{private}/redis.sock?db=0",
                                                     key)):
            assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    assert not key.exists()  # a check makes no key


def test_check_refuses_a_code_key_others_can_read(tmp_path: Path, private: Path) -> None:
    key = private / "code.key"
    key.write_text(CodeKey.generate(scrypt_n=2**14).to_json())
    key.chmod(0o644)
    for result in both_checks(tmp_path, on_store(SIM, "memory://", key)):
        assert result.returncode == 2, (result.args, result.stdout, result.stderr)
        assert "security.code_key_file" in result.stderr
        assert "other users may read the code key" in result.stderr
    key.chmod(0o600)
    for result in both_checks(tmp_path, on_store(SIM, "memory://", key)):
        assert result.returncode == 0, (result.args, result.stdout, result.stderr)


def test_check_refuses_a_code_key_directory_every_user_can_write(tmp_path: Path) -> None:
    # The key is not made yet (the first start makes it): its directory is checked.
    shared = tmp_path / "state"
    shared.mkdir()
    shared.chmod(0o777)
    for result in both_checks(tmp_path, on_store(SIM, "memory://", shared / "code.key")):
        assert result.returncode == 2, (result.args, result.stdout, result.stderr)
        assert "security.code_key_file" in result.stderr
        assert "writable by every local user" in result.stderr
    assert not (shared / "code.key").exists()
