"""What a :class:`~drivers.modbus.line.ModbusLine` counts: :class:`LineStats` snapshots with
per-unit :class:`UnitStats`, for telemetry and ``lockerctl bus``."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["LineStats", "UnitStats"]


@dataclass(frozen=True, slots=True)
class UnitStats:
    """Counters of one unit (board address) on a line. ``failing`` is True between the
    first failed transaction of an incident and the next success. ``late_replies``
    counts replies (or parts of one) that came after their request's timeout and were
    discarded; ``degraded`` is True while the unit keeps answering late (its reads
    raise :class:`~drivers.errors.BoardLate`)."""

    transactions: int = 0
    ok: int = 0
    timeouts: int = 0
    frame_errors: int = 0
    exceptions: int = 0
    retries: int = 0
    last_error: str | None = None
    failing: bool = False
    late_replies: int = 0
    degraded: bool = False


@dataclass(frozen=True, slots=True)
class LineStats:
    """A snapshot of a line's counters.

    ``transactions`` and ``ok`` count calls; ``timeouts`` and ``frame_errors`` count
    attempts on the wire (a transaction retried twice after timeouts adds 1 to
    ``transactions`` and up to 3 to ``timeouts``); ``retries`` counts re-sent requests;
    ``exceptions`` counts exception responses; ``stray_bytes`` counts bytes discarded
    because no request was waiting for them (late replies, noise, garbage after a
    frame); ``late_replies`` counts late replies discarded (see :class:`UnitStats`);
    ``degraded`` lists the units flagged degraded now.
    """

    name: str
    connected: bool
    transactions: int
    ok: int
    timeouts: int
    frame_errors: int
    exceptions: int
    retries: int
    bus_errors: int
    stray_bytes: int
    last_error: str | None
    last_error_at: float | None
    units: Mapping[int, UnitStats] = field(default_factory=dict)
    late_replies: int = 0
    degraded: tuple[int, ...] = ()


@dataclass(slots=True)
class UnitCounters:
    """The live, mutable counters of one unit, owned by its line; :meth:`freeze` gives the
    :class:`UnitStats` snapshot."""

    transactions: int = 0
    ok: int = 0
    timeouts: int = 0
    frame_errors: int = 0
    exceptions: int = 0
    retries: int = 0
    last_error: str | None = None
    failing: bool = False
    failures_in_incident: int = 0
    late_replies: int = 0
    degraded: bool = False
    #: A late reply of this unit was seen since its last transaction ended.
    late_pending: bool = False
    #: Recent transactions, True for those with a late reply (at most 2 x degraded_after).
    late_history: deque[bool] = field(default_factory=deque)
    clean_streak: int = 0
    #: The latest a reply of this unit was seen to arrive after its request was sent.
    lateness_s: float = 0.0

    def freeze(self) -> UnitStats:
        return UnitStats(
            self.transactions,
            self.ok,
            self.timeouts,
            self.frame_errors,
            self.exceptions,
            self.retries,
            self.last_error,
            self.failing,
            self.late_replies,
            self.degraded,
        )
