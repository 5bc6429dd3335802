"""docs/simulator.md, "Run the daemon against the simulator" and "Codes at the lane", run
as written.

The ``doc-test`` code blocks of those sections are read from the document itself:
``setup`` commands run to completion, ``servers`` are started in order (each waited for),
``checks`` run to completion and must exit 0; then, against the same three processes,
``pin`` (``KEYID`` replaced by the key id the first command printed, as the reader is told
to) and ``lane``, each command waited for as a person would: after a ``scan``, until the
scan had its effect (a beep or a door opened). Only what would clash with other runs on
this machine is moved: the ports (broker, control channel, lane I/O) become free ones,
``/tmp/locker-keys`` and the simulator's ``/tmp/locker-sim`` links go under the test's
directory, and ``deploy/sim-cabinet.toml`` is a copy carrying those two changes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from controller.lab.rig import free_port, wait_for_port
from simulator.control import send_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "simulator.md"
SECTION = "## Run the daemon against the simulator"
LANE_SECTION = "## Codes at the lane"


def doc_blocks(heading: str = SECTION) -> dict[str, list[str]]:
    """The commands of each ``<!-- doc-test:NAME -->`` block of the section whose heading
    starts with ``heading`` (backslash continuations joined)."""
    text = DOC.read_text()
    start = text.index(heading)
    end = text.index("\n## ", start + len(heading))
    section = text[start:end]
    blocks = {}
    for name, body in re.findall(r"<!-- doc-test:(\w+) -->\n```sh\n(.*?)```", section, re.S):
        joined = re.sub(r"\\\n\s*", " ", body)
        blocks[name] = [line.strip() for line in joined.splitlines() if line.strip()]
    return blocks


def test_the_section_has_its_three_blocks() -> None:
    blocks = doc_blocks()
    assert set(blocks) == {"setup", "servers", "checks"}
    assert [c.split()[0] for c in blocks["servers"]] == [
        "mosquitto", "locker-sim", "locker-controller"]


def test_the_lane_section_has_its_two_blocks() -> None:
    blocks = doc_blocks(LANE_SECTION)
    assert set(blocks) == {"pin", "lane"}
    assert "KEYID" in blocks["pin"][1]
    assert [c.split()[4] for c in blocks["lane"] if c.startswith("locker-sim ctl")].count(
        "scan") == 3


def _lane_effects(control: int) -> tuple[int, int]:
    """(beeps so far, doors opened so far): what a scan shows at the lane."""
    lane = send_command(control, {"op": "lane"})["result"]
    truth = send_command(control, {"op": "truth", "kind": "door_opened"})["result"]
    return lane["buzzes"], len(truth["events"])


def _wait_for_change(control: int, before: tuple[int, int], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while _lane_effects(control) == before:
        assert time.monotonic() < deadline, "the scan had no effect at the lane"
        time.sleep(0.05)


def test_run_the_daemon_against_the_simulator_as_written(tmp_path: Path) -> None:
    blocks = doc_blocks()
    lane_blocks = doc_blocks(LANE_SECTION)
    broker, control, lane = free_port(), free_port(), free_port()
    keys, links = tmp_path / "keys", tmp_path / "links"
    config = tmp_path / "sim-cabinet.toml"
    config.write_text((ROOT / "deploy" / "sim-cabinet.toml").read_text()
                      .replace("/tmp/locker-sim/", f"{links}/")
                      .replace("port = 7420", f"port = {lane}"))
    assert f"port = {lane}" in config.read_text()

    def moved(command: str) -> list[str]:
        for old, new in (("18830", str(broker)), ("7410", str(control)),
                         ("/tmp/locker-keys", str(keys)),
                         ("deploy/sim-cabinet.toml", str(config))):
            command = command.replace(old, new)
        return shlex.split(command)

    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKER_")}
    # The project's console scripts (this environment's) before the system's programs.
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}:/usr/sbin"
    env.setdefault("PYTHONPATH", str(ROOT))

    def run(command: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(moved(command), capture_output=True, text=True, timeout=60,
                              check=False, env=env, cwd=ROOT)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    for command in blocks["setup"]:
        run(command)

    servers: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for command, port in zip(blocks["servers"], (broker, control, None), strict=True):
            log = open(tmp_path / f"server-{len(servers)}.log", "wb")  # noqa: SIM115
            logs.append(log)
            proc = subprocess.Popen(moved(command), stdout=log, stderr=subprocess.STDOUT,
                                    env=env, cwd=ROOT, start_new_session=True)
            servers.append(proc)
            if port is not None:
                wait_for_port(port, 15, proc)

        outputs = [run(command).stdout for command in blocks["checks"]]
        status, _, opened, truth, _ = outputs
        assert re.search(r"online boot \w{8}", status)
        assert "12 compartments" in status
        assert re.search(r"reply <- c-\w+ ok .*compartment=A01", opened), opened
        # The simulator's ground truth: the latch released and the held door opened.
        kinds = [(e["kind"], e["compartment"]) for e in json.loads(truth)["events"]]
        assert ("latch_released", "A01") in kinds, truth
        assert ("door_opened", "A01") in kinds, truth
        for proc in servers:
            assert proc.poll() is None, (tmp_path / "server-2.log").read_text()[-3000:]

        # "Codes at the lane": pin the code key, then the lane session, watched as the
        # section suggests (lockerctl watch started before step 5).
        shown = run(lane_blocks["pin"][0]).stdout
        key_id = re.search(r"key_id:\s+([0-9a-f]{16})", shown)
        assert key_id, shown
        run(lane_blocks["pin"][1].replace("KEYID", key_id.group(1)))
        watch = subprocess.Popen(
            moved("lockerctl watch --broker 127.0.0.1:18830 --site fr-lyon-07 "
                  "--cabinet cab-sim-01 --no-retained --json --duration 60"),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT,
            start_new_session=True)
        servers.append(watch)
        time.sleep(1.5)  # subscribed before the first command
        lane_out = []
        for command in lane_blocks["lane"]:
            time.sleep(1.0)  # a person's pace, as the section asks
            scanning = command.split()[4:5] == ["scan"]
            before = _lane_effects(control) if scanning else (0, 0)
            lane_out.append(run(command).stdout)
            if scanning:
                _wait_for_change(control, before)
        assert re.search(r"reply <- c-\w+ ok compartment=B03", lane_out[0]), lane_out[0]
        lane_state, truth_b03 = json.loads(lane_out[-2]), json.loads(lane_out[-1])
        assert (lane_state["scans"], lane_state["buzzes"]) == (3, 1), lane_state
        kinds = [e["kind"] for e in truth_b03["events"]]
        assert kinds.count("door_opened") == 2, kinds
        assert {"parcel_placed", "parcel_removed"} <= set(kinds), kinds
        # The daemon's side: the refusal, both openings from the scanner, the collection.
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while not any(e["kind"] == "compartment_collected" for e in events):
            assert time.monotonic() < deadline, events
            line = watch.stdout.readline() if watch.stdout is not None else ""
            assert line, events
            message = json.loads(line)
            if message["channel"] == "events":
                events.append(message["payload"])
        seen = {(e["kind"], e["data"].get("source"), e["data"].get("reason"),
                 e["data"].get("purpose")) for e in events}
        assert ("code_rejected", "scanner", "wrong_code", None) in seen, events
        assert ("code_accepted", "scanner", None, "deposit") in seen, events
        assert ("code_accepted", "scanner", None, "collect") in seen, events
        watch.terminate()
        watch.wait(10)
    finally:
        for proc in reversed(servers):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        for log in logs:
            log.close()
    # The daemon stopped cleanly (exit 0) on SIGTERM, as under systemd.
    assert servers[2].returncode == 0, (tmp_path / "server-2.log").read_text()[-3000:]
    assert not any(links.glob("tty*")), "the simulator left its links behind"
