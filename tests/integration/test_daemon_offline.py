"""A daemon started while the broker is down serves the lane at once: it polls, sees a
forced door and commits the events, which reach dispatch when the broker comes back."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path

import pytest

from controller.contract.topics import CabinetTopics
from controller.lab.rig import LaneRig
from tests.support.lane import wait_polled, wait_until
from tests.support.mqtt_client import MqttProbe

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_started_offline_still_polls_and_delivers_later(tmp_path: Path) -> None:
    rig = LaneRig(tmp_path)
    try:
        await asyncio.to_thread(rig.start, daemon=False)
        topics = CabinetTopics(rig.topic_root, rig.site, rig.cabinet)
        probe = MqttProbe(rig.mqtt_port, client_id="dispatch-offline", clean=False)
        probe._client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
        probe.start()
        probe.subscribe(topics.events, qos=1)
        await asyncio.to_thread(rig.broker.stop)
        rig.daemon.start(wait_port=False)
        # Started, boards polled, lane served: well before any 20 s readiness wait.
        async def serving() -> bool | None:
            return "serving the lane" in rig.logs("daemon", 100_000) or None

        await wait_until(serving, "the daemon serving the lane", timeout_s=30)
        # The door forced and shut again, each read by the daemon (the broker is away).
        await rig.control.acall("force_open", compartment="A03")
        await wait_polled(rig, cycles=3)
        await rig.control.acall("close", compartment="A03")
        await wait_polled(rig, cycles=3)
        broker_back = time.time()
        await asyncio.to_thread(rig.broker.start)
        closed = await probe.await_message(
            lambda m: m.json()["kind"] == "door_closed" and m.json().get("compartment") == "A03",
            timeout=30)
        opened = next(m.json() for m in probe.messages(topics.events)
                      if m.json()["kind"] == "door_opened" and m.json().get("compartment") == "A03")
        assert opened["data"]["authorised"] is False
        # Both were seen while the broker was away, and keep their original time.
        for event in (opened, closed.json()):
            at = datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()
            assert at < broker_back
        probe.close()
    except BaseException:
        print(rig.logs("daemon", 5000))
        raise
    finally:
        await asyncio.to_thread(rig.close)
