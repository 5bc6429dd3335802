"""A flood of garbage on a cabinet's command topic, and the door event latency measured
beside it: shared by the flood test and ``bench/command_flood.py``."""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from controller.mqtt.dispatch import DispatchClient
from controller.rig import LaneRig
from tests.support.lane import wait_event

__all__ = ["FLOOD", "FLOOD_S", "door_latency", "flood", "rss_kib"]

FLOOD = 10_000
FLOOD_S = 7.0


def rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    assert match is not None
    return int(match.group(1))


def _garbage(rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 2048))
    if kind == 1:
        return b'{"id": "' + str(rng.random()).encode() + b'", "type": "explode"'
    if kind == 2:
        return b'{"id": "g-%d", "type": "open", "args": {"compartment": 7}}' % rng.randrange(10**9)
    return b"[" * rng.randrange(1, 5000)


def flood(port: int, topic: str, seed: int, done: threading.Event) -> None:
    """Publish :data:`FLOOD` garbage messages to ``topic`` over :data:`FLOOD_S` seconds,
    then set ``done``."""
    rng = random.Random(seed)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"flood-{seed}",
                         protocol=paho.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        start = time.monotonic()
        for i in range(FLOOD):
            client.publish(topic, _garbage(rng), qos=0)
            target = start + FLOOD_S * (i + 1) / FLOOD
            pause = target - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing the sender, not waiting for another process
    finally:
        deadline = time.monotonic() + 20
        while client.want_write() and time.monotonic() < deadline:  # bounded
            time.sleep(0.01)
        client.loop_stop()
        client.disconnect()
        done.set()


async def door_latency(rig: LaneRig, dispatch: DispatchClient, compartment: str) -> float:
    """Open by a staff command, pull the door; seconds from the pull to ``door_opened``."""
    deadline = time.monotonic() + 15
    while True:  # the power budget allows one pulse at a time: wait for the last to end
        reply = await dispatch.command("open", {"compartment": compartment, "reason": "staff"})
        if reply["ok"] or reply["error"]["code"] != "rate_limited":
            break
        assert time.monotonic() < deadline, reply
        await asyncio.sleep(0.2)
    assert reply["ok"], reply
    mark = len(dispatch.messages)
    await rig.control.acall("pull_when_released", compartment=compartment)
    pulled = time.monotonic()
    await wait_event(dispatch, "door_opened", compartment, timeout_s=10, start=mark)
    took = time.monotonic() - pulled
    await rig.control.acall("close", compartment=compartment)
    await wait_event(dispatch, "door_closed", compartment, timeout_s=10, start=mark)
    return took
