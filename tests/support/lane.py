"""Helpers for tests that run a whole lane (broker, store, simulator, daemon) on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from controller.contract.topics import CabinetTopics
from controller.dispatch import DispatchClient
from controller.lab.rig import DEFAULT_TEMPLATE, LaneRig

T = TypeVar("T")


@asynccontextmanager
async def running_lane(
    workdir: Path, *, overrides: dict[str, Any] | None = None, emulate_timing: bool = True,
    redis: str = "server", template: Path = DEFAULT_TEMPLATE,
) -> AsyncIterator[tuple[LaneRig, DispatchClient]]:
    """A started LaneRig (of ``template``: the demo cabinet by default) and a connected dispatch
    client that has seen the cabinet online, with the cabinet's code key pinned from its
    key file (as read at commissioning). A failure inside prints the daemon's log."""
    rig = LaneRig(workdir, template=template, overrides=overrides,
                  emulate_timing=emulate_timing, redis=redis)
    await asyncio.to_thread(rig.start)
    try:
        topics = CabinetTopics(rig.topic_root, rig.site, rig.cabinet)
        async with DispatchClient("127.0.0.1", rig.mqtt_port, topics, key=rig.key,
                                  key_id=rig.key_id) as dispatch:
            try:
                await dispatch.wait_online(30)
            except TimeoutError as exc:
                raise AssertionError(f"cabinet never online:\n{rig.logs()}") from exc
            dispatch.code_key_pin = await asyncio.to_thread(rig.pinned_code_key)
            try:
                yield rig, dispatch
            except BaseException:
                print(rig.logs("daemon", 8000))
                raise
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


async def restart_daemon(rig: LaneRig, dispatch: DispatchClient) -> int:
    """Stop the daemon (SIGTERM) and start it again; return once ``dispatch`` has seen it
    online under a new boot. Returns the index of the first message after the stop."""
    old_boot = (await dispatch.wait_online())["boot_id"]
    start = len(dispatch.messages)
    await asyncio.to_thread(rig.daemon.stop)
    await asyncio.to_thread(rig.daemon.start, False)
    await dispatch.wait_for(lambda m: m.channel == "status" and m.payload.get("state") ==
                            "online" and m.payload.get("boot_id") != old_boot, 30, start=start)
    return start


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


async def wait_compartment(dispatch: DispatchClient, compartment: str,
                           check: Callable[[dict[str, Any]], bool], what: str,
                           timeout_s: float = 10.0) -> dict[str, Any]:
    """The compartment once ``check`` holds for it in the daemon's own snapshot
    (``get_state``): what the daemon has seen, not what the simulator was told. Not every
    change is published in ``state`` at once (an occupancy change behind an open door
    makes no event), so the snapshot is asked for. An AssertionError naming ``what`` when
    the deadline passes."""
    async def seen() -> dict[str, Any] | None:
        reply = await dispatch.command("get_state", sign=False)
        for c in reply.get("result", {}).get("compartments", []):
            if c.get("id") == compartment and check(c):
                return dict(c)
        return None

    return await wait_until(seen, f"{compartment}: {what}", timeout_s)


async def open_when_ready(dispatch: DispatchClient, compartment: str, reason: str,
                          timeout_s: float = 10.0) -> dict[str, Any]:
    """Send ``open`` until the lock takes it: a refusal ``rate_limited`` (the lock's last
    pulse still on, or its cooldown: the product's own timers) is sent again, with a new
    id, until the deadline. Any other reply is returned as it is."""
    async def attempt() -> dict[str, Any] | None:
        reply = await dispatch.command("open", {"compartment": compartment, "reason": reason})
        if not reply.get("ok") and reply.get("error", {}).get("code") == "rate_limited":
            return None
        return reply

    return await wait_until(attempt, f"{compartment}: open accepted", timeout_s)


async def wait_lock_idle(rig: LaneRig, compartment: str, timeout_s: float = 10.0) -> None:
    """Until the simulated board has switched the compartment's lock off after its last
    pulse (ground truth). The daemon's own timer for that pulse ended no later: it starts
    when the frame is sent, the board's when it arrives."""
    board, channel = lock_of(rig, compartment)

    async def idle() -> bool | None:
        result = await rig.control.acall("truth", limit=1_000_000)
        mine = [e["kind"] for e in result["events"]
                if e.get("board") == board and e.get("channel") == channel
                and e.get("kind") in ("output_on", "output_off")]
        return True if mine and mine[-1] == "output_off" else None

    await wait_until(idle, f"{compartment}: lock off", timeout_s)


#: The daemon's default debounces (timing.door_debounce_s 0.25 s, occupancy 0.2 s): a
#: sensor's new level counts once it has been read this long.
DEBOUNCE_S = 0.25


async def wait_polled(rig: LaneRig, bus: str = "rs485-0", cycles: int = 2,
                      timeout_s: float = 10.0, *, debounce_s: float = DEBOUNCE_S) -> None:
    """Until the daemon has read the boards of ``bus`` again after ``debounce_s``: the
    simulated bus answered ``cycles`` times as many requests as it has boards (ground
    truth, and it works with the broker down). Use it after changing what a sensor sees,
    before the next step depends on the daemon having counted it."""
    import tomllib

    # The debounce is the daemon's own timer: no read before it ends makes the level count.
    await asyncio.sleep(debounce_s)

    raw = tomllib.loads(rig.config_path.read_text())
    boards = sum(1 for b in raw.get("boards", []) if b.get("bus") == bus) or 1

    async def replies() -> int:
        stats = await rig.control.acall("stats")
        return int(stats[bus]["replies"])

    target = await replies() + cycles * boards

    async def done() -> bool | None:
        return True if await replies() >= target else None

    await wait_until(done, f"{bus}: {cycles} poll cycles", timeout_s)


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
