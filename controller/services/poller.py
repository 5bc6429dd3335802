"""The poller: reads every board once per cycle and turns changes into events.

One task per bus (a bus has one owner and one transaction at a time; buses run in
parallel). Each board's inputs are read in one transaction; a failed read is a failed
poll for the model, which after ``unknown_after_failed_polls`` makes the board's signals
unknown and raises ``board_offline``: a dead board never stops the others. The model
filters each door, latch and occupancy signal (its debounce time, the flapping rule:
:class:`controller.domain.signals.SignalFilter`) on the times this poller gives it, so
a poll that reads nothing new may still settle a change or clear ``sensor_flapping``:
every poll goes to the model, changed or not. A board the model holds offline (its
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

The cycle's freshness feeds the systemd watchdog: pings stop when polls stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from controller.domain.cabinet_model import CabinetModel, Emitted, Now
from controller.services.hardware import Hardware
from drivers.errors import DriverError

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
    ) -> None:
        self._model = model
        self._hardware = hardware
        self._emit = emit
        self._now = now
        self.interval_s = interval_s
        self.probe_interval_s = probe_interval_s
        self.offline_retry_s = offline_retry_s
        self._on_change = on_change
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
        next_start = loop.time()
        while True:
            await self._cycle(bus)
            next_start += self.interval_s
            delay = next_start - loop.time()
            if delay < 0:
                # Overran (slow line, timeouts): start again now, do not try to catch up.
                next_start = loop.time()
                delay = 0
            await asyncio.sleep(delay)

    async def _cycle(self, bus: str) -> None:
        changed = False
        for name, board in self._hardware.boards_on(bus):
            if board.inputs == 0:
                continue
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
            if events:
                # Handed over at once, not at the end of the cycle: the next board's read
                # (a transaction on the wire) would delay the event by that much.
                changed = True
                await self._emit(events)
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
            sleep = max_sleep_s if deadline is None else min(max_sleep_s, deadline - now.mono)
            await asyncio.sleep(max(sleep, 0.005))
