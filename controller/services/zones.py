"""Temperature zones: excursion alarms with a delay, zones unavailable for new cold
orders, and min/max/mean per zone.

The poller reads the probes (one owner per bus); this service samples the latest reading
of each zone's probe every ``interval_s`` and decides:

- a zone with a range (``min_c``/``max_c``) whose reading stays outside it for longer
  than its ``excursion_delay_s`` raises the ``temperature`` alarm (once per incident,
  with the zone, the reading and the range); the alarm clears when a reading is back in
  range, with the extremes seen during the excursion. A short excursion (a door opened
  for a minute) raises nothing;
- while the alarm is active the zone is *unavailable*: :meth:`ZoneMonitor.unavailable_zones`
  is what the assign handler passes to ``assign_order(..., unavailable_zones=...)``, so no
  new cold order goes into a zone that cannot keep it cold;
- every ``report_interval_s`` a ``zone_temperatures`` event reports min, max and mean
  per zone over the window (and logs them); :meth:`ZoneMonitor.stats` gives them since
  start. A missing reading (probe not answering) is neither in nor out of range.

Alarm raises and clears also go to the audit log. :class:`ZoneWatch` is the pure rule of
one zone (no I/O, times passed in).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from controller.domain.cabinet_model import Emitted
from controller.services.reporting import PendingEvent
from controller.settings import Settings
from controller.store import Store
from controller.store.errors import StoreError

__all__ = ["TEMPERATURE_ALARM", "ZoneMonitor", "ZoneStats", "ZoneWatch"]

log = logging.getLogger(__name__)

TEMPERATURE_ALARM = "temperature"

Emit = Callable[[Sequence[Emitted | PendingEvent]], Awaitable[object]]


@dataclass(slots=True)
class ZoneStats:
    """Min, max and mean of the samples of one window."""

    samples: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    def add(self, value: float) -> None:
        self.samples += 1
        self.total += value
        self.low = min(self.low, value)
        self.high = max(self.high, value)

    def as_dict(self) -> dict[str, Any]:
        if not self.samples:
            return {"samples": 0}
        return {"samples": self.samples, "min_c": round(self.low, 2),
                "max_c": round(self.high, 2), "mean_c": round(self.total / self.samples, 2)}


class ZoneWatch:
    """The excursion rule of one zone. :meth:`sample` returns ``"raise"``, ``"clear"``
    or None."""

    def __init__(self, name: str, min_c: float | None, max_c: float | None,
                 delay_s: float) -> None:
        self.name = name
        self.min_c = min_c
        self.max_c = max_c
        self.delay_s = delay_s
        self.out_since: float | None = None
        self.alarm = False
        self.excursion = ZoneStats()
        self.last: float | None = None

    def in_range(self, value: float) -> bool:
        return ((self.min_c is None or value >= self.min_c)
                and (self.max_c is None or value <= self.max_c))

    def sample(self, value: float | None, mono: float) -> Literal["raise", "clear"] | None:
        if value is None:
            return None
        self.last = value
        if self.in_range(value):
            self.out_since = None
            if self.alarm:
                self.alarm = False
                return "clear"
            return None
        if self.out_since is None:
            self.out_since = mono
            self.excursion = ZoneStats()
        self.excursion.add(value)
        if not self.alarm and mono - self.out_since >= self.delay_s:
            self.alarm = True
            return "raise"
        return None


class ZoneMonitor:
    """Samples every zone that has a probe. See the module docstring.

    ``readings()`` returns the latest probe values by ``(board, channel)`` (the poller's
    ``temperatures.values``).
    """

    def __init__(
        self,
        settings: Settings,
        readings: Callable[[], Mapping[tuple[str, int], float | None]],
        emit: Emit,
        store: Store,
        *,
        mono: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        interval_s: float = 1.0,
        report_interval_s: float = 900.0,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._settings = settings
        self._readings = readings
        self._emit = emit
        self._store = store
        self._mono = mono
        self._wall = wall
        self.interval_s = interval_s
        self.report_interval_s = report_interval_s
        self._on_change = on_change
        self.watches: dict[str, ZoneWatch] = {}
        self._probes: dict[str, tuple[str, int]] = {}
        for zone in settings.zones:
            if zone.probe is None:
                continue
            self._probes[zone.name] = (zone.probe.board, zone.probe.channel)
            self.watches[zone.name] = ZoneWatch(zone.name, zone.min_c, zone.max_c,
                                                zone.excursion_delay_s)
        self.window: dict[str, ZoneStats] = {name: ZoneStats() for name in self.watches}
        self.total: dict[str, ZoneStats] = {name: ZoneStats() for name in self.watches}
        self._window_start = mono()

    def unavailable_zones(self) -> frozenset[str]:
        """Zones in an excursion alarm: not assigned new cold orders until they recover."""
        return frozenset(name for name, watch in self.watches.items() if watch.alarm)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Min/max/mean per zone since start."""
        return {name: s.as_dict() for name, s in self.total.items()}

    async def sample_once(self) -> None:
        values = self._readings()
        mono, wall = self._mono(), self._wall()
        for name, watch in self.watches.items():
            value = values.get(self._probes[name])
            if value is not None:
                self.window[name].add(value)
                self.total[name].add(value)
            decision = watch.sample(value, mono)
            if decision is not None:
                await self._alarm(decision, watch, value, wall)
        if mono - self._window_start >= self.report_interval_s:
            await self.report()

    async def report(self) -> None:
        """The ``zone_temperatures`` event for the window now ending; a new window starts."""
        mono = self._mono()
        zones = {name: s.as_dict() for name, s in self.window.items()}
        window_s = round(mono - self._window_start, 3)
        self.window = {name: ZoneStats() for name in self.watches}
        self._window_start = mono
        if not zones:
            return
        log.info("zone temperatures", extra={"ctx": {"window_s": window_s, "zones": zones}})
        await self._emit([PendingEvent("zone_temperatures",
                                       {"window_s": window_s, "zones": zones}, self._wall())])

    async def _alarm(self, decision: str, watch: ZoneWatch, value: float | None,
                     wall: float) -> None:
        data: dict[str, Any] = {"alarm": TEMPERATURE_ALARM, "zone": watch.name,
                                "temperature_c": value, "min_c": watch.min_c,
                                "max_c": watch.max_c, "delay_s": watch.delay_s}
        kind = "alarm_raised" if decision == "raise" else "alarm_cleared"
        if decision == "clear":
            excursion = watch.excursion.as_dict()
            data["excursion"] = excursion
        log.warning("zone temperature %s", "excursion" if decision == "raise" else "recovered",
                    extra={"ctx": {"zone": watch.name, "temperature_c": value}})
        await self._emit([PendingEvent(kind, data, wall)])
        try:
            await self._store.audit(kind, actor="zones", at=wall, details=data)
        except StoreError as exc:
            log.error("audit write failed", extra={"ctx": {"zone": watch.name,
                                                           "error": str(exc)}})
        self._on_change()

    async def run(self) -> None:
        """Until cancelled: sample every ``interval_s``."""
        while True:
            await self.sample_once()
            await asyncio.sleep(self.interval_s)
