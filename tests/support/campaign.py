"""The fault campaign runner: door activity on a whole simulated lane while the broker is
restarted, the daemon and redis-server are killed with SIGKILL, then a verdict against the
simulator's ground truth. Shared by the suite (``tests/integration/test_daemon_faults.py``,
CI-sized) and the benchmark (``bench/fault_campaign.py``, the long run).

Door activity is what dispatch and people do: a signed ``open`` for each compartment in
turn, the door pulled when the reply says it was pulsed, held open a moment, closed. A
movement is never *started* while the daemon is down (nobody pulls a door that no process
released), but one under way when the daemon dies is finished: the door is closed while it
is down, or held open until it is back, at random.

Disruptions come one at a time, in a seeded random order, ``gap_s`` apart:

* broker: SIGTERM to mosquitto, down for a random ``broker_down_s``, started again; the
  reconnect time is from the broker accepting connections to the daemon's ``online``
  status (its ``at``) on the new connection;
* daemon: SIGKILL at a random *phase*: ``command`` (0-300 ms after a signed open left:
  claim, pulse intent, pulse, commit, reply), ``door_open`` / ``door_close`` (0-250 ms
  after a door moved: poll, commit, publish), ``idle``; down for ``daemon_down_s``;
* redis: SIGKILL to redis-server (append-only file, fsync always), down ``redis_down_s``.

The verdict (:class:`Verdict`): every door movement of the ground truth matched to one
reported event (after dedupe by id), the only allowed loss being a movement younger than
``unseen_window_s`` when the daemon was killed and undone before it was back (no process
could see it, and the door was as last reported); gap-free seqs; one id one seq; pulses
per command id; energised time against the cap; reported movements with no movement
behind them; reconnect times. The seed is printed and read from ``FAULT_CAMPAIGN_SEED``
so that a failure replays.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from controller.contract.topics import CabinetTopics
from controller.dispatch import DispatchClient
from controller.lab.rig import LaneRig
from controller.store import Store
from tests.support.lane import lock_of, truth
from tests.support.mqtt_client import MqttProbe

__all__ = ["COMPARTMENTS", "Campaign", "Kill", "Plan", "Verdict", "match_movements",
           "run_campaign", "seed_from_env"]

COMPARTMENTS = ("A01", "A02", "A03", "A04", "B01", "B02", "B03", "B04")
# Fast cooldowns so the activity keeps every door busy; the policy itself is unit-tested.
OVERRIDES = {"timing.compartment_cooldown_s": "0.5", "timing.pulse_gap_s": "0.05",
             "timing.compartment_max_pulses_per_minute": "60"}
#: Not ``LOCKER_...``: the daemon reads those as configuration and refuses unknown ones.
SEED_ENV = "FAULT_CAMPAIGN_SEED"
PHASES = ("command", "door_open", "door_close", "idle")
#: The shipped door debounce (``timing.door_debounce_s``): a new door level counts only
#: once it has been read this long.
DOOR_DEBOUNCE_S = 0.25
#: A movement younger than this when the daemon died may not have been seen and committed:
#: the door debounce, then 350 ms (poll interval 100 ms, one board read, one Redis
#: transaction, with margin for a busy machine); docs/performance.md gives the measured
#: figures behind it.
UNSEEN_WINDOW_S = DOOR_DEBOUNCE_S + 0.35


def seed_from_env(default: int) -> int:
    """The campaign seed: ``FAULT_CAMPAIGN_SEED`` when set (to replay a failure)."""
    raw = os.environ.get(SEED_ENV, "").strip()
    return int(raw) if raw else default


@dataclass(frozen=True)
class Plan:
    """What to do to the lane, and how hard. Counts of each disruption; ranges in s."""

    seed: int
    broker_restarts: int = 0
    daemon_kills: int = 0
    redis_kills: int = 0
    #: Board faults: a board answering past its timeout (inside the line's late window),
    #: the acknowledgement of a pulse lost, garbled or cut short, a door switch flapping
    #: every 0.2 s.
    board_faults: int = 0
    broker_down_s: tuple[float, float] = (0.2, 5.0)
    daemon_down_s: tuple[float, float] = (0.2, 1.0)
    redis_down_s: tuple[float, float] = (0.2, 2.0)
    board_fault_s: tuple[float, float] = (2.0, 4.0)
    gap_s: tuple[float, float] = (0.8, 2.0)
    unseen_window_s: float = UNSEEN_WINDOW_S

    def schedule(self, rng: random.Random) -> list[str]:
        kinds = (["broker"] * self.broker_restarts + ["daemon"] * self.daemon_kills
                 + ["redis"] * self.redis_kills + ["board"] * self.board_faults)
        rng.shuffle(kinds)
        return kinds


@dataclass
class Kill:
    """One SIGKILL of the daemon: when (monotonic), at which phase, and when it was back."""

    at: float
    phase: str
    delay_s: float
    back_at: float = math.inf


@dataclass
class Campaign:
    """The activity and the bookkeeping of one run."""

    rig: LaneRig
    plan: Plan
    topics: CabinetTopics
    sent: list[str] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    doors_cycled: int = 0
    kills: list[Kill] = field(default_factory=list)
    broker_up: list[float] = field(default_factory=list)  # wall times the broker was started again
    redis_kills: int = 0
    marks: dict[str, asyncio.Event] = field(default_factory=dict)
    daemon_up: asyncio.Event = field(default_factory=asyncio.Event)
    #: Held while a movement starts (is the daemon up? pull): a kill never comes between.
    starting: asyncio.Lock = field(default_factory=asyncio.Lock)
    log: list[str] = field(default_factory=list)
    #: Compartments nobody moves now (their board answers late, their switch flaps).
    frozen: set[str] = field(default_factory=set)
    #: The compartment whose door is being moved, if any.
    moving: str | None = None
    board_faults: Counter[str] = field(default_factory=Counter)
    #: (compartment, monotonic start, end) of each flapping incident.
    flapping: list[tuple[str, float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.daemon_up.set()
        self.marks = {phase: asyncio.Event() for phase in PHASES if phase != "idle"}
        self._rng = random.Random(self.plan.seed * 7919 + 1)

    def _mark(self, phase: str) -> None:
        self.marks[phase].set()

    async def activity(self, until: float) -> None:
        """Open, pull, hold, close, round robin, until ``until`` (monotonic)."""
        rng = self._rng
        dispatch: DispatchClient | None = None
        stack = contextlib.AsyncExitStack()
        i = 0
        try:
            for _ in range(100_000):
                if time.monotonic() >= until:
                    break
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
                        await asyncio.sleep(0.3)  # the broker is down: try again soon
                        continue
                try:
                    command = dispatch.build("open", {"compartment": cid,
                                                      "reason": "maintenance"})
                    self.sent.append(command["id"])
                    self._mark("command")
                    reply = await dispatch.send(dispatch.encode(command), command["id"],
                                                timeout_s=3.0)
                except Exception:
                    # Broker or daemon went away mid-command: reconnect and go on.
                    await stack.aclose()
                    stack = contextlib.AsyncExitStack()
                    dispatch = None
                    continue
                if not reply.get("ok"):
                    self.refused[str((reply.get("error") or {}).get("code"))] += 1
                    continue
                self.accepted.append(command["id"])
                async with self.starting:
                    if not self.daemon_up.is_set() or cid in self.frozen:
                        continue  # killed since it replied, or its board faulted: no move
                    pulled = await self.rig.control.acall("pull", compartment=cid)
                    if isinstance(pulled, dict) and pulled.get("open"):
                        self.moving = cid
                if not (isinstance(pulled, dict) and pulled.get("open")):
                    continue
                self._mark("door_open")
                # A person takes the parcel: long enough to pass the door debounce even
                # when a poll cycle stalls on a busy machine.
                await asyncio.sleep(0.8 + rng.random() * 0.1)
                if not self.daemon_up.is_set() and rng.random() < 0.5:
                    await self.daemon_up.wait()  # held open until the daemon is back
                await self.rig.control.acall("close", compartment=cid)
                self._mark("door_close")
                self.doors_cycled += 1
                await asyncio.sleep(0.8)  # shut long enough to be read as shut
                self.moving = None
        finally:
            await stack.aclose()


# -- disruptions ---------------------------------------------------------------------------


async def _wait_for(predicate: Callable[[], Awaitable[bool]], timeout_s: float,
                    what: str, step_s: float = 0.05) -> None:
    """Poll ``predicate`` until it holds; TimeoutError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if await predicate():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout_s}s")
        await asyncio.sleep(step_s)


