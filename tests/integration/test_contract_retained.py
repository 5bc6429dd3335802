"""What the guide says about the retain flag on ``cmd``, against a real broker and daemon:
a command published retained while the cabinet is connected is forwarded without the flag
and executed, and the broker keeps it; the stored copy comes to the next subscriber marked
retained, which is what the cabinet drops."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt
import pytest

from tests.support.lane import running_lane, wait_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_a_retained_command_sent_while_connected_is_executed_and_kept(
        tmp_path: Path) -> None:
    async with running_lane(tmp_path) as (rig, dispatch):
        command = dispatch.build("block", {"compartment": "A04", "reason": "retained"})
        payload = dispatch.encode(command)
        mark = len(dispatch.messages)
        async with aiomqtt.Client("127.0.0.1", rig.mqtt_port,
                                  identifier="dispatch-retained") as careless:
            await careless.publish(dispatch.topics.cmd, payload, qos=1, retain=True)
        reply = await dispatch.wait_for(
            lambda m: m.channel == "reply" and m.payload.get("id") == command["id"],
            15, start=mark)
        assert reply.payload["ok"], reply.payload
        await wait_event(dispatch, "compartment_blocked", "A04", start=mark)

        # The broker kept it: a new subscriber gets it, marked retained (the cabinet, at its
        # next connection, drops such a copy instead of acting on it again).
        async with aiomqtt.Client("127.0.0.1", rig.mqtt_port,
                                  identifier="dispatch-late") as late:
            await late.subscribe(dispatch.topics.cmd, qos=1)
            async with asyncio.timeout(10):
                message = await anext(aiter(late.messages))
        assert message.retain
        assert json.loads(bytes(message.payload)) == json.loads(payload)  # type: ignore[arg-type]
