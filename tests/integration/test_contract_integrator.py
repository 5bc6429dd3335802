"""What an integrator who wrote a client from the guide alone meets on the wire: the clock
on every event, refusals a 3.1.1 client can match (a signed command too large), refusals
that say what was wrong, nothing at all for an empty message (a retained command being
cleared), and the reply of a command a restart interrupted, sent without being asked."""

from __future__ import annotations

import asyncio
import json
import tomllib
from pathlib import Path

import aiomqtt
import pytest

from controller.contract.messages import decode_command
from controller.contract.topics import CabinetTopics
from controller.dispatch import DispatchClient, Received
from controller.lab.rig import LaneRig
from controller.security.signing import sign_command
from controller.services.commands import _digest
from controller.store import Store
from controller.store.records import ReplyTarget
from tests.support.lane import running_lane, wait_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _bad_json(message: Received) -> bool:
    error = message.payload.get("error") or {}
    return message.channel == "reply" and error.get("code") == "bad_json"


async def test_events_carry_the_cabinet_clock_of_their_boot(tmp_path: Path) -> None:
    async with running_lane(tmp_path) as (_rig, dispatch):
        reply = await dispatch.command("block", {"compartment": "A03", "reason": "jammed"})
        assert reply["ok"], reply
        await wait_event(dispatch, "compartment_blocked", "A03")
        events = sorted(dispatch.events(), key=lambda e: e["seq"])
        assert events, "no event"
        last = -1
        for event in events:
            clock = event.get("cabinet_clock")
            assert isinstance(clock, dict), event
            assert clock["boot_id"] == event["boot_id"], event
            assert isinstance(clock["uptime_ms"], int), event
            assert clock["uptime_ms"] >= 0, event
            assert clock["uptime_ms"] >= last, (last, event)  # in seq order, one boot
            last = clock["uptime_ms"]
        # The same clock as the replies' (one boot, one clock).
        assert reply["cabinet_clock"]["boot_id"] == events[-1]["cabinet_clock"]["boot_id"]
        blocked = next(e for e in events if e["kind"] == "compartment_blocked")
        assert blocked["cabinet_clock"]["uptime_ms"] <= reply["cabinet_clock"]["uptime_ms"]


async def test_refusals_a_31_client_can_match_and_that_say_what_is_wrong(
        tmp_path: Path) -> None:
    async with running_lane(tmp_path) as (rig, _dispatch):
        topics = CabinetTopics(rig.topic_root, rig.site, rig.cabinet)
        async with DispatchClient("127.0.0.1", rig.mqtt_port, topics, key=rig.key,
                                  key_id=rig.key_id, protocol=4) as old:
            await old.wait_online(30)
            # A signed command too large: its id is inside the ``signed`` text, cut.
            big = old.build("block", {"compartment": "A03", "reason": "x" * 20_000},
                            command_id="c-big-signed")
            payload = json.dumps(sign_command(big, rig.key, rig.key_id)).encode()
            assert len(payload) > 16_384 + 1
            refused = await old.send(payload, "c-big-signed")
            assert refused["id"] == "c-big-signed", refused
            assert refused["error"]["code"] == "too_large", refused
            assert f"{len(payload)} bytes" in refused["error"]["message"], refused

            async def bad(raw: bytes, command_id: str) -> str:
                reply = await old.send(raw, command_id)
                assert (reply["id"], reply["error"]["code"]) == (command_id, "bad_json"), reply
                return str(reply["error"]["message"])

            assert 'duplicate key "type"' in await bad(
                b'{"id":"c-dup","type":"get_state","type":"get_state"}', "c-dup")
            assert "NaN" in await bad(b'{"id":"c-nan","type":"get_state","n":NaN}', "c-nan")
            assert "not UTF-8" in await bad(b'{"id":"c-utf","type":"\xff"}', "c-utf")
            assert "line 1 column" in await bad(b'{"id":"c-brk","type":}', "c-brk")


