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
