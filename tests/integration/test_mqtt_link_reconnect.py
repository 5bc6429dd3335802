"""The link is back within seconds of the broker, however often and however long the broker
went away (real mosquitto, stopped and restarted on the same port; the link runs with the
daemon's default settings). Down times are random from a printed seed, so a failure can be
replayed with ``LOCKER_TEST_SEED``."""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from pathlib import Path

import pytest

from controller.contract.topics import CabinetTopics
from controller.mqtt import MqttLink, MqttLinkSettings
from controller.settings import MqttConfig
from tests.integration.test_mqtt_link_session import status_factory
from tests.support.services import MosquittoProcess

# Fault campaigns: 20 broker restarts, then a half-minute outage.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

#: The promise: connected again this long after the broker accepts connections.
RECONNECT_LIMIT_S = 5.0


def _link(broker: MosquittoProcess, seed: int) -> MqttLink:
    defaults = MqttConfig(host="127.0.0.1", port=broker.port, client_id="locker-reconnect")
    settings = MqttLinkSettings.from_config(defaults)
    return MqttLink(settings, CabinetTopics("lockers/v1", "site-1", "cab-r"),
                    status_factory("cab-r"), rng=random.Random(seed))  # type: ignore[arg-type]


async def _outage(broker: MosquittoProcess, link: MqttLink, down_s: float) -> float:
    """Stop the broker for ``down_s``, start it; seconds from "accepting" to "connected"."""
    await asyncio.to_thread(broker.kill)
    deadline = time.monotonic() + 10
    while link.connected:  # bounded: the connection drop is seen at once
        assert time.monotonic() < deadline, "the link never saw the broker go"
        await asyncio.sleep(0.01)
    await asyncio.sleep(down_s)  # the outage itself, not a wait for another process
    await asyncio.to_thread(broker.start)  # returns once the port accepts connections
    accepting = time.monotonic()
    await asyncio.wait_for(link.wait_connected(), 60)
    return time.monotonic() - accepting


def _figures(times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (f"n={len(times)} p50={statistics.median(times):.2f}s p99={p99:.2f}s "
            f"max={max(times):.2f}s")


async def test_reconnects_within_seconds_after_many_broker_restarts(tmp_path: Path) -> None:
    seed = int(os.environ.get("LOCKER_TEST_SEED", random.randrange(2**32)))
    print(f"seed={seed}")
    rng = random.Random(seed)
    broker = MosquittoProcess(tmp_path / "broker", persistence=False)
    broker.start()
    link = _link(broker, seed)
    times: list[float] = []
    try:
        link.start()
        await asyncio.wait_for(link.wait_connected(), 20)
        for _ in range(20):
            times.append(await _outage(broker, link, rng.uniform(0.2, 5.0)))
        print(f"reconnect after restart: {_figures(times)}")
        assert link.snapshot().reconnects == 20
        assert max(times) < RECONNECT_LIMIT_S, times
    finally:
        await link.close()
        broker.kill()


async def test_reconnects_within_seconds_after_a_long_outage(tmp_path: Path) -> None:
    """Half a minute down: the backoff has long reached its cap, and the cap is low."""
    seed = int(os.environ.get("LOCKER_TEST_SEED", random.randrange(2**32)))
    print(f"seed={seed}")
    broker = MosquittoProcess(tmp_path / "broker", persistence=False)
    broker.start()
    link = _link(broker, seed)
    try:
        link.start()
        await asyncio.wait_for(link.wait_connected(), 20)
        took = await _outage(broker, link, 30.0)
        print(f"reconnect after a 30 s outage: {took:.2f}s")
        assert took < RECONNECT_LIMIT_S
        # And the backoff started over: a short outage right after is as quick.
        again = await _outage(broker, link, 0.5)
        print(f"then after a 0.5 s outage: {again:.2f}s")
        assert again < 2.0
    finally:
        await link.close()
        broker.kill()
