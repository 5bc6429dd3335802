"""A fleet of simulated cabinets against one broker, seen from dispatch (``locker-sim fleet``).

Each cabinet runs the real daemon (:class:`~controller.daemon.app.Daemon`: services, store,
MQTT link, outbox, signed commands) on the in-memory boards of the ``fake`` board backend,
with its doors wired to scripted people (a door opens when its latch is released and is
closed again a moment later, goods put in or taken out). Many cabinets share one
interpreter (a *host* process, ``--hosts`` of them), with a slower poll than a real
cabinet; all share one mosquitto and one redis-server (each cabinet's keys live under its
own ``{prefix}:{cabinet}:`` namespace, which the store already enforces, so one server and
one database serve them all, as a single-cabinet store would be served).

Dispatch is this module's main process: one :class:`~controller.dispatch.DispatchClient`
per cabinet (persistent session, reconnection, signed commands), running the scenario:

* for each cabinet, ``--rounds`` orders: ``assign`` a compartment, ``open`` it for the
  deposit, the courier closes the door on the goods, ``open`` it for the collection, the
  customer closes it on an empty compartment (each door cycle awaited in the events);
* faults: the broker restarts once during the run (every daemon and every dispatch client
  reconnects; events wait in the outboxes and the persistent sessions); a few cabinets'
  sensor boards go silent for a while (their signals become unknown, an alarm is raised
  and cleared).

At the end dispatch waits for every cabinet's outbox to drain, compares what it received
with each cabinet's last sequence number, and reports: commands sent and answered, reply
latency p50/p99, events received, duplicates dropped, gaps, and per-cabinet problems
(``--json`` for machines). The exit code is 0 when commands were sent, every one was
answered and every event arrived once after dedupe, else 1; 2 for a bad option or a broker
out of reach; 130 after Ctrl-C or SIGTERM (the hosts, broker and store it started are
stopped).

Run::

    python -m controller.lab.fleet run --cabinets 200
    locker-sim fleet --cabinets 200        # the same, from the simulator's command line

``host`` is the internal sub-command a host process runs (JSON lines on stdin/stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import json
import logging
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.contract.topics import CabinetTopics
from controller.dispatch import BrokerError, DispatchClient, Gap
from controller.lab.rig import (
    DEFAULT_TEMPLATE,
    _Proc,
    _set_key,
    free_port,
    mosquitto_argv,
    redis_argv,
)

__all__ = ["FleetOptions", "FleetReport", "main", "run_fleet"]

log = logging.getLogger("controller.lab.fleet")

SITE = "fleet"
TOPIC_ROOT = "lockers/v1"
KEY_ID = "fleet"
#: Ambient compartments of the packaged demo cabinet the scenario uses (no cold zone: the
#: in-memory probes read 20 °C, which keeps cold zones out of assignment).
SCENARIO_COMPARTMENTS = (("B01", "S"), ("B02", "S"), ("B03", "M"), ("B04", "M"))
#: A person holds a released door open this many board polls (and half a second) before
#: closing it: long enough for the debounced door signal to see it open.
DOOR_HOLD_POLLS = 4


@dataclass(frozen=True)
class FleetOptions:
    cabinets: int = 200
    hosts: int = 1
    rounds: int = 2
    think_s: float = 4.0
    spread_s: float = 20.0
    poll_s: float = 1.0
    protocol: int = 5
    broker_restart: bool = True
    #: Seconds the broker stays stopped before it starts again; 0 restarts it at once (a
    #: service restart). A command sent while there is no broker waits at least that long.
    broker_down_s: float = 0.0
    silent_boards: int = 2
    silent_for_s: float = 8.0
    drain_timeout_s: float = 120.0
    command_timeout_s: float = 60.0
    workdir: Path | None = None
    #: ``HOST:PORT`` of a broker (or cluster) to use instead of starting a mosquitto; the
    #: broker restart fault is then yours to cause (restart a node during the run).
    broker: str | None = None


@dataclass
class CabinetTally:
    cabinet: str
    sent: int = 0
    answered: int = 0
    ok: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    unanswered: int = 0
    latencies: list[float] = field(default_factory=list)
    by_type: dict[str, list[float]] = field(default_factory=dict)
    #: Send to reply built, from the cabinet's clock in the reply (an upper bound: the
    #: clock estimate lags by the delivery time of the reading it rests on).
    to_reply_built: list[float] = field(default_factory=list)
    #: Latencies of the commands that did not live through a reconnection of dispatch.
    calm_latencies: list[float] = field(default_factory=list)
    #: (monotonic start, latency) of every answered command, to place it against faults.
    timeline: list[tuple[float, float]] = field(default_factory=list)
    door_cycles_missed: int = 0
    #: alarm -> [raised, cleared], as dispatch saw them in the events.
    alarms: dict[str, list[int]] = field(default_factory=dict)
    gaps: list[Gap] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class FleetReport:
    options: dict[str, Any]
    summary: dict[str, Any]
    cabinets: list[dict[str, Any]]

    @property
    def promises_kept(self) -> bool:
        s = self.summary
        # A run that sent nothing proved nothing: it does not pass.
        return bool(s["commands_sent"] > 0 and s["commands_answered"] == s["commands_sent"]
                    and s["commands_unanswered"] == 0 and s["events_missing"] == 0
                    and s["events_unique"] == s["events_expected"])

    def as_dict(self) -> dict[str, Any]:
        return {"options": self.options, "summary": self.summary, "cabinets": self.cabinets,
                "promises_kept": self.promises_kept}


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def cabinet_ids(count: int) -> list[str]:
    return [f"cab-{i:04d}" for i in range(1, count + 1)]


# -- configuration -------------------------------------------------------------------------


def _without_lane(text: str) -> str:
    """The template without its ``[lane...]`` sections (a fleet cabinet has no lane I/O)."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            skipping = stripped.startswith("[lane")
        if not skipping:
            out.append(line)
    return "\n".join(out) + "\n"


def write_configs(workdir: Path, cabinets: Sequence[str], *, mqtt_port: int, redis_port: int,
                  public_key_b64: str, poll_s: float, protocol: int,
                  mqtt_host: str = "127.0.0.1") -> dict[str, Path]:
    """One config file per cabinet, each in its own directory (its code key beside it)."""
    base = _without_lane(DEFAULT_TEMPLATE.read_text())
    settings = {
        ("cabinet", "site"): f'"{SITE}"',
        ("mqtt", "host"): f'"{mqtt_host}"',
        ("mqtt", "port"): str(mqtt_port),
        ("mqtt", "protocol"): str(protocol),
        ("redis", "url"): f'"redis://127.0.0.1:{redis_port}/0"',
        ("timing", "poll_interval_s"): str(poll_s),
        ("timing", "state_coalesce_s"): "1.0",
        ("timing", "telemetry_interval_s"): "60",
        ("security", "require_signed_commands"): "true",
        ("security", "dispatch_public_keys"): f'{{ {KEY_ID} = "{public_key_b64}" }}',
        ("log", "level"): '"warning"',
    }
    paths: dict[str, Path] = {}
    for cabinet in cabinets:
        text = _set_key(base, "cabinet", "id", f'"{cabinet}"')
        for (section, key), value in settings.items():
            text = _set_key(text, section, key, value)
        directory = workdir / "cabinets" / cabinet
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "cabinet.toml"
        path.write_text(text)
        paths[cabinet] = path
    return paths


# -- host: many daemons in one interpreter --------------------------------------------------


class _People:
    """The people at one cabinet's doors: a released door is pulled open, held a moment,
    then closed; each closing puts goods in or takes them out (occupancy toggles)."""

    def __init__(self, daemon: Any) -> None:
        self.doors: list[tuple[Any, Any, Any]] = []  # (door, occupancy board, SignalRef)
        self.hold_s = DOOR_HOLD_POLLS * daemon.settings.timing.poll_interval_s + 0.5
        hardware = daemon.hardware
        for comp in daemon.settings.compartments:
            board = hardware.lock_boards.get(comp.lock.board)
            if board is None or not hasattr(board, "connect_door"):
                continue
            door_ref = comp.door if comp.door and comp.door.board == comp.lock.board else None
            latch_ref = comp.latch if comp.latch and comp.latch.board == comp.lock.board else None
            door = board.connect_door(
                comp.lock.channel,
                door_input=door_ref.channel if door_ref else None,
                latch_input=latch_ref.channel if latch_ref else None,
                door_active_high=(door_ref.active == "high") if door_ref else True,
                latch_active_high=(latch_ref.active == "high") if latch_ref else True,
                opens_when_released=True,
            )
            occupancy_board = None
            if comp.occupancy is not None:
                occupancy_board = hardware.lock_boards.get(comp.occupancy.board)
                if occupancy_board is not None:
                    occupancy_board.set_input(comp.occupancy.channel,
                                              comp.occupancy.active != "high")
            self.doors.append((door, occupancy_board, comp.occupancy))

    def step(self, now: float) -> None:
        for door, board, ref in self.doors:
            if door.is_open and door.opened_at and now - door.opened_at[-1] >= self.hold_s:
                door.occupied = not door.occupied
                if board is not None and ref is not None:
                    board.set_input(ref.channel, door.occupied == (ref.active == "high"))
                door.close()


async def _host(workdir: Path, cabinets: Sequence[str]) -> int:
    from controller.daemon.app import Daemon  # the cabinets' side only
    from controller.settings import load_settings

    os.environ.pop("NOTIFY_SOCKET", None)
    os.environ.pop("WATCHDOG_USEC", None)
    loop = asyncio.get_running_loop()
    daemons: dict[str, Daemon] = {}
    for cabinet in cabinets:
        path = workdir / "cabinets" / cabinet / "cabinet.toml"
        daemons[cabinet] = Daemon(load_settings(path), backend="fake", config_path=path,
                                  ready_timeout_s=60.0)
    runs = {c: loop.create_task(d.run(), name=f"daemon-{c}") for c, d in daemons.items()}
    people: dict[str, _People] = {}

    async def wire_people() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            for cabinet, daemon in daemons.items():
                # Wired between the boards' creation and the first poll (the store's round
                # trips in between leave the loop plenty of turns): the first poll must see
                # closed doors, not the all-zero inputs of unwired boards.
                if (cabinet not in people and daemon.hardware is not None
                        and daemon.hardware.lock_boards):
                    people[cabinet] = _People(daemon)
            if len(people) == len(daemons):
                return
            await asyncio.sleep(0)

    await wire_people()
    async with asyncio.timeout(300):
        for cabinet, daemon in daemons.items():
            ready = loop.create_task(daemon.ready.wait())
            await asyncio.wait((ready, runs[cabinet]), return_when=asyncio.FIRST_COMPLETED)
            if not ready.done():
                ready.cancel()
                # A daemon that ended at start-up (its store, its config): say which, stop.
                error = runs[cabinet].exception() if not runs[cabinet].cancelled() else None
                _emit({"failed": {"cabinet": cabinet, "error": repr(error)}})
                for other in daemons.values():
                    other.terminate()
                await asyncio.gather(*runs.values(), return_exceptions=True)
                return 1
    _emit({"ready": sorted(daemons)})

    async def walk() -> None:
        while True:
            now = time.monotonic()
            for crowd in people.values():
                crowd.step(now)
            await asyncio.sleep(0.1)

    lags: list[float] = []

    async def lag_probe() -> None:
        # How late the shared loop runs a timer: what every cabinet's timers suffer too.
        while True:
            asked = loop.time()
            await asyncio.sleep(0.1)
            lags.append(loop.time() - asked - 0.1)
            if len(lags) > 100_000:
                del lags[:50_000]

    walker = loop.create_task(walk())
    prober = loop.create_task(lag_probe())
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            request = json.loads(line)
            op = request.get("op")
            if op == "stop":
                break
            if op == "silence":
                daemon = daemons[request["cabinet"]]
                assert daemon.hardware is not None
                board = daemon.hardware.lock_boards[request["board"]]
                if request.get("on"):
                    board.inject("timeout", persistent=True)  # type: ignore[attr-defined]
                else:
                    board.clear_faults()  # type: ignore[attr-defined]
                _emit({"done": op})
            elif op == "report":
                report = await _host_report(daemons, runs)
                report["loop_lag_p50_s"] = _percentile(lags, 0.5)
                report["loop_lag_p99_s"] = _percentile(lags, 0.99)
                report["loop_lag_max_s"] = max(lags) if lags else None
                _emit({"report": report})
    finally:
        walker.cancel()
        prober.cancel()
        for daemon in daemons.values():
            daemon.terminate()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(30):
                await asyncio.gather(*runs.values(), return_exceptions=True)
    return 0


async def _host_report(daemons: dict[str, Any], runs: dict[str, asyncio.Task[int]]
                       ) -> dict[str, Any]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cabinets: dict[str, Any] = {}
    for cabinet, daemon in daemons.items():
        entry: dict[str, Any] = {"running": not runs[cabinet].done(),
                                 "task_restarts": sum(daemon.supervisor.restarts.values())
                                 if isinstance(daemon.supervisor.restarts, dict)
                                 else int(daemon.supervisor.restarts)}
        if daemon.link is not None:
            link = daemon.link.snapshot()
            # Wall time of the last connection change: set against the broker's restart.
            entry["link_since"] = link.since.timestamp() if link.connected else None
            entry["link_connects"] = link.connects
        try:
            entry["last_seq"] = await daemon.store.last_seq()
            entry["outbox_depth"] = await daemon.store.depth()
        except Exception as exc:
            entry["error"] = str(exc)
        cabinets[cabinet] = entry
    return {"pid": os.getpid(), "rss_mb": _rss_mb(), "cpu_s": usage.ru_utime + usage.ru_stime,
            "cabinets": cabinets}


def _rss_mb() -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class _HostProcess:
    """A host process seen from dispatch: JSON lines in and out."""

    def __init__(self, proc: asyncio.subprocess.Process, cabinets: list[str]) -> None:
        self.proc = proc
        self.cabinets = cabinets
        self._lock = asyncio.Lock()

    async def read(self, key: str, timeout_s: float) -> Any:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"fleet host ended (exit {self.proc.returncode})")
                with contextlib.suppress(ValueError):
                    message = json.loads(line)
                    if isinstance(message, dict) and "failed" in message:
                        raise RuntimeError(f"a fleet cabinet did not start: {message['failed']}")
                    if isinstance(message, dict) and key in message:
                        return message[key]

    async def call(self, request: dict[str, Any], key: str, timeout_s: float = 60.0) -> Any:
        assert self.proc.stdin is not None
        async with self._lock:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            await self.proc.stdin.drain()
            return await self.read(key, timeout_s)


