"""Nothing from outside ends the daemon.

- In process, on fake boards and a real broker: a board backend that raises a plain
  exception (a defect, outside the driver contract) makes the poller fail over and over;
  the daemon logs it, counts it in telemetry (``task_restarts``), restarts the task with
  backoff, answers commands throughout, and polls again once the fault is gone.
- As a process, through the simulated scanner (a pty): a QR ``order 1:123456`` is refused
  as ``invalid_code`` and the lane carries on (it used to end the daemon).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from controller.contract.topics import CabinetTopics
from controller.daemon import Daemon
from controller.mqtt.dispatch import DispatchClient
from controller.settings import load_settings
from tests.support.lane import running_lane, wait_event
from tests.support.services import MosquittoProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]


async def test_a_task_that_raises_is_restarted_and_the_daemon_serves_on(
    mosquitto: MosquittoProcess, caplog: pytest.LogCaptureFixture,
) -> None:
    settings = load_settings(ROOT / "deploy" / "sim-cabinet.toml", env={}, overrides={
        "redis.url": "memory://supervision", "mqtt.host": "127.0.0.1",
        "mqtt.port": str(mosquitto.port), "security.require_signed_commands": "false",
        "timing.telemetry_interval_s": "1", "timing.poll_interval_s": "0.05",
    })
    daemon = Daemon(settings, backend="fake", ready_timeout_s=10)
    run = asyncio.get_running_loop().create_task(daemon.run())
    topics = CabinetTopics(settings.mqtt.topic_root, settings.cabinet.site, settings.cabinet.id)
    try:
        async with DispatchClient("127.0.0.1", mosquitto.port, topics) as dispatch:
            await dispatch.wait_online(20)
            assert daemon.hardware is not None
            board = next(iter(daemon.hardware.lock_boards.values()))
            board.inject("bug", op="read_inputs", persistent=True)  # type: ignore[attr-defined]

            def restarted(m: object) -> bool:
                payload = getattr(m, "payload", {})
                return (getattr(m, "channel", "") == "telemetry"
                        and payload.get("task_restarts", {}).get("poller", 0) >= 2)

            telemetry = await dispatch.wait_for(restarted, 30)
            assert set(telemetry.payload["task_restarts"]) == {"poller"}
            # Commands are answered while the poller is failing.
            reply = await dispatch.command("get_state", sign=False)
            assert reply["ok"], reply
            assert not run.done()

            board.clear_faults()  # type: ignore[attr-defined]
            cycles = daemon.poller.cycles
            deadline = time.monotonic() + 40  # the backoff may be at its cap (30 s)
            while daemon.poller.cycles <= cycles + 3:  # bounded by the deadline
                assert time.monotonic() < deadline, "the poller never came back"
                assert not run.done()
                await asyncio.sleep(0.05)
            reply = await dispatch.command("get_state", sign=False)
            assert reply["ok"], reply
    finally:
        daemon.stop()
        assert await asyncio.wait_for(run, 30) == 0
    failures = [r for r in caplog.records if "task poller failed" in r.getMessage()]
    assert failures
    assert all(r.exc_info is not None for r in failures)
    assert "injected bug on read_inputs" in caplog.text


async def test_a_qr_naming_no_order_is_refused_and_the_lane_carries_on(tmp_path: Path) -> None:
    async with running_lane(tmp_path) as (rig, dispatch):
        mark = len(dispatch.messages)
        await rig.control.acall("scan", code="order 1:123456")
        rejected = await wait_event(dispatch, "code_rejected", None, start=mark)
        assert rejected["data"]["reason"] == "invalid_code"
        assert "123456" not in str(rejected)
        start = len(dispatch.messages)
        await rig.control.acall("scan", code="000000")
        # Reported on its own, or (within a second of the first refusal from the same
        # input) counted into the next code_rejections_coalesced.
        message = await dispatch.wait_for(
            lambda m: m.channel == "events"
            and m.payload.get("kind") in ("code_rejected", "code_rejections_coalesced"),
            timeout_s=10, start=start)
        data = message.payload["data"]
        assert data.get("reason") == "wrong_code" or "wrong_code" in data.get("reasons", {})
        reply = await dispatch.command("get_state", sign=False)
        assert reply["ok"], reply
        assert rig.daemon.running(), rig.logs()
        assert "Traceback" not in rig.logs(tail=1_000_000)
