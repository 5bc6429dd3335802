"""The poller: reads every board once per cycle and turns changes into events.

One task per bus (a bus has one owner and one transaction at a time; buses run in
parallel). Each board's inputs are read in one transaction; a failed read is a failed
poll for the model, which after ``unknown_after_failed_polls`` makes the board's signals
unknown and raises ``board_offline``: a dead board never stops the others. The model
filters each door, latch and occupancy signal (its debounce time, the flapping rule:
:class:`controller.domain.signals.SignalFilter`) on the times this poller gives it, so
a poll that reads nothing new may still settle a change or clear ``sensor_flapping``:
every poll goes to the model, changed or not, except those of a quiet run (below), which
can change nothing but the board's last poll time. A board the model holds offline (its
signals already unknown) is read at most once per ``offline_retry_s``, one attempt each
time: a dead or late board on a shared pair of wires costs a timeout (and a late window)
per read, line time its healthy neighbours need to see their doors move. Cycles start
on a fixed cadence (no drift from the time a cycle takes). Temperature probes are read on
a slower cadence. A separate ticker runs the door and order timers.

The events of one board read are handed to ``emit`` together, as soon as the read
returns. The daemon's emit for the poller (:meth:`controller.services.reporting.StateKeeper.submit`)
queues them for the next group commit and returns at once, so a slow fsync never delays
the next poll: the events, the compartment states and the door records they report are
committed in one transaction, with whatever else was queued while the previous commit
was under way (other boards' changes of the same cycle included), in order with every
other event of the cabinet.

A quiet cabinet's polls are read by the line itself (decision 0025). After a cycle in which
every board answered exactly as before and the model said another such poll changes
nothing (:meth:`CabinetModel.quiet`), the poller hands the cycle's plan to the line's quiet
run (:meth:`drivers.modbus.line.ModbusLine.run_quiet`, on lines that have one): the line's
thread reads the same requests at the same cadence while every reply is the same, and the
loop sleeps. When the run ends, the boards it read go to the model as one good poll each,
at the time of the last one (all that an unchanged poll records). If the run ended on
its budget with the model still quiet, the next run starts at once. Otherwise the cycle the
run left is finished here, from the board where it stopped: that board's read takes the
reply the run had received, with the line's ordinary checks.

The cycle's freshness feeds the systemd watchdog: pings stop when polls stop (the quiet
run's cycles count, from its thread).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from controller.domain.cabinet_model import CabinetModel, Emitted, Now
from controller.services.hardware import Hardware
from drivers.errors import DriverError

if TYPE_CHECKING:
    from drivers.modbus.quiet import QuietPlan, QuietRun

__all__ = ["Poller", "ZoneTemperatures"]

log = logging.getLogger(__name__)


class ZoneTemperatures:
    """Last reading of each probe channel, and its min/max since start."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, int], float | None] = {}
        self.minmax: dict[tuple[str, int], tuple[float, float]] = {}

    def update(self, board: str, values: tuple[float | None, ...]) -> None:
        for channel, value in enumerate(values):
            key = (board, channel)
            self.values[key] = value
            if value is not None:
                low, high = self.minmax.get(key, (value, value))
                self.minmax[key] = (min(low, value), max(high, value))

    def fail(self, board: str) -> None:
        for key in list(self.values):
            if key[0] == board:
                self.values[key] = None


