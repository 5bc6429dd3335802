"""The dispatch SDK against a real mosquitto and a real daemon, under MQTT 5 and 3.1.1.

What an integrator relies on: replies matched to their command (correlation data under
MQTT 5, the command id on the cabinet's reply topic under 3.1.1); a persistent session
that keeps the cabinet's events while dispatch is away; reconnection across a broker
restart, with a command lost in it answered once; each event once, no gap.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from controller.contract.topics import CabinetTopics
from controller.dispatch import DispatchClient, Gap
from controller.lab.rig import LaneRig

pytestmark = pytest.mark.integration


def _client(rig: LaneRig, protocol: int, gaps: list[Gap], **kwargs: Any) -> DispatchClient:
    topics = CabinetTopics(rig.topic_root, rig.site, rig.cabinet)
    return DispatchClient("127.0.0.1", rig.mqtt_port, topics, key=rig.key, key_id=rig.key_id,
                          protocol=protocol, client_id=f"dispatch-sdk-{protocol}",
                          persistent=True, reconnect=True, session_expiry_s=600,
                          on_gap=gaps.append, **kwargs)


async def _event_of(client: DispatchClient, kind: str, compartment: str,
                    timeout_s: float = 20.0) -> dict[str, Any]:
    message = await client.wait_for(
        lambda m: m.channel == "events" and m.payload.get("kind") == kind
        and m.payload.get("compartment") == compartment, timeout_s)
    return message.payload


@pytest.mark.parametrize("protocol", [5, 311])
async def test_sdk_session_reconnection_dedupe_and_replies(
    tmp_path: Path, protocol: int,
) -> None:
    rig = LaneRig(tmp_path, overrides={"mqtt.protocol": "5" if protocol == 5 else "311"})
    await asyncio.to_thread(rig.start)
    gaps: list[Gap] = []
    try:
        async with _client(rig, protocol, gaps) as dispatch:
            await dispatch.wait_online(30)
            reply = await dispatch.command("get_state", sign=False)
            assert reply["ok"], reply
            assert reply["result"]["cabinet"] == rig.cabinet
            blocked = await dispatch.command(
                "block", {"compartment": "A02", "reason": "sdk test"}, command_id="c-sdk-1")
            assert blocked["ok"], blocked
            first = await _event_of(dispatch, "compartment_blocked", "A02")
            seen_until = dispatch.tracker.highest
            assert seen_until is not None

        # Dispatch away: the cabinet's events wait in dispatch's persistent session.
        async with DispatchClient(
            "127.0.0.1", rig.mqtt_port, CabinetTopics(rig.topic_root, rig.site, rig.cabinet),
            key=rig.key, key_id=rig.key_id, protocol=protocol,
        ) as other:
            await other.wait_online(30)
            reply = await other.command(
                "unblock", {"compartment": "A02", "reason": "sdk test"}, command_id="c-sdk-2")
            assert reply["ok"], reply
            await _event_of(other, "compartment_unblocked", "A02")

        async with _client(rig, protocol, gaps, after_seq=seen_until) as dispatch:
            queued = await _event_of(dispatch, "compartment_unblocked", "A02")
            assert queued["seq"] > first["seq"]
            await dispatch.wait_online(30)

            # The broker restarts under a command: it is sent again under its id once the
            # client is back, and the door-independent block acts once.
            await asyncio.to_thread(rig.broker.stop)
            pending = asyncio.ensure_future(dispatch.command(
                "block", {"compartment": "A03", "reason": "sdk test"}, command_id="c-sdk-3",
                timeout_s=60))
            await asyncio.sleep(0)  # lets the command see the connection gone
            await asyncio.to_thread(rig.broker.start)
            reply = await pending
            assert reply["ok"], reply
            assert dispatch.reconnects >= 1
            await _event_of(dispatch, "compartment_blocked", "A03", timeout_s=30)
            blocks = [e for e in dispatch.events() if e["kind"] == "compartment_blocked"
                      and e.get("compartment") == "A03"]
            assert len(blocks) == 1
            assert dispatch.tracker.missing == []
            assert gaps == []
            ids = [e["id"] for e in dispatch.events()]
            assert len(ids) == len(set(ids))
    finally:
        await asyncio.to_thread(rig.close)


def test_the_example_of_the_sdk_page_runs(tmp_path: Path) -> None:
    """docs/dispatch-sdk.md's first program, against a lane of its own (ports, ids and the
    key adapted; the system broker on 1883 is never used)."""
    import re
    import subprocess
    import sys

    from controller.dispatch import CodeKeyPins
    from controller.security.signing import save_private_key

    page = (Path(__file__).resolve().parents[2] / "docs" / "dispatch-sdk.md").read_text()
    code = re.search(r"```python\n(.*?)```", page, re.S)
    assert code is not None
    rig = LaneRig(tmp_path / "lane")
    rig.start()
    try:
        (tmp_path / "keys").mkdir(mode=0o700)
        save_private_key(rig.key, tmp_path / "keys" / "dispatch-1.key")
        # What lockerctl code-key pin writes, with the key id read on the cabinet.
        CodeKeyPins(tmp_path / "code-keys.json").pin(rig.site, rig.cabinet,
                                                     rig.pinned_code_key())
        program = (code.group(1)
                   .replace('"127.0.0.1", 1883', f'"127.0.0.1", {rig.mqtt_port}')
                   .replace('"fr-lyon-07", "cab-sim-01"', f'"{rig.site}", "{rig.cabinet}"')
                   .replace('key_id="dispatch-1"', f'key_id="{rig.key_id}"')
                   .replace("await asyncio.sleep(30)", "await asyncio.sleep(1)"))
        assert f"{rig.mqtt_port}" in program
        assert f'key_id="{rig.key_id}"' in program
        script = tmp_path / "example.py"
        script.write_text(program)
        result = subprocess.run([sys.executable, str(script)], cwd=tmp_path,
                                capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr + rig.logs()
        assert "True" in result.stdout, result.stdout  # the open was accepted
        assert "compartment_assigned" in result.stdout, result.stdout  # on_event, once each
        assert "unlock_pulse_sent" in result.stdout, result.stdout
        assert "ALARM" not in result.stdout, result.stdout
    finally:
        rig.close()


async def test_the_first_command_reads_the_clock_with_get_clock(tmp_path: Path) -> None:
    """A retained status whose clock is long past (as after hours of quiet): the client
    reads the clock with get_clock before its first command, which goes out once and is
    accepted, instead of being refused as expired and sent again."""
    import json

    import aiomqtt

    rig = LaneRig(tmp_path, emulate_timing=False)
    await asyncio.to_thread(rig.start)
    topics = CabinetTopics(rig.topic_root, rig.site, rig.cabinet)
    try:
        async with DispatchClient("127.0.0.1", rig.mqtt_port, topics) as first:
            status = await first.wait_online(30)

            async def uptime() -> int:
                reply = await first.command("get_state", sign=False)
                return int(reply["cabinet_clock"]["uptime_ms"])

            deadline = asyncio.get_running_loop().time() + 30
            while await uptime() < 4000:  # bounded: the cabinet up for 4 s at least
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.2)
        # The retained status as if published at the cabinet's start.
        old = dict(status, cabinet_clock=dict(status["cabinet_clock"], uptime_ms=0))
        async with aiomqtt.Client("127.0.0.1", rig.mqtt_port, identifier="t-old") as cab:
            await cab.publish(topics.status, json.dumps(old), qos=1, retain=True)

        sent: list[dict[str, Any]] = []
        async with aiomqtt.Client("127.0.0.1", rig.mqtt_port, identifier="t-spy") as spy:
            await spy.subscribe(topics.cmd, qos=1)
            async with DispatchClient("127.0.0.1", rig.mqtt_port, topics,
                                      ttl_ms=2000) as dispatch:
                await dispatch.wait_for(lambda m: m.channel == "status", 20)
                assert not dispatch.clock_is_fresh()
                reply = await dispatch.command("get_state", sign=False)
                assert reply["ok"], reply
                assert dispatch.clock_queries == 1
            await spy.publish(topics.cmd, b'{"marker": 1}', qos=1)
            async with asyncio.timeout(20):
                async for message in spy.messages:
                    payload = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                    if payload.get("marker") == 1:
                        break
                    sent.append(payload)
        assert [c["type"] for c in sent] == ["get_clock", "get_state"]
        assert "expires" not in sent[0]
    finally:
        await asyncio.to_thread(rig.close)
