"""docs/simulator.md, "Run the daemon against the simulator" and "Codes at the lane", run
as written.

The ``doc-test`` code blocks of those sections are read from the document itself:
``setup`` commands run to completion, ``servers`` are started in order (each waited for),
``checks`` run to completion and must exit 0; then, against the same three processes,
``pin`` (``KEYID`` replaced by the key id the first command printed, as the reader is told
to) and ``lane``, at a person's pace, each step waited for on what it is about (a
``scan`` until a beep or a door opened, a ``close`` until the lock's pulse is over, the
next ``scan`` until the compartment's cooldown has run). Only what would clash with other runs on
this machine is moved: the ports (broker, control channel, lane I/O) become free ones,
``/tmp/locker-keys`` and the simulator's ``/tmp/locker-sim`` links go under the test's
directory, and ``deploy/sim-cabinet.toml`` is a copy carrying those two changes.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest

from controller.lab.rig import free_port, wait_for_port
from controller.settings import load_settings
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


def _until(check: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # bounded by the deadline
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _outputs_off(control: int) -> bool:
    """Every output the boards switched on is off again (the lock pulses are over)."""
    def count(kind: str) -> int:
        return len(send_command(control, {"op": "truth", "kind": kind})["result"]["events"])

    return count("output_on") == count("output_off")


def _lines(stream: IO[str]) -> queue.Queue[str]:
    """The lines of ``stream``, read by a thread (so that a read can have a deadline)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:  # ends with the process
            lines.put(line)

    threading.Thread(target=pump, name="watch-lines", daemon=True).start()
    return lines


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

    servers: list[subprocess.Popen[Any]] = []
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
                  "--cabinet cab-sim-01 --json --duration 120"),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT,
            start_new_session=True)
        servers.append(watch)
        assert watch.stdout is not None
        watched = _lines(watch.stdout)
        # Subscribed once the cabinet's retained status arrives: before the first command.
        watched_lines = [watched.get(timeout=30)]
        # A person's pace, as the section asks, waited for on what it is about: a door is
        # shut once its lock's pulse is over, and a code is scanned once the compartment's
        # cooldown has run from the end of its last pulse (seen here, so at least that).
        cooldown_s = load_settings(config).timing.compartment_cooldown_s
        pulse_over_at: float | None = None
        lane_out = []
        for command in lane_blocks["lane"]:
            verb = command.split()[4] if command.startswith("locker-sim ctl") else ""
            if verb == "close":
                _until(lambda: _outputs_off(control), "the lock's pulse never ended")
                pulse_over_at = time.monotonic()
            if verb == "scan" and pulse_over_at is not None:
                ready_at = pulse_over_at + cooldown_s + 0.2
                _until(lambda: time.monotonic() >= ready_at, "cooldown")  # noqa: B023
            before = _lane_effects(control) if verb == "scan" else (0, 0)
            lane_out.append(run(command).stdout)
            if verb == "scan":
                _until(lambda: _lane_effects(control) != before,  # noqa: B023
                       "the scan had no effect at the lane")
        assert re.search(r"reply <- c-\w+ ok compartment=B03", lane_out[0]), lane_out[0]
        lane_state, truth_b03 = json.loads(lane_out[-2]), json.loads(lane_out[-1])
        assert (lane_state["scans"], lane_state["buzzes"]) == (3, 1), lane_state
        b03 = [e["kind"] for e in truth_b03["events"]]
        assert b03.count("door_opened") == 2, b03
        assert {"parcel_placed", "parcel_removed"} <= set(b03), b03
        # The daemon's side: the refusal, both openings from the scanner, the collection.
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while not any(e["kind"] == "compartment_collected" for e in events):
            remaining = deadline - time.monotonic()
            assert remaining > 0, events
            line = watched_lines.pop() if watched_lines else watched.get(timeout=remaining)
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
