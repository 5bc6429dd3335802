"""``lockerctl status | watch | cmd | commission`` against a real lane: mosquitto,
redis-server, the simulator on a pty and the daemon, each a process (LaneRig)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.lab.rig import LaneRig
from controller.security.signing import save_private_key
from controller.tools.lockerctl import main
from tests.support.services import sigint_as_a_terminal

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def lane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaneRig]:
    rig = LaneRig(tmp_path_factory.mktemp("lane"), redis="server", emulate_timing=False)
    with rig:
        yield rig


@pytest.fixture(scope="module")
def key_file(lane: LaneRig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "demo.key"
    save_private_key(lane.key, path)
    return path


def remote(lane: LaneRig) -> list[str]:
    return ["--broker", f"127.0.0.1:{lane.mqtt_port}", "--site", lane.site,
            "--cabinet", lane.cabinet, "--timeout", "20"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "240")


def test_status_shows_the_cabinet_online(lane: LaneRig,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "status", *remote(lane), "--compartments")
    assert code == 0, err
    assert re.search(r"status\s+│ online boot \w{8}", out)
    assert "12 compartments" in out
    assert re.search(r"│ A01 +│ M +│ chilled", out)
    assert "alarms" in out


def test_status_of_an_unknown_cabinet_is_a_one_line_error(
        lane: LaneRig, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "status", "--broker", f"127.0.0.1:{lane.mqtt_port}",
                         "--site", lane.site, "--cabinet", "nobody", "--timeout", "1")
    assert code == 3
    assert err.count("\n") == 1
    assert err.startswith("lockerctl status: no status from cabinet nobody within 1 s")


def test_cmd_signed_commands_and_a_refusal(lane: LaneRig, key_file: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    signed = [*remote(lane), "--key", str(key_file), "--key-id", lane.key_id]
    code, out, err = run(capsys, "cmd", *signed, "assign", "--order", "r-1", "--size", "S",
                         "--zone", "ambient", "--pool", "parcel")
    assert code == 0, err
    match = re.search(r"reply <- c-\w+ ok compartment=(B\d\d) order_id=r-1", out)
    assert match, out
    compartment = match.group(1)

    code, out, err = run(capsys, "cmd", *signed, "block", "A06", "--reason", "hinge")
    assert code == 0, err
    assert "blocked=True" in out
    code, out, err = run(capsys, "cmd", *signed, "open", "Z99", "--reason", "staff")
    assert code == 1
    assert "REFUSED unknown_compartment" in out
    code, out, err = run(capsys, "cmd", *signed, "unblock", "A06", "--reason", "fixed")
    assert code == 0, err

    code, out, err = run(capsys, "cmd", *signed, "release", "--order", "r-1")
    assert code == 0, err
    assert f"compartment={compartment} released=True" in out

    # Without a key the cabinet refuses a door command: exit 1, the reply says why.
    code, out, err = run(capsys, "cmd", *remote(lane), "get-state")
    assert code == 0, err
    assert "compartments (state revision" in out
    code, out, err = run(capsys, "cmd", *remote(lane), "--key", str(key_file),
                         "--key-id", "not-trusted", "open", "A01")
    assert code == 1
    assert "REFUSED unknown_key" in out


def test_cmd_without_key_for_a_door_is_refused_locally(
        lane: LaneRig, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "cmd", *remote(lane), "open", "A01")
    assert code == 2
    assert err == "lockerctl cmd: --key FILE is required for this command (lockerctl keygen)\n"


def test_watch_prints_events_as_they_arrive(lane: LaneRig, key_file: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """``lockerctl watch`` in its own process, until Ctrl-C: the commands are sent once it
    shows the cabinet's status (it is subscribed), and it is stopped once it printed their
    events."""
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    argv = [sys.executable, "-m", "controller.tools.lockerctl", "watch", *remote(lane)]
    # Ctrl-C as a terminal delivers it, even when this suite runs as a background job
    # (which starts with SIGINT ignored, and a child inherits that).
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "240"}, start_new_session=True,
                            preexec_fn=sigint_as_a_terminal)
    lines: list[str] = []
    arrived = threading.Condition()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with arrived:
                lines.append(line)
                arrived.notify_all()

    def wait_printed(pattern: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        with arrived:
            while not re.search(pattern, "".join(lines)):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or proc.poll() is not None:
                    raise AssertionError(f"watch never printed {pattern!r}:\n{''.join(lines)}")
                arrived.wait(remaining)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    signed = [*remote(lane), "--key", str(key_file), "--key-id", lane.key_id]
    try:
        # Subscribed: the status shows (retained, or live when the cabinet came up later).
        wait_printed(r"status\s+(\(retained\) )?online")
        assert main(["cmd", *signed, "block", "B06", "--reason", "watch-test"]) == 0
        assert main(["cmd", *signed, "unblock", "B06", "--reason", "watch-test"]) == 0
        wait_printed(r"event\s+#\d+ compartment_blocked B06")
        wait_printed(r"event\s+#\d+ compartment_unblocked B06")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # Ctrl-C: how a technician ends it
        try:
            code = proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(5)
        reader.join(5)
    capsys.readouterr()
    assert code == 130, "".join(lines)  # interrupted, as after Ctrl-C
    assert "lockerctl watch: interrupted" in "".join(lines)


def test_commission_every_door_one_stuck(lane: LaneRig, key_file: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    lane.control.call("fault_set", kind="stuck_latch", compartment="A03")
    try:
        code, out, err = run(capsys, "commission", *remote(lane), "--key", str(key_file),
                             "--key-id", lane.key_id, "--auto-close-sim",
                             str(lane.control_port), "--open-timeout", "12")
    finally:
        lane.control.call("fault_clear")
    assert code == 1, err
    rows = dict(re.findall(r"│ ([AB]\d\d) +│ (PASS|FAIL|SKIPPED)", out))
    assert rows["A03"] == "FAIL"
    assert "open_not_detected" in out
    assert len(rows) == 12
    assert all(v == "PASS" for k, v in rows.items() if k != "A03"), rows
    assert "11 passed, 1 failed, 0 skipped" in out


def test_commission_selected_doors_pass(lane: LaneRig, key_file: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from controller.dispatch import CodeKeyPins

    pins = tmp_path / "pins.json"
    code, out, err = run(capsys, "commission", *remote(lane), "--key", str(key_file),
                         "--key-id", lane.key_id, "--auto-close-sim", str(lane.control_port),
                         "--compartments", "B04,A01", "--code-key-pins", str(pins),
                         "--code-key-id", lane.pinned_code_key().key_id)
    assert code == 0, err
    assert re.findall(r"│ ([AB]\d\d) +│ PASS", out) == ["A01", "B04"]
    assert "code key" in out
    assert CodeKeyPins(pins).get(lane.site, lane.cabinet) == lane.pinned_code_key()
    code, _, err = run(capsys, "commission", *remote(lane), "--key", str(key_file),
                       "--key-id", lane.key_id, "--compartments", "Z99")
    assert code == 2
    assert "no such compartment(s): Z99" in err


# -- --json: what scripts read ------------------------------------------------------------


def test_status_json(lane: LaneRig, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "status", *remote(lane), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["status"]["state"] == "online"
    assert len(data["state"]["compartments"]) == 12


def test_cmd_json_and_a_refusal_names_its_code_once(
        lane: LaneRig, key_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    signed = [*remote(lane), "--key", str(key_file), "--key-id", lane.key_id]
    code, out, err = run(capsys, "cmd", *signed, "--json", "open", "Z99", "--reason", "staff")
    assert code == 1, err
    data = json.loads(out)
    assert data["command"]["type"] == "open"
    assert data["signed"] is True
    error = data["reply"]["error"]
    assert error["code"] == "unknown_compartment"
    assert "unknown_compartment" not in error["message"]
    # The text form too: the code once, then the message.
    code, out, _ = run(capsys, "cmd", *signed, "open", "Z99", "--reason", "staff")
    assert code == 1
    assert out.count("unknown_compartment") == 1, out


def test_watch_json_one_object_per_message(lane: LaneRig,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "watch", *remote(lane), "--duration", "1", "--json")
    assert code == 0, err
    messages = [json.loads(line) for line in out.splitlines()]
    assert {"topic", "channel", "retained", "payload"} <= set(messages[0])
    status = [m for m in messages if m["channel"] == "status"]
    assert status
    assert status[0]["retained"] is True
    assert status[0]["payload"]["state"] == "online"


def test_commission_json(lane: LaneRig, key_file: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "commission", *remote(lane), "--key", str(key_file),
                         "--key-id", lane.key_id, "--auto-close-sim", str(lane.control_port),
                         "--compartments", "A02", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [r["compartment"] for r in data["results"]] == ["A02"]
    assert data["results"][0]["outcome"] == "pass"
    assert data["passed"] == 1
