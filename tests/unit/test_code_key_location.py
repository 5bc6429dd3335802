"""Where the daemon keeps the cabinet's code key when the config does not say: in the
service's state directory under systemd (the config directory is read-only there), else
beside the config file."""

from __future__ import annotations

from pathlib import Path

from controller.daemon.startup import default_code_key_file


def test_under_systemd_the_key_goes_to_the_state_directory() -> None:
    got = default_code_key_file(Path("/etc/locker/cabinet.toml"),
                                {"STATE_DIRECTORY": "/var/lib/locker:/var/lib/other"})
    assert got == Path("/var/lib/locker/code.key")


def test_elsewhere_the_key_goes_beside_the_config() -> None:
    assert default_code_key_file(Path("/tmp/cab/cabinet.toml"), {}) == Path(
        "/tmp/cab/code.key")
    assert default_code_key_file(None, {}) is None


def test_the_shipped_unit_gives_the_daemon_a_state_directory() -> None:
    unit = (Path(__file__).resolve().parents[2] / "deploy" / "systemd"
            / "locker-controller.service").read_text()
    assert "StateDirectory=locker" in unit
