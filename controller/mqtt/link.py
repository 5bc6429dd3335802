"""MqttLink: the cabinet's connection to the dispatch broker, on aiomqtt 2.x (paho-mqtt 2.x).

What it does, and what it promises:

- **Session.** Connects with a fixed client id and a persistent session (MQTT 5:
  ``clean_start=False`` + a session expiry; MQTT 3.1.1: ``clean_session=False``), so
  commands sent while the cabinet was briefly away are delivered when it returns.
- **Presence.** The Last Will is the retained ``offline`` :class:`Status`. On every
  (re)connect the link subscribes to ``cmd`` and then publishes a retained ``online`` status.
  :meth:`close` publishes ``offline`` itself before a clean disconnect (a clean DISCONNECT
  discards the will).
- **Reconnect forever** with exponential backoff and jitter between ``backoff_min_s`` and
  ``backoff_max_s`` (a few seconds: the cabinet is back within seconds of the broker), until
  :meth:`close`. The backoff starts over as soon as the broker answers (CONNACK), whether
  or not the rest of the session set-up succeeds. :meth:`snapshot` shows the state for telemetry
  (connected, since, reconnects, last error).
- **Publish = acknowledged.** :meth:`publish` with QoS 1 returns only after the broker's
  PUBACK for that very message (MQTT 5: with a success reason code). If the link is down it
  raises :class:`LinkDown` at once; if the connection drops, the broker refuses, or no ack
  comes within ``publish_timeout_s``, it raises :class:`PublishFailed`. The outbox removes an
  event only after a normal return, and retries otherwise (dispatch dedupes by event id).
  aiomqtt's own ``Client.publish`` waits for the PUBACK too, but it ignores the MQTT 5 reason
  code and keeps waiting until its timeout when the connection drops; hence our own hook,
  :class:`~controller.mqtt.acking.AckingClient`, the one place that touches aiomqtt's
  internals (what it relies on is listed there and pinned by a test).
  Each connection uses a fresh aiomqtt client, so paho never replays a message on its own
  after a reconnect: retrying is the caller's decision.
- **Commands in.** Messages on ``cmd`` become :class:`IncomingCommand` values (payload bytes,
  MQTT 5 response topic and correlation data, size received), read with :meth:`receive` or
  ``async for cmd in link.commands()``. Retained messages on ``cmd`` are dropped (a
  command is never stored for later), and so are empty ones (an empty retained publish is
  how a client clears a retained message: nothing to answer, a debug line). Paho hands
  each message straight to the link (no unbounded queue in between), which keeps two
  bounded queues: one for payloads that look like a command (a JSON object within the
  command size limit), served first, and a small one for the rest (answered
  ``bad_json``/``too_large`` when there is time; an oversized payload is kept cut to the
  limit plus one byte, enough for its refusal). A message that finds its queue full is
  dropped, counted (``dropped_commands`` in the snapshot and in telemetry) and logged at
  most once per ``drop_log_interval_s``: a flood of garbage costs bounded memory and
  cannot push a real command out.
- **Replies.** :meth:`reply` sends to the request's MQTT 5 response topic with its
  correlation data when it had one, else to the cabinet's ``reply`` topic.

Threads: aiomqtt drives paho from the event loop (socket reader/writer callbacks); only the
blocking TCP connect runs in an executor thread. The one paho callback hooked here
(``on_publish``) hands its result to the loop with ``call_soon_threadsafe``.

Error tree (every one a :class:`controller.services.ports.PublishError`, the services'
port error)::

    MqttLinkError (PublishError: ConnectionError)
    ├── LinkDown (MqttLinkError, ConnectionError)      not connected: nothing was sent
    │   └── LinkClosed                                 the link was closed
    └── PublishFailed (MqttLinkError, ConnectionError) sent, but not acknowledged
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Protocol

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from controller.contract.messages import (
    DEFAULT_MAX_COMMAND_BYTES,
    MqttLinkStats,
    Status,
    encode,
)
from controller.contract.topics import CabinetTopics
from controller.mqtt.acking import AckingClient
from controller.mqtt.errors import LinkClosed, LinkDown, MqttLinkError, PublishFailed
from controller.settings import MqttConfig

__all__ = [
    "IncomingCommand",
    "LinkClosed",
    "LinkDown",
    "LinkSnapshot",
    "MqttLink",
    "MqttLinkError",
    "MqttLinkSettings",
    "PublishFailed",
    "StatusFactory",
]

log = logging.getLogger(__name__)


class StatusFactory(Protocol):
    """Builds the status message for ``"online"`` or ``"offline"``, with the clock as of now."""

    def __call__(self, state: Literal["online", "offline"]) -> Status: ...


@dataclass(frozen=True, slots=True)
class MqttLinkSettings:
    """Everything the link needs to reach the broker. Plain values, no I/O.

    ``protocol`` is 5 or 311. TLS is on when any of ``tls_ca``/``tls_cert``/``tls_key`` is
    set (or ``tls=True``): ``tls_ca`` unset means the system CAs; ``tls_cert``/``tls_key`` are
    the cabinet's client certificate. ``tls_insecure`` skips the host name check (lab only).
    """

    client_id: str
    host: str = "127.0.0.1"
    port: int = 1883
    protocol: Literal[5, 311] = 5
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 24 * 3600
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_insecure: bool = False
    backoff_min_s: float = 0.25
    backoff_max_s: float = 3.0
    connect_timeout_s: float = 10.0
    publish_timeout_s: float = 10.0
    incoming_queue_size: int = 256
    junk_queue_size: int = 32
    junk_per_s: float = 50.0
    max_command_bytes: int = DEFAULT_MAX_COMMAND_BYTES
    drop_log_interval_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.client_id:
            raise ValueError("client_id is required for a persistent session")
        if self.protocol not in (5, 311):
            raise ValueError(f"protocol must be 5 or 311, not {self.protocol!r}")
        if not 0 < self.backoff_min_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_min_s <= backoff_max_s")
        if self.incoming_queue_size < 1 or self.junk_queue_size < 1:
            raise ValueError("incoming_queue_size and junk_queue_size must be >= 1")
        if self.max_command_bytes < 64:
            raise ValueError("max_command_bytes must be >= 64")

    @property
    def uses_tls(self) -> bool:
        return self.tls or any((self.tls_ca, self.tls_cert, self.tls_key))

    @classmethod
    def from_config(cls, mqtt: MqttConfig, *, client_id: str | None = None,
                    **overrides: Any) -> MqttLinkSettings:
        """From the daemon's typed ``[mqtt]`` section; ``overrides`` set fields that have no
        key (``publish_timeout_s``, queue sizes) or replace one."""
        tls = mqtt.tls

        def path(value: object) -> str | None:
            return str(value) if value is not None else None

        values: dict[str, Any] = {
            "client_id": client_id or mqtt.client_id, "host": mqtt.host, "port": mqtt.port,
            "protocol": mqtt.protocol, "keepalive_s": int(mqtt.keepalive_s),
            "username": mqtt.username, "password": mqtt.password, "tls": tls is not None,
            "tls_ca": path(tls.ca_file) if tls else None,
            "tls_cert": path(tls.cert_file) if tls else None,
            "tls_key": path(tls.key_file) if tls else None,
            "backoff_min_s": float(mqtt.reconnect_min_s),
            "backoff_max_s": float(mqtt.reconnect_max_s),
        }
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class IncomingCommand:
    """One message received on ``cmd``, not yet decoded (see ``decode_command``).

    ``response_topic`` and ``correlation_data`` are the MQTT 5 properties of the request
    (``None`` under MQTT 3.1.1 or when dispatch did not set them); :meth:`MqttLink.reply`
    uses them.
    """

    payload: bytes
    topic: str
    response_topic: str | None = None
    correlation_data: bytes | None = None
    #: How many bytes the message had: more than ``len(payload)`` when an oversized
    #: payload was kept cut to the limit plus one byte (enough for its refusal).
    size: int | None = None


@dataclass(frozen=True, slots=True)
class LinkSnapshot:
    """The link as telemetry shows it. ``since`` is when ``connected`` last changed (wall
    time); ``reconnects`` counts connections after the first one."""

    connected: bool
    since: datetime
    reconnects: int = 0
    connects: int = 0
    last_error: str | None = None
    dropped_commands: int = 0
    closed: bool = False
    takeovers: int = 0
    """Sessions taken over: a disconnection with MQTT 5 reason 0x8E "session taken over",
    or (brokers such as mosquitto 2.0.11 close the old connection without saying why) an
    established connection dropped and the very next attempt accepted at once, which is
    what a second client with this identity causes and an outage does not (the first
    attempt after an outage fails). See :mod:`controller.services.takeover`."""

    def to_stats(self) -> MqttLinkStats:
        """The ``mqtt`` part of the telemetry message."""
        error = self.last_error[:200] if self.last_error else None
        return MqttLinkStats(connected=self.connected, since=self.since,
                             reconnects=self.reconnects, last_error=error,
                             dropped_commands=self.dropped_commands)


SESSION_TAKEN_OVER = 0x8E
"""MQTT 5 DISCONNECT reason: another client connected with the same client id."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class MqttLink:
    """The adapter between the daemon and the broker. See the module docstring.

    Parameters:
        settings: broker address, protocol, TLS, backoff, timeouts.
        topics: this cabinet's topics (status, cmd and reply are used here).
        status: builds the online/offline :class:`Status` (with the clock of the moment).
        on_connection_change: called on the loop with the new snapshot whenever the link
            connects or disconnects (e.g. to flush the outbox); exceptions are logged.
        rng: the jitter source (inject a seeded one in tests).
        wall_clock: aware "now" for the snapshot's ``since``.
        logger: where connection changes are logged (once per change, not per attempt).

    Use as ``async with MqttLink(...) as link:``; entering starts the connection task and
    does not wait for the broker (the cabinet works offline); :meth:`wait_connected` does.
    """

    def __init__(
        self,
        settings: MqttLinkSettings,
        topics: CabinetTopics,
        status: StatusFactory,
        *,
        on_connection_change: Callable[[LinkSnapshot], None] | None = None,
        rng: random.Random | None = None,
        wall_clock: Callable[[], datetime] = _utc_now,
        logger: logging.Logger | None = None,
    ) -> None:
        self._settings = settings
        self._topics = topics
        self._status = status
        self._on_change = on_connection_change
        self._suspect_drop = False
        self._rng = rng or random.Random()
        self._wall = wall_clock
        self._log = logger or log
        self._snapshot = LinkSnapshot(connected=False, since=wall_clock())
        self._commands: collections.deque[IncomingCommand] = collections.deque()
        self._junk: collections.deque[IncomingCommand] = collections.deque()
        self._available = asyncio.Event()
        self._drops_logged_at: float | None = None
        self._junk_budget = _TokenBucket(settings.junk_per_s, settings.junk_queue_size)
        self._drops_since_log = 0
        self._client: AckingClient | None = None
        self._connected = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._close_lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> MqttLink:
        self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    def start(self) -> None:
        """Start the connection task (idempotent). Needs a running loop."""
        if self._closed or self._closing.is_set():
            raise LinkClosed("the link was closed")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._supervise(), name=f"mqtt-link-{self._settings.client_id}")

    async def close(self) -> None:
        """Publish ``offline`` (if connected), disconnect cleanly, stop reconnecting.

        Idempotent and safe to call concurrently; waiting receivers get :class:`LinkClosed`.
        """
        async with self._close_lock:
            if self._closed:
                return
            self._closing.set()  # the connection task publishes offline and disconnects
            task, self._task = self._task, None
            if task is not None:
                s = self._settings
                bound = s.connect_timeout_s + 2 * s.publish_timeout_s + 5.0
                try:
                    async with asyncio.timeout(bound):
                        await asyncio.shield(task)
                except TimeoutError:
                    self._log.error("MQTT link did not stop within %.0fs; cancelling", bound)
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            self._closed = True
            self._set_snapshot(connected=False, closed=True)
            self._available.set()  # waiting receivers see the end

    # -- state -------------------------------------------------------------------------------

    @property
    def topics(self) -> CabinetTopics:
        return self._topics

    @property
    def settings(self) -> MqttLinkSettings:
        return self._settings

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def snapshot(self) -> LinkSnapshot:
        """The connection state now (immutable)."""
        return self._snapshot

    async def wait_connected(self) -> None:
        """Return once connected (subscribed, online published). Bound it with a timeout."""
        while not self._connected.is_set():
            if self._closed or self._closing.is_set():
                raise LinkClosed("the link was closed")
            closing = asyncio.ensure_future(self._closing.wait())
            connected = asyncio.ensure_future(self._connected.wait())
            try:
                await asyncio.wait({closing, connected}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                closing.cancel()
                connected.cancel()

    # -- outbound ----------------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, *,
                      correlation_data: bytes | None = None,
                      ack_timeout: float | None = None) -> None:
        """Publish and return once the broker acknowledged (QoS 1) or took it (QoS 0).

        Raises :class:`LinkDown` (or :class:`LinkClosed`) when not connected: nothing sent;
        :class:`PublishFailed` when the connection dropped before the PUBACK, the broker
        refused it (MQTT 5 reason code >= 0x80) or no ack came within ``ack_timeout``
        (default ``publish_timeout_s``). Under MQTT 5 the message carries payload format
        "UTF-8" and content type ``application/json``, plus ``correlation_data`` if given.
        """
        if qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        if self._closed:
            raise LinkClosed("the link was closed")
        client = self._client
        if client is None or not self._connected.is_set():
            raise LinkDown("not connected to the broker")
        await self._publish_on(client, topic, payload, qos, retain, correlation_data,
                               ack_timeout if ack_timeout is not None
                               else self._settings.publish_timeout_s)

    async def reply(self, incoming: IncomingCommand, payload: bytes, *,
                    ack_timeout: float | None = None) -> str:
        """Send the reply to ``incoming``; returns the topic used.

        MQTT 5 request with the cabinet's own ``reply`` topic, or one level below its
        ``reply/to/`` (``reply/to/INSTANCE``), as response topic: that topic, echoing its
        correlation data. (``reply/to/`` and not ``reply/``: a broker identity with no slash
        in its name, a role, may write under ``lockers/v1/NAME/reply/...`` by the cabinet
        ACL pattern; only the extra level keeps such a topic from reading as another
        cabinet's ``status`` or ``events`` to a dispatch subscription.) Otherwise
        (no response topic, not a plain topic name, or one elsewhere, such as the cabinet's
        own ``status`` or ``events``, where a reply would pose as a report): the cabinet's
        ``reply`` topic. QoS 1, not retained; raises like :meth:`publish`.
        """
        topic = self._topics.reply
        correlation = None
        wanted = incoming.response_topic
        prefix = topic + "/to/"
        if wanted and _plain_topic(wanted) and (
                wanted == topic
                or (wanted.startswith(prefix) and "/" not in wanted[len(prefix):]
                    and len(wanted) > len(prefix))):
            topic = wanted
            correlation = incoming.correlation_data
        await self.publish(topic, payload, qos=1, retain=False, correlation_data=correlation,
                           ack_timeout=ack_timeout)
        return topic

    # -- inbound -----------------------------------------------------------------------------

    async def receive(self) -> IncomingCommand:
        """The next command: those that look like commands first, in arrival order, then
        the rest; raises :class:`LinkClosed` once closed and drained."""
        while True:  # bounded: each turn returns, raises, or waits for a new message
            if self._commands:
                return self._commands.popleft()
            if self._junk:
                wait = self._junk_budget.take(time.monotonic())
                if wait <= 0:
                    return self._junk.popleft()
                # Over budget: what is not a command waits (and overflows, counted) so a
                # flood of it cannot eat the loop; a real command arriving meanwhile wins.
                self._available.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._available.wait()
                continue
            if self._closed:
                raise LinkClosed("the link was closed")
            self._available.clear()
            await self._available.wait()

    async def commands(self) -> AsyncIterator[IncomingCommand]:
        """``async for cmd in link.commands()``: every command until the link closes."""
        while True:
            try:
                yield await self.receive()
            except LinkClosed:
                return

    # -- internals ---------------------------------------------------------------------------

    def _properties(self, correlation_data: bytes | None) -> Properties | None:
        if self._settings.protocol != 5:
            return None
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.PayloadFormatIndicator = 1
        props.ContentType = "application/json"
        if correlation_data is not None:
            props.CorrelationData = correlation_data
        return props

    async def _publish_on(self, client: AckingClient, topic: str, payload: bytes, qos: int,
                          retain: bool, correlation_data: bytes | None,
                          ack_timeout: float) -> None:
        await client.publish_acked(topic, bytes(payload), qos, retain,
                                   self._properties(correlation_data), ack_timeout)

    async def _publish_status(self, client: AckingClient,
                              state: Literal["online", "offline"]) -> None:
        await self._publish_on(client, self._topics.status, encode(self._status(state)), 1,
                               True, None, self._settings.publish_timeout_s)

    def _new_client(self) -> AckingClient:
        s = self._settings
        will = aiomqtt.Will(self._topics.status, encode(self._status("offline")), qos=1,
                            retain=True)
        kwargs: dict[str, Any] = {
            "identifier": s.client_id, "keepalive": s.keepalive_s,
            "timeout": s.connect_timeout_s, "will": will,
            "username": s.username, "password": s.password,
            "logger": self._log.getChild("paho"),
            # The outbox pump keeps up to 64 events in flight, replies and state beside.
            "max_inflight_messages": 128,
        }
        if s.protocol == 5:
            connect_props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            connect_props.SessionExpiryInterval = s.session_expiry_s
            kwargs.update(protocol=aiomqtt.ProtocolVersion.V5, clean_start=False,
                          properties=connect_props)
        else:
            kwargs.update(protocol=aiomqtt.ProtocolVersion.V311, clean_session=False)
        if s.uses_tls:
            kwargs["tls_params"] = aiomqtt.TLSParameters(
                ca_certs=s.tls_ca, certfile=s.tls_cert, keyfile=s.tls_key,
                cert_reqs=ssl.CERT_REQUIRED)
            if s.tls_insecure:
                kwargs["tls_insecure"] = True
        return AckingClient(s.host, s.port, on_message=self._accept, **kwargs)

    def _backoff(self, attempt: int) -> float:
        s = self._settings
        ceiling = min(s.backoff_max_s, s.backoff_min_s * math.pow(2, min(attempt, 30)))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)  # "equal jitter"

    def _set_snapshot(self, **changes: Any) -> None:
        before = self._snapshot
        if "connected" in changes and changes["connected"] != before.connected:
            changes["since"] = self._wall()
        self._snapshot = replace(before, **changes)
        if self._on_change is not None and self._snapshot.connected != before.connected:
            try:
                self._on_change(self._snapshot)
            except Exception:
                self._log.exception("on_connection_change failed")

    def _accept(self, message: paho.MQTTMessage) -> None:
        """Called by paho (on the loop) for every message received: into a bounded queue."""
        topic = message.topic
        if topic != self._topics.cmd:
            return
        if message.retain:
            self._dropped("a retained message (commands are never stored)")
            return
        props = getattr(message, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        payload = bytes(message.payload or b"")
        if not payload:
            # An empty publish is how MQTT clears a retained message: nothing to answer.
            self._log.debug("empty message on %s ignored (a retained command cleared?)",
                            topic)
            return
        limit = self._settings.max_command_bytes
        stripped = payload.strip()
        looks_like_command = (len(payload) <= limit and stripped.startswith(b"{")
                              and stripped.endswith(b"}"))
        size = len(payload)
        if size > limit:
            payload = payload[:limit + 1]  # enough to be refused as too large, no more
        incoming = IncomingCommand(
            payload=payload, topic=topic, size=size,
            response_topic=str(response_topic) if response_topic else None,
            correlation_data=bytes(correlation)[:256] if correlation is not None else None,
        )
        queue, size = ((self._commands, self._settings.incoming_queue_size)
                       if looks_like_command else (self._junk, self._settings.junk_queue_size))
        if len(queue) >= size:
            self._dropped("command queue full")
            return
        queue.append(incoming)
        self._available.set()

    def _dropped(self, why: str) -> None:
        self._set_snapshot(dropped_commands=self._snapshot.dropped_commands + 1)
        self._drops_since_log += 1
        now = time.monotonic()
        last = self._drops_logged_at
        if last is None or now - last >= self._settings.drop_log_interval_s:
            self._log.warning(
                "%s on %s: dropped %d command(s) since the last report, %d in all",
                why, self._topics.cmd, self._drops_since_log, self._snapshot.dropped_commands)
            self._drops_logged_at = now
            self._drops_since_log = 0

    async def _read_until_closing(self, client: AckingClient) -> None:
        """Hand every message to :meth:`_accept` until close() (returns) or the connection
        drops (raises aiomqtt.MqttError)."""
        messages = client.messages
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            while True:
                message = asyncio.ensure_future(anext(messages))
                try:
                    await asyncio.wait({message, closing}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not message.done():
                        message.cancel()
                        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                            await message
                if not message.done() or message.cancelled():
                    return
                message.result()  # messages go to _accept from paho; this only sees a drop
        finally:
            closing.cancel()

    async def _supervise(self) -> None:
        attempt = 0
        was_up = False
        while not self._closing.is_set():
            client = self._new_client()
            try:
                async with client:
                    attempt = 0  # the broker answered: the next failure starts over
                    self._client = client
                    if self._closing.is_set():
                        await self._publish_status(client, "offline")
                        return
                    granted = await client.subscribe(self._topics.cmd, qos=1)
                    if any(_refused(code) for code in granted):
                        raise LinkDown(f"the broker refused the subscription to "
                                       f"{self._topics.cmd} ({granted[0]})")
                    await self._publish_status(client, "online")
                    self._connected.set()
                    suspect, self._suspect_drop = self._suspect_drop, False
                    self._set_snapshot(
                        takeovers=self._snapshot.takeovers + (1 if suspect else 0),
                        connected=True, connects=self._snapshot.connects + 1,
                        reconnects=self._snapshot.reconnects + (1 if was_up else 0))
                    was_up = True
                    self._log.info("connected to %s:%s", self._settings.host,
                                   self._settings.port)
                    await self._read_until_closing(client)
                    if self._connected.is_set():
                        await self._publish_status(client, "offline")
                    return
            except (aiomqtt.MqttError, MqttLinkError, OSError) as exc:
                reason = _describe(exc)
                if self._connected.is_set() or self._snapshot.last_error != reason:
                    self._log.warning("MQTT link down: %s", reason)
                taken = client.disconnect_reason == SESSION_TAKEN_OVER
                # Dropped without a reason while up: suspect until the next attempt says
                # whether the broker is there (accepted at once) or not (an outage).
                self._suspect_drop = self._connected.is_set() and not taken
                self._set_snapshot(last_error=reason,
                                   takeovers=self._snapshot.takeovers + (1 if taken else 0))
            except Exception as exc:  # a bug must not end reconnection: log it, back off, retry
                self._suspect_drop = False
                self._log.exception("MQTT link: unexpected error")
                self._set_snapshot(last_error=_describe(exc))
            finally:
                self._connected.clear()
                self._client = None
                client.fail_pending(PublishFailed("connection lost before the broker "
                                                  "acknowledged"))
                if self._snapshot.connected:
                    self._set_snapshot(connected=False)
            if self._closing.is_set():
                return
            delay = self._backoff(attempt)
            attempt += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closing.wait()


class _TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._tokens = self.burst
        self._at: float | None = None

    def take(self, now: float) -> float:
        """Take a token if there is one (returns 0), else the seconds until there is."""
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return text[:200]


def _refused(code: ReasonCode | int) -> bool:
    if isinstance(code, ReasonCode):
        return code.is_failure
    return code >= 0x80


def _plain_topic(topic: str) -> bool:
    return (0 < len(topic) <= 512 and not any(c in topic for c in "+#\x00")
            and not topic.startswith("$"))
