"""Helpers for tests that run a whole lane (broker, store, simulator, daemon) on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from controller.contract.topics import CabinetTopics
from controller.dispatch import DispatchClient
from controller.lab.rig import LaneRig

T = TypeVar("T")


@asynccontextmanager
async def running_lane(
    workdir: Path, *, overrides: dict[str, Any] | None = None, emulate_timing: bool = True,
    redis: str = "server",
) -> AsyncIterator[tuple[LaneRig, DispatchClient]]:
    """A started LaneRig and a connected dispatch client that has seen the cabinet online."""
    rig = LaneRig(workdir, overrides=overrides, emulate_timing=emulate_timing, redis=redis)
    await asyncio.to_thread(rig.start)
    try:
        topics = CabinetTopics(rig.topic_root, rig.site, rig.cabinet)
        async with DispatchClient("127.0.0.1", rig.mqtt_port, topics, key=rig.key,
                                  key_id=rig.key_id) as dispatch:
            try:
                await dispatch.wait_online(30)
            except TimeoutError as exc:
                raise AssertionError(f"cabinet never online:\n{rig.logs()}") from exc
            yield rig, dispatch
    finally:
        await asyncio.to_thread(rig.close)


async def wait_until(check: Callable[[], Awaitable[T | None]], what: str,
                     timeout_s: float = 10.0, every_s: float = 0.05) -> T:
    """Poll ``check`` until it returns something other than None, at most ``timeout_s``;
    an AssertionError naming ``what`` when the deadline passes."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:  # bounded by the deadline
        found = await check()
        if found is not None:
            return found
        if asyncio.get_running_loop().time() >= deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s")
        await asyncio.sleep(every_s)


def truth(rig: LaneRig, kind: str, compartment: str | None = None) -> list[dict[str, Any]]:
    """The simulator's ground truth events of ``kind`` (optionally for one compartment)."""
    fields: dict[str, Any] = {"kind": kind, "limit": 1_000_000}
    if compartment is not None:
        fields["compartment"] = compartment
    result = rig.control.call("truth", **fields)
    return list(result["events"] if isinstance(result, dict) else result)


async def wait_event(dispatch: DispatchClient, kind: str, compartment: str | None = None,
                     timeout_s: float = 10.0, start: int = 0) -> dict[str, Any]:
    message = await dispatch.wait_for(
        lambda m: m.channel == "events" and m.payload.get("kind") == kind
        and (compartment is None or m.payload.get("compartment") == compartment),
        timeout_s, start=start)
    return message.payload


def lock_of(rig: LaneRig, compartment: str) -> tuple[str, int]:
    """(board, channel) of a compartment's lock, from the rig's cabinet config."""
    import tomllib

    raw = tomllib.loads(rig.config_path.read_text())
    for c in raw["compartments"]:
        if c["id"] == compartment:
            return str(c["lock"]["board"]), int(c["lock"]["channel"])
    raise KeyError(compartment)


def pulses(rig: LaneRig, compartment: str) -> list[dict[str, Any]]:
    """Pulses the simulated board received on a compartment's lock (ground truth)."""
    board, channel = lock_of(rig, compartment)
    return [e for e in truth(rig, "pulse_received")
            if e.get("board") == board and e.get("channel") == channel]
