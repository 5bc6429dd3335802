"""Wrong-code lockout, per key (a lane, an order): after ``max_attempts`` wrong codes
(default 5) the key is locked for ``lockout_s`` (default 60 s); each further lockout of
the same key lasts ``escalation`` times longer (capped at ``max_lockout_s``). A right code
resets the attempts and the escalation.

The state survives restarts: :meth:`WrongCodeLockout.to_dict` stores the *remaining*
lock time relative to ``now``, so it does not depend on a clock that restarts at boot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.domain.errors import DomainError, ErrorCode

__all__ = ["LockoutLimits", "WrongCodeLockout"]


@dataclass(frozen=True, slots=True)
class LockoutLimits:
    """Limits of the wrong-code lockout."""

    max_attempts: int = 5
    lockout_s: float = 60.0
    escalation: float = 2.0
    max_lockout_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise DomainError(ErrorCode.INVALID_ARGUMENT, "max_attempts >= 1", field="max_attempts")
        if self.lockout_s <= 0 or self.max_lockout_s < self.lockout_s:
            raise DomainError(ErrorCode.INVALID_ARGUMENT, "bad lockout times", field="lockout_s")
        if self.escalation < 1:
            raise DomainError(ErrorCode.INVALID_ARGUMENT, "escalation >= 1", field="escalation")


@dataclass(slots=True)
class _KeyState:
    attempts: int = 0
    lockouts: int = 0
    locked_until: float | None = None


class WrongCodeLockout:
    """Counts wrong codes per key and locks keys out."""

    def __init__(self, limits: LockoutLimits | None = None) -> None:
        self.limits = limits or LockoutLimits()
        self._keys: dict[str, _KeyState] = {}

    def remaining(self, key: str, now: float) -> float:
        """Seconds ``key`` stays locked (0 when not locked)."""
        state = self._keys.get(key)
        if state is None or state.locked_until is None:
            return 0.0
        return max(state.locked_until - now, 0.0)

    def check(self, *keys: str, now: float) -> None:
        """Raise ``locked_out`` if any of ``keys`` is locked at ``now``."""
        for key in keys:
            left = self.remaining(key, now)
            if left > 0:
                raise DomainError(
                    ErrorCode.LOCKED_OUT,
                    f"too many wrong codes; try again in {left:.0f} s",
                    field="code",
                )

    def wrong_code(self, *keys: str, now: float) -> float:
        """Count a wrong code against each key; returns the longest lock now in force."""
        for key in keys:
            state = self._keys.setdefault(key, _KeyState())
            if state.locked_until is not None and now >= state.locked_until:
                state.locked_until = None
            state.attempts += 1
            if state.attempts >= self.limits.max_attempts:
                duration = min(
                    self.limits.lockout_s * self.limits.escalation**state.lockouts,
                    self.limits.max_lockout_s,
                )
                state.lockouts += 1
                state.attempts = 0
                state.locked_until = now + duration
        return max((self.remaining(k, now) for k in keys), default=0.0)

    def right_code(self, *keys: str) -> None:
        """A right code: forget the keys' attempts and escalation."""
        for key in keys:
            self._keys.pop(key, None)

    def to_dict(self, now: float) -> dict[str, Any]:
        """JSON-ready state; lock times as seconds remaining after ``now``."""
        return {
            key: {
                "attempts": s.attempts,
                "lockouts": s.lockouts,
                "remaining_s": self.remaining(key, now),
            }
            for key, s in self._keys.items()
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], now: float, limits: LockoutLimits | None = None
    ) -> WrongCodeLockout:
        """Rebuild from :meth:`to_dict` output, remaining times counted from ``now``."""
        lockout = cls(limits)
        for key, item in data.items():
            remaining = float(item.get("remaining_s", 0.0))
            lockout._keys[str(key)] = _KeyState(
                attempts=int(item.get("attempts", 0)),
                lockouts=int(item.get("lockouts", 0)),
                locked_until=now + remaining if remaining > 0 else None,
            )
        return lockout
