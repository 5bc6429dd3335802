"""MqttLink against a real mosquitto: presence (online/LWT/offline), reconnection, and
publish semantics (acknowledged, or a clear error)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pytest

from controller.contract.messages import ClockReading, Status, from_json
from controller.contract.topics import CabinetTopics
from controller.mqtt import (
    LinkClosed,
    LinkDown,
    LinkSnapshot,
    MqttLink,
    MqttLinkSettings,
    PublishFailed,
)
from tests.support.mqtt_client import MqttProbe, probe
from tests.support.services import MosquittoProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

BOOT = "b00710aa-0000-4000-8000-000000000001"
REPO = Path(__file__).resolve().parents[2]


def status_factory(cabinet: str) -> object:
    def build(state: Literal["online", "offline"]) -> Status:
        return Status(state=state, cabinet=cabinet, boot_id=BOOT, version="0.1.0",
                      cabinet_clock=ClockReading(boot_id=BOOT, uptime_ms=1234),
                      at=datetime.now(UTC))
    return build


def make_link(broker: MosquittoProcess, cabinet: str = "cab-01", protocol: Literal[5, 311] = 5,
              changes: list[LinkSnapshot] | None = None, **settings: object) -> MqttLink:
    values: dict[str, object] = {"client_id": f"locker-test-{cabinet}", "port": broker.port,
                                 "protocol": protocol, "backoff_min_s": 0.05,
                                 "backoff_max_s": 0.5, "publish_timeout_s": 5.0}
    values.update(settings)
    topics = CabinetTopics("lockers/v1", "site-1", cabinet)
    return MqttLink(MqttLinkSettings(**values), topics, status_factory(cabinet),  # type: ignore[arg-type]
                    on_connection_change=changes.append if changes is not None else None)


async def wait_until_disconnected(link: MqttLink) -> None:
    while link.connected:  # noqa: ASYNC110 - bounded by the test timeout
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("protocol", [5, 311])
async def test_online_is_retained_and_close_publishes_offline(
    mosquitto: MosquittoProcess, protocol: Literal[5, 311],
) -> None:
    link = make_link(mosquitto, protocol=protocol)
    async with link:
        async with asyncio.timeout(10):
            await link.wait_connected()
        # a subscriber that comes later still sees the retained online status
        with probe(mosquitto.port, link.topics.status, protocol=protocol) as p:
            msg = await p.await_message(topic=link.topics.status)
            assert msg.retain
            assert msg.json()["state"] == "online"
            assert from_json(Status, msg.payload).boot_id == BOOT
    snap = link.snapshot()
    assert snap.closed
    assert not snap.connected
    with probe(mosquitto.port, link.topics.status, protocol=protocol) as p:
        msg = await p.await_message(topic=link.topics.status)
        assert msg.retain
        assert msg.json()["state"] == "offline"


async def test_close_is_idempotent_and_ends_receivers(mosquitto: MosquittoProcess) -> None:
    link = make_link(mosquitto)
    link.start()
    async with asyncio.timeout(10):
        await link.wait_connected()
    receiver = asyncio.create_task(link.receive())
    await asyncio.gather(link.close(), link.close())
    await link.close()
    with pytest.raises(LinkClosed):
        await receiver
    with pytest.raises(LinkClosed):
        await link.publish(link.topics.events, b"{}")
    assert [c async for c in link.commands()] == []


async def test_close_while_the_broker_is_unreachable_returns(tmp_path: Path) -> None:
    broker = MosquittoProcess(tmp_path / "never-started")  # a free port nothing listens on
    link = make_link(broker)
    async with link:
        async with asyncio.timeout(10):
            # Bounded by the timeout: the first attempt fails at once. The link exposes no
            # event for it, so its snapshot is polled.
            while not link.snapshot().last_error:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert not link.connected
        with pytest.raises(LinkDown):
            await link.publish(link.topics.events, b"{}")
    assert link.snapshot().last_error


_CHILD = textwrap.dedent("""
    import asyncio, sys
    from datetime import UTC, datetime
    from controller.contract.messages import ClockReading, Status
    from controller.contract.topics import CabinetTopics
    from controller.mqtt import MqttLink, MqttLinkSettings

    BOOT = "b00710aa-0000-4000-8000-000000000002"

    def status(state):
        return Status(state=state, cabinet="cab-kill", boot_id=BOOT, version="0.1.0",
                      cabinet_clock=ClockReading(boot_id=BOOT, uptime_ms=1),
                      at=datetime.now(UTC))

    async def main():
        settings = MqttLinkSettings(client_id="locker-kill", port=int(sys.argv[1]),
                                    protocol=int(sys.argv[2]))
        async with MqttLink(settings, CabinetTopics("lockers/v1", "site-1", "cab-kill"),
                            status) as link:
            await asyncio.wait_for(link.wait_connected(), 20)
            await asyncio.sleep(120)   # the test kills us long before

    asyncio.run(main())
