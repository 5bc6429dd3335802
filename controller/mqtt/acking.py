"""The one seam on aiomqtt's internals: :class:`AckingClient`.

aiomqtt 2.x waits for a QoS 1 PUBACK in its own ``publish``, but ignores the MQTT 5 reason
code and keeps waiting until its timeout when the connection drops; and its message queue
is unbounded. This subclass replaces both, and relies on exactly these internals of
``aiomqtt.Client`` (checked against 2.3 to 2.5.1, pinned by
``tests/unit/mqtt/test_acking_seam.py``; review them on every aiomqtt upgrade):

- ``self._client``: the ``paho.mqtt.client.Client`` it drives (``publish`` returns a
  ``MQTTMessageInfo`` with ``rc`` and ``mid``);
- ``self._loop``: the event loop the client was created on;
- ``_on_message(client, userdata, message)``,
  ``_on_publish(client, userdata, mid, reason_code, properties)``,
  ``_on_disconnect(client, userdata, flags, reason_code, properties)`` and
  ``_on_socket_open(client, userdata, sock)``: methods that ``__init__`` registers as
  paho's callbacks, looked up on ``self`` so that overriding them here takes effect (the
  third only to note the broker's disconnect reason, the last only to switch Nagle's
  algorithm off on the new socket).

Nagle's algorithm is off (``TCP_NODELAY``) on the broker connection. paho writes each MQTT
packet with its own ``send``; with Nagle on, a reply written just after the PUBACK of the
command it answers waits in the kernel until the broker acknowledges that PUBACK's TCP
segment, which a delayed-ACK peer does after 40 ms: every command round trip paid one
such timer, and a ``get_state`` that does no I/O at all took 85-90 ms.

Nothing else in the daemon reaches into aiomqtt: :class:`~controller.mqtt.link.MqttLink`
calls only :meth:`AckingClient.publish_acked`, :meth:`AckingClient.fail_pending` and the
public aiomqtt API.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from controller.mqtt.errors import LinkDown, PublishFailed

__all__ = ["AckingClient", "NoDelayClient"]


class NoDelayClient(aiomqtt.Client):
    """An aiomqtt client whose socket sends small packets at once (Nagle's algorithm off,
    see the module docstring): for dispatch's side too, where a command published right
    after the acknowledgement of the last reply would otherwise wait for a delayed ACK."""

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(OSError, AttributeError, ValueError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super()._on_socket_open(client, userdata, sock)


class AckingClient(NoDelayClient):
    """aiomqtt's client plus a publish that resolves on *this message's* PUBACK and reports
    the MQTT 5 reason code, and fails at once when the connection is lost."""

    def __init__(self, *args: Any, on_message: Callable[[paho.MQTTMessage], None],
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acks: dict[int, asyncio.Future[ReasonCode]] = {}
        self._deliver = on_message
        #: The first reason given for this connection's end (0x8E: session taken over).
        self.disconnect_reason: int | None = None

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any,
                       reason_code: ReasonCode, properties: Properties | None = None) -> None:
        if self.disconnect_reason is None and isinstance(reason_code, ReasonCode):
            self.disconnect_reason = int(reason_code.value)
        super()._on_disconnect(client, userdata, flags, reason_code, properties)

    def _on_message(self, client: paho.Client, userdata: Any,
                    message: paho.MQTTMessage) -> None:
        # Straight to the link's bounded queues: aiomqtt's own queue is unbounded. aiomqtt
        # reads the socket on the loop, so this is the loop's thread; a hand-over otherwise.
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._deliver(message)
        else:
            self._loop.call_soon_threadsafe(self._deliver, message)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int,
                    reason_code: ReasonCode, properties: Properties) -> None:
        # Called by paho; hand the result to the loop whatever thread this is.
        self._loop.call_soon_threadsafe(self._settle, mid, reason_code)
        super()._on_publish(client, userdata, mid, reason_code, properties)

    def _settle(self, mid: int, reason_code: ReasonCode) -> None:
        fut = self._acks.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(reason_code)

    def fail_pending(self, exc: BaseException) -> None:
        """Fail every publish still waiting for its ack (the connection is gone)."""
        acks, self._acks = self._acks, {}
        for fut in acks.values():
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved here: a waiter may already have given up

    async def publish_acked(self, topic: str, payload: bytes, qos: int, retain: bool,
                            properties: Properties | None, ack_timeout: float) -> None:
        info = self._client.publish(topic, payload, qos, retain, properties)
        if info.rc == paho.MQTT_ERR_NO_CONN:
            raise LinkDown("not connected to the broker")
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise PublishFailed(f"publish refused by the client: {paho.error_string(info.rc)}")
        if qos == 0:
            return  # QoS 0 has no acknowledgement: handed to the connection is all there is
        fut: asyncio.Future[ReasonCode] = self._loop.create_future()
        self._acks[info.mid] = fut
        try:
            async with asyncio.timeout(ack_timeout):
                reason = await fut
        except TimeoutError:
            raise PublishFailed(f"no PUBACK within {ack_timeout:g}s") from None
        finally:
            self._acks.pop(info.mid, None)
        if reason.is_failure:
            raise PublishFailed(f"broker refused the message: {reason}")
