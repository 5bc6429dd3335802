"""The wrong-code budget of one input of a lane (its keypad, its scanner).

A guesser is slowed, never a customer locked out for long: each input has a bucket of
``burst`` wrong codes (default 5) that refills by one every ``refill_s`` (default 60 s).
A wrong code takes one from the bucket. While the bucket is empty, a *short* entry (one
that could be a keypad code) is not checked at all: it is refused at once with the time
until the next attempt (``slow_down``), and it does not count. A long entry (only a QR
code can match it) is always checked: a right QR code opens whatever someone else typed
before. Whatever the entry, two checks of one input are held at least ``min_interval_s``
apart (default 0.25 s: the next entry waits, it is not refused), so a flooding scanner costs
the cabinet at most four checks a second (its driver drops the oldest lines it cannot
hand over).

A right code does not refill the bucket (an accomplice's own order must not buy a guesser
new attempts); only time does, or a staff ``clear_lane_lockout`` command.

Bound: at most ``burst + 86400 / refill_s`` short entries are checked per input per day
(1,445 with the defaults), whatever the guesser does. docs/security.md turns this into the
chance of guessing a live code.

The state survives restarts: :meth:`CodeBudget.to_dict` stores the tokens as of ``now``;
:meth:`CodeBudget.from_dict` refills them for the time that passed in between.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.domain.errors import DomainError, ErrorCode

__all__ = ["BudgetLimits", "CodeBudget"]


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """Limits of the wrong-code budget of one input."""

    burst: int = 5
    refill_s: float = 60.0
    min_interval_s: float = 0.25

    def __post_init__(self) -> None:
        if self.burst < 1:
            raise DomainError(ErrorCode.INVALID_ARGUMENT, "burst >= 1", field="burst")
        if self.refill_s <= 0:
            raise DomainError(ErrorCode.INVALID_ARGUMENT, "refill_s > 0", field="refill_s")
        if self.min_interval_s < 0:
            raise DomainError(ErrorCode.INVALID_ARGUMENT, "min_interval_s >= 0",
                              field="min_interval_s")

    def checks_per_day(self) -> float:
        """The most short entries checked per day by one input."""
        return self.burst + 86400.0 / self.refill_s


class CodeBudget:
    """The wrong-code bucket of one input; times in one monotonic clock."""

    def __init__(self, limits: BudgetLimits | None = None, *, tokens: float | None = None,
                 at: float = 0.0, wrong_total: int = 0) -> None:
        self.limits = limits or BudgetLimits()
        self._tokens = float(self.limits.burst if tokens is None else tokens)
        self._at = at
        self._last_check: float | None = None
        #: Wrong codes counted since the bucket was last full.
        self.wrong_total = wrong_total

    def tokens(self, now: float) -> float:
        """Wrong codes left at ``now``."""
        grown = self._tokens + max(now - self._at, 0.0) / self.limits.refill_s
        return min(grown, float(self.limits.burst))

    def _settle(self, now: float) -> None:
        self._tokens = self.tokens(now)
        self._at = max(now, self._at)

    def wait(self, now: float, *, short: bool) -> float:
        """Seconds before an entry may be checked; 0 for a long entry or while the budget
        holds an attempt."""
        if not short:
            return 0.0
        tokens = self.tokens(now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) * self.limits.refill_s

    def pace(self, now: float) -> float:
        """Seconds to hold a check so that two checks are ``min_interval_s`` apart."""
        if self._last_check is None:
            return 0.0
        return max(self.limits.min_interval_s - (now - self._last_check), 0.0)

    def checked(self, now: float) -> None:
        """An entry is being checked at ``now``."""
        self._last_check = now

    def wrong(self, now: float) -> bool:
        """Count a wrong code; True when the bucket is now empty (a guesser)."""
        self._settle(now)
        self._tokens = max(self._tokens - 1.0, 0.0)
        self.wrong_total += 1
        return self._tokens < 1.0

    def full(self, now: float) -> bool:
        return self.tokens(now) >= self.limits.burst

    def to_dict(self, now: float) -> dict[str, Any]:
        return {"tokens": round(self.tokens(now), 6), "wrong_total": self.wrong_total}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], now: float, elapsed_s: float,
                  limits: BudgetLimits | None = None) -> CodeBudget:
        """Rebuild from :meth:`to_dict` saved ``elapsed_s`` ago, in a clock read ``now``."""
        budget = cls(limits, wrong_total=int(data.get("wrong_total", 0)))
        tokens = float(data.get("tokens", budget.limits.burst))
        budget._tokens = min(max(tokens, 0.0), float(budget.limits.burst))
        budget._at = now - max(elapsed_s, 0.0)
        budget._settle(now)
        return budget