def _online_boots(probe: MqttProbe, topic: str) -> list[tuple[str, float]]:
    out = []
    for message in probe.messages(topic):
        with contextlib.suppress(ValueError, KeyError, TypeError):
            status = message.json()
            if status.get("state") == "online":
                out.append((str(status["boot_id"]), _wall(status["at"])))
    return out


def _wall(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def _daemon_online(campaign: Campaign, probe: MqttProbe, known: set[str],
                         timeout_s: float = 60.0) -> None:
    """Wait until the daemon of a boot not in ``known`` said it is online."""
    topic = campaign.topics.status

    async def new_boot() -> bool:
        return any(boot not in known for boot, _ in _online_boots(probe, topic))

    await _wait_for(new_boot, timeout_s, "the restarted daemon online")


async def _kill_daemon(campaign: Campaign, probe: MqttProbe, rng: random.Random) -> None:
    rig, plan = campaign.rig, campaign.plan
    phase = rng.choice(PHASES)
    delay = 0.0
    if phase != "idle":
        mark = campaign.marks[phase]
        mark.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(mark.wait(), 10.0)
        delay = rng.uniform(0.0, 0.3 if phase == "command" else 0.25)
        await asyncio.sleep(delay)
    known = {boot for boot, _ in _online_boots(probe, campaign.topics.status)}
    async with campaign.starting:
        campaign.daemon_up.clear()
        kill = Kill(at=time.monotonic(), phase=phase, delay_s=delay)
        await asyncio.to_thread(rig.daemon.kill)
    campaign.kills.append(kill)
    await asyncio.sleep(rng.uniform(*plan.daemon_down_s))  # down: commands find no daemon
    rig.daemon.start(wait_port=False)
    await _daemon_online(campaign, probe, known)
    kill.back_at = time.monotonic()
    campaign.daemon_up.set()
    campaign.log.append(f"{time.monotonic():.3f} daemon killed phase={phase} +{delay * 1000:.0f}ms")


async def _restart_broker(campaign: Campaign, probe: MqttProbe, rng: random.Random) -> None:
    rig = campaign.rig
    down = rng.uniform(*campaign.plan.broker_down_s)
    await asyncio.to_thread(rig.broker.stop)
    await asyncio.sleep(down)
    # Taken as the broker starts, not once ``start`` has seen it accept: the daemon may be
    # back on it (and say so) before that check returns, a few ms later.
    up = time.time()
    await asyncio.to_thread(rig.broker.start)  # returns once it accepts connections
    campaign.broker_up.append(up)
    campaign.log.append(f"{time.monotonic():.3f} broker down {down:.2f}s")

    async def reconnected() -> bool:
        return any(at >= up - 0.01 for _, at in _online_boots(probe, campaign.topics.status))

    # The next disruption waits for the daemon to be back (the judge reports it if never).
    with contextlib.suppress(TimeoutError):
        await _wait_for(reconnected, 60.0, "the daemon reconnected")


async def _kill_redis(campaign: Campaign, rng: random.Random) -> None:
    rig = campaign.rig
    down = rng.uniform(*campaign.plan.redis_down_s)
    await asyncio.to_thread(rig.redis.kill)
    await asyncio.sleep(down)
    await asyncio.to_thread(rig.redis.start)
    campaign.redis_kills += 1
    campaign.log.append(f"{time.monotonic():.3f} redis killed, down {down:.2f}s")


async def _freeze(campaign: Campaign, compartments: set[str]) -> None:
    """Nobody starts moving ``compartments`` from now on; wait for one under way to end."""
    async with campaign.starting:
        campaign.frozen |= compartments

    async def still() -> bool:
        return campaign.moving not in compartments

    with contextlib.suppress(TimeoutError):
        await _wait_for(still, 10.0, "the door under way closed")


async def _board_fault(campaign: Campaign, rng: random.Random) -> None:
    """One board fault while the lane works. Doors on a board that answers late and a
    flapping door are not moved meanwhile (nothing could see them move): what is judged is
    that no stale or phantom door event comes out of it, that a pulse is never sent twice,
    and that a flapping switch is one ``sensor_flapping`` alarm."""
    import tomllib

    rig = campaign.rig
    kind = rng.choice(("late", "ack", "flapping"))
    hold = rng.uniform(*campaign.plan.board_fault_s)
    cabinet = tomllib.loads(rig.config_path.read_text())
    door_board = {str(c["id"]): str(c["door"]["board"]) for c in cabinet["compartments"]
                  if "door" in c}
    if kind == "ack":
        reply_fault = rng.choice(("drop_reply", "garble_reply", "short_reply"))
        board, _ = lock_of(rig, rng.choice(COMPARTMENTS))
        # Armed for the next write to that board: the next pulse there.
        await rig.control.acall("fault_set", kind=reply_fault, board=board, count=1)
        await asyncio.sleep(hold)
        await rig.control.acall("fault_clear", kind=reply_fault, board=board)
        campaign.board_faults[reply_fault] += 1
        campaign.log.append(f"{time.monotonic():.3f} {reply_fault} on {board}")
        return
    if kind == "late":
        board = door_board[rng.choice(COMPARTMENTS)]
        # Every door on the line: a late board costs its whole pair of wires a timeout and
        # a late window per read, so its neighbours are read less often meanwhile.
        on_board = set(COMPARTMENTS)
        await _freeze(campaign, on_board)
        # Past the line's 0.3 s timeout, inside its late window (twice the timeout).
        await rig.control.acall("fault_set", kind="late", board=board, delay_s=0.45)
        await asyncio.sleep(hold)
        await rig.control.acall("fault_clear", kind="late", board=board)
        # Read again within the poller's offline retry (5 s), then on time for a few
        # polls: no longer degraded, its doors read again.
        await asyncio.sleep(6.5)
        async with campaign.starting:
            campaign.frozen -= on_board
        campaign.board_faults["late"] += 1
        campaign.log.append(f"{time.monotonic():.3f} late replies from {board} for {hold:.1f}s")
        return
    choices = [c for c in COMPARTMENTS if c != campaign.moving and c not in campaign.frozen]
    cid = rng.choice(choices or list(COMPARTMENTS))
    await _freeze(campaign, {cid})
    start = time.monotonic()
    await rig.control.acall("fault_set", kind="flapping", compartment=cid, signal="door",
                            period_s=0.2)
    await asyncio.sleep(max(hold, 2.5))  # long enough to be called flapping
    await rig.control.acall("fault_clear", kind="flapping", compartment=cid, signal="door")
    end = time.monotonic()
    await asyncio.sleep(6.0)  # steady for the alarm's clear time (5 s), then trusted again
    async with campaign.starting:
        campaign.frozen.discard(cid)
    campaign.flapping.append((cid, start, end))
    campaign.board_faults["flapping"] += 1
    campaign.log.append(f"{time.monotonic():.3f} door of {cid} flapping for {end - start:.1f}s")


# -- the verdict ---------------------------------------------------------------------------


@dataclass
class Verdict:
    """What a campaign measured. ``problems`` lists every broken promise."""

    seed: int
    events: list[dict[str, Any]]
    duplicates_received: int
    seq_gaps: list[int]
    movements: int
    lost: list[str]
    lost_explained: list[str]
    unexplained_events: list[str]
    pulses_per_command_max: int
    pulses_unmatched: int
    pulses_of_interrupted: int
    energised_max_s: float | None
    energised_cap_s: float | None
    reconnect_s: list[float]
    detection_s: list[float]
    false_forced: int
    kills: list[Kill]
    problems: list[str]
    counts: dict[str, int]

    def figures(self) -> str:
        r = sorted(self.reconnect_s)
        d = sorted(self.detection_s)
        lines = [
            f"seed={self.seed} " + " ".join(f"{k}={v}" for k, v in self.counts.items()),
            f"events={len(self.events)} movements={self.movements} "
            f"lost={len(self.lost)} (inside the {UNSEEN_WINDOW_S * 1000:.0f} ms window: "
            f"{len(self.lost_explained)}) duplicates_after_dedupe={self._duplicates()} "
            f"duplicates_received={self.duplicates_received} seq_gaps={len(self.seq_gaps)}",
            f"pulses_per_command_max={self.pulses_per_command_max} "
            f"pulses_without_command={self.pulses_unmatched} "
            f"pulses_of_interrupted_commands={self.pulses_of_interrupted} "
            f"energised_max_s={_fmt(self.energised_max_s)} cap_s={_fmt(self.energised_cap_s)}",
            f"stale_or_phantom_door_events={len(self.unexplained_events)} "
            f"forced_open_after_an_authorised_pulse={self.false_forced}",
            f"reconnect_s n={len(r)} p50={_fmt(_pct(r, 50))} p99={_fmt(_pct(r, 99))} "
            f"max={_fmt(r[-1] if r else None)}",
            f"door_event_detection_ms n={len(d)} p50={_ms(_pct(d, 50))} "
            f"p99={_ms(_pct(d, 99))} max={_ms(d[-1] if d else None)}",
            "kills by phase: " + " ".join(
                f"{phase}={n}" for phase, n in sorted(Counter(
                    k.phase for k in self.kills).items())),
        ]
        lines += [f"  lost, explained: {x}" for x in self.lost_explained]
        lines += [f"  PROBLEM: {x}" for x in self.problems]
        return "\n".join(lines)

    def _duplicates(self) -> int:
        return sum(1 for p in self.problems if p.startswith("duplicate"))


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    k = max(0, min(len(values) - 1, math.ceil(p / 100 * len(values)) - 1))
    return values[k]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.0f}"


