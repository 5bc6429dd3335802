"""What ``systemctl status`` shows: the daemon's STATUS= line follows the cabinet's health
(a board going dark, the broker going away, alarms), and the journal gets every alarm
raised and cleared with what it is about."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.lab.rig import LaneRig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


class NotifyListener:
    """The datagram socket systemd would listen on: every STATUS= the daemon sent."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.statuses: list[str] = []

    def wait_status(self, predicate: Callable[[str], bool], timeout: float) -> str:
        for status in self.statuses:
            if predicate(status):
                return status
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            for line in message.splitlines():
                if line.startswith("STATUS="):
                    self.statuses.append(line.removeprefix("STATUS="))
                    if predicate(self.statuses[-1]):
                        return self.statuses[-1]
        raise AssertionError(f"no such STATUS within {timeout} s; seen: {self.statuses}")

    def close(self) -> None:
        self.sock.close()


def _wait_log(rig: LaneRig, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in rig.logs(tail=200_000):
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the daemon's log:\n{rig.logs()}")


def test_status_line_follows_boards_broker_and_alarms(tmp_path: Path) -> None:
    notify = NotifyListener(tmp_path / "notify.sock")
    rig = LaneRig(tmp_path / "lane", emulate_timing=False)
    try:
        rig.start(daemon=False)
        rig.daemon.env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
        rig.daemon.start(wait_port=False)
        notify.wait_status(lambda s: s.startswith("ok: ") and "broker connected" in s, 20)

        rig.control.call("fault_set", kind="silent", board="locks-b")
        dark = notify.wait_status(lambda s: "locks-b offline" in s, 20)
        assert dark.startswith("DEGRADED: ")
        assert "alarm" in dark
        assert "board_offline locks-b" in dark
        # The journal line of the raise: warning, with the board it is about.
        _wait_log(rig, "WARNING controller.services.reporting: alarm raised: board_offline "
                       "locks-b alarm=board_offline board=locks-b", 10)

        rig.control.call("fault_clear")
        notify.wait_status(lambda s: s.startswith("ok: "), 20)
        _wait_log(rig, "INFO controller.services.reporting: alarm cleared: board_offline "
                       "locks-b alarm=board_offline board=locks-b", 10)

        rig.broker.stop()
        down = notify.wait_status(lambda s: "broker down" in s, 20)
        assert down.startswith("DEGRADED: ")
    finally:
        notify.close()
        rig.close()
