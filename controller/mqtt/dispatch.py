"""The dispatch side of the contract, as a small async client.

What a dispatch integrator does, written once and used by ``lockerctl``, the demo and the
tests: follow a cabinet's ``status``, ``state``, ``events`` and ``telemetry``; keep an
estimate of the cabinet's clock (boot id + uptime) from every message that carries one;
build commands whose deadline is in that clock; sign them with dispatch's Ed25519 key;
publish them with an MQTT 5 response topic and correlation data (or, under MQTT 3.1.1,
match replies on the cabinet's ``reply`` topic by command id); and retry once, with the
clock the cabinet returned, when a command was refused as expired or for a stale boot.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from controller.clock import CabinetClock
from controller.contract.topics import CabinetTopics
from controller.security.codes import SCHEME, seal_code
from controller.security.signing import deadline_from_reading, sign_command

__all__ = ["BrokerError", "DispatchClient", "Received"]

BrokerError = aiomqtt.MqttError
"""What the client raises when the broker cannot be reached or the connection fails
(so callers need not import the MQTT library to catch it)."""


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    channel: str
    payload: dict[str, Any]
    retained: bool
    at: float


class DispatchClient:
    """A dispatch stand-in for one cabinet. Use as ``async with``."""

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
        on_message: Callable[[Received], None] | None = None,
        ttl_ms: int = 10_000,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.topics = topics
        self.key = key
        self.key_id = key_id
        self.grant = grant
        self.ttl_ms = ttl_ms
        self._protocol = protocol
        self._client_id = client_id or f"dispatch-{uuid.uuid4().hex[:8]}"
        # Under the cabinet's own reply topic: the broker's ACL lets a cabinet answer there
        # and nowhere else (deploy/mosquitto/acl).
        self._reply_topic = f"{topics.reply}/to/{self._client_id}"
        self._client = aiomqtt.Client(
            host, port, identifier=self._client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if protocol == 5 else aiomqtt.ProtocolVersion.V311,
            tls_context=tls_context,
        )
        self._on_message = on_message
        self._clock: tuple[CabinetClock, float] | None = None
        self._retired_boots: set[str] = set()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.messages: list[Received] = []
        self.disconnected: BaseException | None = None
        self._arrived = asyncio.Condition()

    async def __aenter__(self) -> DispatchClient:
        await self._client.__aenter__()
        # Nagle off: a command published right after the PUBACK of the last reply would
        # otherwise wait for the broker's delayed TCP ACK (40 ms), as a busy dispatch would.
        sock: Any = self._client._client.socket()
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for topic in (self.topics.status, self.topics.state, self.topics.events,
                      self.topics.telemetry, self.topics.reply):
            await self._client.subscribe(topic, qos=1)
        if self._protocol == 5:
            await self._client.subscribe(self._reply_topic, qos=1)
        self._task = asyncio.get_running_loop().create_task(self._reader())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task
        with contextlib.suppress(aiomqtt.MqttError):
            await self._client.__aexit__(None, None, None)

    # -- receiving ---------------------------------------------------------------------

    async def _reader(self) -> None:
        try:
            await self._read_messages()
        except aiomqtt.MqttError as exc:
            # The broker went away: fail every waiting command now, not at its timeout.
            self.disconnected = exc
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"broker connection lost: {exc}"))

    async def _read_messages(self) -> None:
        async for message in self._client.messages:
            topic = str(message.topic)
            try:
                payload = json.loads(bytes(message.payload))  # type: ignore[arg-type,unused-ignore]
            except (ValueError, TypeError):
                continue
            if not isinstance(payload, dict):
                continue
            parsed = self.topics.parse(topic)
            channel = "reply" if topic == self._reply_topic else (
                parsed.value if parsed is not None else topic)
            received = Received(topic, channel, payload, bool(message.retain), time.monotonic())
            self._learn_clock(payload, received.at)
            if channel == "reply":
                correlation = getattr(message.properties, "CorrelationData", None)
                key = correlation.decode(errors="replace") if correlation else None
                future = self._pending.get(key) if key in self._pending else None
                if future is None:
                    future = self._pending.get(str(payload.get("id")))
                if future is not None and not future.done():
                    future.set_result(payload)
            self.messages.append(received)
            if self._on_message is not None:
                self._on_message(received)
            async with self._arrived:
                self._arrived.notify_all()

    def _learn_clock(self, payload: dict[str, Any], at: float) -> None:
        clock = payload.get("cabinet_clock")
        if not isinstance(clock, dict):
            return
        try:
            reading = CabinetClock(str(clock["boot_id"]), int(clock["uptime_ms"]))
        except (KeyError, TypeError, ValueError):
            return
        if reading.boot_id in self._retired_boots:
            return  # a stored reply repeated from a boot that has since ended
        if self._clock is None:
            self._clock = (reading, at)
            return
        current_boot, current_uptime = self._estimate(at)
        if reading.boot_id != current_boot:
            # A new boot: the old one is over (its commands are refused as wrong_boot).
            self._retired_boots.add(current_boot)
            self._clock = (reading, at)
        elif reading.uptime_ms >= current_uptime:
            self._clock = (reading, at)

    def _estimate(self, at: float) -> tuple[str, int]:
        assert self._clock is not None
        reading, received = self._clock
        return reading.boot_id, reading.uptime_ms + int((at - received) * 1000)

    async def wait_for(
        self, predicate: Callable[[Received], bool], timeout_s: float = 10.0, *, start: int = 0,
    ) -> Received:
        """The first message (from index ``start``) matching ``predicate``."""
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
        message = await self.wait_for(
            lambda m: m.channel == "status" and m.payload.get("state") == "online", timeout_s)
        return message.payload

    def events(self) -> list[dict[str, Any]]:
        return [m.payload for m in self.messages if m.channel == "events"]

    def code_key(self) -> bytes:
        """The cabinet's public code key, from the last ``status`` that carried one."""
        for message in reversed(self.messages):
            key = message.payload.get("code_key") if message.channel == "status" else None
            if isinstance(key, dict) and key.get("scheme") == SCHEME:
                return base64.b64decode(str(key["public_key"]))
        raise RuntimeError("no code key known yet: wait for the cabinet's status first")

    def seal_codes(self, order_id: str, codes: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """``assign.codes`` for ``(purpose, code)`` pairs: each code sealed to this cabinet,
        for this order and its position (never sent or kept in clear)."""
        key = self.code_key()
        return [seal_code(key, self.topics.cabinet, order_id, f"{purpose}-{index}", purpose,
                          code) for index, (purpose, code) in enumerate(codes)]

    # -- commands ----------------------------------------------------------------------

    def build(self, type_: str, args: dict[str, Any], *, command_id: str | None = None,
              ttl_ms: int | None = None) -> dict[str, Any]:
        if self._clock is None:
            raise RuntimeError("no cabinet clock known yet: wait for status first")
        reading, received = self._clock
        expires = deadline_from_reading(reading, received_at=received, now=time.monotonic(),
                                        ttl_ms=ttl_ms or self.ttl_ms)
        return {"id": command_id or f"c-{uuid.uuid4().hex[:20]}", "type": type_,
                "site": self.topics.site, "cabinet": self.topics.cabinet, "expires": expires,
                "args": args}

    def encode(self, command: dict[str, Any], *, sign: bool = True) -> bytes:
        if sign and self.key is not None:
            return json.dumps(sign_command(command, self.key, self.key_id,
                                           grant=self.grant)).encode()
        return json.dumps(command, separators=(",", ":")).encode()

    async def send(
        self, payload: bytes, command_id: str, timeout_s: float = 15.0
    ) -> dict[str, Any]:
        """Publish a raw command payload and wait for the reply carrying ``command_id``."""
        if self.disconnected is not None:
            raise ConnectionError(f"broker connection lost: {self.disconnected}")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = future
        properties = None
        if self._protocol == 5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ResponseTopic = self._reply_topic
            properties.CorrelationData = command_id.encode()
        try:
            await self._client.publish(self.topics.cmd, payload, qos=1, properties=properties)
            return await asyncio.wait_for(future, timeout_s)
        finally:
            self._pending.pop(command_id, None)

    async def command(self, type_: str, args: dict[str, Any] | None = None, *,
                      sign: bool = True, command_id: str | None = None,
                      timeout_s: float = 15.0) -> dict[str, Any]:
        """Build, sign, send; retry once with the cabinet's own clock if it was stale."""
        command = self.build(type_, args or {}, command_id=command_id)
        reply = await self.send(self.encode(command, sign=sign), command["id"], timeout_s)
        code = (reply.get("error") or {}).get("code")
        if not reply.get("ok") and code in ("expired", "wrong_boot"):
            command = self.build(type_, args or {}, command_id=command["id"])
            reply = await self.send(self.encode(command, sign=sign), command["id"], timeout_s)
        return reply