def collected(probe: MqttProbe, topic: str) -> tuple[dict[str, dict[str, Any]], Counter[str],
                                                      list[str]]:
    """Events received, deduplicated by id; how often each id arrived; id/seq conflicts."""
    by_id: dict[str, dict[str, Any]] = {}
    arrivals: Counter[str] = Counter()
    conflicts: list[str] = []
    for message in probe.messages(topic):
        event = message.json()
        arrivals[event["id"]] += 1
        if event["id"] in by_id and by_id[event["id"]]["seq"] != event["seq"]:
            conflicts.append(f"one id, two seqs: {event['id']}")
        by_id[event["id"]] = event
    return by_id, arrivals, conflicts


def _gaps(seqs: list[int]) -> list[int]:
    present = set(seqs)
    return [n for n in range(1, max(seqs, default=0) + 1) if n not in present]


def last_intent(intents: list[tuple[float, str]], at: float) -> str | None:
    """The command of the last ``open_requested`` (``intents``: ``(time, command id)`` in
    time order) stamped no later than 50 ms after ``at``: the open a pulse or an energised
    span starting at ``at`` belongs to."""
    before = [c for t, c in intents if t <= at + 0.05]
    return before[-1] if before else None


def attribute_pulses(pulses: list[float], intents: list[tuple[float, str]],
                     interrupted: list[str]) -> tuple[list[str | None], int]:
    """The command each pulse of one lock belongs to (None: none), in time order, and how
    many belong to an interrupted command. A pulse belongs to the last ``open_requested``
    (``intents``: ``(time, command id)``) at most 50 ms after it. A kill after a pulse and
    before the group commit of its ``open_requested`` (decision 0016) leaves only the
    command's intent: the next start reports it in ``command_interrupted`` with this
    compartment in ``may_have_pulsed`` (``interrupted``: those command ids, announced by no
    ``open_requested``). Each of them owns one pulse at most: one that no announced command
    owns, or the second of an announced command's."""
    left = list(interrupted)
    counted: Counter[str] = Counter()
    owners: list[str | None] = []
    explained = 0
    intents = sorted(intents)
    for at in sorted(pulses):
        command = last_intent(intents, at)
        if (command is None or counted[command]) and left:
            command = left.pop(0)
            explained += 1
        if command is not None:
            counted[command] += 1
        owners.append(command)
    return owners, explained


