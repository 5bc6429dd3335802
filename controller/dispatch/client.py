"""The dispatch client: one cabinet, seen and commanded from dispatch's side.

What a dispatch integrator does, written once and used by ``lockerctl``, the demo, the
lab's fleet, the tests and the benchmarks:

* **follow** a cabinet's ``status``, ``state``, ``events``, ``reply`` and ``telemetry``
  (QoS 1 subscriptions);
* keep a **clock** per cabinet boot (:class:`~controller.dispatch.clock.ClockTracker`) from
  every message that carries ``cabinet_clock``, and build command deadlines in it;
* **dedupe** events by id and **detect gaps** by sequence number
  (:class:`~controller.dispatch.events.EventTracker`): ``on_event`` sees each event once,
  ``on_gap`` hears of a jump;
* **sign** commands with dispatch's Ed25519 key (and a technician's grant when given);
* match **replies** by MQTT 5 correlation data on a response topic of its own, or, under
  MQTT 3.1.1, by command id on the cabinet's ``reply`` topic;
* keep a **persistent session** when given a stable ``client_id`` and ``persistent=True``:
  ``clean_start`` off and a session expiry under MQTT 5, ``clean_session`` off under
  3.1.1, so the broker queues the cabinet's events while dispatch is away;
* **reconnect** (``reconnect=True``) with a capped back-off, and send again, under the same
  command id, a command whose reply was lost with the connection (the cabinet answers a
  repeated id with its first result: a door never opens twice for one command);
* send a command again under its id when its reply does not come (``resend_after_s``);
* read the cabinet's clock with ``get_clock`` (plain, no deadline) before a command when
  the clock it has came only from a retained message or was last refreshed more than
  :data:`CLOCK_FRESH_S` ago; and, as a fallback, retry a command once, with the clock the
  cabinet returned, when it was refused as ``expired`` or ``wrong_boot``;
* **seal pickup codes only to the pinned code key** (``code_key_pin``, read out of band
  at commissioning: :mod:`controller.dispatch.pins`), never to the key of the last
  status; a status showing another key is an incident (:attr:`code_key_changed`,
  ``on_code_key_changed``) and sealing is refused.

Errors: :data:`BrokerError` (the broker cannot be reached at connect), ``ConnectionError``
(the connection was lost and not regained before the command's timeout), ``TimeoutError``
(no reply in time), ``LookupError`` (no cabinet clock known yet: wait for ``status``),
:class:`~controller.dispatch.pins.CodeKeyNotPinned` and
:class:`~controller.dispatch.pins.CodeKeyChanged` (codes not sealed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from controller.contract.topics import CabinetTopics
from controller.dispatch.clock import ClockTracker
from controller.dispatch.events import EventTracker, Gap
from controller.dispatch.pins import (
    CodeKeyChanged,
    CodeKeyNotPinned,
    CodeKeyPinError,
    PinnedCodeKey,
)
from controller.mqtt.acking import NoDelayClient
from controller.security.codes import seal_code
from controller.security.signing import deadline_from_reading, sign_command

__all__ = ["BrokerError", "DispatchClient", "Received"]

log = logging.getLogger("controller.dispatch")
#: paho's own messages (socket errors on a lost connection), apart so they can be tuned.
MQTT_LOG = logging.getLogger("controller.dispatch.mqtt")

BrokerError = aiomqtt.MqttError
"""What the client raises when the broker cannot be reached or the connection fails
(so callers need not import the MQTT library to catch it)."""

#: The clock is read again with ``get_clock`` before a command when no live message
#: (a reply, telemetry, an event: not a retained one) brought it within this many seconds.
CLOCK_FRESH_S = 5.0

#: A persistent session outlives a dispatch restart by this long by default (MQTT 5).
DEFAULT_SESSION_EXPIRY_S = 24 * 3600


class _CabinetBack(Exception):
    """The cabinet came back online while a command waited for its reply."""


@dataclass(frozen=True, slots=True)
class Received:
    """One message from the cabinet: its topic, channel (``status``, ``state``, ``events``,
    ``reply``, ``telemetry``), decoded JSON payload, retained flag, and when it arrived
    (dispatch's monotonic seconds)."""

    topic: str
    channel: str
    payload: dict[str, Any]
    retained: bool
    at: float


class DispatchClient:
    """Dispatch's view of one cabinet. Use as ``async with``. See the module docstring.

    ``keep_messages``: keep every message in :attr:`messages` (for :meth:`wait_for`);
    a long-running integration turns it off and uses the callbacks.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topics: CabinetTopics,
        *,
        key: Ed25519PrivateKey | None = None,
        key_id: str = "dispatch",
        grant: dict[str, str] | None = None,
        protocol: int = 5,
        client_id: str | None = None,
        persistent: bool = False,
        session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S,
        reconnect: bool = False,
        resend_after_s: float | None = None,
        on_message: Callable[[Received], None] | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        on_gap: Callable[[Gap], None] | None = None,
        after_seq: int | None = None,
        keep_messages: bool = True,
        ttl_ms: int = 10_000,
        tls_context: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
        code_key_pin: bytes | PinnedCodeKey | None = None,
        on_code_key_changed: Callable[[CodeKeyChanged], None] | None = None,
    ) -> None:
        if protocol not in (5, 4, 311):
            raise ValueError("protocol is 5 (MQTT 5) or 4/311 (MQTT 3.1.1)")
        if persistent and not client_id:
            raise ValueError("a persistent session needs a stable client_id")
        self.topics = topics
        self.key = key
        self.key_id = key_id
        self.grant = grant
        self.ttl_ms = ttl_ms
        self.protocol = 5 if protocol == 5 else 4
        self.client_id = client_id or f"dispatch-{uuid.uuid4().hex[:8]}"
        self.persistent = persistent
        self.reconnect = reconnect
        # A reply can be lost (the cabinet answered while its own link was down): the
        # contract's remedy is to repeat the command id, which returns the first result.
        self.resend_after_s = resend_after_s if resend_after_s is not None else (
            5.0 if reconnect else None)
        # Under the cabinet's own reply topic: the broker's ACL lets a cabinet answer there
        # and nowhere else (deploy/mosquitto/acl).
        self.reply_topic = f"{topics.reply}/to/{self.client_id}"
        self._connect_args: dict[str, Any] = {
            "hostname": host, "port": port, "tls_context": tls_context,
            "username": username, "password": password,
        }
        self._session_expiry_s = session_expiry_s
        self._client = self._new_client()
        self._on_message = on_message
        self._on_event = on_event
        self.clock = ClockTracker()
        self.tracker = EventTracker(after_seq=after_seq, on_gap=self._gap)
        self._on_gap = on_gap
        self._keep = keep_messages
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self.messages: list[Received] = []
        self._unique_events: list[dict[str, Any]] = []
        self.disconnected: BaseException | None = None
        self.reconnects = 0
        self.resends = 0
        self._arrived = asyncio.Condition()
        # Set (and replaced) each time the cabinet says it is online: a command waiting
        # then may have lost its reply while the cabinet was away.
        self._back_online = asyncio.Event()
        self._pin: PinnedCodeKey | None = None
        #: The last code key change seen (a status showing another key than the pin), or
        #: ``None``: an integration alarms on it (or on ``on_code_key_changed``).
        self.code_key_changed: CodeKeyChanged | None = None
        self._on_code_key_changed = on_code_key_changed
        self.code_key_pin = code_key_pin
        #: The last time (here, monotonic) a live message brought the cabinet's clock.
        self.live_clock_at: float | None = None
        self.clock_queries = 0

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> DispatchClient:
        await self._connect()
        self._task = asyncio.get_running_loop().create_task(self._reader())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Disconnect (idempotent). Commands still waiting fail with ConnectionError."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task
            self._task = None
        self._fail_pending("client closed")
        if self._connected.is_set():
            self._connected.clear()
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)

    def _new_client(self) -> aiomqtt.Client:
        # A fresh client per connection: an aiomqtt client re-entered after a lost
        # connection can report the old CONNACK as the new one.
        v5 = self.protocol == 5
        connect_properties = None
        if v5 and self.persistent:
            connect_properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            connect_properties.SessionExpiryInterval = self._session_expiry_s
        return NoDelayClient(
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else not self.persistent,
            clean_start=(not self.persistent) if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=connect_properties, logger=MQTT_LOG, **self._connect_args,
        )

    async def _connect(self) -> None:
        self._client = self._new_client()
        await self._client.__aenter__()
        try:
            # One SUBSCRIBE for every topic: one round trip, not six, when a whole fleet of
            # clients comes back at once after a broker restart.
            topics = [self.topics.status, self.topics.state, self.topics.events,
                      self.topics.telemetry, self.topics.reply]
            if self.protocol == 5:
                topics.append(self.reply_topic)
            await self._client.subscribe([(topic, 1) for topic in topics])
        except BaseException:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)
            raise
        self.disconnected = None
        self._connected.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            await self._connected.wait()

    # -- receiving ---------------------------------------------------------------------

    async def _reader(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._read_messages()
                return
            except aiomqtt.MqttError as exc:
                # The broker went away: fail every waiting command now, not at its timeout
                # (command() sends it again once reconnected, under the same id).
                self.disconnected = exc
                self._connected.clear()
                self._fail_pending(f"broker connection lost: {exc}")
                async with self._arrived:
                    self._arrived.notify_all()
                if not self.reconnect or self._closing:
                    return
                log.info("dispatch connection lost", extra={"ctx": {
                    "client": self.client_id, "error": str(exc)}})
            while not self._closing:
                await asyncio.sleep(backoff * (0.5 + random.random()))
                try:
                    await self._connect()
                except aiomqtt.MqttError:
                    backoff = min(backoff * 2, 5.0)
                    continue
                self.reconnects += 1
                backoff = 0.1
                break

    def _fail_pending(self, why: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError(why))

    async def _read_messages(self) -> None:
        async for message in self._client.messages:
            topic = str(message.topic)
            try:
                payload = json.loads(bytes(message.payload))  # type: ignore[arg-type,unused-ignore]
            except (ValueError, TypeError):
                continue
            if not isinstance(payload, dict):
                continue
            correlation = getattr(message.properties, "CorrelationData", None)
            self.feed(topic, payload, retained=bool(message.retain), at=time.monotonic(),
                      correlation=correlation)
            async with self._arrived:
                self._arrived.notify_all()

    def feed(self, topic: str, payload: dict[str, Any], *, retained: bool = False,
             at: float | None = None, correlation: bytes | None = None) -> Received:
        """Take one decoded message as if it came from the broker (the reader calls this;
        a test can too): learn the clock, judge an event, resolve a waiting command."""
        parsed = self.topics.parse(topic)
        channel = "reply" if topic == self.reply_topic else (
            parsed.value if parsed is not None else topic)
        received = Received(topic, channel, payload, retained,
                            time.monotonic() if at is None else at)
        if self.clock.learn_from(payload, received.at) and not retained:
            self.live_clock_at = received.at
        if channel == "status":
            self._check_code_key(payload)
        if channel == "status" and payload.get("state") == "online":
            self._back_online.set()
            self._back_online = asyncio.Event()
        if channel == "reply":
            key = correlation.decode(errors="replace") if correlation else None
            future = self._pending.get(key) if key is not None else None
            if future is None:
                future = self._pending.get(str(payload.get("id")))
            if future is not None and not future.done():
                future.set_result(payload)
        elif channel == "events" and self.tracker.accept(payload).is_new:
            if self._keep:
                self._unique_events.append(payload)
            if self._on_event is not None:
                self._on_event(payload)
        if self._keep:
            self.messages.append(received)
        if self._on_message is not None:
            self._on_message(received)
        return received

    def _gap(self, gap: Gap) -> None:
        log.warning("event gap", extra={"ctx": {
            "cabinet": self.topics.cabinet, "first": gap.first, "last": gap.last,
            "boot": gap.boot_id}})
        if self._on_gap is not None:
            self._on_gap(gap)

    async def wait_for(
        self, predicate: Callable[[Received], bool], timeout_s: float = 10.0, *, start: int = 0,
    ) -> Received:
        """The first message (from index ``start`` of :attr:`messages`) matching
        ``predicate``; TimeoutError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        index = start
        async with self._arrived:
            while True:
                while index < len(self.messages):
                    message = self.messages[index]
                    index += 1
                    if predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no matching message")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), remaining)

    async def wait_online(self, timeout_s: float = 20.0) -> dict[str, Any]:
        """The cabinet's ``status`` once it says ``online``."""
        message = await self.wait_for(
            lambda m: m.channel == "status" and m.payload.get("state") == "online", timeout_s)
        return message.payload

    def events(self) -> list[dict[str, Any]]:
        """Every event received so far, each once (duplicates dropped), in arrival order."""
        return list(self._unique_events)

    # -- the code key ------------------------------------------------------------------

    @property
    def code_key_pin(self) -> PinnedCodeKey | None:
        """The cabinet's code key as pinned at commissioning: the only key codes are sealed
        to. Set it from a pin store (:class:`~controller.dispatch.pins.CodeKeyPins`), from
        the raw public key bytes, or with :meth:`pin_from_status`."""
        return self._pin

    @code_key_pin.setter
    def code_key_pin(self, value: bytes | PinnedCodeKey | None) -> None:
        if value is not None and not isinstance(value, PinnedCodeKey):
            value = PinnedCodeKey.of(bytes(value))
        self._pin = value
        self.code_key_changed = None
        for message in reversed(self.messages):
            if message.channel == "status" and isinstance(message.payload.get("code_key"),
                                                          dict):
                self._check_code_key(message.payload)
                break

    def published_code_key(self) -> PinnedCodeKey | None:
        """The code key the last ``status`` that carried one shows (whoever published it:
        never seal to it without comparing it to the pin). ``CodeKeyPinError`` when that
        status's key is malformed (its id not the key's own)."""
        for message in reversed(self.messages):
            key = message.payload.get("code_key") if message.channel == "status" else None
            if isinstance(key, dict):
                return PinnedCodeKey.from_published(key)
        return None

    def _check_code_key(self, status: dict[str, Any]) -> None:
        published = status.get("code_key")
        if self._pin is None or not isinstance(published, dict):
            return
        try:
            seen = PinnedCodeKey.from_published(published)
        except CodeKeyPinError:
            seen_id = f"{published.get('key_id')} (malformed)"
        else:
            if seen == self._pin:
                return
            seen_id = seen.key_id
        if self.code_key_changed is not None and self.code_key_changed.seen_key_id == seen_id:
            return  # reported already
        change = CodeKeyChanged(self.topics.cabinet, self._pin.key_id, seen_id)
        self.code_key_changed = change
        log.error("cabinet code key differs from the pin", extra={"ctx": {
            "cabinet": self.topics.cabinet, "pinned": self._pin.key_id, "seen": seen_id}})
        if self._on_code_key_changed is not None:
            self._on_code_key_changed(change)

    def code_key(self) -> bytes:
        """The pinned public code key; :class:`CodeKeyNotPinned` when there is none."""
        if self._pin is None:
            raise CodeKeyNotPinned(
                f"cabinet {self.topics.site}/{self.topics.cabinet}: no code key pinned; pin "
                "the key whose id was read on the cabinet (locker-controller "
                "--show-code-key), never the one a status shows alone")
        return self._pin.public_key

    def pin_from_status(self, expected_key_id: str) -> PinnedCodeKey:
        """Pin the key the cabinet's status shows, only if its id is ``expected_key_id``
        (read on the cabinet, out of band). :class:`CodeKeyChanged` when the status shows
        another key (or another key is pinned already), ``LookupError`` when no status
        with a code key has come yet."""
        seen = self.published_code_key()
        if seen is None:
            raise LookupError("no code key known yet: wait for the cabinet's status first")
        if seen.key_id != expected_key_id.strip().lower():
            raise CodeKeyChanged(self.topics.cabinet, expected_key_id, seen.key_id,
                                 what="read on the cabinet")
        if self._pin is not None and self._pin != seen:
            raise CodeKeyChanged(self.topics.cabinet, self._pin.key_id, seen.key_id)
        self.code_key_pin = seen
        return seen

    def seal_codes(self, order_id: str, codes: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """``assign.codes`` for ``(purpose, code)`` pairs: each code sealed to this
        cabinet's **pinned** code key, for this order and its position (never sent or kept
        in clear). :class:`CodeKeyNotPinned` without a pin; :class:`CodeKeyChanged` when
        the cabinet's last status shows another key (nothing is sealed then)."""
        key = self.code_key()
        pinned_id = self._pin.key_id if self._pin is not None else ""
        try:
            seen = self.published_code_key()
        except CodeKeyPinError:
            raise CodeKeyChanged(self.topics.cabinet, pinned_id, "(malformed)") from None
        if seen is not None and seen.public_key != key:
            raise CodeKeyChanged(self.topics.cabinet, pinned_id, seen.key_id)
        return [seal_code(key, self.topics.cabinet, order_id, f"{purpose}-{index}", purpose,
                          code) for index, (purpose, code) in enumerate(codes)]

    # -- the clock ---------------------------------------------------------------------

    def clock_is_fresh(self, now: float | None = None) -> bool:
        """Whether a live message (not a retained one) brought the cabinet's clock within
        :data:`CLOCK_FRESH_S`. A retained ``status`` carries the clock of its publication,
        which may be hours old."""
        if not self.clock.known or self.live_clock_at is None:
            return False
        return (time.monotonic() if now is None else now) - self.live_clock_at <= CLOCK_FRESH_S

    async def sync_clock(self, timeout_s: float = 5.0) -> bool:
        """Read the cabinet's clock now with ``get_clock`` (plain, no deadline, acts on
        nothing). ``True`` when the cabinet answered with its clock; ``False`` when it did
        not in ``timeout_s`` or refused (a command then falls back on its retry)."""
        query = {"id": f"clk-{uuid.uuid4().hex[:20]}", "type": "get_clock",
                 "site": self.topics.site, "cabinet": self.topics.cabinet}
        self.clock_queries += 1
        try:
            reply = await self.send(json.dumps(query, separators=(",", ":")).encode(),
                                    query["id"], timeout_s)
        except (TimeoutError, ConnectionError, _CabinetBack) as exc:
            # _CabinetBack: the cabinet reconnected while this waited (its reply may be
            # lost); the command's own retry on a stale deadline covers it.
            log.info("get_clock unanswered", extra={"ctx": {
                "cabinet": self.topics.cabinet, "error": str(exc) or type(exc).__name__}})
            return False
        result = reply.get("result")
        if not reply.get("ok") or not isinstance(result, dict):
            log.warning("get_clock refused", extra={"ctx": {
                "cabinet": self.topics.cabinet, "error": reply.get("error")}})
            return False
        at = time.monotonic()
        self.clock.learn_from({"cabinet_clock": result}, at)
        if self.clock.known:
            self.live_clock_at = at
        return True

    async def ensure_clock(self, timeout_s: float = 5.0) -> None:
        """:meth:`sync_clock` unless the clock is fresh (:meth:`clock_is_fresh`)."""
        if not self.clock_is_fresh():
            await self.sync_clock(timeout_s)

    # -- commands ----------------------------------------------------------------------

    def build(self, type_: str, args: dict[str, Any], *, command_id: str | None = None,
              ttl_ms: int | None = None) -> dict[str, Any]:
        """A plain command whose deadline is ``ttl_ms`` from now in the cabinet's clock."""
        last = self.clock.last
        if last is None:
            raise LookupError("no cabinet clock known yet: wait for status first")
        reading, received = last
        expires = deadline_from_reading(reading, received_at=received, now=time.monotonic(),
                                        ttl_ms=ttl_ms or self.ttl_ms)
        return {"id": command_id or f"c-{uuid.uuid4().hex[:20]}", "type": type_,
                "site": self.topics.site, "cabinet": self.topics.cabinet, "expires": expires,
                "args": args}

    def encode(self, command: dict[str, Any], *, sign: bool = True) -> bytes:
        """The payload: signed with dispatch's key when it has one (and ``sign``)."""
        if sign and self.key is not None:
            return json.dumps(sign_command(command, self.key, self.key_id,
                                           grant=self.grant)).encode()
        return json.dumps(command, separators=(",", ":")).encode()

    async def send(
        self, payload: bytes, command_id: str, timeout_s: float = 15.0
    ) -> dict[str, Any]:
        """Publish a raw command payload and wait for the reply carrying ``command_id``."""
        if not self._connected.is_set():
            raise ConnectionError(f"broker connection lost: {self.disconnected}")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = future
        properties = None
        if self.protocol == 5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ResponseTopic = self.reply_topic
            properties.CorrelationData = command_id.encode()
        # The PUBACK of a publish on a connection that just died never comes: wait for the
        # reply (which the reader fails when the connection goes) or the publish's error.
        publish = asyncio.ensure_future(self._client.publish(
            self.topics.cmd, payload, qos=1, properties=properties))
        back = asyncio.ensure_future(self._back_online.wait())
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.wait((publish, future), return_when=asyncio.FIRST_COMPLETED)
                if publish.done():
                    publish.result()
                if self.reconnect and not future.done():
                    await asyncio.wait((future, back), return_when=asyncio.FIRST_COMPLETED)
                    if not future.done():
                        raise _CabinetBack
                return await future
        except aiomqtt.MqttError as exc:
            raise ConnectionError(f"command not sent: {exc}") from exc
        finally:
            back.cancel()
            self._pending.pop(command_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: the publish's error may have won the race
            if not publish.done():
                publish.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await publish

    async def command(self, type_: str, args: dict[str, Any] | None = None, *,
                      sign: bool = True, command_id: str | None = None,
                      timeout_s: float = 15.0, ttl_ms: int | None = None) -> dict[str, Any]:
        """Build, sign, send and return the reply.

        Reads the cabinet's clock first with ``get_clock`` when it is not fresh
        (:meth:`clock_is_fresh`). Retries once with the cabinet's own clock if the command
        was refused as stale (``expired``, ``wrong_boot``). With ``reconnect``, a command
        whose connection was lost is sent again under the same id once the client is back,
        until ``timeout_s`` (the cabinet answers a repeated id with its first result). With
        ``resend_after_s`` (5 s by default with ``reconnect``), a command unanswered that
        long is sent again under its id, for a reply lost on the cabinet's side; with
        ``reconnect`` it is also sent again at once when the cabinet says ``online`` while
        it waits (the cabinet reconnected: a reply it sent while away is lost)."""
        deadline = time.monotonic() + timeout_s
        if not self.clock_is_fresh() and (not self.reconnect or self._connected.is_set()):
            # The clock came from a retained message, or long ago: read it first rather
            # than be refused as expired (the retry below stays as the fallback).
            await self.sync_clock(min(5.0, timeout_s / 2))
        command = self.build(type_, args or {}, command_id=command_id, ttl_ms=ttl_ms)
        # A repeat is the same bytes: the cabinet compares a repeated id's command with
        # the first (another deadline would be "another command", a conflict).
        payload = self.encode(command, sign=sign)
        stale_retried = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no reply to {command['id']} within {timeout_s}s")
            try:
                if self.reconnect and not self._connected.is_set():
                    await self.wait_connected(remaining)
                wait_s = deadline - time.monotonic()
                if self.resend_after_s is not None:
                    wait_s = min(wait_s, self.resend_after_s)
                reply = await self.send(payload, command["id"], wait_s)
            except TimeoutError:
                if self.resend_after_s is None or time.monotonic() >= deadline:
                    raise
                self.resends += 1
                continue
            except _CabinetBack:
                self.resends += 1  # its reply may have been lost while it was away
                continue
            except ConnectionError:
                if not self.reconnect or self._closing:
                    raise
                continue
            code = (reply.get("error") or {}).get("code")
            if not reply.get("ok") and code in ("expired", "wrong_boot") and not stale_retried:
                # Refused before it was recorded: the same id with the cabinet's clock.
                stale_retried = True
                command = self.build(type_, args or {}, command_id=command["id"],
                                     ttl_ms=ttl_ms)
                payload = self.encode(command, sign=sign)
                continue
            return reply
