"""``lockerctl demo``: a whole lane on this machine, played by a dispatch stand-in.

A :class:`~controller.lab.rig.LaneRig` starts mosquitto, the store, the cabinet simulator and
the daemon as processes on free loopback ports in a temporary directory. The dispatch
stand-in subscribes *before* the daemon starts, so it sees every event from ``seq`` 1,
then plays a short scenario while printing every message it receives:

1. ``get_state``; assign a chilled grocery order, a parcel and a shop order;
2. the courier holds the handle of the parcel's compartment, dispatch opens it for the
   deposit, the courier puts the parcel in and shuts the door: ``compartment_loaded``;
3. two refusals that change nothing: an unsigned ``open`` (``unauthenticated``) and an
   ``open`` of a compartment that does not exist (``unknown_compartment``); the
   simulator confirms no pulse reached a lock;
4. the shop cancels its order (``release``);
5. the customer taps "open" in the app: the door opens, the parcel is taken, the door is
   shut: ``compartment_collected``, ``compartment_freed``;
6. the daemon is stopped with SIGTERM: it publishes ``offline`` and exits 0.

It checks its own outcome (each step, events gap-free and unique, clean shutdown), prints
a summary and exits 0 only if every check passed. Every wait is bounded; the whole run is
bounded by ``DEMO_TIMEOUT_S``; every process is stopped by its pid.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from controller.contract.topics import CabinetTopics
from controller.dispatch import DispatchClient, Received
from controller.lab.rig import DEFAULT_TEMPLATE, LaneRig
from controller.settings import load_settings
from controller.tools.render import TrafficPrinter, describe_command, show, state_table

__all__ = ["DEMO_TIMEOUT_S", "Check", "DemoFailed", "LaneDemo", "run_demo"]

DEMO_TIMEOUT_S = 100.0
"""The whole scenario, start-up and shutdown included, never takes longer than this."""

EVENT_WAIT_S = 10.0


class DemoFailed(Exception):
    """The scenario could not go on (a step timed out or a reply was not the one expected)."""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class _Sent:
    type: str
    signed: bool
    expected: str
    outcome: str


@dataclass
class DemoResult:
    checks: list[Check] = field(default_factory=list)
    sent: list[_Sent] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


def _redis_mode() -> str:
    """A real redis-server (appendonly, fsync always: the production store) when this
    machine has one, as ``scripts/setup`` installs it; else the in-process store."""
    for candidate in (shutil.which("redis-server"), "/usr/sbin/redis-server",
                      "/usr/bin/redis-server"):
        if candidate and os.access(candidate, os.X_OK):
            return "server"
    return "memory"


class LaneDemo:
    """The scenario against a started rig; see the module docstring."""

    def __init__(self, rig: LaneRig, console: Console, printer: TrafficPrinter) -> None:
        self.rig = rig
        self.console = console
        self.printer = printer
        self.result = DemoResult()
        self.dc: DispatchClient | None = None
        settings = load_settings(rig.config_path)
        self.cooldown_s = settings.timing.compartment_cooldown_s + settings.timing.pulse_s
        self._pulsed_at: dict[str, float] = {}

    # -- helpers -----------------------------------------------------------------------

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.result.checks.append(Check(name, ok, detail))
        mark = Text("  ✔ " if ok else "  ✘ ", style="bold green" if ok else "bold red")
        self.console.print(mark + Text(name) + Text(f"  {detail}" if detail else "", style="dim"))
        return ok

    def step(self, title: str) -> None:
        show(self.console, Rule(Text(title, style="bold"), align="left"))

    async def sim(self, op: str, **fields: Any) -> Any:
        result = await asyncio.wait_for(self.rig.control.acall(op, **fields), 10)
        described = " ".join(str(v) for v in fields.values())
        if op == "truth":  # the simulator's ground truth: only how many
            shown = f"{len(result['events'])} so far"
        else:
            shown = ", ".join(f"{k} {v}" for k, v in result.items())
        self.printer.note("simulator", Text(f"{op} {described} -> {shown}"), "bold cyan")
        return result

    async def command(self, type_: str, args: dict[str, Any] | None = None, *,
                      sign: bool = True, expect: str = "ok") -> dict[str, Any]:
        assert self.dc is not None
        await self.dc.ensure_clock()  # get_clock when the clock came from a retained status
        command = self.dc.build(type_, args or {})
        self.printer.note("cmd    ->", describe_command(command, signed=sign,
                                                          full=self.printer.full),
                          "bold magenta")
        reply = await self.dc.send(self.dc.encode(command, sign=sign), command["id"], 15)
        code = "ok" if reply.get("ok") else str((reply.get("error") or {}).get("code"))
        if code in ("expired", "wrong_boot"):  # a stale clock: once more with the fresh one
            command = self.dc.build(type_, args or {}, command_id=command["id"])
            reply = await self.dc.send(self.dc.encode(command, sign=sign), command["id"], 15)
            code = "ok" if reply.get("ok") else str((reply.get("error") or {}).get("code"))
        self.result.sent.append(_Sent(type_, sign, expect, code))
        if code != expect:
            raise DemoFailed(f"{type_} {args}: expected {expect}, got {code}: {reply}")
        return reply

    async def wait_event(self, kind: str, compartment: str | None, start: int,
                         timeout_s: float = EVENT_WAIT_S) -> dict[str, Any]:
        assert self.dc is not None

        def match(m: Received) -> bool:
            return (m.channel == "events" and m.payload.get("kind") == kind
                    and (compartment is None or m.payload.get("compartment") == compartment))
        try:
            return (await self.dc.wait_for(match, timeout_s, start=start)).payload
        except TimeoutError:
            raise DemoFailed(f"no {kind} event for {compartment} within {timeout_s:.0f} s") \
                from None

    async def wait_state(self, predicate: Callable[[dict[str, Any]], bool], what: str,
                         start: int) -> dict[str, Any]:
        assert self.dc is not None
        try:
            message = await self.dc.wait_for(
                lambda m: m.channel == "state" and predicate(m.payload), EVENT_WAIT_S,
                start=start)
        except TimeoutError:
            raise DemoFailed(f"the state never showed {what}") from None
        return message.payload

    def mark(self) -> int:
        assert self.dc is not None
        return len(self.dc.messages)

    async def wait_cooldown(self, compartment: str) -> None:
        """A lock is not pulsed twice within its cooldown (it would be refused)."""
        last = self._pulsed_at.get(compartment)
        if last is not None:
            remaining = last + self.cooldown_s + 0.2 - time.monotonic()
            if remaining > 0:
                await asyncio.sleep(remaining)

    async def open_door(self, compartment: str, reason: str, who: str) -> None:
        """``who`` holds the handle; dispatch sends the signed open; the door opens."""
        await self.wait_cooldown(compartment)
        await self.sim("pull_when_released", compartment=compartment)
        start = self.mark()
        reply = await self.command("open", {"compartment": compartment, "reason": reason})
        self._pulsed_at[compartment] = time.monotonic()
        pulse = (reply.get("result") or {}).get("pulse") or {}
        self.check(f"open {compartment} for {reason}: pulse accepted",
                   bool(pulse.get("accepted")),
                   f"{pulse.get('duration_s')} s, timed by {pulse.get('timed_by')}")
        opened = await self.wait_event("door_opened", compartment, start)
        data = opened.get("data") or {}
        self.check(f"{who} opened {compartment}: door_opened, authorised",
                   data.get("authorised") is True,
                   f"{data.get('after_pulse_s')} s after the pulse")

    # -- the scenario ------------------------------------------------------------------

    async def run(self) -> DemoResult:
        rig = self.rig
        topics = CabinetTopics(rig.topic_root, rig.site, rig.cabinet)
        started = time.monotonic()
        async with DispatchClient("127.0.0.1", rig.mqtt_port, topics, key=rig.key,
                                  key_id=rig.key_id, on_message=self.printer,
                                  client_id="demo-dispatch") as dc:
            self.dc = dc
            self.step("The cabinet starts")
            rig.daemon.start(wait_port=False)
            self.printer.note("lane", f"daemon started, pid {rig.daemon.pid}", "bold cyan")
            try:
                status = await dc.wait_online(30)
            except TimeoutError:
                raise DemoFailed("the cabinet did not come online within 30 s; daemon log:\n"
                                 + rig.logs("daemon", 1500)) from None
            self.check("cabinet online", True, f"boot {status.get('boot_id', '')[:8]}, "
                       f"{time.monotonic() - started:.1f} s after start")
            # Dispatch pins the code key read on the cabinet itself (here: its key file),
            # never the one a status shows alone; codes would be sealed to the pin only.
            pin = await asyncio.to_thread(rig.pinned_code_key)
            dc.code_key_pin = pin
            self.check("code key pinned from the cabinet, its status shows the same",
                       dc.code_key_changed is None and dc.published_code_key() == pin,
                       f"key id {pin.key_id}")

            self.step("Dispatch reads the cabinet and assigns three orders")
            reply = await self.command("get_state", sign=False)
            state = reply.get("result") or {}
            compartments = {c["id"]: c for c in state.get("compartments", [])}
            show(self.console, state_table(state))
            self.check("get_state: snapshot", len(compartments) > 0,
                       f"{len(compartments)} compartments")
            orders = [
                ("g-1001", {"order_id": "g-1001", "size": "M", "zone": "chilled",
                            "pool": "grocery"}, "grocery order (chilled)"),
                ("p-2002", {"order_id": "p-2002", "size": "S", "zone": "ambient",
                            "pool": "parcel"}, "parcel"),
                ("s-3003", {"order_id": "s-3003", "size": "M", "zone": "chilled",
                            "pool": "shop"}, "shop order (chilled)"),
            ]
            assigned: dict[str, str] = {}
            for order_id, args, what in orders:
                reply = await self.command("assign", args)
                cid = str((reply.get("result") or {}).get("compartment"))
                assigned[order_id] = cid
                fits = compartments.get(cid, {})
                self.check(f"assign {what} -> {cid}",
                           fits.get("pool") == args["pool"] and fits.get("zone") == args["zone"],
                           f"pool {fits.get('pool')}, zone {fits.get('zone')}, "
                           f"size {fits.get('size')}")

            parcel = assigned["p-2002"]
            if compartments.get(parcel, {}).get("occupancy") is None:
                raise DemoFailed(f"{parcel} has no occupancy sensor: choose another template")

            self.step(f"The courier deposits the parcel in {parcel}")
            start = self.mark()
            await self.open_door(parcel, "deposit", "the courier")
            await self.sim("place_parcel", compartment=parcel)
            # The courier's moment before shutting the door: the story's pace, not a wait
            # for the daemon (it judges a close on the occupancy it has settled).
            await asyncio.sleep(0.3)
            await self.sim("close", compartment=parcel)
            await self.wait_event("door_closed", parcel, start)
            loaded = await self.wait_event("compartment_loaded", parcel, start)
            self.check(f"{parcel} loaded, confirmed by its occupancy sensor",
                       (loaded.get("data") or {}).get("confirmed") is True,
                       f"occupancy {(loaded.get('data') or {}).get('occupancy')}")
            await self.wait_state(
                lambda s: any(c["id"] == parcel and c["state"] == "loaded"
                              and c.get("door") == "closed" for c in s["compartments"]),
                f"{parcel} loaded and closed", start)
            self.check(f"state: {parcel} loaded, door closed", True)

            self.step("Two commands the cabinet must refuse")
            before = await self.sim("truth", kind="pulse_received")
            await self.command("open", {"compartment": parcel, "reason": "customer_app"},
                               sign=False, expect="unauthenticated")
            self.check("unsigned open refused: unauthenticated", True,
                       "broker credentials alone cannot open a door")
            await self.command("open", {"compartment": "Z99", "reason": "staff"},
                               expect="unknown_compartment")
            self.check("open of Z99 refused: unknown_compartment", True)
            # Nothing to wait for: a command acts before its reply.
            after = await self.sim("truth", kind="pulse_received")
            self.check("no lock was pulsed by a refused command",
                       len(after["events"]) == len(before["events"]),
                       f"{len(after['events'])} pulses in all, simulator's ground truth")

            self.step("The shop cancels its order")
            start = self.mark()
            await self.command("release", {"order_id": "s-3003"})
            shop = assigned["s-3003"]
            await self.wait_state(
                lambda s: any(c["id"] == shop and c["state"] == "free"
                              for c in s["compartments"]), f"{shop} free", start)
            self.check(f"release s-3003: {shop} free again", True)

            self.step(f"The customer collects the parcel from {parcel} (remote open, app)")
            start = self.mark()
            await self.open_door(parcel, "customer_app", "the customer")
            await self.sim("remove_parcel", compartment=parcel)
            await asyncio.sleep(0.3)  # the customer's moment: the story's pace
            await self.sim("close", compartment=parcel)
            await self.wait_event("door_closed", parcel, start)
            collected = await self.wait_event("compartment_collected", parcel, start)
            self.check(f"{parcel} collected",
                       (collected.get("data") or {}).get("order") == "p-2002",
                       f"order {(collected.get('data') or {}).get('order')}")
            await self.wait_event("compartment_freed", parcel, start)
            final = await self.wait_state(
                lambda s: any(c["id"] == parcel and c["state"] == "free"
                              for c in s["compartments"]), f"{parcel} free", start)
            self.check(f"state: {parcel} free again", True)
            show(self.console, state_table(final))

            self.step("The cabinet shuts down")
            start = self.mark()
            code = await asyncio.to_thread(rig.daemon.stop, 15.0)
            self.check("daemon stopped on SIGTERM, exit 0", code == 0, f"exit {code}")
            try:
                await dc.wait_for(lambda m: m.channel == "status"
                                  and m.payload.get("state") == "offline", 10, start=start)
                self.check("offline status published", True)
            except TimeoutError:
                self.check("offline status published", False, "none within 10 s")
            self.result.events = dc.events()
        self.check_events()
        return self.result

    def check_events(self) -> None:
        unique: dict[str, dict[str, Any]] = {}
        for event in self.result.events:
            unique.setdefault(str(event.get("id")), event)
        seqs = sorted(int(e["seq"]) for e in unique.values() if isinstance(e.get("seq"), int))
        duplicates = len(self.result.events) - len(unique)
        gap_free = bool(seqs) and seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        self.check("events gap-free", gap_free and (not seqs or seqs[0] == 1),
                   f"seq {seqs[0]}..{seqs[-1]}, {len(seqs)} events" if seqs else "no events")
        self.check("no duplicate events", duplicates == 0, f"{duplicates} duplicates")
        boots = {e.get("boot_id") for e in unique.values()}
        self.check("one boot", len(boots) == 1, f"{len(boots)} boot id(s)")


def _summary(result: DemoResult, printer: TrafficPrinter) -> Table:
    table = Table(title="summary", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("run time", f"{result.duration_s:.1f} s")
    table.add_row("messages", ", ".join(f"{n} {ch}" for ch, n in sorted(printer.counts.items())))
    kinds: dict[str, int] = {}
    for event in result.events:
        kinds[str(event.get("kind"))] = kinds.get(str(event.get("kind")), 0) + 1
    table.add_row("events", f"{len(result.events)}: " + ", ".join(
        f"{k} {n}" for k, n in sorted(kinds.items())))
    as_expected = sum(1 for s in result.sent if s.outcome == s.expected)
    table.add_row("commands", f"{len(result.sent)} sent "
                  f"({sum(1 for s in result.sent if s.signed)} signed), "
                  f"{sum(1 for s in result.sent if s.outcome == 'ok')} ok, "
                  f"{sum(1 for s in result.sent if s.outcome != 'ok')} refused, "
                  f"{as_expected}/{len(result.sent)} as expected")
    passed = sum(1 for c in result.checks if c.ok)
    table.add_row("checks", Text(f"{passed}/{len(result.checks)} passed",
                                 style="bold green" if result.ok else "bold red"))
    return table


def run_demo(console: Console, *, keep: bool = False, emulate_timing: bool = True,
             broker_port: int | None = None) -> int:
    """Run the demo; 0 when every check passed, 1 when the scenario went wrong."""
    workdir = Path(tempfile.mkdtemp(prefix="locker-demo-"))
    redis = _redis_mode()
    rig = LaneRig(workdir, redis=redis, emulate_timing=emulate_timing,
                  overrides={"timing.telemetry_interval_s": "3"}, mqtt_port=broker_port)
    printer = TrafficPrinter(console, full=not console.is_terminal)
    started = time.monotonic()
    show(console, Panel.fit(
        f"cabinet [bold]{rig.site}/{rig.cabinet}[/] (simulated, {rig.config_path.name} "
        f"from the packaged {DEFAULT_TEMPLATE.name})\n"
        f"broker   mosquitto on 127.0.0.1:{rig.mqtt_port}, topics "
        f"{rig.topic_root}/{rig.site}/{rig.cabinet}/#\n"
        f"store    {'redis-server (appendonly, fsync always)' if redis == 'server' else 'in-process (redis-server not installed)'}\n"  # noqa: E501
        f"bus      Modbus RTU on a pty, "
        f"{'line timing emulated' if emulate_timing else 'no line timing'}\n"
        f"work dir {workdir}", title="lockerctl demo: a drive-through locker lane"))
    demo: LaneDemo | None = None
    error: str | None = None
    try:
        rig.start(daemon=False)
        printer.note("lane", f"mosquitto pid {rig.broker.pid}, "
                     + (f"redis-server pid {rig.redis.pid}, " if redis == "server" else "")
                     + f"simulator pid {rig.sim.pid}", "bold cyan")
        demo = LaneDemo(rig, console, printer)
        asyncio.run(asyncio.wait_for(demo.run(), DEMO_TIMEOUT_S))
    except DemoFailed as exc:
        error = str(exc)
    except TimeoutError:
        error = f"the scenario did not finish within {DEMO_TIMEOUT_S:.0f} s"
    except (RuntimeError, FileNotFoundError, OSError) as exc:
        error = f"the lane could not run: {exc}"
    finally:
        rig.close()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    result = demo.result if demo is not None else DemoResult()
    result.duration_s = time.monotonic() - started
    if error is not None:
        result.checks.append(Check("scenario completed", False, error))
        console.print(Text(f"demo failed: {error}", style="bold red"))
    show(console, _summary(result, printer))
    if keep:
        console.print(f"work directory kept: {workdir} (config, logs)")
    console.print(Text("demo ok" if result.ok else "demo FAILED",
                       style="bold green" if result.ok else "bold red"))
    return 0 if result.ok else 1