def match_movements(
    world: list[tuple[float, str]], reported: list[tuple[float, str]], kills: list[Kill],
    window_s: float,
) -> tuple[list[str], list[str], list[str], list[float]]:
    """Match the movements of one door (ground truth, ``(monotonic time, kind)`` in time
    order) to its reported door events (same form, the event's time) in order: the report
    of a movement comes after it, and before the door's next movement (a report made at a
    restart included: nobody starts a movement while the daemon is down).

    Returns (lost, lost and explained, reported with no movement behind them, detection
    delays of the movements reported live). A lost movement is explained only when no
    process could have seen it: an open younger than ``window_s`` when the daemon was
    killed and closed again before it was back, and that close.
    """
    lost: list[str] = []
    explained: list[str] = []
    phantom: list[str] = []
    detection: list[float] = []
    j = 0
    unseen_by: dict[int, Kill] = {}  # index of a lost open -> the kill that hid it
    # The simulator's and the daemon's clocks are read in two processes: a report's time
    # may be a few ms off. A restarted daemon whose first poll saw the door still open
    # reports the open at about the moment it closed.
    skew = 0.05
    for i, (t, kind) in enumerate(world):
        nxt = world[i + 1][0] if i + 1 < len(world) else math.inf
        while j < len(reported) and (reported[j][0] < t - skew or (
                reported[j][1] != kind and reported[j][0] < nxt)):
            phantom.append(f"{reported[j][1]} reported at {reported[j][0]:.3f}, no movement")
            j += 1
        if j < len(reported) and reported[j][1] == kind and reported[j][0] < nxt + skew:
            r = reported[j][0]
            if not any(k.at - window_s <= t <= k.back_at for k in kills):
                detection.append(r - t)
            j += 1
            continue
        label = f"{kind} at {t:.3f}"
        lost.append(label)
        if kind == "door_opened":
            for k in kills:
                if 0.0 <= k.at - t <= window_s and nxt < k.back_at:
                    unseen_by[i] = k
                    explained.append(f"{label}: killed {1000 * (k.at - t):.0f} ms after it, "
                                     f"closed at {nxt:.3f} while down")
                    break
        elif i - 1 in unseen_by and t < unseen_by[i - 1].back_at:
            explained.append(f"{label}: the close of an open no process saw")
    phantom += [f"{kind} reported at {r:.3f}, no movement" for r, kind in reported[j:]]
    return lost, explained, phantom, detection


