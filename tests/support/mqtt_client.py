"""A small MQTT test client: subscribe on a loopback broker and collect what arrives.

``MqttProbe`` is a paho-mqtt client running its network loop in its own thread, so it
works the same from synchronous and asynchronous tests::

    with MqttProbe(mosquitto.port) as probe:
        probe.subscribe("lockers/v1/+/+/events")
        ...                                   # make the code under test publish
        msg = probe.wait_for_message(topic="lockers/v1/s/c/events")
        assert msg.json()["seq"] == 1

    # in an async test, do not block the loop:
    msg = await probe.await_message(lambda m: m.json()["state"] == "offline")

Every wait takes a ``timeout`` (seconds) and raises ``TimeoutError`` listing what did
arrive; no test asserts on durations. ``publish`` sends a command the way dispatch would
(MQTT 5 response topic and correlation data when given) and waits for the PUBACK.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = ["MqttProbe", "Received", "probe"]

_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Received:
    """One message as the probe saw it (MQTT 5 properties ``None`` when absent)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    response_topic: str | None = None
    correlation_data: bytes | None = None
    content_type: str | None = None
    user_properties: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def json(self) -> Any:
        return json.loads(self.payload)

    def text(self) -> str:
        return self.payload.decode("utf-8")


Predicate = Callable[[Received], bool]


class MqttProbe:
    """A test-side MQTT client on ``host:port`` that records every message it receives.

    ``protocol`` is 5 or 311. ``clean`` False gives a persistent session (same
    ``client_id`` needed across probes). Not thread-safe beyond its own network thread.
    """

    def __init__(self, port: int, *, host: str = "127.0.0.1", protocol: int = 5,
                 client_id: str | None = None, clean: bool = True,
                 connect_timeout: float = 10.0) -> None:
        self.port = port
        self.host = host
        self.protocol = protocol
        self.client_id = client_id or f"test-probe-{next(_ids)}-{threading.get_ident()}"
        self._received: list[Received] = []
        self._cond = threading.Condition()
        self._connected = threading.Event()
        self._connect_timeout = connect_timeout
        kwargs: dict[str, Any] = {"callback_api_version": CallbackAPIVersion.VERSION2,
                                  "client_id": self.client_id}
        if protocol == 5:
            kwargs["protocol"] = paho.MQTTv5
        else:
            kwargs["protocol"] = paho.MQTTv311
            kwargs["clean_session"] = clean
        self._clean = clean
        self._client = paho.Client(**kwargs)
        self._client.on_message = self._on_message
        self._client.on_connect = self._on_connect
        self._started = False

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> MqttProbe:
        if self._started:
            return self
        if self.protocol == 5:
            props = Properties(PacketTypes.CONNECT)
            if not self._clean:
                props.SessionExpiryInterval = 3600
            self._client.connect(self.host, self.port, keepalive=30, clean_start=self._clean,
                                 properties=props)
        else:
            self._client.connect(self.host, self.port, keepalive=30)
        self._client.loop_start()
        self._started = True
        if not self._connected.wait(self._connect_timeout):
            self.close()
            raise TimeoutError(f"probe could not connect to {self.host}:{self.port}")
        return self

    def close(self) -> None:
        """Disconnect and stop the network thread (idempotent)."""
        if not self._started:
            return
        self._started = False
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> MqttProbe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- callbacks (paho's thread) ----------------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any = None) -> None:
        if not getattr(reason, "is_failure", False):
            self._connected.set()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        user = tuple(getattr(props, "UserProperty", ()) or ()) if props is not None else ()
        received = Received(
            topic=msg.topic, payload=bytes(msg.payload), qos=msg.qos, retain=bool(msg.retain),
            response_topic=getattr(props, "ResponseTopic", None) if props else None,
            correlation_data=getattr(props, "CorrelationData", None) if props else None,
            content_type=getattr(props, "ContentType", None) if props else None,
            user_properties=user,
        )
        with self._cond:
            self._received.append(received)
            self._cond.notify_all()

    # -- operations -------------------------------------------------------------------------

    def subscribe(self, topic_filter: str, qos: int = 1, timeout: float = 10.0) -> None:
        """Subscribe and wait for the SUBACK (retained messages may arrive right after)."""
        done = threading.Event()
        previous = self._client.on_subscribe

        def on_subscribe(*_: Any) -> None:
            done.set()

        self._client.on_subscribe = on_subscribe
        try:
            rc, _mid = self._client.subscribe(topic_filter, qos)
            if rc != paho.MQTT_ERR_SUCCESS:
                raise ConnectionError(f"subscribe failed: {paho.error_string(rc)}")
            if not done.wait(timeout):
                raise TimeoutError(f"no SUBACK for {topic_filter!r}")
        finally:
            self._client.on_subscribe = previous

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False, *,
                response_topic: str | None = None, correlation_data: bytes | None = None,
                timeout: float = 10.0) -> None:
        """Publish like dispatch does and wait until the broker acknowledged it."""
        props = None
        if self.protocol == 5 and (response_topic or correlation_data is not None):
            props = Properties(PacketTypes.PUBLISH)
            if response_topic:
                props.ResponseTopic = response_topic
            if correlation_data is not None:
                props.CorrelationData = correlation_data
        data = payload.encode() if isinstance(payload, str) else payload
        info = self._client.publish(topic, data, qos, retain, properties=props)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise TimeoutError(f"publish to {topic!r} not acknowledged")

    def messages(self, topic: str | None = None) -> list[Received]:
        """Everything received so far (on ``topic`` if given), oldest first."""
        with self._cond:
            return [m for m in self._received if topic is None or m.topic == topic]

    def clear(self) -> None:
        with self._cond:
            self._received.clear()

    def wait_for(self, count: int = 1, *, topic: str | None = None,
                 where: Predicate | None = None, timeout: float = 10.0) -> list[Received]:
        """Block until ``count`` matching messages were received; return all matching ones."""
        def matching() -> list[Received]:
            return [m for m in self._received
                    if (topic is None or m.topic == topic) and (where is None or where(m))]

        with self._cond:
            if not self._cond.wait_for(lambda: len(matching()) >= count, timeout):
                seen = [(m.topic, m.payload[:120]) for m in self._received]
                raise TimeoutError(f"wanted {count} message(s) on {topic!r}; got: {seen}")
            return matching()

    def wait_for_message(self, where: Predicate | None = None, *, topic: str | None = None,
                         timeout: float = 10.0) -> Received:
        """The first matching message (waiting for it if needed)."""
        return self.wait_for(1, topic=topic, where=where, timeout=timeout)[0]

    async def await_message(
        self, where: Predicate | None = None, *, topic: str | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109 - the wait runs in a worker thread
    ) -> Received:
        """:meth:`wait_for_message` without blocking the event loop."""
        return await asyncio.to_thread(self.wait_for_message, where, topic=topic,
                                       timeout=timeout)

    async def await_count(
        self, count: int, *, topic: str | None = None, where: Predicate | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109 - the wait runs in a worker thread
    ) -> list[Received]:
        """:meth:`wait_for` without blocking the event loop."""
        return await asyncio.to_thread(self.wait_for, count, topic=topic, where=where,
                                       timeout=timeout)


@contextmanager
def probe(port: int, *filters: str, protocol: int = 5, **kwargs: Any) -> Iterator[MqttProbe]:
    """A started probe subscribed to ``filters``: ``with probe(port, "a/#") as p: ...``."""
    p = MqttProbe(port, protocol=protocol, **kwargs).start()
    try:
        for f in filters:
            p.subscribe(f)
        yield p
    finally:
        p.close()
