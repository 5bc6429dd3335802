"""Attacks on a running cabinet: the daemon, the simulator, mosquitto and redis-server as
processes on loopback (``LaneRig``), commands through the broker.

For every attack: the reply is the structured refusal, the simulated lock boards received
no pulse (the simulator's ground truth, ``pulse_received``), and the daemon reported no door
activity. The last is checked with an ordering barrier rather than a sleep: after the
attacks, a validly signed ``open`` of a fresh compartment is sent, and once its pulse events
arrive (the outbox is delivered in order), the only door events since the attacks must be
that command's own.

One lane is shared by the module (started once); each test uses its own compartments so
cooldowns never mix. The restart test runs last.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from controller.contract.messages import Reply, from_builtins
from controller.contract.topics import CabinetTopics
from controller.lab.rig import LaneRig
from controller.mqtt.dispatch import DispatchClient
from controller.security.signing import generate_keypair, sign_command
from tests.support.lane import truth
from tests.support.mqtt_client import MqttProbe

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DOOR_EVENTS = frozenset({"open_requested", "unlock_pulse_sent", "unlock_pulse_acked",
                         "unlock_pulse_failed"})
ALL_COMPARTMENTS = [f"{col}{n:02d}" for col in "AB" for n in range(1, 7)]
OTHER_KEY, _ = generate_keypair()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaneRig]:
    lane = LaneRig(tmp_path_factory.mktemp("security-lane"), emulate_timing=False)
    lane.start()
    try:
        yield lane
    finally:
        lane.close()


def _topics(rig: LaneRig) -> CabinetTopics:
    return CabinetTopics(rig.topic_root, rig.site, rig.cabinet)


@pytest_asyncio.fixture
async def dispatch(rig: LaneRig) -> AsyncIterator[DispatchClient]:
    async with DispatchClient("127.0.0.1", rig.mqtt_port, _topics(rig), key=rig.key,
                              key_id=rig.key_id) as client:
        try:
            await client.wait_online(30)
        except TimeoutError as exc:
            raise AssertionError(f"cabinet never online:\n{rig.logs()}") from exc
        yield client


def pulse_count(rig: LaneRig) -> int:
    """Every pulse any simulated board received, all compartments."""
    return len(truth(rig, "pulse_received"))


def refused(reply: dict[str, Any], code: str | tuple[str, ...]) -> Reply:
    """``reply`` as a Reply, checked to be the structured refusal ``code``."""
    parsed = from_builtins(Reply, reply)
    assert not parsed.ok, reply
    assert parsed.error is not None
    codes = (code,) if isinstance(code, str) else code
    assert parsed.error.code.value in codes, reply
    assert parsed.error.message
    return parsed


def door_events(dispatch: DispatchClient, start: int) -> list[dict[str, Any]]:
    """Door events received from index ``start`` on, deduplicated on the event id as the
    contract asks (events are delivered at least once: a restart may resend some)."""
    seen = {m.payload.get("id") for m in dispatch.messages[:start] if m.channel == "events"}
    out = []
    for m in dispatch.messages[start:]:
        if m.channel != "events" or m.payload.get("id") in seen:
            continue
        seen.add(m.payload.get("id"))
        if m.payload.get("kind") in DOOR_EVENTS:
            out.append(m.payload)
    return out


async def open_signed(dispatch: DispatchClient, compartment: str,
                      command_id: str | None = None) -> tuple[bytes, dict[str, Any]]:
    command = dispatch.build("open", {"compartment": compartment, "reason": "maintenance"},
                             command_id=command_id)
    payload = dispatch.encode(command)
    return payload, await dispatch.send(payload, command["id"])


async def barrier(rig: LaneRig, dispatch: DispatchClient, compartment: str,
                  start: int) -> None:
    """A valid open of ``compartment``; then the door events since ``start`` must be its
    own, exactly once each (anything an attack triggered would be delivered before)."""
    pulses_before = pulse_count(rig)
    _, reply = await open_signed(dispatch, compartment)
    assert reply["ok"], reply
    await dispatch.wait_for(
        lambda m: m.channel == "events" and m.payload.get("kind") == "unlock_pulse_acked"
        and m.payload.get("compartment") == compartment, 15, start=start)
    events = door_events(dispatch, start)
    assert {e.get("compartment") for e in events} == {compartment}, events
    assert sorted(e["kind"] for e in events) == sorted(
        ["open_requested", "unlock_pulse_sent", "unlock_pulse_acked"]), events
    assert pulse_count(rig) == pulses_before + 1


def _start(dispatch: DispatchClient) -> int:
    return len(dispatch.messages)


# -- the positive control ---------------------------------------------------------------------


async def test_valid_signed_open_pulses_exactly_once(
    rig: LaneRig, dispatch: DispatchClient,
) -> None:
    start, before = _start(dispatch), truth(rig, "pulse_received")
    _, reply = await open_signed(dispatch, "A01")
    parsed = from_builtins(Reply, reply)
    assert parsed.ok, reply
    assert parsed.result is not None
    assert parsed.result["compartment"] == "A01"
    new = truth(rig, "pulse_received")[len(before):]
    assert len(new) == 1, new
    assert (new[0]["board"], new[0]["channel"]) == ("locks-a", 0)
    await dispatch.wait_for(lambda m: m.channel == "events"
                            and m.payload.get("kind") == "unlock_pulse_acked", 15, start=start)
    assert [e["kind"] for e in door_events(dispatch, start)] == [
        "open_requested", "unlock_pulse_sent", "unlock_pulse_acked"]


# -- attacks --------------------------------------------------------------------------------


async def test_unsigned_door_and_state_commands_are_unauthenticated(
    rig: LaneRig, dispatch: DispatchClient,
) -> None:
    start, pulses = _start(dispatch), pulse_count(rig)
    cases: dict[str, dict[str, Any]] = {
        "open": {"compartment": "A02", "reason": "maintenance"},
        "assign": {"order_id": "o-e2e-1", "size": "M", "zone": "ambient", "pool": "grocery",
                   "compartment": "A02"},
        "release": {"compartment": "A02"},
        "block": {"compartment": "A02", "reason": "attack"},
        "unblock": {"compartment": "A02", "reason": "attack"},
        "apply_config": {"config": {"timing": {"pulse_s": 5}}},
    }
    for type_, args in cases.items():
        command = dispatch.build(type_, args)
        reply = await dispatch.send(dispatch.encode(command, sign=False), command["id"])
        refused(reply, "unauthenticated")
    assert pulse_count(rig) == pulses
    state = await dispatch.command("get_state", sign=False)
    a02 = next(c for c in state["result"]["compartments"] if c["id"] == "A02")
    assert a02["state"] == "free"
    assert "order_id" not in a02
    await barrier(rig, dispatch, "A03", start)


async def test_open_signed_by_another_key_is_refused(
    rig: LaneRig, dispatch: DispatchClient,
) -> None:
    start, pulses = _start(dispatch), pulse_count(rig)
    command = dispatch.build("open", {"compartment": "A02", "reason": "maintenance"})
    # Another key claiming dispatch's key id, and another key under its own id.
    forged = json.dumps(sign_command(command, OTHER_KEY, rig.key_id)).encode()
    refused(await dispatch.send(forged, command["id"]), "bad_signature")
    stranger = json.dumps(sign_command(command, OTHER_KEY, "attacker-1")).encode()
    refused(await dispatch.send(stranger, command["id"]), "unknown_key")
    assert pulse_count(rig) == pulses
    await barrier(rig, dispatch, "A04", start)


async def test_tampered_compartment_inside_signed_is_a_bad_signature(
    rig: LaneRig, dispatch: DispatchClient,
) -> None:
    start, pulses = _start(dispatch), pulse_count(rig)
    command = dispatch.build("open", {"compartment": "A02", "reason": "maintenance"})
    message = sign_command(command, rig.key, rig.key_id)
    assert '"compartment":"A02"' in message["signed"]
    tampered = {**message, "signed": message["signed"].replace('"A02"', '"A05"')}
    refused(await dispatch.send(json.dumps(tampered).encode(), command["id"]), "bad_signature")
    assert pulse_count(rig) == pulses
    # The untouched original still works afterwards: the forgery did not burn its id.
    reply = await dispatch.send(json.dumps(message).encode(), command["id"])
    assert reply["ok"], reply
    assert pulse_count(rig) == pulses + 1
    assert truth(rig, "pulse_received")[-1]["channel"] == 1  # A02, not A05
    await dispatch.wait_for(lambda m: m.channel == "events"
                            and m.payload.get("kind") == "unlock_pulse_acked"
                            and m.payload.get("compartment") == "A02", 15, start=start)
    events = door_events(dispatch, start)
    assert [(e["kind"], e.get("compartment")) for e in events] == [
        ("open_requested", "A02"), ("unlock_pulse_sent", "A02"), ("unlock_pulse_acked", "A02")]


async def test_command_for_another_cabinet_is_refused(
    rig: LaneRig, dispatch: DispatchClient,
) -> None:
    start, pulses = _start(dispatch), pulse_count(rig)
    command = dispatch.build("open", {"compartment": "A06", "reason": "maintenance"})
    command["cabinet"] = "cab-sim-02"
    refused(await dispatch.send(dispatch.encode(command), command["id"]), "wrong_cabinet")
    assert pulse_count(rig) == pulses
    await barrier(rig, dispatch, "B01", start)


async def test_expired_command_is_refused(rig: LaneRig, dispatch: DispatchClient) -> None:
    start, pulses = _start(dispatch), pulse_count(rig)
    command = dispatch.build("open", {"compartment": "A06", "reason": "maintenance"},
                             ttl_ms=1)
    command["expires"]["uptime_ms"] -= 2_000  # its deadline passed two seconds ago
    reply = refused(await dispatch.send(dispatch.encode(command), command["id"]), "expired")
    assert reply.error is not None
    assert reply.error.field == "expires.uptime_ms"
    assert pulse_count(rig) == pulses
    await barrier(rig, dispatch, "B02", start)


async def test_lifetime_over_30_s_is_refused(rig: LaneRig, dispatch: DispatchClient) -> None:
    start, pulses = _start(dispatch), pulse_count(rig)
    command = dispatch.build("open", {"compartment": "A06", "reason": "maintenance"},
                             ttl_ms=30_000)
    command["expires"]["uptime_ms"] += 5_000  # 35 s of life: too long
    reply = refused(await dispatch.send(dispatch.encode(command), command["id"]), "expired")
    assert reply.error is not None
    assert reply.error.field == "expires.uptime_ms"
    assert "ahead" in reply.error.message
    assert pulse_count(rig) == pulses
    await barrier(rig, dispatch, "B03", start)


async def test_replay_of_an_accepted_command_gets_the_first_reply_and_no_second_pulse(
    rig: LaneRig, dispatch: DispatchClient,
) -> None:
    start = _start(dispatch)
    command_id = f"c-replay-{uuid.uuid4().hex[:8]}"
    payload, first = await open_signed(dispatch, "B04", command_id)
    assert first["ok"], first
    pulses = pulse_count(rig)
    # The same bytes again, twice: the first reply, word for word; no pulse.
    for _ in range(2):
        again = await dispatch.send(payload, command_id)
        assert again == first
    assert pulse_count(rig) == pulses
    # The envelope re-encoded (same signed command, other outer bytes): the same.
    message = json.loads(payload)
    reencoded = json.dumps({"sig": message["sig"], "key_id": message["key_id"],
                            "signed": message["signed"]}, indent=1).encode()
    assert await dispatch.send(reencoded, command_id) == first
    # The same id, other signed content (another compartment): refused, no pulse.
    other = dispatch.build("open", {"compartment": "B05", "reason": "maintenance"},
                           command_id=command_id)
    refused(await dispatch.send(dispatch.encode(other), command_id), "conflict")
    assert pulse_count(rig) == pulses
    await dispatch.wait_for(lambda m: m.channel == "events"
                            and m.payload.get("kind") == "unlock_pulse_acked"
                            and m.payload.get("compartment") == "B04", 15, start=start)
    await barrier(rig, dispatch, "B05", len(dispatch.messages))
    events = door_events(dispatch, start)
    assert [e["kind"] for e in events if e.get("compartment") == "B04"] == [
        "open_requested", "unlock_pulse_sent", "unlock_pulse_acked"]


async def test_a_broker_user_without_the_key_cannot_open_anything(
    rig: LaneRig, dispatch: DispatchClient,
) -> None:
    start, pulses = _start(dispatch), pulse_count(rig)
    topics = _topics(rig)
    # The attacker: any client the broker lets in. It reads the cabinet's clock from the
    # retained status, and the replies; it has no signing key.
    with MqttProbe(rig.mqtt_port, client_id=f"intruder-{uuid.uuid4().hex[:6]}") as intruder:
        intruder.subscribe(topics.status)
        intruder.subscribe(topics.reply)
        status = (await intruder.await_message(topic=topics.status)).json()
        clock = status["cabinet_clock"]
        expires = {"boot_id": clock["boot_id"], "uptime_ms": clock["uptime_ms"] + 20_000}
        attempts: list[tuple[str, bytes]] = []
        for compartment in ALL_COMPARTMENTS:
            command = {"id": f"x-{compartment}-{uuid.uuid4().hex[:6]}", "type": "open",
                       "cabinet": rig.cabinet, "expires": expires,
                       "args": {"compartment": compartment, "reason": "customer_app"}}
            text = json.dumps(command, separators=(",", ":"))
            attempts += [
                (command["id"], text.encode()),                               # plain
                (command["id"], json.dumps(sign_command(command, OTHER_KEY,   # forged
                                                        rig.key_id)).encode()),
                (command["id"], json.dumps({"signed": text, "key_id": rig.key_id,  # no key
                                            "sig": base64.b64encode(bytes(64)).decode()
                                            }).encode()),
            ]
        for _command_id, payload in attempts:
            intruder.publish(topics.cmd, payload)
        replies = await intruder.await_count(
            len(attempts), topic=topics.reply,
            where=lambda m: str(m.json().get("id", "")).startswith("x-"), timeout=30)
    by_id: dict[str, list[str]] = {}
    for message in replies:
        reply = refused(message.json(), ("unauthenticated", "bad_signature"))
        assert reply.id is not None
        assert reply.error is not None
        by_id.setdefault(reply.id, []).append(reply.error.code.value)
    assert len(by_id) == len(ALL_COMPARTMENTS)
    assert all(sorted(codes) == ["bad_signature", "bad_signature", "unauthenticated"]
               for codes in by_id.values()), by_id
    assert pulse_count(rig) == pulses
    await barrier(rig, dispatch, "B06", start)


# -- runs last: it restarts the daemon --------------------------------------------------------


async def test_command_signed_for_the_previous_boot_is_wrong_boot(
    rig: LaneRig, dispatch: DispatchClient,
) -> None:
    old_boot = (await dispatch.wait_online())["boot_id"]
    accepted_id = f"c-boot-{uuid.uuid4().hex[:8]}"
    start = _start(dispatch)
    accepted, first = await open_signed(dispatch, "A01", accepted_id)
    assert first["ok"], first
    await dispatch.wait_for(lambda m: m.channel == "events"
                            and m.payload.get("kind") == "unlock_pulse_acked"
                            and m.payload.get("compartment") == "A01", 15, start=start)
    held = dispatch.build("open", {"compartment": "A03", "reason": "maintenance"},
                          ttl_ms=30_000)
    held_payload = dispatch.encode(held)
    assert held["expires"]["boot_id"] == old_boot

    start = _start(dispatch)
    await asyncio.to_thread(rig.daemon.stop)
    await asyncio.to_thread(rig.daemon.start, False)
    status = await dispatch.wait_for(
        lambda m: m.channel == "status" and m.payload.get("state") == "online"
        and m.payload.get("boot_id") != old_boot, 30, start=start)
    assert status.payload["boot_id"] != old_boot
    pulses = pulse_count(rig)
    start = _start(dispatch)

    # Signed for the previous boot, never sent before: refused.
    refused(await dispatch.send(held_payload, held["id"]), "wrong_boot")
    # Accepted in the previous boot, sent again: the stored first reply, no second pulse.
    again = await dispatch.send(accepted, accepted_id)
    assert again == first
    assert pulse_count(rig) == pulses
    # That stored reply carries the previous boot's clock; read the current one again.
    assert (await dispatch.command("get_state", sign=False))["ok"]
    await barrier(rig, dispatch, "A04", start)
