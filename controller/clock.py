"""The cabinet's clock: monotonic time since this boot of the daemon, and wall time.

A Raspberry Pi has no battery-backed clock: after a power cut the wall clock may be
wrong until NTP answers. Everything that must be safe (command expiry, cooldowns, door
timeouts) uses the monotonic clock; the wall clock only labels events for humans.
Commands carry their deadline in this clock: ``(boot_id, uptime_ms)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

__all__ = ["CabinetClock", "Clock", "SystemClock"]


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def wall(self) -> float: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


@dataclass(frozen=True, slots=True)
class CabinetClock:
    """A reading of the cabinet's clock, as published in status, telemetry and replies."""

    boot_id: str
    uptime_ms: int

    def as_dict(self) -> dict[str, str | int]:
        return {"boot_id": self.boot_id, "uptime_ms": self.uptime_ms}
