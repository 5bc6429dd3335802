"""The daemon under systemd's notify protocol: READY=1 once up, watchdog pings while its
polls are fresh, STOPPING=1 and a retained "offline" on SIGTERM, exit status 0."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from controller.contract.topics import CabinetTopics
from controller.lab.rig import LaneRig
from tests.support.mqtt_client import MqttProbe

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def _collect(sock: socket.socket, until: float) -> list[str]:
    messages = []
    while time.monotonic() < until:
        sock.settimeout(max(0.05, until - time.monotonic()))
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return messages


def test_ready_watchdog_and_graceful_stop(tmp_path: Path) -> None:
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    rig = LaneRig(tmp_path / "lane")
    try:
        rig.start(daemon=False)
        topics = CabinetTopics(rig.topic_root, rig.site, rig.cabinet)
        rig.daemon.env = {"NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "1000000"}
        rig.daemon.start(wait_port=False)
        messages = _collect(sock, time.monotonic() + 8.0)
        ready = [m for m in messages if "READY=1" in m]
        assert ready, (messages, rig.logs())
        assert "STATUS=running" in ready[0]
        after_ready = messages[messages.index(ready[0]):]
        assert sum("WATCHDOG=1" in m for m in after_ready) >= 3  # every 0.5 s

        with MqttProbe(rig.mqtt_port) as probe:
            probe.subscribe(topics.status)
            assert rig.daemon.proc is not None
            rig.daemon.proc.send_signal(15)
            code = rig.daemon.proc.wait(20)
            assert code == 0, rig.logs()
            rest = _collect(sock, time.monotonic() + 0.5)
            assert any("STOPPING=1" in m for m in rest)
            offline = probe.wait_for_message(
                lambda m: json.loads(m.payload)["state"] == "offline", timeout=5)
            assert offline.retain or offline.json()["state"] == "offline"
    finally:
        sock.close()
        rig.close()
