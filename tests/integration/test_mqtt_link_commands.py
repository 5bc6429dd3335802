"""MqttLink against a real mosquitto: commands in (order, persistence, retained dropped),
replies out (MQTT 5 response topic + correlation data, or the reply topic), MQTT 3.1.1."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Literal

import pytest

from controller.contract.errors import CommandRejected
from controller.contract.examples import EXAMPLES
from controller.contract.messages import (
    ClockReading,
    OpenCommand,
    Reply,
    Status,
    decode_command,
    encode,
    from_json,
)
from controller.contract.topics import CabinetTopics
from controller.mqtt import IncomingCommand, MqttLink, MqttLinkSettings
from tests.support.mqtt_client import probe
from tests.support.services import MosquittoProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

BOOT = "b00710aa-0000-4000-8000-000000000003"
CLOCK = ClockReading(boot_id=BOOT, uptime_ms=5000)


def build_status(state: Literal["online", "offline"]) -> Status:
    return Status(state=state, cabinet="cab-01", boot_id=BOOT, version="0.1.0",
                  cabinet_clock=CLOCK, at=datetime.now(UTC))


def make_link(broker: MosquittoProcess, protocol: Literal[5, 311] = 5,
              **settings: object) -> MqttLink:
    values: dict[str, object] = {"client_id": "locker-site-1-cab-01", "port": broker.port,
                                 "protocol": protocol, "backoff_min_s": 0.05,
                                 "backoff_max_s": 0.5}
    values.update(settings)
    return MqttLink(MqttLinkSettings(**values),  # type: ignore[arg-type]
                    CabinetTopics("lockers/v1", "site-1", "cab-01"), build_status)


async def connected(link: MqttLink) -> MqttLink:
    link.start()
    async with asyncio.timeout(10):
        await link.wait_connected()
    return link


async def receive(link: MqttLink) -> IncomingCommand:
    async with asyncio.timeout(10):
        return await link.receive()


async def test_mqtt5_reply_goes_to_the_response_topic_with_the_correlation_data(
    mosquitto: MosquittoProcess,
) -> None:
    async with make_link(mosquitto) as link:
        await connected(link)
        mine = f"{link.topics.reply}/to/dispatch-7"
        with probe(mosquitto.port, f"{link.topics.reply}/#", link.topics.reply) as dispatch:
            command = json.dumps(EXAMPLES["command"][0]).encode()
            await asyncio.to_thread(dispatch.publish, link.topics.cmd, command,
                                    response_topic=mine,
                                    correlation_data=b"\x00corr-42\xff")
            incoming = await receive(link)
            assert incoming.payload == command
            assert incoming.response_topic == mine
            assert incoming.correlation_data == b"\x00corr-42\xff"

            decoded = decode_command(incoming.payload)
            assert isinstance(decoded, OpenCommand)
            answer = encode(Reply.success(decoded.id, {"pulsed": True}, CLOCK))
            assert await link.reply(incoming, answer) == mine

            msg = await dispatch.await_message(topic=mine)
            assert msg.correlation_data == b"\x00corr-42\xff"
            assert msg.content_type == "application/json"
            assert from_json(Reply, msg.payload).id == decoded.id
            assert dispatch.messages(link.topics.reply) == []


async def test_mqtt5_without_response_topic_replies_on_the_reply_topic(
    mosquitto: MosquittoProcess,
) -> None:
    async with make_link(mosquitto) as link:
        await connected(link)
        with probe(mosquitto.port, link.topics.reply) as dispatch:
            await asyncio.to_thread(dispatch.publish, link.topics.cmd, b"not json")
            incoming = await receive(link)
            assert incoming.response_topic is None
            assert incoming.correlation_data is None
            with pytest.raises(CommandRejected) as rejected:
                decode_command(incoming.payload)
            await link.reply(incoming, encode(Reply.refusal(rejected.value, CLOCK)))
            msg = await dispatch.await_message(topic=link.topics.reply)
            assert msg.json()["error"]["code"] == "bad_json"
            assert msg.json()["ok"] is False


async def test_a_wildcard_response_topic_is_not_used(mosquitto: MosquittoProcess) -> None:
    async with make_link(mosquitto) as link:
        await connected(link)
        incoming = IncomingCommand(payload=b"{}", topic=link.topics.cmd,
                                   response_topic="dispatch/+/x", correlation_data=b"1")
        with probe(mosquitto.port, link.topics.reply) as dispatch:
            assert await link.reply(incoming, b'{"x": 1}') == link.topics.reply
            msg = await dispatch.await_message(topic=link.topics.reply)
            assert msg.correlation_data is None


@pytest.mark.parametrize("channel", ["status", "events", "state", "telemetry", "cmd"])
async def test_a_response_topic_outside_the_cabinets_reply_topic_is_not_used(
    mosquitto: MosquittoProcess, channel: str,
) -> None:
    # A reply published on the cabinet's own status or events would pose as its report.
    async with make_link(mosquitto) as link:
        await connected(link)
        own = f"{link.topics.base}/{channel}"
        with probe(mosquitto.port, link.topics.reply, own) as dispatch:
            await asyncio.to_thread(dispatch.publish, link.topics.cmd, b"{}",
                                    response_topic=own, correlation_data=b"c-1")
            incoming = await receive(link)
            assert incoming.response_topic == own
            assert await link.reply(incoming, b'{"x": 1}') == link.topics.reply
            await dispatch.await_message(topic=link.topics.reply)
            assert [m.payload for m in dispatch.messages(own) if m.payload == b'{"x": 1}'] == []


async def test_mqtt311_commands_and_replies(mosquitto: MosquittoProcess) -> None:
    async with make_link(mosquitto, protocol=311) as link:
        await connected(link)
        with probe(mosquitto.port, link.topics.reply, protocol=311) as dispatch:
            await asyncio.to_thread(dispatch.publish, link.topics.cmd, b'{"id": "c-1"}')
            incoming = await receive(link)
            assert incoming.payload == b'{"id": "c-1"}'
            assert incoming.response_topic is None
            assert await link.reply(incoming, b'{"id": "c-1", "ok": true}') == link.topics.reply
            msg = await dispatch.await_message(topic=link.topics.reply)
            assert msg.json() == {"id": "c-1", "ok": True}
            assert msg.content_type is None


@pytest.mark.parametrize("protocol", [5, 311])
async def test_commands_arrive_in_order(mosquitto: MosquittoProcess,
                                        protocol: Literal[5, 311]) -> None:
    async with make_link(mosquitto, protocol=protocol) as link:
        await connected(link)
        with probe(mosquitto.port, protocol=protocol) as dispatch:
            def send_all() -> None:
                for i in range(100):
                    dispatch.publish(link.topics.cmd, json.dumps({"n": i}).encode())
            await asyncio.to_thread(send_all)
            got = [json.loads((await receive(link)).payload)["n"] for _ in range(100)]
            assert got == list(range(100))
            assert link.snapshot().dropped_commands == 0


@pytest.mark.parametrize("protocol", [5, 311])
async def test_commands_sent_while_away_are_delivered_on_return(
    mosquitto: MosquittoProcess, protocol: Literal[5, 311],
) -> None:
    """Persistent session: the broker keeps QoS 1 commands for the cabinet while it is away
    (the daemon then refuses the expired ones by their deadline)."""
    async with make_link(mosquitto, protocol=protocol) as link:
        await connected(link)
    with probe(mosquitto.port) as dispatch:
        dispatch.publish("lockers/v1/site-1/cab-01/cmd", b'{"id": "while-away"}')
    async with make_link(mosquitto, protocol=protocol) as link:
        incoming = await receive(link)
        assert incoming.payload == b'{"id": "while-away"}'


async def test_a_retained_command_is_never_acted_on(mosquitto: MosquittoProcess) -> None:
    with probe(mosquitto.port) as dispatch:
        dispatch.publish("lockers/v1/site-1/cab-01/cmd", b'{"id": "stale"}', retain=True)
    async with make_link(mosquitto) as link:
        await connected(link)
        with probe(mosquitto.port) as dispatch:
            await asyncio.to_thread(dispatch.publish, link.topics.cmd, b'{"id": "fresh"}')
        incoming = await receive(link)
        assert incoming.payload == b'{"id": "fresh"}'


async def test_a_full_queue_drops_and_counts(mosquitto: MosquittoProcess) -> None:
    async with make_link(mosquitto, incoming_queue_size=3) as link:
        await connected(link)
        with probe(mosquitto.port, link.topics.cmd) as dispatch:
            def send_all() -> None:
                for i in range(5):
                    dispatch.publish(link.topics.cmd, json.dumps({"n": i}).encode())
            await asyncio.to_thread(send_all)
            # the probe sees all five; once it has, so has the link (same broker fan-out)
            await dispatch.await_count(5, topic=link.topics.cmd)
        async with asyncio.timeout(10):
            while link.snapshot().dropped_commands < 2:  # noqa: ASYNC110 - bounded
                await asyncio.sleep(0.02)
        got = [json.loads((await receive(link)).payload)["n"] for _ in range(3)]
        assert got == [0, 1, 2]
        assert link.snapshot().dropped_commands == 2


async def test_commands_iterator_ends_when_closed(mosquitto: MosquittoProcess) -> None:
    link = make_link(mosquitto)
    got: list[bytes] = []

    async def collect() -> None:
        async for command in link.commands():
            got.append(command.payload)

    async with link:
        await connected(link)
        collector = asyncio.create_task(collect())
        with probe(mosquitto.port) as dispatch:
            await asyncio.to_thread(dispatch.publish, link.topics.cmd, b"1")
            await asyncio.to_thread(dispatch.publish, link.topics.cmd, b"2")
        async with asyncio.timeout(10):
            while len(got) < 2:  # noqa: ASYNC110 - bounded by the timeout
                await asyncio.sleep(0.02)
    async with asyncio.timeout(10):
        await collector  # ends by itself once the link is closed
    assert got == [b"1", b"2"]
