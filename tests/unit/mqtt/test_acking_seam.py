"""What :class:`controller.mqtt.acking.AckingClient` relies on inside aiomqtt, pinned: if
an aiomqtt release moves any of it, this fails before a cabinet loses an acknowledgement."""

from __future__ import annotations

import asyncio
import inspect
import socket

import aiomqtt
import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from controller.mqtt.acking import AckingClient
from controller.mqtt.errors import LinkDown, PublishFailed


def test_the_overridden_callbacks_keep_aiomqtts_signatures() -> None:
    assert list(inspect.signature(aiomqtt.Client._on_message).parameters) == [
        "self", "client", "userdata", "message"]
    assert list(inspect.signature(aiomqtt.Client._on_publish).parameters) == [
        "self", "client", "userdata", "mid", "reason_code", "properties"]


async def test_the_client_drives_a_paho_client_on_this_loop_with_our_callbacks() -> None:
    client = AckingClient("127.0.0.1", 1, on_message=lambda message: None)
    assert isinstance(client._client, paho.Client)
    assert client._loop is asyncio.get_running_loop()
    # aiomqtt registers the callbacks looked up on the instance: our overrides are the ones
    # paho calls.
    assert client._client.on_publish == client._on_publish
    assert client._client.on_message == client._on_message


async def test_a_puback_settles_its_own_publish_with_its_reason_code() -> None:
    client = AckingClient("127.0.0.1", 1, on_message=lambda message: None)
    loop = asyncio.get_running_loop()
    waiting = {mid: loop.create_future() for mid in (7, 8)}
    client._acks.update(waiting)
    refused = ReasonCode(PacketTypes.PUBACK, "Not authorized")
    client._on_publish(client._client, None, 8, refused, None)  # paho's call, any thread
    await asyncio.sleep(0)  # call_soon_threadsafe: the next loop turn
    assert waiting[8].result() == refused
    assert not waiting[7].done()  # another message's ack is not this one's
    client.fail_pending(PublishFailed("connection lost"))
    with pytest.raises(PublishFailed):
        waiting[7].result()


async def test_publishing_while_not_connected_is_link_down_at_once() -> None:
    client = AckingClient("127.0.0.1", 1, on_message=lambda message: None)
    with pytest.raises(LinkDown):
        await client.publish_acked("t", b"x", 1, False, None, ack_timeout=5.0)


async def test_a_message_goes_straight_to_the_link() -> None:
    seen: list[paho.MQTTMessage] = []
    client = AckingClient("127.0.0.1", 1, on_message=seen.append)
    message = paho.MQTTMessage(topic=b"lockers/v1/s/c/cmd")
    client._on_message(client._client, None, message)
    assert seen == [message]


async def test_a_new_broker_socket_has_nagle_off() -> None:
    # A reply written right after a PUBACK must not wait for the broker's delayed ACK.
    assert list(inspect.signature(aiomqtt.Client._on_socket_open).parameters) == [
        "self", "client", "userdata", "sock"]
    opened: list[object] = []

    class Sock:
        def __init__(self) -> None:
            self.options: dict[tuple[int, int], int] = {}

        def setsockopt(self, level: int, name: int, value: int) -> None:
            self.options[(level, name)] = value

        def fileno(self) -> int:
            return -1

    class Loop:
        def call_soon_threadsafe(self, *args: object) -> None:
            opened.append(args)

        def add_reader(self, *args: object) -> None:
            raise AssertionError("handed to the loop, not called here")

    client = AckingClient("127.0.0.1", 1, on_message=lambda message: None)
    client._loop = Loop()  # type: ignore[assignment]
    sock = Sock()
    client._on_socket_open(client._client, None, sock)  # type: ignore[arg-type]
    assert sock.options[(socket.IPPROTO_TCP, socket.TCP_NODELAY)] == 1
    assert opened  # aiomqtt's own set-up (the reader on the loop) still ran


async def test_the_dispatch_client_socket_has_nagle_off_too() -> None:
    """The SDK's client (controller.dispatch) builds its connections on the same seam."""
    from controller.contract.topics import CabinetTopics
    from controller.dispatch import DispatchClient
    from controller.mqtt.acking import NoDelayClient

    client = DispatchClient("127.0.0.1", 1, CabinetTopics("lockers/v1", "site", "cab"))
    assert isinstance(client._new_client(), NoDelayClient)