def energised_spans(rig: LaneRig) -> dict[tuple[str, int], list[tuple[float, float]]]:
    """Energised spans ``(start, seconds)`` per output, from the ground truth
    (``output_on`` -> ``output_off``).

    The hook for a simulator that reports energised time itself: an ``output_off`` truth
    event whose detail carries ``energised_s`` is taken as the span's length."""
    spans: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    on: dict[tuple[str, int], float] = {}
    for event in sorted(truth(rig, "output_on") + truth(rig, "output_off"),
                        key=lambda e: float(e.get("at", 0.0))):
        key = (str(event.get("board")), int(event.get("channel", -1)))
        at = float(event["at"])
        if event.get("kind") == "output_on":
            on[key] = at
            continue
        started = on.pop(key, None)
        detail = event.get("detail") or {}
        given = detail.get("energised_s") if isinstance(detail, dict) else None
        if isinstance(given, int | float):
            spans[key].append((at - float(given), float(given)))
        elif started is not None:
            spans[key].append((started, at - started))
    return spans


def judge(campaign: Campaign, probe: MqttProbe) -> Verdict:
    """Everything the campaign promises, checked against the simulator's ground truth."""
    rig = campaign.rig
    by_id, arrivals, conflicts = collected(probe, campaign.topics.events)
    events = sorted(by_id.values(), key=lambda e: e["seq"])
    seqs = [e["seq"] for e in events]
    problems = list(conflicts)
    gaps = _gaps(seqs)
    if gaps:
        problems.append(f"gap in seq: {gaps[:20]}")
    offset = time.time() - time.monotonic()  # same machine, same clocks as the daemon

    def mono(event: dict[str, Any]) -> float:
        return _wall(event["at"]) - offset

    lost: list[str] = []
    explained: list[str] = []
    unexplained: list[str] = []
    detection: list[float] = []
    movements = 0
    window = campaign.plan.unseen_window_s
    for cid in COMPARTMENTS:
        world = sorted([(float(t["at"]), "door_opened") for t in truth(rig, "door_opened", cid)]
                       + [(float(t["at"]), "door_closed")
                          for t in truth(rig, "door_closed", cid)])
        reported = sorted((mono(e), e["kind"]) for e in events
                          if e["kind"] in ("door_opened", "door_closed")
                          and e.get("compartment") == cid)
        movements += len(world)
        lo, ex, ph, de = match_movements(world, reported, campaign.kills, window)
        if len(lo) > len(ex) or ph:
            # The story of that door, to tell what went wrong from the printed verdict.
            near = [f"kill {k.phase} at {k.at:.3f} back {k.back_at:.3f}" for k in campaign.kills
                    if any(k.at - 5 <= t <= k.back_at + 5 for t, _ in world)]
            problems.append(f"{cid}: world {[(round(t, 3), k) for t, k in world]}; reported "
                            f"{[(round(t, 3), k) for t, k in reported]}; {near}")
        lost += [f"{cid} {x}" for x in lo]
        explained += [f"{cid} {x}" for x in ex]
        unexplained += [f"{cid} {x}" for x in ph]
        detection += de
    for item in lost:
        if not any(x.startswith(item + ":") for x in explained):
            problems.append(f"lost outside the window: {item}")
    for item in unexplained:
        problems.append(f"duplicate or phantom: {item}")

    # Pulses per command id: each pulse the board received (and each energised span of
    # its output) belongs to the last open the daemon requested for that compartment.
    requested = [e for e in events if e["kind"] == "open_requested"]
    # A kill after a pulse and before the group commit of its open_requested (decision
    # 0016) leaves the command's intent only: the next start reports it interrupted, with
    # the compartment in may_have_pulsed. Such a command owns at most one pulse there.
    announced = {str(e["data"].get("command")) for e in requested}
    interrupted: defaultdict[str, list[str]] = defaultdict(list)
    for e in events:
        if e["kind"] == "command_interrupted" and str(e["data"].get("command")) not in announced:
            for cid in e["data"].get("may_have_pulsed") or []:
                interrupted[cid].append(str(e["data"]["command"]))
    per_command: Counter[str] = Counter()
    energised: defaultdict[str, float] = defaultdict(float)
    unmatched = 0
    explained_by_interruption = 0
    pulses_all = truth(rig, "pulse_received")
    spans = energised_spans(rig)
    for cid in COMPARTMENTS:
        board, channel = lock_of(rig, cid)
        intents = sorted((mono(e), str(e["data"].get("command"))) for e in requested
                         if e.get("compartment") == cid)

        mine = [float(p["at"]) for p in pulses_all
                if p.get("board") == board and p.get("channel") == channel]
        owners, explained_n = attribute_pulses(mine, intents, interrupted[cid])
        explained_by_interruption += explained_n
        for command in owners:
            if command is None:
                unmatched += 1
            else:
                per_command[command] += 1
        for started, seconds in spans.get((board, channel), []):
            command = last_intent(intents, started)
            if command is not None:
                energised[command] += seconds
    ids = Counter(e["data"].get("command") for e in requested)
    for command_id, n in ids.items():
        if n > 1:
            problems.append(f"two open_requested for command {command_id}")
    worst = max(per_command.values(), default=0)
    if worst > 1:
        problems.append(f"a command pulsed {worst} times: "
                        f"{[c for c, n in per_command.items() if n > 1][:5]}")
    if unmatched:
        problems.append(f"{unmatched} pulses with no open_requested before them")
    energised_max = max(energised.values(), default=None)
    cap = _cap(rig)
    if energised_max is not None and cap is not None and energised_max > cap + 0.05:
        problems.append(f"a command energised its lock {energised_max:.3f}s, cap {cap}s")

    # Reconnect: broker accepting again -> the daemon's online status on a new connection.
    reconnect: list[float] = []
    online = sorted(at for _, at in _online_boots(probe, campaign.topics.status))
    for up in campaign.broker_up:
        after = [at for at in online if at >= up - 0.01]
        if after:
            reconnect.append(max(0.0, after[0] - up))
        else:
            problems.append(f"the daemon never came back online after the broker at {up:.3f}")

    # A flapping switch is one sensor_flapping alarm, raised and cleared once per incident.
    for cid, start, end in campaign.flapping:
        alarms = [e for e in events if e.get("compartment") == cid
                  and e["kind"] in ("alarm_raised", "alarm_cleared")
                  and e["data"].get("alarm") == "sensor_flapping"
                  and start - 0.5 <= mono(e) <= end + 15.0]
        raised = sum(1 for e in alarms if e["kind"] == "alarm_raised")
        cleared = sum(1 for e in alarms if e["kind"] == "alarm_cleared")
        if (raised, cleared) != (1, 1):
            problems.append(f"{cid} flapped {end - start:.1f}s: sensor_flapping raised "
                            f"{raised}, cleared {cleared} times (expected once each)")

    forced = 0
    for e in events:
        if e["kind"] == "door_opened" and e["data"].get("authorised") is False:
            forced += 1
    started = sum(1 for e in events if e["kind"] == "daemon_started")
    if started != len(campaign.kills) + 1:
        problems.append(f"{started} daemon_started events for {len(campaign.kills)} kills")
    if campaign.doors_cycled == 0:
        problems.append("no door was cycled")
    counts = {
        "broker_restarts": len(campaign.broker_up), "daemon_kills": len(campaign.kills),
        "redis_kills": campaign.redis_kills,
        **{f"board_{kind}": n for kind, n in sorted(campaign.board_faults.items())},
        "pulses_unconfirmed": sum(1 for e in events if e["kind"] == "unlock_pulse_unconfirmed"),
        "commands_sent": len(campaign.sent),
        "accepted": len(campaign.accepted), "doors_cycled": campaign.doors_cycled,
        "interrupted": sum(1 for e in events if e["kind"] == "command_interrupted"),
        **{f"refused_{code}": n for code, n in sorted(campaign.refused.items())},
    }
    return Verdict(
        seed=campaign.plan.seed, events=events,
        duplicates_received=sum(n - 1 for n in arrivals.values()), seq_gaps=gaps,
        movements=movements, lost=lost, lost_explained=explained,
        unexplained_events=unexplained, pulses_per_command_max=worst,
        pulses_unmatched=unmatched, pulses_of_interrupted=explained_by_interruption,
        energised_max_s=energised_max, energised_cap_s=cap,
        reconnect_s=reconnect, detection_s=detection, false_forced=forced,
        kills=campaign.kills, problems=problems, counts=counts,
    )


