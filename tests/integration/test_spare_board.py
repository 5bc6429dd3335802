"""A board on the line that no compartment is wired to (a spare, fitted ahead of its
doors) is read and watched like the others; the daemon does not stop on it.

Before, the poller read it and the cabinet model did not know it: the daemon ended at start
with ``no board named 'spare'``, although ``lockerctl config check`` had called the
configuration valid."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from controller.lab.rig import DEFAULT_TEMPLATE
from tests.support.lane import running_lane

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SPARE = """
[[boards]]
name = "spare"
bus = "rs485-0"
address = 4
profile = "waveshare_relay"
outputs = 16
inputs = 16
"""


def _template(workdir: Path) -> Path:
    text = DEFAULT_TEMPLATE.read_text()
    assert "\n[[zones]]" in text
    path = workdir / "spare-template.toml"
    path.write_text(text.replace("\n[[zones]]", SPARE + "\n[[zones]]", 1))
    return path


def _alarm(payload: dict[str, Any], kind: str) -> bool:
    data = payload.get("data") or {}
    return bool(payload.get("kind") == kind and data.get("alarm") == "board_offline"
                and data.get("board") == "spare")


async def test_a_spare_input_board_is_polled_and_alarmed_like_the_others(
        tmp_path: Path) -> None:
    async with running_lane(tmp_path / "lane", template=_template(tmp_path),
                            emulate_timing=False,
                            overrides={"timing.telemetry_interval_s": '"1s"'}) as (rig, dispatch):
        telemetry = await dispatch.wait_for(lambda m: m.channel == "telemetry", 30)
        assert telemetry.payload.get("task_restarts") == {}, telemetry.payload
        # The spare goes silent: its own alarm, the daemon goes on.
        await asyncio.to_thread(rig.control.call, "fault_set", kind="silent", board="spare")
        raised = await dispatch.wait_for(lambda m: _alarm(m.payload, "alarm_raised"), 60)
        await asyncio.to_thread(rig.control.call, "fault_clear")
        await dispatch.wait_for(lambda m: _alarm(m.payload, "alarm_cleared"), 60)
        assert rig.daemon.running()
        assert raised.payload["data"]["board"] == "spare"