class Poller:
    def __init__(
        self,
        model: CabinetModel,
        hardware: Hardware,
        emit: Callable[[list[Emitted]], Awaitable[object]],
        *,
        now: Callable[[], Now],
        interval_s: float,
        probe_interval_s: float = 10.0,
        offline_retry_s: float = 5.0,
        on_change: Callable[[], None] = lambda: None,
        quiet_budget_s: float = 2.0,
    ) -> None:
        self._model = model
        self._hardware = hardware
        self._emit = emit
        self._now = now
        self.interval_s = interval_s
        self.probe_interval_s = probe_interval_s
        self.offline_retry_s = offline_retry_s
        self._on_change = on_change
        #: How long a quiet run (unchanged polls read by the line's thread) may last
        #: before the loop takes the poll times and the counters; 0 turns it off.
        self.quiet_budget_s = quiet_budget_s
        #: Per bus: the plan of its last cycle, when that cycle was quiet (see _cycle).
        self._plans: dict[str, tuple[list[tuple[str, tuple[bool, ...]]], QuietPlan]] = {}
        #: Offline boards: when they may be read again (monotonic).
        self._retry_at: dict[str, float] = {}
        self.temperatures = ZoneTemperatures()
        self.last_cycle: dict[str, float] = {}
        self.cycles = 0

    def fresh(self, mono: float, factor: float = 5.0) -> bool:
        """Every bus completed a cycle recently: the watchdog may be fed."""
        limit = max(self.interval_s * factor, 1.0)
        buses = [b for b in self._hardware.buses if self._hardware.boards_on(b)]
        return all(mono - self.last_cycle.get(b, -1e9) <= limit for b in buses)

    async def poll_once(self) -> None:
        """One cycle of every bus (used at start-up, before declaring readiness)."""
        await asyncio.gather(*(self._cycle(bus) for bus in self._hardware.buses))

    async def run(self) -> None:
        # One failing loop stops its siblings and raises: the supervisor restarts all.
        async with asyncio.TaskGroup() as tg:
            for bus in self._hardware.buses:
                tg.create_task(self._run_bus(bus), name=f"poll-{bus}")
            tg.create_task(self._run_probes(), name="probes")

    async def _run_bus(self, bus: str) -> None:
        if not self._hardware.boards_on(bus):
            return
        loop = asyncio.get_running_loop()
        line: Any = self._hardware.buses.get(bus)
        quiet = self.quiet_budget_s > 0 and _quiet_capable(line)
        next_start = loop.time()
        start = 0
        while True:
            await self._cycle(bus, start, watch=quiet)
            start = 0
            next_start += self.interval_s
            if next_start < loop.time():
                # Overran (slow line, timeouts): start again now, do not try to catch up.
                next_start = loop.time()
            plan = self._plans.pop(bus, None)
            on_cycle = self._cycled(bus)
            while plan is not None:
                run = await line.run_quiet(
                    plan[1], next_start=next_start, interval_s=self.interval_s,
                    budget_s=self.quiet_budget_s, on_cycle=on_cycle,
                )
                if run is None:
                    break
                await self._quiet_done(plan[0], run)
                next_start = run.next_start
                start = run.index
                if run.reason != "budget" or not all(
                        self._model.quiet(name, levels) for name, levels in plan[0]):
                    break
                # Only the budget ended it and nothing changed: straight on with the same
                # plan (the model has the poll times and the line its counters).
            if start:
                continue  # the run stopped in a cycle: the rest of it, now
            await asyncio.sleep(max(0.0, next_start - loop.time()))

    def _cycled(self, bus: str) -> Callable[[float], None]:
        def cycled(at: float) -> None:  # from the line's thread: two plain stores
            self.last_cycle[bus] = at
            self.cycles += 1
        return cycled

    async def _quiet_done(self, boards: list[tuple[str, tuple[bool, ...]]],
                          run: QuietRun) -> None:
        """The boards a quiet run read unchanged go to the model as one good poll each,
        at the time of the last one (what every poll of them would have recorded)."""
        now = self._now()
        for (name, levels), at in zip(boards, run.read_at, strict=True):
            if at:
                events = self._model.poll_ok(name, levels, Now(at, now.wall_of(at)))
                if events:  # (only if the model stopped being quiet meanwhile)
                    await self._emit(events)
                    self._on_change()

    async def _cycle(self, bus: str, start: int = 0, *, watch: bool = False) -> None:
        changed = False
        line: Any = self._hardware.buses.get(bus) if watch and not start else None
        quiet: list[tuple[str, tuple[bool, ...]]] | None = None
        if line is not None:
            line.watch()
            quiet = []
        boards = [(n, b) for n, b in self._hardware.boards_on(bus) if b.inputs]
        for name, board in boards[start:]:
            if self._retry_at and self._now().mono < self._retry_at.get(name, 0.0):
                continue  # offline: tried again later, the line serves the others
            try:
                snapshot = await board.read_inputs()
            except DriverError as exc:
                now = self._now()
                events = self._model.poll_failed(name, now, str(exc))
                if self._model.signals.board(name).health.value == "offline":
                    self._retry_at[name] = now.mono + self.offline_retry_s
            else:
                self._retry_at.pop(name, None)
                events = self._model.poll_ok(name, snapshot.levels, self._now())
                if quiet is not None and not events and self._model.quiet(name,
                                                                          snapshot.levels):
                    quiet.append((name, snapshot.levels))
            if events:
                # Handed over at once, not at the end of the cycle: the next board's read
                # (a transaction on the wire) would delay the event by that much.
                changed = True
                await self._emit(events)
        if line is not None:
            plan = line.watched()
            if plan is not None and quiet is not None and len(quiet) == len(boards) == len(
                    plan.requests):
                self._plans[bus] = (quiet, plan)
        self.last_cycle[bus] = self._now().mono
        self.cycles += 1
        if changed:
            self._on_change()

    async def read_probes(self) -> None:
        for name, board in self._hardware.sensor_boards.items():
            try:
                snap = await board.read_values()
            except DriverError as exc:
                self.temperatures.fail(name)
                log.debug("probe read failed", extra={"ctx": {"board": name, "error": str(exc)}})
            else:
                self.temperatures.update(name, snap.values)

    async def _run_probes(self) -> None:
        if not self._hardware.sensor_boards:
            return
        while True:
            await self.read_probes()
            self._on_change()
            await asyncio.sleep(self.probe_interval_s)

    async def run_ticker(self, max_sleep_s: float = 0.5) -> None:
        """Door timers and order expiry: wake at the model's next deadline."""
        while True:
            now = self._now()
            events = self._model.tick(now)
            if events:
                await self._emit(events)
                self._on_change()
            deadline = self._model.next_deadline()
            # With no deadline sooner, wake on the grid of max_sleep_s (the lane's tick keeps
            # to the same grid: one wake-up of the loop serves both).
            sleep = max_sleep_s - now.mono % max_sleep_s
            if deadline is not None:
                sleep = min(sleep, deadline - now.mono)
            await asyncio.sleep(max(sleep, 0.005))


def _quiet_capable(line: object) -> bool:
    """A line that can read unchanged polls on its own (:class:`drivers.modbus.line.ModbusLine`:
    ``watch``, ``watched``, ``run_quiet``)."""
    return all(callable(getattr(line, name, None)) for name in ("watch", "watched", "run_quiet"))
