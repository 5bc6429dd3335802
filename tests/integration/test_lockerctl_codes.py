"""``lockerctl cmd assign --code``: the codes are sealed to the cabinet's code key pinned
at commissioning (``lockerctl code-key pin``, with the key id read on the cabinet) before
they leave the technician's machine, and they open the door at the lane."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.lab.rig import LaneRig
from controller.security.signing import save_private_key
from controller.tools.lockerctl import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def lane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaneRig]:
    rig = LaneRig(tmp_path_factory.mktemp("lane"), redis="server", emulate_timing=False)
    with rig:
        yield rig


def test_assign_with_codes_seals_them_and_they_open(
    lane: LaneRig, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    key_file = tmp_path / "dispatch.key"
    save_private_key(lane.key, key_file)
    remote = ["--broker", f"127.0.0.1:{lane.mqtt_port}", "--site", lane.site, "--cabinet",
              lane.cabinet, "--timeout", "20", "--code-key-pins", str(tmp_path / "pins.json")]
    assert main(["code-key", "pin", *remote, "--key-id", lane.pinned_code_key().key_id]) == 0
    signed = [*remote, "--key", str(key_file), "--key-id", lane.key_id]
    code = main(["cmd", *signed, "assign", "--order", "c-1", "--size", "S", "--zone",
                 "ambient", "--pool", "parcel", "--compartment", "B01",
                 "--code", "deposit=QRDEP-K7M2-X9TR-4PZ8", "--code", "collect=73049 18265"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "QRDEPK7M2X9TR4PZ8" not in out
    before = len(lane.control.call("truth", kind="pulse_received", limit=1000)["events"])
    lane.control.call("scan", code="QRDEPK7M2X9TR4PZ8")
    deadline = time.monotonic() + 10
    events = []
    while time.monotonic() < deadline:  # bounded: until the pulse or the deadline
        events = lane.control.call("truth", kind="pulse_received", limit=1000)["events"]
        if len(events) > before:
            break
        time.sleep(0.05)
    assert len(events) == before + 1

    code = main(["cmd", *signed, "assign", "--order", "c-2", "--size", "S", "--zone",
                 "ambient", "--pool", "parcel", "--code", "collect=123456"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--code collect: a code is 10-15 digits" in err