async def test_an_empty_message_on_cmd_gets_no_reply(tmp_path: Path) -> None:
    async with running_lane(tmp_path) as (rig, dispatch):
        topics = CabinetTopics(rig.topic_root, rig.site, rig.cabinet)
        start = len(dispatch.messages)
        async with aiomqtt.Client("127.0.0.1", rig.mqtt_port) as client:
            # How MQTT clears a retained message, then a marker that is answered (not an
            # object: refused, after anything sent before it on the same queue).
            await client.publish(topics.cmd, b"", qos=1, retain=True)
            await client.publish(topics.cmd, b"[1]", qos=1)
        marker = await dispatch.wait_for(
            lambda m: _bad_json(m) and "JSON object" in m.payload["error"]["message"],
            15, start=start)
        others = [m.payload for m in dispatch.messages[start:]
                  if _bad_json(m) and m is not marker]
        assert others == [], others


async def _claim_left_by_a_crash(rig: LaneRig, payload: bytes,
                                 reply_to: ReplyTarget | None) -> None:
    raw = tomllib.loads(rig.config_path.read_text())
    prefix = (raw.get("redis", {}).get("key_prefix") or f"locker:{rig.site}").removesuffix(":")
    prefix = prefix.removesuffix(f":{rig.cabinet}")
    store = await Store.connect(f"redis://127.0.0.1:{rig.redis_port}/0", prefix, rig.cabinet)
    try:
        command = decode_command(payload)
        command_id = json.loads(json.loads(payload)["signed"])["id"]
        await store.begin_command(command_id, _digest(payload, command),
                                  pulse="A05", reply_to=reply_to)
    finally:
        await store.close()


async def _restart_after(rig: LaneRig, dispatch: DispatchClient, payload: bytes,
                         reply_to: ReplyTarget | None) -> int:
    """What a kill -9 mid-command leaves: the claim (with its pulse intent) and no reply.
    Returns the index of the first message after the restart."""
    await asyncio.to_thread(rig.daemon.kill)
    await _claim_left_by_a_crash(rig, payload, reply_to)
    start = len(dispatch.messages)
    await asyncio.to_thread(rig.daemon.start, False)
    return start


@pytest.mark.parametrize("protocol", [5, 4])
async def test_an_interrupted_command_is_answered_at_start_up(
        tmp_path: Path, protocol: int) -> None:
    async with running_lane(tmp_path) as (rig, dispatch):
        topics = CabinetTopics(rig.topic_root, rig.site, rig.cabinet)
        async with DispatchClient("127.0.0.1", rig.mqtt_port, topics, key=rig.key,
                                  key_id=rig.key_id, protocol=protocol) as asker:
            await asker.wait_online(30)
            command = asker.build("open", {"compartment": "A05", "reason": "maintenance"},
                                  command_id=f"c-cut-{protocol}")
            payload = json.dumps(sign_command(command, rig.key, rig.key_id)).encode()
            reply_to = (ReplyTarget(asker.reply_topic, b"corr-cut") if protocol == 5
                        else None)
            start = len(asker.messages)
            await _restart_after(rig, dispatch, payload, reply_to)
            # Nobody repeats the command: its reply comes anyway, where it was asked for.
            got = await asker.wait_for(
                lambda m: m.channel == "reply" and m.payload.get("id") == command["id"],
                30, start=start)
            assert got.payload["ok"] is False
            assert got.payload["error"]["code"] == "internal"
            assert "interrupted by a restart" in got.payload["error"]["message"]
            assert "A05" in got.payload["error"]["message"]
            assert got.topic == (asker.reply_topic if protocol == 5 else topics.reply)
            await wait_event(dispatch, "command_interrupted")
            # Once: a repeat of the id returns the same reply, and only that one was sent.
            again = await asker.send(payload, command["id"])
            assert again == got.payload
            sent = [m for m in asker.messages[start:]
                    if m.channel == "reply" and m.payload.get("id") == command["id"]]
            assert len(sent) == 2, [m.payload for m in sent]  # the start-up one, the repeat