def _cap(rig: LaneRig) -> float | None:
    """The longest pulse any command may ask for, as the daemon reads the config."""
    from controller.settings import load_settings

    return float(load_settings(rig.config_path, env={}, check_files=False).timing.max_pulse_s)


async def _settled(rig: LaneRig, probe: MqttProbe, topic: str) -> Callable[[], Awaitable[bool]]:
    """A condition: the outbox drained to the subscriber (every seq up to the store's last
    received, none pending) and every door as last reported is as the world has it (a
    movement just before the end is seen and reported before the verdict)."""
    store = await Store.connect(f"redis://127.0.0.1:{rig.redis_port}/0",
                                _prefix(rig), rig.cabinet)

    async def done() -> bool:
        try:
            last = await store.last_seq()
            depth = await store.depth()
            world = await rig.control.acall("state")
        except Exception:
            return False
        by_id, _, _ = collected(probe, topic)
        top = max((e["seq"] for e in by_id.values()), default=0)
        if not (depth == 0 and top == last and len(by_id) == last):
            return False
        reported: dict[str, bool] = {}
        for event in sorted(by_id.values(), key=lambda e: e["seq"]):
            if event["kind"] in ("door_opened", "door_closed"):
                reported[event.get("compartment")] = event["kind"] == "door_opened"
        return all(reported.get(cid, False) == bool(world["compartments"][cid]["door_open"])
                   for cid in COMPARTMENTS)

    done.store = store  # type: ignore[attr-defined]
    return done


