"""Every shipped config (deploy/*.toml) is valid: the example cabinet and the simulator's
demo cabinet load, and the only thing they may lack on a developer machine are the files
they point to (certificates, dispatch keys under /etc/locker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.settings import ConfigError, load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CONFIGS = sorted(DEPLOY.glob("*.toml"))


def test_there_is_an_example_config() -> None:
    assert DEPLOY / "cabinet.example.toml" in CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_loads(path: Path) -> None:
    settings = load_settings(path, env={}, check_files=False)
    assert settings.compartments, "a cabinet without compartments"
    for compartment in settings.compartments:
        settings.zone_of(compartment.id)
        settings.tenant(compartment.pool)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_lacks_nothing_but_installed_files(path: Path) -> None:
    try:
        load_settings(path, env={})
    except ConfigError as exc:
        for issue in exc.issues:
            assert "file not found" in issue.message or "cannot read" in issue.message, issue


def test_example_cabinet_shape() -> None:
    settings = load_settings(DEPLOY / "cabinet.example.toml", env={}, check_files=False)
    assert len(settings.compartments) == 24
    assert {z.kind for z in settings.zones} == {"ambient", "chilled", "frozen"}
    assert set(settings.tenants) == {"grocery", "parcel", "shop"}
    assert {b.profile for b in settings.boards} == {
        "waveshare_relay",
        "generic_io",
        "temperature_probe",
    }
    assert settings.lane.backend == "gpiod"
    assert settings.mqtt.tls is not None
    assert settings.mqtt.tls.cert_file is not None
    assert settings.security.require_signed_commands
    assert all(c.occupancy is not None for c in settings.compartments)


def test_the_store_url_names_the_cabinets_own_redis_socket() -> None:
    """Default and example both point at deploy/redis.conf's socket, never at a stock
    redis-server on 127.0.0.1:6379 (no fsync on every write there)."""
    import re

    from controller.settings import RedisConfig

    conf = (DEPLOY / "redis.conf").read_text()
    socket_path = re.search(r"^unixsocket (\S+)$", conf, re.MULTILINE)
    assert socket_path is not None
    assert re.search(r"^port 0$", conf, re.MULTILINE)
    expected = f"unix://{socket_path.group(1)}?db=0"
    assert RedisConfig().url == expected
    example = load_settings(DEPLOY / "cabinet.example.toml", env={}, check_files=False)
    # ... as the ACL user the installer creates, its password in the file it writes.
    assert example.redis.url == (f"{expected}&username=locker"
                                 "&password_file=/etc/locker/redis-password")
    install = (DEPLOY / "install.sh").read_text()
    assert "REDIS_PASS=/etc/locker/redis-password" in install
    acl = (DEPLOY / "redis-locker.acl").read_text()
    assert re.search(r"^user locker on #@PASSWORD_SHA256@ ", acl, re.MULTILINE)
    # The default user: on (the append-only file replays as it), behind a password nobody
    # has (the installer's random hash), so an unauthenticated client can run nothing.
    assert re.search(r"^user default on #@DEFAULT_SHA256@ ", acl, re.MULTILINE)
    assert "nopass" not in acl
    assert "@DEFAULT_SHA256@" in install


def test_example_key_and_certificate_names_agree_with_keygen_and_the_installer() -> None:
    import tomllib

    raw = tomllib.loads((DEPLOY / "cabinet.example.toml").read_text())
    # lockerctl keygen --key-id dispatch-1 writes dispatch-1.pub and prints this very line.
    assert raw["security"]["dispatch_public_keys"] == {"dispatch-1": "keys/dispatch-1.pub"}
    assert raw["mqtt"]["tls"] == {"ca_file": "tls/ca.crt", "cert_file": "tls/cabinet.crt",
                                  "key_file": "tls/cabinet.key"}
    installer = (DEPLOY / "install.sh").read_text()
    for name in ("tls/ca.crt", "tls/cabinet.crt", "tls/cabinet.key", "keys/dispatch-1.pub"):
        assert f"$ETC/{name}" in installer, name