# -- dispatch: the scenario ------------------------------------------------------------------


class _Cabinet:
    def __init__(self, client: DispatchClient, tally: CabinetTally) -> None:
        self.client = client
        self.tally = tally
        self.closed: dict[str, int] = {}
        self._changed = asyncio.Event()

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind in ("alarm_raised", "alarm_cleared"):
            alarm = str((event.get("data") or {}).get("alarm"))
            counts = self.tally.alarms.setdefault(alarm, [0, 0])
            counts[0 if kind == "alarm_raised" else 1] += 1
        if event.get("kind") == "door_closed" and event.get("compartment"):
            cid = str(event["compartment"])
            self.closed[cid] = self.closed.get(cid, 0) + 1
            self._changed.set()

    async def wait_closed(self, cid: str, count: int, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self.closed.get(cid, 0) < count:
                    self._changed.clear()
                    await self._changed.wait()
                return True
        return False

    async def command(self, type_: str, args: dict[str, Any], timeout_s: float
                      ) -> dict[str, Any] | None:
        self.tally.sent += 1
        started = time.monotonic()
        reconnects = self.client.reconnects
        boot, uptime_ms = self.client.clock.estimate(started)
        try:
            reply = await self.client.command(type_, args, timeout_s=timeout_s)
        except (TimeoutError, ConnectionError, LookupError) as exc:
            self.tally.unanswered += 1
            self.tally.problems.append(f"{type_} unanswered: {type(exc).__name__}")
            return None
        self.tally.latencies.append(time.monotonic() - started)
        self.tally.timeline.append((started, self.tally.latencies[-1]))
        self.tally.by_type.setdefault(type_, []).append(self.tally.latencies[-1])
        clock = reply.get("cabinet_clock") or {}
        if clock.get("boot_id") == boot and isinstance(clock.get("uptime_ms"), int):
            self.tally.to_reply_built.append(max(0.0, (clock["uptime_ms"] - uptime_ms) / 1000))
        if self.client.reconnects == reconnects and self.client.connected:
            self.tally.calm_latencies.append(self.tally.latencies[-1])
        self.tally.answered += 1
        if reply.get("ok"):
            self.tally.ok += 1
        else:
            error = reply.get("error") or {}
            code = str(error.get("code"))
            self.tally.refused[code] = self.tally.refused.get(code, 0) + 1
            self.tally.problems.append(
                f"{type_} {reply.get('id')} refused: {code} ({error.get('message')})")
        return reply

    async def scenario(self, options: FleetOptions, index: int) -> None:
        cabinet = self.tally.cabinet
        # Orders do not reach every cabinet in the same instant: the starts are spread.
        await asyncio.sleep(options.spread_s * index / max(1, options.cabinets))
        for round_ in range(options.rounds):
            cid, size = SCENARIO_COMPARTMENTS[(index + round_) % len(SCENARIO_COMPARTMENTS)]
            order = f"o-{cabinet}-{round_}"
            timeout = options.command_timeout_s
            reply = await self.command("assign", {"order_id": order, "size": size,
                                                  "zone": "ambient", "pool": "parcel",
                                                  "compartment": cid}, timeout)
            if reply is None or not reply.get("ok"):
                continue
            for step, reason in enumerate(("deposit", "collect"), start=1):
                before = self.closed.get(cid, 0)
                reply = await self.command("open", {"compartment": cid, "reason": reason},
                                           timeout)
                if reply is None or not reply.get("ok"):
                    break
                if not await self.wait_closed(cid, before + 1, 60.0):
                    self.tally.door_cycles_missed += 1
                    self.tally.problems.append(f"{reason} door cycle of {cid} not seen")
                if step == 1:
                    await asyncio.sleep(options.think_s / 2)
            await asyncio.sleep(options.think_s)


async def _probe_lag(lags: list[float]) -> None:
    """How late this loop runs a 0.1 s timer (bounded memory)."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time()
        await asyncio.sleep(0.1)
        lags.append(loop.time() - asked - 0.1)
        if len(lags) > 100_000:
            del lags[:50_000]


def _on_event(fleet: dict[str, _Cabinet], cabinet: str, event: dict[str, Any]) -> None:
    fleet[cabinet].on_event(event)


async def run_fleet(options: FleetOptions, *, progress: Any = None) -> FleetReport:
    """Start broker, store and hosts, run the scenario, return the report."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    def say(text: str) -> None:
        if progress is not None:
            progress(text)

    own_dir = options.workdir is None
    workdir = (Path(tempfile.mkdtemp(prefix="locker-fleet-")) if options.workdir is None
               else Path(options.workdir))
    workdir.mkdir(parents=True, exist_ok=True)
    _raise_fd_limit()
    key = Ed25519PrivateKey.generate()
    public = base64.b64encode(key.public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).decode()
    mqtt_host, mqtt_port, redis_port = "127.0.0.1", free_port(), free_port()
    broker: _Proc | None = None
    if options.broker:
        host_text, _, port_text = options.broker.rpartition(":")
        mqtt_host, mqtt_port = host_text or "127.0.0.1", int(port_text)
    else:
        broker = _Proc("mosquitto", mosquitto_argv(workdir, mqtt_port,
                                                   extra_config="max_inflight_messages 100"),
                       workdir / "mosquitto.log", mqtt_port)
    (workdir / "redis").mkdir(exist_ok=True)
    redis = _Proc("redis-server", redis_argv(workdir / "redis", redis_port, durable=False),
                  workdir / "redis.log", redis_port)
    cabinets = cabinet_ids(options.cabinets)
    write_configs(workdir, cabinets, mqtt_port=mqtt_port, redis_port=redis_port,
                  public_key_b64=public, poll_s=options.poll_s, protocol=options.protocol,
                  mqtt_host=mqtt_host)
    hosts: list[_HostProcess] = []
    tallies = {c: CabinetTally(c) for c in cabinets}
    fleet: dict[str, _Cabinet] = {}
    started = time.monotonic()
    try:
        if broker is not None:
            await asyncio.to_thread(broker.start)
        await asyncio.to_thread(redis.start)
        say(f"broker {mqtt_host}:{mqtt_port}, redis on :{redis_port}, work directory "
            f"{workdir}")
        async with contextlib.AsyncExitStack() as stack:
            # Dispatch first: its persistent sessions exist before the cabinets' first
            # events, as they would in production, so it can expect every event from seq 1.
            for cabinet in cabinets:
                tally = tallies[cabinet]
                client = DispatchClient(
                    mqtt_host, mqtt_port, CabinetTopics(TOPIC_ROOT, SITE, cabinet),
                    key=key, key_id=KEY_ID, protocol=options.protocol,
                    client_id=f"dispatch-{cabinet}", persistent=True, reconnect=True,
                    resend_after_s=10.0, session_expiry_s=3600, after_seq=0,
                    keep_messages=False, on_gap=tally.gaps.append,
                    on_event=functools.partial(_on_event, fleet, cabinet))
                fleet[cabinet] = _Cabinet(client, tally)
                await stack.enter_async_context(client)
            say(f"dispatch connected: {len(cabinets)} persistent sessions")
            share = max(1, -(-len(cabinets) // max(1, options.hosts)))
            for first in range(0, len(cabinets), share):
                mine = cabinets[first:first + share]
                with open(workdir / f"host-{first // share}.log", "ab") as errors:  # noqa: ASYNC230
                    proc = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "controller.lab.fleet", "host",
                        "--workdir", str(workdir), *mine,
                        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                        stderr=errors, start_new_session=True)
                hosts.append(_HostProcess(proc, mine))
            for host in hosts:
                await host.read("ready", 600)
            boot_s = time.monotonic() - started
            say(f"{len(cabinets)} cabinets ready in {boot_s:.1f} s on {len(hosts)} host(s)")
            # Every client holds a clock (the retained status) before the scenario starts.
            async with asyncio.timeout(120):
                while not all(f.client.clock.known for f in fleet.values()):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            say("dispatch connected to every cabinet; scenario running")
            lags: list[float] = []
            prober = asyncio.ensure_future(_probe_lag(lags))
            stack.callback(prober.cancel)
            scenario_started = time.monotonic()
            scenario = asyncio.gather(*(fleet[c].scenario(options, i)
                                        for i, c in enumerate(cabinets)))
            outage: list[float] = []
            faults = asyncio.ensure_future(_faults(options, hosts, broker, say, outage))
            await scenario
            await faults
            scenario_s = time.monotonic() - scenario_started
            say(f"scenario done in {scenario_s:.1f} s; waiting for the outboxes to drain")
            host_reports = await _drain(options, hosts, fleet)
            report = _report(options, tallies, fleet, host_reports, boot_s, scenario_s)
            report.summary.update(_restart_figures(tallies, outage, host_reports))
            report.summary["dispatch_loop_lag_p99_s"] = _round(_percentile(lags, 0.99))
            report.summary["dispatch_loop_lag_max_s"] = _round(max(lags) if lags else None)
            return report
    finally:
        for host in hosts:
            with contextlib.suppress(Exception):
                assert host.proc.stdin is not None
                host.proc.stdin.write(b'{"op": "stop"}\n')
                await host.proc.stdin.drain()
        for host in hosts:
            try:
                async with asyncio.timeout(60):
                    await host.proc.wait()
            except TimeoutError:
                host.proc.kill()
                await host.proc.wait()
        await asyncio.to_thread(redis.stop)
        if broker is not None:
            await asyncio.to_thread(broker.stop)
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)


async def _faults(options: FleetOptions, hosts: list[_HostProcess], broker: _Proc | None,
                  say: Any, outage: list[float]) -> None:
    """A few sensor boards go silent a while; the broker restarts once (``outage`` gets
    the monotonic times it was asked to stop and was accepting connections again)."""
    await asyncio.sleep(max(options.think_s, options.spread_s / 2))  # mid-run
    silent = [(h, c) for h in hosts for c in h.cabinets][: options.silent_boards]
    for host, cabinet in silent:
        await host.call({"op": "silence", "cabinet": cabinet, "board": "io-c", "on": True},
                        "done")
    if silent:
        say(f"sensor board io-c silent on {', '.join(c for _, c in silent)}")
    if options.broker_restart and broker is not None:
        outage.append(time.monotonic())
        outage.append(time.time())
        await asyncio.to_thread(broker.stop)
        say("broker stopped")
        if options.broker_down_s > 0:
            await asyncio.sleep(options.broker_down_s)
        await asyncio.to_thread(broker.start)  # returns once it accepts connections
        outage.append(time.monotonic())
        outage.append(time.time())
        say(f"broker restarted ({outage[2] - outage[0]:.2f} s without a broker)")
    await asyncio.sleep(options.silent_for_s)
    for host, cabinet in silent:
        await host.call({"op": "silence", "cabinet": cabinet, "board": "io-c", "on": False},
                        "done")


async def _drain(options: FleetOptions, hosts: list[_HostProcess],
                 fleet: dict[str, _Cabinet]) -> dict[str, Any]:
    """Wait until dispatch holds every event each cabinet numbered (or the deadline)."""
    deadline = time.monotonic() + options.drain_timeout_s
    while True:
        reports = [await host.call({"op": "report"}, "report") for host in hosts]
        merged: dict[str, Any] = {"hosts": reports, "cabinets": {}}
        for report in reports:
            merged["cabinets"].update(report["cabinets"])
        done = all(
            fleet[c].client.tracker.highest == entry.get("last_seq")
            and not fleet[c].client.tracker.missing and entry.get("outbox_depth") == 0
            for c, entry in merged["cabinets"].items())
        if done or time.monotonic() >= deadline:
            return merged
        await asyncio.sleep(1.0)


def _report(options: FleetOptions, tallies: dict[str, CabinetTally],
            fleet: dict[str, _Cabinet], hosts: dict[str, Any], boot_s: float,
            scenario_s: float) -> FleetReport:
    latencies = [x for t in tallies.values() for x in t.latencies]
    calm = [x for t in tallies.values() for x in t.calm_latencies]
    rows: list[dict[str, Any]] = []
    totals = {"received": 0, "unique": 0, "duplicates": 0, "expected": 0, "missing": 0,
              "gaps": 0}
    for cabinet, tally in tallies.items():
        tracker = fleet[cabinet].client.tracker
        host = hosts["cabinets"].get(cabinet, {})
        last_seq = int(host.get("last_seq") or 0)
        summary = tracker.summary()
        missing = len(set(range(1, last_seq + 1)) - _received_seqs(tracker, last_seq))
        totals["received"] += summary["received"]
        totals["unique"] += summary["unique"]
        totals["duplicates"] += summary["duplicates"]
        totals["expected"] += last_seq
        totals["missing"] += missing
        totals["gaps"] += len(tally.gaps)
        problems = list(tally.problems)
        if missing:
            problems.append(f"{missing} event(s) never received (last seq {last_seq})")
        if host.get("outbox_depth"):
            problems.append(f"outbox not drained: {host['outbox_depth']}")
        if not host.get("running", True):
            problems.append("daemon stopped")
        rows.append({
            "cabinet": cabinet, "sent": tally.sent, "answered": tally.answered,
            "ok": tally.ok, "refused": tally.refused, "unanswered": tally.unanswered,
            "p99_s": _percentile(tally.latencies, 0.99), "events": summary["unique"],
            "duplicates": summary["duplicates"], "gaps_seen": len(tally.gaps),
            "missing": missing, "last_seq": last_seq, "reconnects":
            fleet[cabinet].client.reconnects, "resends": fleet[cabinet].client.resends,
            "task_restarts": host.get("task_restarts", 0), "alarms": tally.alarms,
            "problems": problems,
        })
    host_rss = sum(h["rss_mb"] for h in hosts["hosts"])
    host_cpu = sum(h["cpu_s"] for h in hosts["hosts"])
    summary = {
        "cabinets": len(tallies), "hosts": len(hosts["hosts"]),
        "boot_s": round(boot_s, 1), "scenario_s": round(scenario_s, 1),
        "commands_sent": sum(t.sent for t in tallies.values()),
        "commands_answered": sum(t.answered for t in tallies.values()),
        "commands_ok": sum(t.ok for t in tallies.values()),
        "commands_refused": sum(sum(t.refused.values()) for t in tallies.values()),
        "commands_unanswered": sum(t.unanswered for t in tallies.values()),
        "latency_p50_s": _round(_percentile(latencies, 0.50)),
        "latency_p99_s": _round(_percentile(latencies, 0.99)),
        "latency_max_s": _round(max(latencies) if latencies else None),
        "latency_p99_outside_broker_restart_s": _round(_percentile(calm, 0.99)),
        "latency_p50_p99_by_type_s": {
            type_: [_round(_percentile(values, 0.5)), _round(_percentile(values, 0.99))]
            for type_ in sorted({t for tally in tallies.values() for t in tally.by_type})
            for values in [[x for tally in tallies.values()
                            for x in tally.by_type.get(type_, [])]]},
        "send_to_reply_built_p50_p99_s": [
            _round(_percentile([x for t in tallies.values() for x in t.to_reply_built], q))
            for q in (0.5, 0.99)],
        "command_resends": sum(f.client.resends for f in fleet.values()),
        "events_received": totals["received"], "events_unique": totals["unique"],
        "events_duplicates": totals["duplicates"], "events_expected": totals["expected"],
        "events_missing": totals["missing"], "gaps_seen": totals["gaps"],
        "door_cycles_missed": sum(t.door_cycles_missed for t in tallies.values()),
        "alarms_raised": {alarm: sum(t.alarms.get(alarm, [0, 0])[0] for t in tallies.values())
                          for alarm in sorted({a for t in tallies.values() for a in t.alarms})},
        "host_rss_mb": round(host_rss, 1),
        "host_rss_per_cabinet_mb": round(host_rss / max(1, len(tallies)), 2),
        "host_cpu_s": round(host_cpu, 1),
        "host_loop_lag_p99_s": _round(max((h.get("loop_lag_p99_s") or 0.0)
                                          for h in hosts["hosts"])),
        "host_loop_lag_max_s": _round(max((h.get("loop_lag_max_s") or 0.0)
                                          for h in hosts["hosts"])),
        "dispatch_rss_mb": round(_rss_mb(), 1),
        "dispatch_cpu_s": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 1),
    }
    return FleetReport(options={k: str(v) if isinstance(v, Path) else v
                                for k, v in options.__dict__.items()},
                       summary=summary, cabinets=rows)


