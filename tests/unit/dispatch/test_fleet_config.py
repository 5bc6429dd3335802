"""The fleet's cabinet configs load as the daemon loads them, and its report adds up."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from controller.lab.fleet import _percentile, cabinet_ids, write_configs
from controller.settings import load_settings


def test_each_cabinet_gets_a_valid_config_of_its_own_without_lane_io(tmp_path: Path) -> None:
    cabinets = cabinet_ids(3)
    assert cabinets == ["cab-0001", "cab-0002", "cab-0003"]
    paths = write_configs(tmp_path, cabinets, mqtt_port=1884, redis_port=6390,
                          public_key_b64=base64.b64encode(
                              bytes.fromhex("302a300506032b6570032100")
                              + bytes(SigningKey(bytes(32)).verify_key)).decode(),
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


# -- the command line: what it refuses, and a run that proves nothing ------------------------


@pytest.mark.parametrize("argv", [
    ["--cabinets", "0"], ["--cabinets", "-3"], ["--hosts", "0"], ["--rounds", "-1"],
    ["--think", "-5"], ["--spread", "nan"], ["--poll", "0"], ["--poll", "-1"],
    ["--broker-down", "-2"], ["--broker-down", "nan"], ["--broker-down", "inf"],
    ["--silent-boards", "-1"], ["--broker", "nohost"], ["--broker", "127.0.0.1:99999"],
    ["--silent-boards", "5", "--cabinets", "3"],
    ["--broker", "127.0.0.1:1883", "--broker-down", "2"],
])
def test_bad_options_are_refused_before_anything_starts(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from controller.lab.fleet import main

    with pytest.raises(SystemExit) as ended:
        main(["run", *argv])
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err
    assert "Traceback" not in err


def test_options_say_what_the_run_does() -> None:
    import argparse

    from controller.lab.fleet import _options, add_run_arguments

    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    mine = _options(parser.parse_args(["--cabinets", "1"]), parser)
    assert (mine.silent_boards, mine.broker_restart) == (1, True)
    theirs = _options(parser.parse_args(["--cabinets", "2", "--hosts", "5",
                                         "--broker", "10.0.0.9:1883"]), parser)
    assert theirs.broker_restart is False  # it cannot restart a broker it did not start
    assert theirs.hosts == 2


def test_a_run_that_sent_nothing_keeps_no_promise() -> None:
    from controller.lab.fleet import FleetReport

    summary = {"commands_sent": 0, "commands_answered": 0, "commands_unanswered": 0,
               "events_missing": 0, "events_unique": 0, "events_expected": 0}
    assert not FleetReport({}, summary, []).promises_kept
    summary.update(commands_sent=4, commands_answered=4, events_unique=9, events_expected=9)
    assert FleetReport({}, summary, []).promises_kept
