"""The real daemon, its store behind a proxy that cuts the connection right after Redis
applied the group commit of a door change (the answer lost): the daemon holds the events,
commits them again when the store answers, and dispatch hears the door change once,
under one id and one seq, with no gap.

Before the commit marks, the retry committed the same door change a second time, under a
new id and the next seq: dispatch, which dedupes by id, counted two openings."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from controller.contract.topics import CabinetTopics
from controller.dispatch import DispatchClient
from controller.lab.rig import LaneRig
from tests.support.cutting_proxy import CuttingProxy
from tests.support.lane import wait_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def test_a_door_change_whose_commit_answer_was_lost_is_reported_once(
        tmp_path: Path) -> None:
    async with CuttingProxy(0) as proxy:
        rig = LaneRig(tmp_path / "lane", emulate_timing=False,
                      overrides={"redis.url": f'"redis://127.0.0.1:{proxy.port}/0"'})
        proxy.redis_port = rig.redis_port
        await asyncio.to_thread(rig.start)
        try:
            topics = CabinetTopics(rig.topic_root, rig.site, rig.cabinet)
            gaps: list[object] = []
            async with DispatchClient("127.0.0.1", rig.mqtt_port, topics, key=rig.key,
                                      key_id=rig.key_id, on_gap=gaps.append) as dispatch:
                await dispatch.wait_online(30)
                mark = len(dispatch.messages)
                # The transaction that commits the door change, cut after Redis applied it.
                proxy.cut(b"door_opened", before=False, also=b"EXEC")
                await rig.control.acall("force_open", compartment="A02")
                await wait_event(dispatch, "door_opened", "A02", 30, start=mark)
                assert proxy.cuts == 1
                await rig.control.acall("close", compartment="A02")
                await wait_event(dispatch, "door_closed", "A02", 30, start=mark)
                await wait_event(dispatch, "alarm_cleared", "A02", 30, start=mark)
                received = [m.payload for m in dispatch.messages[mark:]
                            if m.channel == "events"]
                opened = {e["id"] for e in received
                          if e["kind"] == "door_opened" and e.get("compartment") == "A02"}
                assert len(opened) == 1, received
                unique = sorted({e["id"]: e["seq"] for e in dispatch.events()}.values())
                assert unique == list(range(unique[0], unique[0] + len(unique)))
                assert gaps == []
                assert rig.daemon.running()
        except BaseException:
            print(rig.logs("daemon", 8000))
            raise
        finally:
            await asyncio.to_thread(rig.close)