""")


@pytest.mark.parametrize("protocol", [5, 311])
def test_last_will_marks_a_killed_cabinet_offline(
    mosquitto: MosquittoProcess, protocol: int, tmp_path: Path,
) -> None:
    topic = "lockers/v1/site-1/cab-kill/status"
    errors = tmp_path / "child.err"
    with probe(mosquitto.port, topic, protocol=protocol) as p, errors.open("wb") as err:
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(mosquitto.port), str(protocol)], cwd=REPO,
            stdout=subprocess.DEVNULL, stderr=err,
        )
        try:
            try:
                online = p.wait_for_message(lambda m: m.json()["state"] == "online",
                                            topic=topic, timeout=20)
            except TimeoutError as exc:
                raise AssertionError(f"link process: {errors.read_text()[-2000:]}") from exc
            assert online.retain is False  # live delivery to an existing subscriber
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
            offline = p.wait_for_message(lambda m: m.json()["state"] == "offline",
                                         topic=topic, timeout=20)
            assert offline.json()["boot_id"] == "b00710aa-0000-4000-8000-000000000002"
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(10)
    # and it is retained: a dispatch that connects later learns the cabinet is offline
    with probe(mosquitto.port, topic, protocol=protocol) as late:
        msg = late.wait_for_message(topic=topic)
        assert msg.retain
        assert msg.json()["state"] == "offline"


async def test_reconnects_after_broker_restart_and_publish_follows_the_link(
    mosquitto: MosquittoProcess,
) -> None:
    changes: list[LinkSnapshot] = []
    link = make_link(mosquitto, changes=changes)
    async with link:
        async with asyncio.timeout(10):
            await link.wait_connected()
        first = link.snapshot()
        assert first.connected
        assert first.reconnects == 0
        assert first.connects == 1
        await link.publish(link.topics.events, b'{"n": 1}', qos=1)

        mosquitto.stop()
        async with asyncio.timeout(10):
            await wait_until_disconnected(link)
        down = link.snapshot()
        assert not down.connected
        assert down.last_error
        assert down.since >= first.since
        with pytest.raises(LinkDown):
            await link.publish(link.topics.events, b'{"n": 2}', qos=1)

        mosquitto.start()
        with MqttProbe(mosquitto.port) as p:
            p.subscribe(link.topics.events)
            async with asyncio.timeout(15):
                await link.wait_connected()
            await link.publish(link.topics.events, b'{"n": 3}', qos=1)
            msg = await p.await_message(topic=link.topics.events)
            assert msg.json() == {"n": 3}
        up = link.snapshot()
        assert up.connected
        assert up.reconnects == 1
        assert up.connects == 2
    assert [c.connected for c in changes] == [True, False, True, False]


async def test_publish_returns_only_after_the_puback(mosquitto: MosquittoProcess) -> None:
    """With the broker frozen (SIGSTOP) the PUBACK cannot come: a QoS 1 publish must fail,
    not return. QoS 0 has no ack and returns. After SIGCONT, publishing works again."""
    link = make_link(mosquitto)
    async with link:
        async with asyncio.timeout(10):
            await link.wait_connected()
        assert mosquitto.pid is not None
        os.kill(mosquitto.pid, signal.SIGSTOP)
        try:
            await link.publish(link.topics.telemetry, b"{}", qos=0)
            with pytest.raises(PublishFailed, match="no PUBACK"):
                await link.publish(link.topics.events, b'{"n": 1}', qos=1, ack_timeout=1.0)
        finally:
            os.kill(mosquitto.pid, signal.SIGCONT)
        await link.publish(link.topics.events, b'{"n": 2}', qos=1)
        assert link.connected


async def test_connection_lost_fails_a_pending_publish_at_once(
    mosquitto: MosquittoProcess,
) -> None:
    link = make_link(mosquitto)
    async with link:
        async with asyncio.timeout(10):
            await link.wait_connected()
        assert mosquitto.pid is not None
        os.kill(mosquitto.pid, signal.SIGSTOP)
        pending = asyncio.create_task(
            link.publish(link.topics.events, b'{"n": 1}', qos=1, ack_timeout=45.0))
        await asyncio.sleep(0.1)
        assert not pending.done()  # the broker is frozen: no ack can have come
        mosquitto.kill()           # the connection drops; the ack never comes
        with pytest.raises(PublishFailed, match="connection lost"):
            await pending


async def test_state_changes_are_reported_to_the_callback(mosquitto: MosquittoProcess) -> None:
    changes: list[LinkSnapshot] = []
    link = make_link(mosquitto, changes=changes)
    async with link:
        async with asyncio.timeout(10):
            await link.wait_connected()
    assert [c.connected for c in changes] == [True, False]
    assert link.snapshot().to_stats().connected is False


def test_settings_validate() -> None:
    with pytest.raises(ValueError, match="client_id"):
        MqttLinkSettings(client_id="")
    with pytest.raises(ValueError, match="protocol"):
        MqttLinkSettings(client_id="x", protocol=4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backoff"):
        MqttLinkSettings(client_id="x", backoff_min_s=5, backoff_max_s=1)
    tls = MqttLinkSettings(client_id="x", tls_ca="/etc/ca.pem")
    assert tls.uses_tls
    assert "password" not in repr(MqttLinkSettings(client_id="x", password="secret"))


def acl_broker(tmp_path: Path, rules: str) -> MosquittoProcess:
    acl = tmp_path / "acl"
    acl.write_text(rules)
    # MosquittoProcess keeps mosquitto as the invoking user, so it can read the file.
    broker = MosquittoProcess(tmp_path / "acl-broker", extra_config=f"acl_file {acl}")
    broker.start()
    return broker


def test_refused_suback_codes_are_recognised() -> None:
    """mosquitto grants every subscription and filters deliveries by ACL, so the refusal
    branch (other brokers answer SUBACK 0x80/0x87) is checked on the codes alone."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    from controller.mqtt.link import _refused

    assert _refused(ReasonCode(PacketTypes.SUBACK, "Not authorized"))
    assert not _refused(ReasonCode(PacketTypes.SUBACK, "Granted QoS 1"))
    assert _refused(0x80)
    assert not _refused(1)


async def test_mqtt5_publish_refused_by_the_broker_raises(tmp_path: Path) -> None:
    broker = acl_broker(tmp_path, "topic readwrite lockers/#\n")
    try:
        link = make_link(broker, protocol=5)
        async with link:
            async with asyncio.timeout(10):
                await link.wait_connected()
            with pytest.raises(PublishFailed, match="refused"):
                await link.publish("elsewhere/x", b"{}", qos=1)
            await link.publish(link.topics.events, b"{}", qos=1)
            assert link.connected
    finally:
        broker.kill()


def test_settings_from_the_daemon_config() -> None:
    from controller.settings import MqttConfig

    config = MqttConfig(host="broker.lan", port=8883, protocol=311, client_id="locker-a-b",
                        reconnect_min_s=0.5, reconnect_max_s=8)
    settings = MqttLinkSettings.from_config(config, publish_timeout_s=3.0)
    assert (settings.host, settings.port, settings.protocol) == ("broker.lan", 8883, 311)
    assert settings.client_id == "locker-a-b"
    assert (settings.backoff_min_s, settings.backoff_max_s) == (0.5, 8.0)
    assert settings.publish_timeout_s == 3.0
    assert not settings.uses_tls
