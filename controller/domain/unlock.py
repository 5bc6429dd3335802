"""Unlock policy: when a door pulse may start. Pure scheduling arithmetic for the unlock
queue; it never looks at a door sensor (a cut wire reads "open", and that must not keep
a customer out).

Limits (:class:`UnlockLimits`):

* power budget: at most ``max_concurrent`` solenoids energised at once (default 1), and
  ``gap_s`` between the start of a pulse and the previous start or end (inrush current);
* per compartment: ``cooldown_s`` after the end of its last pulse, and at most
  ``max_pulses`` starts in any sliding ``rate_window_s`` (a runaway dispatch loop must not
  burn a lock);
* pulse length: the requested duration (default ``pulse_s``) is capped at
  ``max_pulse_s``, itself never above :data:`HARD_PULSE_CAP_S`.

A pulse ends at ``max(finished_at, started_at + duration)``: a board that times the pulse
itself acknowledges at once while the solenoid stays energised for the duration. A pulse
never reported finished counts as energised until ``started_at + duration + stale_after_s``.

Use::

    decision = policy.admit("A01", now)          # Admit(start_at, duration_s) | Refused
    ... wait until decision.start_at (or policy.next_start_time(now)) ...
    grant = policy.started("A01", now)           # raises DomainError if not allowed now
    ... send the pulse ...
    policy.finished("A01", now)                  # in a finally

``admit`` refuses only for per-compartment reasons (``already_pulsing``, ``cooldown``,
``rate_limited``) with ``retry_after``; the power budget only delays (``start_at``).
``started`` re-checks everything, so the limits hold even if a caller skips ``admit``.
All times are seconds in the caller's monotonic clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from controller.domain.errors import DomainError, ErrorCode

__all__ = [
    "HARD_PULSE_CAP_S",
    "Admit",
    "PulseGrant",
    "Refused",
    "UnlockLimits",
    "UnlockPolicy",
]

#: The longest pulse any board is ever asked for; equals ``drivers.base.HARD_PULSE_CAP_S``
#: (the domain does not import the driver package).
HARD_PULSE_CAP_S = 10.0


@dataclass(frozen=True, slots=True)
class UnlockLimits:
    """The limits of the unlock policy; see the module docstring."""

    max_concurrent: int = 1
    gap_s: float = 0.3
    cooldown_s: float = 2.0
    max_pulses: int = 6
    rate_window_s: float = 60.0
    pulse_s: float = 0.5
    max_pulse_s: float = 3.0
    stale_after_s: float = 2.0

    def __post_init__(self) -> None:
        def bad(field: str, rule: str) -> DomainError:
            return DomainError(ErrorCode.INVALID_ARGUMENT, f"{field} must be {rule}", field=field)

        if self.max_concurrent < 1:
            raise bad("max_concurrent", ">= 1")
        if self.max_pulses < 1:
            raise bad("max_pulses", ">= 1")
        for name in ("gap_s", "cooldown_s", "stale_after_s"):
            if getattr(self, name) < 0:
                raise bad(name, ">= 0")
        if self.rate_window_s <= 0:
            raise bad("rate_window_s", "> 0")
        if not 0 < self.max_pulse_s <= HARD_PULSE_CAP_S:
            raise bad("max_pulse_s", f"in (0, {HARD_PULSE_CAP_S}]")
        if not 0 < self.pulse_s <= self.max_pulse_s:
            raise bad("pulse_s", "in (0, max_pulse_s]")


@dataclass(frozen=True, slots=True)
class Admit:
    """The pulse may start at ``start_at`` (now or later: the power budget) for
    ``duration_s`` (already capped)."""

    compartment: str
    start_at: float
    duration_s: float


@dataclass(frozen=True, slots=True)
class Refused:
    """The pulse is refused for now; asking again after ``retry_after`` seconds may work."""

    compartment: str
    code: ErrorCode
    retry_after: float
    message: str

    def to_error(self) -> DomainError:
        """The refusal as a :class:`DomainError` (for a command reply)."""
        return DomainError(
            self.code, f"{self.message}; retry in {self.retry_after:.1f} s", field="compartment",
            retry_after_s=round(self.retry_after, 3),
        )


@dataclass(frozen=True, slots=True)
class PulseGrant:
    """A pulse recorded as started; the solenoid must be off by ``ends_by``."""

    compartment: str
    started_at: float
    duration_s: float

    @property
    def ends_by(self) -> float:
        """``started_at + duration_s``."""
        return self.started_at + self.duration_s


@dataclass(slots=True)
class _Pulse:
    started_at: float
    duration_s: float
    finished_at: float | None = None

    def end(self) -> float:
        """When the pulse is over, as far as is known now."""
        natural = self.started_at + self.duration_s
        return natural if self.finished_at is None else max(self.finished_at, natural)


class UnlockPolicy:
    """The power budget, cooldowns and rate limits of one cabinet's unlock queue."""

    def __init__(self, limits: UnlockLimits | None = None) -> None:
        self.limits = limits or UnlockLimits()
        self._active: dict[str, _Pulse] = {}
        self._starts: dict[str, deque[float]] = {}
        self._last_end: dict[str, float] = {}
        self._last_start_any: float | None = None
        self._last_end_any: float | None = None

    # -- queries ---------------------------------------------------------------------

    def active(self, now: float) -> tuple[str, ...]:
        """Compartments whose solenoid counts as energised at ``now``."""
        self._settle(now)
        return tuple(self._active)

    def capped_duration(self, duration_s: float | None = None) -> float:
        """The duration a pulse gets: ``duration_s`` (default ``pulse_s``), capped."""
        requested = self.limits.pulse_s if duration_s is None else duration_s
        if requested <= 0:
            raise DomainError(
                ErrorCode.INVALID_ARGUMENT, "pulse duration must be > 0", field="duration_s"
            )
        return min(requested, self.limits.max_pulse_s)

    def next_start_time(self, now: float) -> float:
        """The earliest time (>= now) the power budget lets any pulse start, as far as is
        known now. A running pulse not yet reported finished is assumed to end at
        ``started_at + duration``; if it is reported later, :meth:`started` refuses with
        ``power_budget`` and the caller asks again."""
        self._settle(now)
        earliest = now
        if self._last_start_any is not None:
            earliest = max(earliest, self._last_start_any + self.limits.gap_s)
        if self._last_end_any is not None:
            earliest = max(earliest, self._last_end_any + self.limits.gap_s)
        ends = sorted(p.end() for p in self._active.values())
        if len(ends) >= self.limits.max_concurrent:
            freeing = ends[len(ends) - self.limits.max_concurrent]
            earliest = max(earliest, freeing + self.limits.gap_s)
        # Every pulse that will have ended by then needs its gap too.
        for end in ends:
            if end <= earliest:
                earliest = max(earliest, end + self.limits.gap_s)
        return earliest

    def admit(
        self, compartment: str, now: float, duration_s: float | None = None
    ) -> Admit | Refused:
        """Whether a pulse of ``compartment`` may be queued, and from when."""
        duration = self.capped_duration(duration_s)
        refusal = self._compartment_refusal(compartment, now)
        if refusal is not None:
            return refusal
        return Admit(compartment, self.next_start_time(now), duration)

    # -- facts -----------------------------------------------------------------------

    def started(self, compartment: str, now: float, duration_s: float | None = None) -> PulseGrant:
        """Record that the pulse starts now; raises :class:`DomainError` (and records
        nothing) when any limit forbids it at ``now``."""
        duration = self.capped_duration(duration_s)
        refusal = self._compartment_refusal(compartment, now)
        if refusal is not None:
            raise refusal.to_error()
        earliest = self.next_start_time(now)
        if len(self._active) >= self.limits.max_concurrent:
            # A pulse not yet reported finished still counts as energised.
            earliest = max(earliest, now + self.limits.gap_s)
        if earliest > now:
            raise DomainError(
                ErrorCode.POWER_BUDGET,
                f"power budget: next pulse may start in {earliest - now:.2f} s",
                field="compartment",
            )
        self._active[compartment] = _Pulse(now, duration)
        self._starts.setdefault(compartment, deque()).append(now)
        self._last_start_any = now
        return PulseGrant(compartment, now, duration)

    def finished(self, compartment: str, now: float) -> None:
        """Record that the pulse of ``compartment`` was switched off (or acknowledged by a
        board that times it). Safe to call twice or for a pulse already settled."""
        pulse = self._active.get(compartment)
        if pulse is not None and pulse.finished_at is None:
            pulse.finished_at = now
        self._settle(now)

    # -- mechanics -------------------------------------------------------------------

    def _settle(self, now: float) -> None:
        for compartment, pulse in list(self._active.items()):
            if pulse.finished_at is None:
                stale_at = pulse.started_at + pulse.duration_s + self.limits.stale_after_s
                if now < stale_at:
                    continue
                pulse.finished_at = stale_at
            end = pulse.end()
            if now < end:
                continue
            del self._active[compartment]
            self._last_end[compartment] = end
            if self._last_end_any is None or end > self._last_end_any:
                self._last_end_any = end

    def _compartment_refusal(self, compartment: str, now: float) -> Refused | None:
        self._settle(now)
        limits = self.limits
        pulse = self._active.get(compartment)
        if pulse is not None:
            retry = pulse.end() + limits.cooldown_s - now
            return Refused(
                compartment, ErrorCode.ALREADY_PULSING, max(retry, 0.0), "a pulse is running"
            )
        last_end = self._last_end.get(compartment)
        if last_end is not None and now < last_end + limits.cooldown_s:
            return Refused(
                compartment,
                ErrorCode.COOLDOWN,
                last_end + limits.cooldown_s - now,
                f"compartment {compartment} was pulsed less than {limits.cooldown_s} s ago",
            )
        starts = self._starts.get(compartment)
        if starts:
            while starts and starts[0] + limits.rate_window_s <= now:
                starts.popleft()
            if len(starts) >= limits.max_pulses:
                return Refused(
                    compartment,
                    ErrorCode.RATE_LIMITED,
                    starts[0] + limits.rate_window_s - now,
                    f"{limits.max_pulses} pulses of {compartment} within "
                    f"{limits.rate_window_s:.0f} s",
                )
        return None
