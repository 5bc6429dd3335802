"""A whole day at the drive lane, in the simulator, through the real daemon.

Broker, Redis, simulator and daemon run as processes (controller.lab.rig.LaneRig), dispatch is
a DispatchClient, the people act through the simulator's control channel (codes shown to
the scanner on a pty, doors pulled, parcels placed and taken). Deposits and collections
across the three tenants and the temperature zones, with the day's mistakes: wrong codes
until the scanner is slowed down, a door left open, a forced door, a tamper and a mains cut,
a compressor failure on the chilled zone (no cold order goes there until it recovers), and
the broker down for part of the day (collections by code go on). At the end every order is
where the simulator's ground truth says, every alarm was raised once and cleared once per
incident, and dispatch received every event once its duplicates are dropped, with a
gap-free sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from controller.contract.topics import CabinetTopics
from controller.lab.rig import DEFAULT_TEMPLATE, LaneRig
from controller.mqtt.dispatch import DispatchClient
from controller.store import Store
from tests.support.lane import pulses, wait_lock_idle, wait_polled

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

OVERRIDES = {
    "timing.pulse_s": "0.3",
    "timing.compartment_cooldown_s": "0.2",
    "timing.ajar_after_s": '"3s"',
    "security.code_max_attempts": "3",
    "security.code_lockout_s": '"3s"',
    "mqtt.reconnect_max_s": '"1s"',
}


def template(workdir: Path) -> Path:
    """The demo cabinet with a chilled zone that warms fast when its compressor fails and
    raises its excursion alarm after 2 s."""
    text = DEFAULT_TEMPLATE.read_text()
    chilled = text.index('name = "chilled"')
    head, tail = text[:chilled], text[chilled:]
    tail = tail.replace("excursion_delay_s = 600", "excursion_delay_s = 2", 1)
    text = (head + tail).replace("tau_leak_s = 14400.0", "tau_leak_s = 20.0")
    path = workdir / "day-template.toml"
    path.write_text(text)
    return path


class EventLog:
    """Dispatch's archive of ``events``: a persistent MQTT session that outlives broker
    restarts (QoS 1, clean_session=False), so nothing published while it reconnects is
    missed. Duplicates are kept here; the test drops them by id."""

    def __init__(self, port: int, topic: str) -> None:
        self.port = port
        self.topic = topic
        self.events: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    async def _run(self) -> None:
        while True:  # bounded by cancellation at the end of the test
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier="dispatch-archive",
                                          protocol=aiomqtt.ProtocolVersion.V311,
                                          clean_session=False) as client:
                    await client.subscribe(self.topic, qos=1)
                    self.subscribed.set()
                    async for message in client.messages:
                        self.events.append(json.loads(bytes(message.payload)))  # type: ignore[arg-type]
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)  # the archive's reconnect pace while the broker is down

    async def __aenter__(self) -> EventLog:
        self._task = asyncio.get_running_loop().create_task(self._run())
        await asyncio.wait_for(self.subscribed.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def unique(self) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        for event in self.events:
            seen.setdefault(event["id"], event)
        return sorted(seen.values(), key=lambda e: e["seq"])

    def kinds(self, kind: str, **data: Any) -> list[dict[str, Any]]:
        return [e for e in self.unique() if e["kind"] == kind
                and all(e.get("compartment") == v if k == "compartment" else
                        e["data"].get(k) == v for k, v in data.items())]


async def until(predicate: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


class Day:
    def __init__(self, rig: LaneRig, log: EventLog) -> None:
        self.rig = rig
        self.log = log
        self.ctl = rig.control
        self.orders: dict[str, dict[str, Any]] = {}

    async def sim(self) -> dict[str, Any]:
        state: dict[str, Any] = await self.ctl.acall("state")
        return state

    async def door_open(self, cid: str) -> bool:
        return bool((await self.sim())["compartments"][cid]["door_open"])

    async def lane_idle(self) -> bool:
        return bool((await self.ctl.acall("lane"))["light"] == "idle")

    async def use_code(self, cid: str, code: str, *, parcel: int, close: bool = True) -> None:
        """A person at the lane: hand on the handle, shows the code, the door opens; one
        parcel in (+1) or out (-1); closes the door."""
        await self.ctl.acall("pull_when_released", compartment=cid)
        await self.ctl.acall("scan", code=code)
        await until(lambda: self.door_open(cid), f"{cid} to open")
        await self.ctl.acall("place_parcel" if parcel > 0 else "remove_parcel", compartment=cid)
        # The daemon has counted the open door and the parcel's move before the door shuts
        # (past their debounce, occupancy and door on different boards), broker or not.
        await wait_polled(self.rig)
        if close:
            await self.ctl.acall("close", compartment=cid)
            await until(self.lane_idle, "the lane to see the door closed")
        await wait_lock_idle(self.rig, cid)  # the pulse is over: the power budget is free
        # The lock's cooldown (timing.compartment_cooldown_s = 0.2): the product's own timer.
        await asyncio.sleep(0.2)

    async def assign(self, dispatch: DispatchClient, order: str, cid: str, pool: str,
                     zone: str, size: str) -> dict[str, Any]:
        n = len(self.orders) + 1
        # A QR code for the courier, a keypad code for the customer; sealed to the cabinet.
        codes = {"deposit": f"D{n:03d}X{n:02d}QRCODE1234", "collect": f"{7039218450 + n * 37}"}
        reply = await dispatch.command("assign", {
            "order_id": order, "size": size, "zone": zone, "pool": pool, "compartment": cid,
            "codes": dispatch.seal_codes(order, [("deposit", codes["deposit"]),
                                                 ("collect", codes["collect"])])})
        if reply["ok"]:
            self.orders[order] = {"cid": cid, "pool": pool, "codes": codes, "collected": False}
        return reply

    async def deposit(self, order: str) -> None:
        o = self.orders[order]
        await self.use_code(o["cid"], o["codes"]["deposit"], parcel=+1)

    async def collect(self, order: str, *, close: bool = True) -> None:
        o = self.orders[order]
        await self.use_code(o["cid"], o["codes"]["collect"], parcel=-1, close=close)
        o["collected"] = True


@contextlib.asynccontextmanager
async def dispatch_for(rig: LaneRig) -> AsyncIterator[DispatchClient]:
    topics = CabinetTopics(rig.topic_root, rig.site, rig.cabinet)
    async with DispatchClient("127.0.0.1", rig.mqtt_port, topics, key=rig.key,
                              key_id=rig.key_id) as dispatch:
        await dispatch.wait_online(30)
        dispatch.code_key_pin = await asyncio.to_thread(rig.pinned_code_key)
        yield dispatch


PLAN = [  # order, compartment, tenant pool, zone, size
    ("g-1", "A01", "grocery", "chilled", "M"),
    ("g-2", "A03", "grocery", "frozen", "L"),
    ("g-3", "A04", "grocery", "frozen", "L"),
    ("g-4", "A05", "grocery", "ambient", "XL"),
    ("s-1", "A06", "shop", "ambient", "S"),
    ("s-2", "B05", "shop", "chilled", "M"),
    ("s-3", "B06", "shop", "ambient", "L"),
    ("p-1", "B01", "parcel", "ambient", "S"),
    ("p-2", "B03", "parcel", "ambient", "M"),
    ("p-3", "B04", "parcel", "ambient", "M"),
]


async def test_a_lane_day(tmp_path: Path) -> None:
    started = time.monotonic()
    rig = LaneRig(tmp_path, template=template(tmp_path), overrides=OVERRIDES)
    await asyncio.to_thread(rig.start)
    try:
        topics = CabinetTopics(rig.topic_root, rig.site, rig.cabinet)
        async with EventLog(rig.mqtt_port, topics.events) as log:
            day = Day(rig, log)
            await run_day(day, rig, log)
        # Not a test of speed, but the day must stay a short test.
        assert time.monotonic() - started < 200
    except BaseException:
        print(rig.logs("daemon", 8000))
        raise
    finally:
        await asyncio.to_thread(rig.close)


async def run_day(day: Day, rig: LaneRig, log: EventLog) -> None:
    async with dispatch_for(rig) as dispatch:
        # Morning: dispatch assigns, couriers and staff deposit with their codes.
        for order, cid, pool, zone, size in PLAN:
            reply = await day.assign(dispatch, order, cid, pool, zone, size)
            assert reply["ok"], reply
        for order, *_ in PLAN:
            await day.deposit(order)
        await until(lambda: _loaded(day, dispatch, [o for o, *_ in PLAN]), "all loaded", 15)

        # Customers collect; one leaves the door open (ajar), one finds it forced later.
        await day.collect("g-4")
        await day.collect("p-1")
        await day.collect("s-1", close=False)
        await until(lambda: _has(log, "alarm_raised", alarm="door_ajar"), "door ajar", 10)
        await day.ctl.acall("close", compartment="A06")
        await until(lambda: _has(log, "alarm_cleared", alarm="door_ajar"), "ajar cleared", 10)

        # Someone tries codes at random: three wrong ones spend the scanner's budget (one
        # back every 3 s): reported as guessing until the budget is whole again.
        for wrong in ("1111111111", "2222222222", "3333333333"):
            await day.ctl.acall("scan", code=wrong)
            await asyncio.sleep(0.5)  # a person's pace between two tries
        await until(lambda: _has(log, "alarm_raised", alarm="code_guessing"), "guessing", 10)
        await until(lambda: _has(log, "alarm_cleared", alarm="code_guessing"), "whole", 15)

        # A crowbar on a free compartment; the panel opened; a mains cut.
        await day.ctl.acall("force_open", compartment="A05")
        await until(lambda: _has(log, "alarm_raised", alarm="forced_open"), "forced", 10)
        await day.ctl.acall("close", compartment="A05")
        for op in ("tamper_open", "mains_lose"):
            await day.ctl.acall(op)
        await until(lambda: _has(log, "alarm_raised", alarm="power_fail"), "mains lost", 10)
        for op in ("tamper_close", "mains_restore"):
            await day.ctl.acall(op)
        await until(lambda: _has(log, "alarm_cleared", alarm="power_fail"), "mains back", 10)
        await day.ctl.acall("help_press")
        await asyncio.sleep(0.3)  # a press, longer than the debounce
        await day.ctl.acall("help_release")

        # The chilled zone's compressor fails: after the delay, no cold order goes there.
        await day.ctl.acall("fault_set", kind="compressor_failure", zone="chilled")
        await until(lambda: _has(log, "alarm_raised", alarm="temperature"), "excursion", 30)
        refused = await day.assign(dispatch, "g-5", "A02", "grocery", "chilled", "M")
        assert not refused["ok"]
        assert refused["error"]["code"] == "no_compartment", refused
        await day.ctl.acall("fault_clear", kind="compressor_failure", zone="chilled")
        await day.ctl.acall("set_temperature", zone="chilled", value_c=3.0)
        await until(lambda: _has(log, "alarm_cleared", alarm="temperature"), "recovered", 30)
        reply = await day.assign(dispatch, "g-5", "A02", "grocery", "chilled", "M")
        assert reply["ok"], reply
        await day.deposit("g-5")

        # Quiet moment: everything so far reached dispatch, then the broker goes down.
        await until(lambda: _drained(rig, log), "the outbox drained", 20)
    await asyncio.to_thread(rig.broker.stop)
    # Offline: customers still collect with their codes; a wrong code is still refused.
    for order in ("g-1", "g-2", "s-2", "p-2", "g-5"):
        await day.collect(order)
    buzzes = (await day.ctl.acall("lane"))["buzzes"]
    await day.ctl.acall("scan", code="9999999999")
    await until(lambda: _buzzed(day, buzzes), "the wrong code refused (a beep)")
    for order in ("g-1", "g-2", "s-2", "p-2", "g-5"):
        assert len(pulses(rig, day.orders[order]["cid"])) == 2, order
    await asyncio.to_thread(rig.broker.start)

    async with dispatch_for(rig) as dispatch:
        await until(lambda: _drained(rig, log), "the outbox delivered after the outage", 30)
        state = await dispatch.command("get_state", sign=False)
        assert state["ok"], state
        await check_end_of_day(day, log, state["result"])


async def check_end_of_day(day: Day, log: EventLog, state: dict[str, Any]) -> None:
    sim = await day.sim()
    comps = {c["id"]: c for c in state["compartments"]}
    for order, o in day.orders.items():
        cid = o["cid"]
        parcels = sim["compartments"][cid]["parcels"]
        if o["collected"]:
            assert parcels == 0, (order, cid)
            assert comps[cid]["state"] == "free", (order, comps[cid])
            assert log.kinds("compartment_collected", compartment=cid, order=order), order
        else:
            assert parcels == 1, (order, cid)
            assert comps[cid]["state"] == "loaded", (order, comps[cid])
            assert comps[cid]["order_id"] == order
        assert log.kinds("compartment_loaded", compartment=cid, order=order), order

    events = log.unique()
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a gap in the event sequence"
    assert seqs[0] == 1
    assert len({e["boot_id"] for e in events}) == 1
    text = json.dumps(events)
    for o in day.orders.values():
        for code in o["codes"].values():
            assert code not in text, "a code in clear in an event"
    accepted = [e for e in events if e["kind"] == "code_accepted"]
    assert len(accepted) == len(day.orders) + sum(o["collected"] for o in day.orders.values())
    rejected = [e for e in events if e["kind"] == "code_rejected"]
    assert {e["data"]["reason"] for e in rejected} >= {"wrong_code"}
    assert any(e["kind"] == "help_requested" for e in events)

    # Every alarm raised once and cleared once per incident.
    incidents: dict[tuple[Any, ...], list[str]] = {}
    for e in events:
        if e["kind"] in ("alarm_raised", "alarm_cleared"):
            d = e["data"]
            key = (d["alarm"], e.get("compartment"), d.get("zone"), d.get("board"),
                   d.get("order"))
            incidents.setdefault(key, []).append(e["kind"])
    seen = {key[0] for key in incidents}
    assert seen >= {"door_ajar", "code_guessing", "forced_open", "tamper", "power_fail",
                    "temperature"}, seen
    for key, kinds in incidents.items():
        assert kinds == ["alarm_raised", "alarm_cleared"] * (len(kinds) // 2), (key, kinds)
    assert not state["alarms"], state["alarms"]


async def _loaded(day: Day, dispatch: DispatchClient, orders: list[str]) -> bool:
    return all(day.log.kinds("compartment_loaded", order=o) for o in orders)


async def _has(log: EventLog, kind: str, **data: Any) -> bool:
    return bool(log.kinds(kind, **data))


async def _drained(rig: LaneRig, log: EventLog) -> bool:
    store = await Store.connect(f"redis://127.0.0.1:{rig.redis_port}/0", _prefix(rig),
                                rig.cabinet)
    try:
        depth, last = await store.depth(), await store.last_seq()
    finally:
        await store.close()
    got = {e["seq"] for e in log.unique()}
    return depth == 0 and last > 0 and got >= set(range(1, last + 1))


def _prefix(rig: LaneRig) -> str:
    return f"locker:{rig.site}"


async def _buzzed(day: Day, before: int) -> bool:
    """The lane beeped since ``before`` buzzes: the daemon refused a code."""
    return int((await day.ctl.acall("lane"))["buzzes"]) > before
