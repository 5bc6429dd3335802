"""``lockerctl bus scan | set-address`` on the simulated RS-485 line (a real pty, the
production Modbus driver), with no daemon on the line."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from controller.lab.rig import LaneRig
from controller.tools.lockerctl import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaneRig]:
    rig = LaneRig(tmp_path_factory.mktemp("bus"), redis="memory", emulate_timing=False)
    try:
        rig.start(daemon=False)
        yield rig
    finally:
        rig.close()


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "240")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def rows(out: str) -> dict[int, str]:
    return {int(a): kind for a, kind in
            re.findall(r"│ (\d+) +│ (waveshare|other|garbled|silent) ", out)}


def test_scan_finds_the_configured_boards(line: LaneRig,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "bus", "scan", "--config", str(line.config_path),
                         "--bus", "rs485-0", "--from", "1", "--to", "12")
    assert code == 0, err + out
    assert rows(out) == {1: "waveshare", 2: "waveshare", 3: "other", 10: "other"}
    assert re.search(r"│ 1 +│ waveshare +│ V1\.00 +│ locks-a \(waveshare_relay\)", out)
    assert "4 unit(s) answered, 0 problem(s)" in out


def test_scan_json(line: LaneRig, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "bus", "scan", "--config", str(line.config_path),
                         "--bus", "rs485-0", "--from", "1", "--to", "3", "--json")
    assert code == 0, err + out
    data = json.loads(out)
    assert {u["address"]: u["answer"] for u in data["units"]} == {
        1: "waveshare", 2: "waveshare", 3: "other"}
    assert data["units"][0]["board"] == "locks-a"
    assert data["problems"] == 0


def test_scan_reports_a_silent_board_and_two_boards_at_one_address(
        line: LaneRig, capsys: pytest.CaptureFixture[str]) -> None:
    line.control.call("fault_set", kind="silent", board="locks-b")
    line.control.call("fault_set", kind="duplicate_address", board="locks-a")
    code, out, _ = run(capsys, "bus", "scan", "--config", str(line.config_path),
                       "--bus", "rs485-0", "--to", "3")
    assert code == 1
    assert rows(out) == {1: "garbled", 2: "silent", 3: "other"}
    assert "two boards at this address?" in out
    assert "configured but did not answer" in out


def test_set_address_moves_a_board_and_the_scan_sees_it(
        line: LaneRig, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(line.config_path)
    code, out, err = run(capsys, "bus", "set-address", "--config", config, "--bus", "rs485-0",
                         "--from", "2", "--to", "20")
    assert code == 0, err + out
    assert "board 2 -> 20: verified" in out
    code, out, _ = run(capsys, "bus", "scan", "--config", config, "--bus", "rs485-0",
                       "--to", "20")
    assert code == 1  # locks-b is no longer where the configuration says
    found = rows(out)
    assert found[20] == "waveshare"
    assert found[2] == "silent"
    assert "not in the configuration" in out


def test_set_address_broadcast_needs_the_only_board_flag(
        line: LaneRig, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "bus", "set-address", "--config", str(line.config_path),
                       "--bus", "rs485-0", "--from", "0", "--to", "5")
    assert code == 2
    assert "--only-board-on-line" in err
    assert err.count("\n") == 1


def test_set_address_of_a_missing_board(line: LaneRig,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "bus", "set-address", "--config", str(line.config_path),
                       "--bus", "rs485-0", "--from", "7", "--to", "8")
    assert code == 3
    assert err.startswith("lockerctl bus set-address: no board answered at address 8")


def test_unknown_bus_and_missing_port_are_one_line_errors(
        line: LaneRig, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "bus", "scan", "--config", str(line.config_path),
                       "--bus", "rs485-9")
    assert code == 2
    assert err == ("lockerctl bus scan: no bus 'rs485-9' in the configuration "
                   "(buses: rs485-0)\n")
    text = line.config_path.read_text().replace(str(line.workdir / "ttyLOCKER0"),
                                                "/nonexistent/ttyNOPE")
    moved = line.workdir / "moved.toml"
    moved.write_text(text)
    code, _, err = run(capsys, "bus", "scan", "--config", str(moved), "--bus", "rs485-0")
    assert code == 3
    assert err.startswith("lockerctl bus scan: bus rs485-0: cannot open the line")
    assert err.count("\n") == 1
