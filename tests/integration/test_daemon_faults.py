"""Fault campaigns: the broker restarted 20 times during door activity, the daemon killed
with SIGKILL 10 times mid-operation. At the end, against the simulator's ground truth:

* every door opening and closing that happened reached the subscriber exactly once after
  dedupe by event id;
* sequence numbers are gap-free from 1, and one id never carries two seqs;
* no door was pulsed twice for one command id (every pulse on the wire is matched by one
  ``open_requested`` event, and no command id has two of those).

The subscriber is a persistent MQTT session that was subscribed before the daemon's first
event; it reconnects by itself after each broker restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from controller.contract.topics import CabinetTopics
from controller.mqtt.dispatch import DispatchClient
from controller.rig import LaneRig
from tests.support.lane import pulses, truth
from tests.support.mqtt_client import MqttProbe

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]

COMPARTMENTS = ("A01", "A02", "A03", "A04", "B01", "B02", "B03", "B04")
# Fast cooldowns so the burst keeps every door busy; the policy itself is unit-tested.
OVERRIDES = {"timing.compartment_cooldown_s": "0.5", "timing.pulse_gap_s": "0.05",
             "timing.compartment_max_pulses_per_minute": "60"}


class Campaign:
    """Door activity as dispatch and people would make it, and the bookkeeping."""

    def __init__(self, rig: LaneRig) -> None:
        self.rig = rig
        self.topics = CabinetTopics(rig.topic_root, rig.site, rig.cabinet)
        self.sent: list[str] = []
        self.accepted: list[str] = []
        self.doors_cycled = 0
        # A door is never moved while the daemon is down: it could not see it move.
        self.daemon_up = asyncio.Event()
        self.daemon_up.set()
        self.quiet = asyncio.Lock()

    async def activity(self, until: float) -> None:
        """Open, pull, close, round robin, until ``until`` (monotonic)."""
        rng = random.Random(7)
        dispatch: DispatchClient | None = None
        stack = contextlib.AsyncExitStack()
        i = 0
        try:
            while time.monotonic() < until:
                cid = COMPARTMENTS[i % len(COMPARTMENTS)]
                i += 1
                await self.daemon_up.wait()
                if dispatch is None:
                    try:
                        dispatch = await stack.enter_async_context(DispatchClient(
                            "127.0.0.1", self.rig.mqtt_port, self.topics, key=self.rig.key,
                            key_id=self.rig.key_id, ttl_ms=5000))
                        await dispatch.wait_online(5)
                    except Exception:
                        await stack.aclose()
                        stack = contextlib.AsyncExitStack()
                        dispatch = None
                        await asyncio.sleep(0.3)
                        continue
                try:
                    command = dispatch.build("open", {"compartment": cid,
                                                      "reason": "maintenance"})
                    self.sent.append(command["id"])
                    reply = await dispatch.send(dispatch.encode(command), command["id"],
                                                timeout_s=3.0)
                except Exception:
                    # Broker or daemon went away mid-command: reconnect and go on.
                    await stack.aclose()
                    stack = contextlib.AsyncExitStack()
                    dispatch = None
                    continue
                if not reply.get("ok"):
                    continue
                self.accepted.append(command["id"])
                async with self.quiet:
                    if not self.daemon_up.is_set():
                        continue  # killed since it replied: nobody would see the door move
                    await self.rig.control.acall("pull", compartment=cid)
                    # Each position held long enough to be read through the door debounce
                    # (0.25 s, then the next poll), with room for a stalled poll cycle.
                    await asyncio.sleep(0.8 + rng.random() * 0.1)
                    await self.rig.control.acall("close", compartment=cid)
                    await asyncio.sleep(0.8)
                    self.doors_cycled += 1
        finally:
            await stack.aclose()


def collected(probe: MqttProbe, topic: str) -> tuple[dict[str, dict[str, Any]], Counter[str]]:
    """Events received, deduplicated by id, and how often each id arrived."""
    by_id: dict[str, dict[str, Any]] = {}
    arrivals: Counter[str] = Counter()
    for message in probe.messages(topic):
        event = message.json()
        arrivals[event["id"]] += 1
        if event["id"] in by_id:
            assert by_id[event["id"]]["seq"] == event["seq"], "one id, two seqs"
        by_id[event["id"]] = event
    return by_id, arrivals


async def settle_and_check(
    rig: LaneRig, probe: MqttProbe, campaign: Campaign
) -> list[dict[str, Any]]:
    topic = campaign.topics.events
    # Let the outbox drain: wait until the subscriber's last seq stops moving.
    last = -1
    for _ in range(60):
        await asyncio.sleep(1.0)
        by_id, _ = collected(probe, topic)
        top = max((e["seq"] for e in by_id.values()), default=0)
        if top == last and len(by_id) == top:
            break
        last = top
    by_id, arrivals = collected(probe, topic)
    events = sorted(by_id.values(), key=lambda e: e["seq"])
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), f"gap in seq: {_gaps(seqs)}"

    # Every physical door movement reached dispatch exactly once (after dedupe).
    for kind in ("door_opened", "door_closed"):
        for cid in COMPARTMENTS:
            physical = len(truth(rig, kind, cid))
            reported = sum(1 for e in events if e["kind"] == kind and e.get("compartment") == cid)
            if reported != physical:
                story = [(e["seq"], e["kind"], e["at"], e["data"]) for e in events
                         if e.get("compartment") == cid]
                world = [(t.get("at"), t.get("kind")) for t in truth(rig, "door_opened", cid)
                         + truth(rig, "door_closed", cid) + truth(rig, "pull_blocked", cid)]
                raise AssertionError(f"{kind} {cid}: world {physical}, reported {reported}\n"
                                     f"reported: {story}\nworld: {sorted(world, key=str)}")

    # No door pulsed twice for one command id.
    requested = [e for e in events if e["kind"] == "open_requested"]
    ids = Counter(e["data"].get("command") for e in requested)
    assert all(n == 1 for n in ids.values()), [i for i, n in ids.items() if n > 1]
    for cid in COMPARTMENTS:
        on_wire = len(pulses(rig, cid))
        intents = sum(1 for e in requested if e["compartment"] == cid)
        assert on_wire <= intents, (cid, on_wire, intents)
    assert campaign.doors_cycled > 0
    duplicates = sum(n - 1 for n in arrivals.values())
    print(f"events={len(events)} duplicates_received={duplicates} "
          f"commands_sent={len(campaign.sent)} accepted={len(campaign.accepted)} "
          f"doors_cycled={campaign.doors_cycled} "
          f"interrupted={sum(1 for e in events if e['kind'] == 'command_interrupted')}")
    return events


def _gaps(seqs: list[int]) -> list[int]:
    present = set(seqs)
    return [n for n in range(1, max(seqs, default=0) + 1) if n not in present][:20]


def _start_probe(rig: LaneRig, topic: str) -> MqttProbe:
    probe = MqttProbe(rig.mqtt_port, client_id="dispatch-audit", clean=False)
    probe._client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
    probe.start()
    probe.subscribe(topic, qos=1)
    return probe


Disruption = Callable[[LaneRig, Campaign], Awaitable[None]]


async def run_campaign(tmp_path: Path, disrupt: Disruption) -> list[dict[str, Any]]:
    """Start the lane with an auditing subscriber first, run door activity while
    ``disrupt`` does its worst, then check the outcome against the ground truth."""
    rig = LaneRig(tmp_path, overrides=OVERRIDES)
    try:
        await asyncio.to_thread(rig.start, daemon=False)
        topics = CabinetTopics(rig.topic_root, rig.site, rig.cabinet)
        probe = _start_probe(rig, topics.events)
        try:
            rig.daemon.start(wait_port=False)
            campaign = Campaign(rig)
            activity = asyncio.create_task(campaign.activity(time.monotonic() + 600))
            await disrupt(rig, campaign)
            await asyncio.sleep(2.0)
            activity.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await activity
            return await settle_and_check(rig, probe, campaign)
        finally:
            probe.close()
    except BaseException:
        print(rig.logs("daemon", 6000))
        raise
    finally:
        await asyncio.to_thread(rig.close)


async def test_broker_restarted_20_times_during_door_activity(tmp_path: Path) -> None:
    async def restart_broker(rig: LaneRig, campaign: Campaign) -> None:
        rng = random.Random(20)
        for _ in range(20):
            await asyncio.sleep(0.8 + rng.random() * 0.8)
            await asyncio.to_thread(rig.broker.stop)
            await asyncio.sleep(0.2 + rng.random() * 0.5)
            await asyncio.to_thread(rig.broker.start)

    await run_campaign(tmp_path, restart_broker)


async def test_daemon_killed_10_times_mid_operation(tmp_path: Path) -> None:
    async def kill_daemon(rig: LaneRig, campaign: Campaign) -> None:
        rng = random.Random(10)
        for _ in range(10):
            await asyncio.sleep(1.5 + rng.random() * 1.5)
            # Kill at any point of a command (intent recorded, pulse on the wire, reply
            # pending), never while a door is moving: a dead daemon cannot see it.
            async with campaign.quiet:
                campaign.daemon_up.clear()
                await asyncio.to_thread(rig.daemon.kill)
            # A command published now finds no daemon; it expires or waits.
            await asyncio.sleep(0.2 + rng.random() * 0.5)
            rig.daemon.start(wait_port=False)
            await asyncio.sleep(1.0)
            campaign.daemon_up.set()

    events = await run_campaign(tmp_path, kill_daemon)
    # Each start, the first and ten after a SIGKILL, told dispatch so.
    assert sum(1 for e in events if e["kind"] == "daemon_started") == 11