def _restart_figures(tallies: dict[str, CabinetTally], outage: list[float],
                     hosts: dict[str, Any]) -> dict[str, Any]:
    """The commands started while there was no broker, apart from the others: those wait
    at least until it is back, whatever the cabinets and dispatch do; and how long after
    the broker was back each cabinet was connected again."""
    if len(outage) != 4:
        return {}
    down, _down_wall, up, up_wall = outage
    back = [entry["link_since"] - up_wall for entry in hosts["cabinets"].values()
            if entry.get("link_since") is not None and entry["link_since"] >= up_wall - 1.0]
    during = [latency for t in tallies.values() for started, latency in t.timeline
              if down <= started < up]
    other = [latency for t in tallies.values() for started, latency in t.timeline
             if not down <= started < up]
    after = [latency for t in tallies.values() for started, latency in t.timeline
             if up <= started < up + 5.0]
    return {
        "broker_outage_s": _round(up - down),
        "commands_started_during_outage": len(during),
        "latency_max_started_during_outage_s": _round(max(during) if during else None),
        "latency_p99_started_outside_outage_s": _round(_percentile(other, 0.99)),
        "latency_p99_started_in_5_s_after_outage_s": _round(_percentile(after, 0.99)),
        "cabinets_reconnected_after_outage": len(back),
        "cabinet_reconnect_after_outage_p50_p99_max_s": [
            _round(_percentile(back, 0.5)), _round(_percentile(back, 0.99)),
            _round(max(back) if back else None)],
    }