def _prefix(rig: LaneRig) -> str:
    import tomllib

    raw = tomllib.loads(rig.config_path.read_text())
    prefix = raw.get("redis", {}).get("key_prefix") or f"locker:{rig.site}"
    return str(prefix).removesuffix(":").removesuffix(f":{rig.cabinet}")


async def run_campaign(workdir: Path, plan: Plan, *,
                       say: Callable[[str], None] = print) -> Verdict:
    """Start the lane with an auditing subscriber first, run door activity while the plan's
    disruptions happen, wait for the outbox to drain, and judge."""
    say(f"fault campaign seed={plan.seed} (replay: {SEED_ENV}={plan.seed})")
    rng = random.Random(plan.seed)
    rig = LaneRig(workdir, overrides=OVERRIDES)
    try:
        await asyncio.to_thread(rig.start, daemon=False)
        topics = CabinetTopics(rig.topic_root, rig.site, rig.cabinet)
        probe = MqttProbe(rig.mqtt_port, client_id="dispatch-audit", clean=False)
        probe._client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
        probe.start()
        try:
            probe.subscribe(topics.events, qos=1)
            probe.subscribe(topics.status, qos=1)
            rig.daemon.start(wait_port=False)
            campaign = Campaign(rig, plan, topics)
            await _daemon_online(campaign, probe, set())
            activity = asyncio.create_task(campaign.activity(time.monotonic() + 3600))
            try:
                for n, kind in enumerate(plan.schedule(rng), 1):
                    await asyncio.sleep(rng.uniform(*plan.gap_s))
                    if kind == "daemon":
                        await _kill_daemon(campaign, probe, rng)
                    elif kind == "broker":
                        await _restart_broker(campaign, probe, rng)
                    elif kind == "board":
                        await _board_fault(campaign, rng)
                    else:
                        await _kill_redis(campaign, rng)
                    if n % 10 == 0:
                        say(f"  {n} disruptions done")
                await asyncio.sleep(rng.uniform(*plan.gap_s))  # activity after the last
            finally:
                activity.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await activity
            done = await _settled(rig, probe, topics.events)
            try:
                await _wait_for(done, 60.0, "the outbox drained and every door reported "
                                "as it is", 0.2)
                unsettled = None
            except TimeoutError as exc:
                unsettled = str(exc)  # the verdict tells which door, or which seq
            finally:
                await done.store.close()  # type: ignore[attr-defined]
            verdict = judge(campaign, probe)
            if unsettled is not None:
                verdict.problems.append(unsettled)
        finally:
            probe.close()
        say(verdict.figures())
        if verdict.problems:
            say("disruptions (monotonic time at their end):\n  " + "\n  ".join(campaign.log))
        return verdict
    except BaseException:
        say(rig.logs("daemon", 6000))
        raise
    finally:
        await asyncio.to_thread(rig.close)
