"""Dispatch's estimate of one cabinet's clock, per boot.

A cabinet states command deadlines in its own clock, ``(boot_id, uptime_ms)``, never in
wall time (a Raspberry Pi has no battery-backed clock). Dispatch learns that clock from
every message that carries ``cabinet_clock`` (status, state, telemetry, events, replies)
and estimates "now" on the cabinet as the last reading plus the time elapsed here since it
arrived. The estimate is a lower bound (the reading was taken before it arrived), so a
deadline built from it is never later than the lifetime asked for.

Rules:

* within a boot the estimate never goes back (an older message arriving late is ignored);
* a reading from another boot starts the new boot: the old one is over, and a reading of
  an ended boot arriving afterwards (a stored reply repeated, a replayed event) is ignored.

Time comes in as arguments (dispatch's own monotonic seconds), so this is tested without
waiting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.clock import CabinetClock

__all__ = ["ClockTracker", "reading_of"]


def reading_of(payload: Mapping[str, Any]) -> CabinetClock | None:
    """The ``cabinet_clock`` of a message, or ``None`` when it carries none (or a bad one)."""
    clock = payload.get("cabinet_clock")
    if not isinstance(clock, Mapping):
        return None
    try:
        boot_id, uptime_ms = clock["boot_id"], clock["uptime_ms"]
    except KeyError:
        return None
    if not isinstance(boot_id, str) or not boot_id:
        return None
    if not isinstance(uptime_ms, int) or isinstance(uptime_ms, bool) or uptime_ms < 0:
        return None
    return CabinetClock(boot_id, uptime_ms)


class ClockTracker:
    """The clock of one cabinet, learnt from readings. See the module docstring."""

    def __init__(self) -> None:
        self._last: tuple[CabinetClock, float] | None = None
        self.retired_boots: set[str] = set()
        #: Boots in the order they were first seen (the current one last).
        self.boots: list[str] = []

    @property
    def known(self) -> bool:
        return self._last is not None

    @property
    def boot_id(self) -> str | None:
        return self._last[0].boot_id if self._last is not None else None

    @property
    def last(self) -> tuple[CabinetClock, float] | None:
        """The reading the estimate is built on, and when (here) it arrived."""
        return self._last

    def learn(self, reading: CabinetClock, at: float) -> bool:
        """Take a reading that arrived at ``at``; ``True`` when it moved the estimate."""
        if reading.boot_id in self.retired_boots:
            return False  # a message of a boot that has since ended
        if self._last is None:
            self._start(reading, at)
            return True
        current_boot, current_uptime = self.estimate(at)
        if reading.boot_id != current_boot:
            # A new boot: the old one is over (its commands are refused as wrong_boot).
            self.retired_boots.add(current_boot)
            self._start(reading, at)
            return True
        if reading.uptime_ms >= current_uptime:
            self._last = (reading, at)
            return True
        return False

    def learn_from(self, payload: Mapping[str, Any], at: float) -> bool:
        """:meth:`learn` from a message's ``cabinet_clock``, if it has one."""
        reading = reading_of(payload)
        return reading is not None and self.learn(reading, at)

    def estimate(self, at: float) -> tuple[str, int]:
        """``(boot_id, uptime_ms)`` on the cabinet at ``at`` (dispatch's monotonic time)."""
        if self._last is None:
            raise LookupError("no cabinet clock known yet: wait for the cabinet's status")
        reading, received = self._last
        return reading.boot_id, reading.uptime_ms + max(0, int((at - received) * 1000))

    def _start(self, reading: CabinetClock, at: float) -> None:
        self._last = (reading, at)
        if reading.boot_id not in self.boots:
            self.boots.append(reading.boot_id)