def _received_seqs(tracker: Any, last_seq: int) -> set[int]:
    if tracker.highest is None:
        return set()
    top = min(tracker.highest, last_seq)
    return set(range(1, top + 1)) - set(tracker.missing)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- command line ----------------------------------------------------------------------------


def render(report: FleetReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    s = report.summary
    table = Table(title=f"Fleet: {s['cabinets']} cabinets on {s['hosts']} host process(es)")
    table.add_column("what")
    table.add_column("value", justify="right")
    for key, value in s.items():
        table.add_row(key.replace("_", " "), str(value))
    console.print(table)
    troubled = [row for row in report.cabinets if row["problems"]]
    if troubled:
        problems = Table(title="Cabinets with problems")
        problems.add_column("cabinet")
        problems.add_column("problems")
        for row in troubled[:50]:
            problems.add_row(row["cabinet"], "; ".join(row["problems"][:5]))
        console.print(problems)
    console.print("[green]promises kept[/green]: every command answered, every event once"
                  if report.promises_kept else "[red]promises NOT kept[/red]")


def _options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> FleetOptions:
    if args.silent_boards is None:
        args.silent_boards = min(2, args.cabinets)
    elif args.silent_boards > args.cabinets:
        parser.error(f"--silent-boards {args.silent_boards} is more than --cabinets "
                     f"{args.cabinets}")
    if args.broker is not None and args.broker_down:
        parser.error("--broker-down needs the fleet's own broker: with --broker, restart "
                     "your broker yourself during the run")
    return FleetOptions(
        cabinets=args.cabinets, hosts=min(args.hosts, args.cabinets), rounds=args.rounds,
        think_s=args.think, spread_s=args.spread, poll_s=args.poll, protocol=args.protocol,
        # The fleet cannot restart a broker it did not start: the report must not say so.
        broker_restart=not args.no_broker_restart and args.broker is None,
        broker_down_s=args.broker_down,
        silent_boards=args.silent_boards, workdir=args.workdir, broker=args.broker)


def _number(kind: type, low: float, high: float, *, low_open: bool = False) -> Any:
    """An argparse type: a finite ``kind`` in [low, high] (or (low, high])."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value != value or not (low < value if low_open else low <= value) or value > high:
            side = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"{text} is not in {side}{low:g}, {high:g}]")
        return value
    parse.__name__ = kind.__name__
    return parse


def _broker_address(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"HOST:PORT, e.g. 127.0.0.1:1883, got {text!r}")
    return text


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cabinets", type=_number(int, 1, 5000), default=200,
                        help="how many (default 200)")
    parser.add_argument("--hosts", type=_number(int, 1, 64), default=1,
                        help="processes the cabinets share (default 1: one interpreter; at "
                        "most one per cabinet)")
    parser.add_argument("--rounds", type=_number(int, 1, 100), default=2,
                        help="orders per cabinet")
    parser.add_argument("--think", type=_number(float, 0, 3600), default=4.0,
                        help="seconds between a cabinet's orders (default 4)")
    parser.add_argument("--spread", type=_number(float, 0, 3600), default=20.0,
                        help="the cabinets' first orders are spread over this many seconds "
                        "(default 20)")
    parser.add_argument("--poll", type=_number(float, 0.05, 60), default=1.0,
                        help="each cabinet's board poll interval, s (default 1.0)")
    parser.add_argument("--protocol", type=int, choices=(5, 311), default=5)
    parser.add_argument("--no-broker-restart", action="store_true",
                        help="skip the broker restart fault")
    parser.add_argument("--broker-down", type=_number(float, 0, 600), default=0.0, metavar="S",
                        help="keep the broker stopped S seconds before starting it again "
                        "(default 0: stopped and started at once, as a service restart)")
    parser.add_argument("--silent-boards", type=_number(int, 0, 5000), default=None,
                        help="cabinets whose sensor board goes silent a while (default 2)")
    parser.add_argument("--broker", metavar="HOST:PORT", default=None, type=_broker_address,
                        help="use this broker (or cluster) instead of starting a mosquitto; "
                        "no broker restart then: restart a node yourself during the run")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep logs and configs here (default: a temporary directory)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controller.lab.fleet",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_arguments(sub.add_parser("run", help="run a fleet and report"))
    host = sub.add_parser("host", help="(internal) run cabinets for a fleet")
    host.add_argument("--workdir", type=Path, required=True)
    host.add_argument("cabinets", nargs="+")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Hundreds of connections dropped at once by the broker restart: the report counts the
    # reconnections; one log line per connection would bury it.
    for noisy in ("controller.dispatch.mqtt", "controller.mqtt.link", "mqtt"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    if args.command == "host":
        _raise_fd_limit()
        return asyncio.run(_host(args.workdir, args.cabinets))
    options = _options(args, parser)
    progress = None if args.json else (lambda text: print(text, file=sys.stderr))
    # SIGTERM stops the fleet as Ctrl-C does: the hosts, broker and store are stopped.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda _sig, _frame: signal.raise_signal(signal.SIGINT))
    try:
        report = asyncio.run(run_fleet(options, progress=progress))
    except (FileNotFoundError, RuntimeError, TimeoutError) as exc:
        # A missing mosquitto or redis-server, a host that did not start.
        print(f"fleet: {exc}", file=sys.stderr)
        return 2
    except (BrokerError, OSError) as exc:
        # --broker HOST:PORT that refuses or does not answer.
        print(f"fleet: broker {options.broker or ''}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the broker, the store and the hosts are stopped by now
        print("fleet: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        render(report)
    return 0 if report.promises_kept else 1


if __name__ == "__main__":
    raise SystemExit(main())
