"""Session takeover seen by the link against a real mosquitto: a second client with the
cabinet's client id is counted; a broker outage is not."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.contract.topics import CabinetTopics
from controller.mqtt import MqttLink, MqttLinkSettings
from controller.mqtt.link import LinkSnapshot
from tests.integration.test_mqtt_link_commands import build_status
from tests.support.mqtt_client import MqttProbe
from tests.support.services import MosquittoProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

CLIENT_ID = "locker-site-1-cab-01"


def make(broker: MosquittoProcess, changes: asyncio.Queue[LinkSnapshot]) -> MqttLink:
    settings = MqttLinkSettings(client_id=CLIENT_ID, port=broker.port, protocol=5,
                                backoff_min_s=0.05, backoff_max_s=0.5)
    return MqttLink(settings, CabinetTopics("lockers/v1", "site-1", "cab-01"), build_status,
                    on_connection_change=changes.put_nowait)


async def until(changes: asyncio.Queue[LinkSnapshot],
                predicate: Callable[[LinkSnapshot], bool], timeout_s: float = 10) -> LinkSnapshot:
    async with asyncio.timeout(timeout_s):
        while True:  # bounded by the timeout
            snapshot = await changes.get()
            if predicate(snapshot):
                return snapshot


async def test_a_second_client_with_the_same_id_is_counted_as_a_takeover(
    mosquitto: MosquittoProcess,
) -> None:
    changes: asyncio.Queue[LinkSnapshot] = asyncio.Queue()
    async with make(mosquitto, changes) as link:
        link.start()
        await until(changes, lambda s: s.connected)
        assert link.snapshot().takeovers == 0
        for n in (1, 2):
            with MqttProbe(mosquitto.port, client_id=CLIENT_ID):
                await until(changes, lambda s, n=n: s.connected and s.takeovers >= n)
        assert link.snapshot().takeovers == 2


def refuse_one_attempt(port: int) -> None:
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen(1)
        server.settimeout(10)
        conn, _ = server.accept()
        conn.close()


async def test_a_broker_outage_is_not_a_takeover(tmp_path: Path) -> None:
    broker = MosquittoProcess(tmp_path / "broker")
    broker.start()
    changes: asyncio.Queue[LinkSnapshot] = asyncio.Queue()
    try:
        async with make(broker, changes) as link:
            link.start()
            await until(changes, lambda s: s.connected)
            await asyncio.to_thread(broker.stop)
            await until(changes, lambda s: not s.connected)
            # The outage: the link's next attempt reaches no broker (a listener that closes
            # the connection without a CONNACK); only then does the broker come back.
            await asyncio.to_thread(refuse_one_attempt, broker.port)
            await asyncio.to_thread(broker.start)
            # (a connection closed before CONNACK may take the client's connect timeout)
            back = await until(changes, lambda s: s.connected, timeout_s=40)
            assert back.connects == 2
            assert back.takeovers == 0
    finally:
        broker.stop()
