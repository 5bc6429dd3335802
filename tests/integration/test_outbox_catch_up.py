"""Catching up after an outage with several events in flight: every event reaches a
dispatch subscriber, first deliveries in sequence order, none missing, even when the
daemon is killed (SIGKILL) in the middle and started again (a re-send is a duplicate
with the same id, which dispatch dedupes)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from controller.contract.topics import CabinetTopics
from controller.lab.rig import LaneRig
from controller.store import Store
from controller.store.records import NewEvent
from tests.support.lane import wait_until
from tests.support.mqtt_client import MqttProbe

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

BACKLOG = 10_000


async def _store(rig: LaneRig, boot_id: str | None = None) -> Store:
    return await Store.connect(f"redis://127.0.0.1:{rig.redis_port}/0", f"locker:{rig.site}",
                               rig.cabinet, boot_id=boot_id)


async def test_a_kill_in_the_middle_of_a_catch_up_loses_nothing(tmp_path: Path) -> None:
    rig = LaneRig(tmp_path)
    try:
        await asyncio.to_thread(rig.start, daemon=False)
        topics = CabinetTopics(rig.topic_root, rig.site, rig.cabinet)
        probe = MqttProbe(rig.mqtt_port, client_id="dispatch-catch-up", clean=False)
        probe._client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
        probe.start()
        probe.subscribe(topics.events, qos=1)
        rig.daemon.start(wait_port=False)
        store = await _store(rig, uuid.uuid4().hex)
        try:
            async def drained() -> bool | None:
                return (await store.last_seq() > 0 and await store.depth() == 0) or None

            await wait_until(drained, "the start-up events delivered", timeout_s=60)
            await asyncio.to_thread(rig.broker.stop)
            first = await store.last_seq() + 1
            for start in range(0, BACKLOG, 500):
                await store.commit([NewEvent("bench_backlog", {"n": start + i}, 1.8e9)
                                    for i in range(500)])
            last = await store.last_seq()
            await asyncio.to_thread(rig.broker.start)

            def seqs() -> list[int]:
                return [int(m.json()["seq"]) for m in probe.messages(topics.events)]

            async def half_way() -> bool | None:
                return sum(1 for s in seqs() if s >= first) >= BACKLOG // 2 or None

            await wait_until(half_way, "half of the backlog delivered", timeout_s=60)
            await asyncio.to_thread(rig.daemon.kill)
            assert last not in seqs()  # killed in the middle of the catch-up
            rig.daemon.start(wait_port=False)

            async def all_in() -> bool | None:
                return (last in seqs() and await store.depth() == 0) or None

            await wait_until(all_in, "the whole backlog delivered", timeout_s=90)
        finally:
            await store.close()
        received = [s for s in seqs() if first <= s <= last]
        firsts: list[int] = []
        seen: set[int] = set()
        for seq in received:
            if seq not in seen:
                seen.add(seq)
                firsts.append(seq)
        assert set(range(first, last + 1)) <= seen  # nothing missing
        assert firsts == sorted(firsts)  # first deliveries in sequence order
        probe.close()
    finally:
        await asyncio.to_thread(rig.close)
