"""The fleet's cabinet configs load as the daemon loads them, and its report adds up."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.lab.fleet import _percentile, cabinet_ids, write_configs
from controller.settings import load_settings


def test_each_cabinet_gets_a_valid_config_of_its_own_without_lane_io(tmp_path: Path) -> None:
    cabinets = cabinet_ids(3)
    assert cabinets == ["cab-0001", "cab-0002", "cab-0003"]
    paths = write_configs(tmp_path, cabinets, mqtt_port=1884, redis_port=6390,
                          public_key_b64="MCowBQYDK2VwAyEA" + "A" * 43 + "=",
                          poll_s=1.0, protocol=311)
    assert len({p.parent for p in paths.values()}) == 3  # a code key each, beside its file
    for cabinet, path in paths.items():
        s = load_settings(path, env={}, check_files=False)
        assert (s.cabinet.site, s.cabinet.id) == ("fleet", cabinet)
        assert (s.mqtt.port, s.mqtt.protocol) == (1884, 311)
        assert s.redis.url == "redis://127.0.0.1:6390/0"
        assert s.timing.poll_interval_s == 1.0
        assert s.security.require_signed_commands
        assert s.lane.backend == "mock"
        assert s.lane.scanner is None


def test_percentile() -> None:
    assert _percentile([], 0.5) is None
    values = [float(i) for i in range(1, 101)]
    assert _percentile(values, 0.5) == 50.0 or _percentile(values, 0.5) == 51.0
    assert _percentile(values, 0.99) == 99.0
    assert _percentile([3.0], 0.99) == 3.0


def test_locker_sim_fleet_says_clearly_when_the_controller_is_missing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from simulator.cli import _fleet

    assert _fleet(["--cabinets", "1"], module="controller_not_installed.fleet") == 2
    assert "not installed" in capsys.readouterr().err
