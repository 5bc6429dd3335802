"""A flood of garbage on a cabinet's command topic, and the door event latency measured
beside it: shared by the flood test and ``bench/command_flood.py``."""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from controller.dispatch import DispatchClient
from controller.lab.rig import LaneRig
from tests.support.lane import wait_event

__all__ = ["FLOOD", "FLOOD_S", "UNANSWERED", "command", "door_latency", "flood", "rss_kib"]

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


#: Commands sent by :func:`command` that got no reply in time (dropped in a flood).
UNANSWERED = [0]


async def command(dispatch: DispatchClient, type_: str, args: dict[str, Any] | None = None,
                  *, sign: bool = True, attempts: int = 5) -> dict[str, Any]:
    """Send a command as dispatch does in a flood: a command whose reply does not come in
    3 s may have been dropped by the cabinet's bounded intake (it cannot tell it from the
    command-shaped garbage before it is verified, and counts it), so it is sent again, as
    a new command. Raises TimeoutError after ``attempts``."""
    for _ in range(attempts):  # bounded
        try:
            return await dispatch.command(type_, args or {}, sign=sign, timeout_s=3.0)
        except TimeoutError:
            UNANSWERED[0] += 1
            continue
    raise TimeoutError(f"no reply to {type_} in {attempts} attempts")


async def door_latency(rig: LaneRig, dispatch: DispatchClient, compartment: str) -> float:
    """Open by a staff command, pull the door; seconds from the pull to ``door_opened``."""
    deadline = time.monotonic() + 15
    while True:  # the power budget allows one pulse at a time: wait for the last to end
        reply = await command(dispatch, "open", {"compartment": compartment, "reason": "staff"})
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
