"""docs/simulator.md, "Run the daemon against the simulator", run as written.

The three ``doc-test`` code blocks of that section are read from the document itself:
``setup`` commands run to completion, ``servers`` are started in order (each waited for),
``checks`` run to completion and must exit 0. Only what would clash with other runs on
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
from pathlib import Path

import pytest

from controller.lab.rig import free_port, wait_for_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "simulator.md"
SECTION = "## Run the daemon against the simulator"


def doc_blocks() -> dict[str, list[str]]:
    """The commands of each ``<!-- doc-test:NAME -->`` block of the section (backslash
    continuations joined)."""
    text = DOC.read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
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


def test_run_the_daemon_against_the_simulator_as_written(tmp_path: Path) -> None:
    blocks = doc_blocks()
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
