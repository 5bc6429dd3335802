from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from controller.domain.errors import DomainError, ErrorCode
from controller.domain.unlock import (
    HARD_PULSE_CAP_S,
    Admit,
    PulseGrant,
    Refused,
    UnlockLimits,
    UnlockPolicy,
)
from drivers.base import HARD_PULSE_CAP_S as DRIVER_CAP

LIMITS = UnlockLimits(
    max_concurrent=1,
    gap_s=0.5,
    cooldown_s=2.0,
    max_pulses=3,
    rate_window_s=60.0,
    pulse_s=0.5,
    max_pulse_s=1.0,
    stale_after_s=2.0,
)


def test_cap_matches_the_driver_cap() -> None:
    assert HARD_PULSE_CAP_S == DRIVER_CAP


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_concurrent": 0},
        {"max_pulses": 0},
        {"gap_s": -1},
        {"cooldown_s": -1},
        {"rate_window_s": 0},
        {"max_pulse_s": 11},
        {"max_pulse_s": 0},
        {"pulse_s": 4, "max_pulse_s": 3},
    ],
)
def test_limits_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(DomainError) as err:
        UnlockLimits(**kwargs)  # type: ignore[arg-type]
    assert err.value.code is ErrorCode.INVALID_ARGUMENT


def test_first_pulse_admitted_now_with_default_duration() -> None:
    policy = UnlockPolicy(LIMITS)
    assert policy.admit("A01", 10.0) == Admit("A01", 10.0, 0.5)


def test_duration_is_capped() -> None:
    policy = UnlockPolicy(LIMITS)
    decision = policy.admit("A01", 10.0, duration_s=9.0)
    assert isinstance(decision, Admit)
    assert decision.duration_s == 1.0
    grant = policy.started("A01", 10.0, 9.0)
    assert grant.duration_s == 1.0
    assert grant.ends_by == 11.0
    with pytest.raises(DomainError):
        policy.capped_duration(0)


def test_power_budget_delays_other_compartments() -> None:
    policy = UnlockPolicy(LIMITS)
    policy.started("A01", 10.0)
    assert policy.active(10.1) == ("A01",)
    decision = policy.admit("A02", 10.1)
    assert isinstance(decision, Admit)
    assert decision.start_at == 11.0  # end 10.5 + gap 0.5
    with pytest.raises(DomainError) as err:
        policy.started("A02", 10.6)
    assert err.value.code is ErrorCode.POWER_BUDGET
    policy.finished("A01", 10.5)
    assert policy.next_start_time(10.6) == 11.0
    policy.started("A02", 11.0)


def test_late_finish_delays_the_next_start() -> None:
    policy = UnlockPolicy(LIMITS)
    policy.started("A01", 10.0)
    policy.finished("A01", 10.8)  # driver-timed pulse switched off late
    assert policy.next_start_time(10.8) == 11.3


def test_board_timed_ack_does_not_end_the_pulse_early() -> None:
    policy = UnlockPolicy(LIMITS)
    policy.started("A01", 10.0)
    policy.finished("A01", 10.05)  # the board acked at once; the solenoid runs to 10.5
    assert policy.active(10.2) == ("A01",)
    assert policy.next_start_time(10.2) == 11.0


def test_unfinished_pulse_goes_stale() -> None:
    policy = UnlockPolicy(LIMITS)
    policy.started("A01", 10.0)
    assert policy.active(12.4) == ("A01",)
    assert policy.active(12.5) == ()
    assert policy.next_start_time(12.5) == 13.0


def test_concurrency_above_one() -> None:
    policy = UnlockPolicy(UnlockLimits(max_concurrent=2, gap_s=0.1, pulse_s=1.0))
    policy.started("A01", 0.0)
    assert policy.next_start_time(0.0) == pytest.approx(0.1)
    policy.started("A02", 0.1)
    # A01 ends at 1.0, A02 at 1.1: a start needs a gap after each end before it.
    assert policy.next_start_time(0.2) == pytest.approx(1.2)
    with pytest.raises(DomainError):
        policy.started("A03", 0.5)


def test_same_compartment_while_pulsing_is_refused() -> None:
    policy = UnlockPolicy(LIMITS)
    policy.started("A01", 10.0)
    decision = policy.admit("A01", 10.2)
    assert isinstance(decision, Refused)
    assert decision.code is ErrorCode.ALREADY_PULSING
    assert decision.retry_after == pytest.approx(2.3)


def test_cooldown() -> None:
    policy = UnlockPolicy(LIMITS)
    policy.started("A01", 10.0)
    policy.finished("A01", 10.5)
    decision = policy.admit("A01", 11.0)
    assert isinstance(decision, Refused)
    assert decision.code is ErrorCode.COOLDOWN
    assert decision.retry_after == pytest.approx(1.5)
    err = decision.to_error()
    assert err.code is ErrorCode.COOLDOWN
    assert err.field == "compartment"
    with pytest.raises(DomainError) as raised:
        policy.started("A01", 11.0)
    assert raised.value.code is ErrorCode.COOLDOWN
    assert isinstance(policy.admit("A01", 12.5), Admit)


def test_rate_limit_sliding_window() -> None:
    policy = UnlockPolicy(LIMITS)
    for t in (0.0, 10.0, 20.0):
        policy.started("A01", t)
        policy.finished("A01", t + 0.5)
    decision = policy.admit("A01", 30.0)
    assert isinstance(decision, Refused)
    assert decision.code is ErrorCode.RATE_LIMITED
    assert decision.retry_after == pytest.approx(30.0)
    assert isinstance(policy.admit("A02", 30.0), Admit)  # per compartment
    assert isinstance(policy.admit("A01", 60.0), Admit)  # the 0.0 start left the window


def test_finished_is_idempotent_and_tolerates_unknown() -> None:
    policy = UnlockPolicy(LIMITS)
    policy.finished("A01", 1.0)
    policy.started("A01", 2.0)
    policy.finished("A01", 2.5)
    policy.finished("A01", 2.6)
    assert policy.active(2.6) == ()


# -- stateful ----------------------------------------------------------------------------

COMPARTMENTS = ["A01", "A02", "A03"]
STATEFUL_LIMITS = UnlockLimits(
    max_concurrent=2,
    gap_s=0.2,
    cooldown_s=1.5,
    max_pulses=3,
    rate_window_s=20.0,
    pulse_s=0.5,
    max_pulse_s=1.0,
    stale_after_s=1.0,
)


@dataclass
class _Recorded:
    compartment: str
    start: float
    duration: float
    finished_at: float | None = None

    def end(self) -> float:
        natural = self.start + self.duration
        if self.finished_at is None:
            return natural + STATEFUL_LIMITS.stale_after_s
        return max(self.finished_at, natural)


class UnlockPolicyMachine(RuleBasedStateMachine):
    """A queue that behaves or misbehaves; the recorded starts must respect every limit."""

    def __init__(self) -> None:
        super().__init__()
        self.policy = UnlockPolicy(STATEFUL_LIMITS)
        self.now = 0.0
        self.pulses: list[_Recorded] = []

    def _check_start(self, compartment: str, start: float, duration: float) -> None:
        limits = STATEFUL_LIMITS
        assert duration <= limits.max_pulse_s
        energised = [p for p in self.pulses if p.end() > start]
        assert len(energised) < limits.max_concurrent, "too many solenoids at once"
        for p in self.pulses:
            assert start >= p.start + limits.gap_s - 1e-9, "gap after a start violated"
            if p.end() <= start:
                assert start >= p.end() + limits.gap_s - 1e-9, "gap after an end violated"
            if p.compartment == compartment:
                assert start >= p.end() + limits.cooldown_s - 1e-9, "cooldown violated"
        recent = [
            p
            for p in self.pulses
            # A start leaves the window once start + window <= now (the policy's own sum:
            # now - window would round differently at the boundary).
            if p.compartment == compartment and p.start + limits.rate_window_s > start
        ]
        assert len(recent) < limits.max_pulses, "rate limit violated"

    @rule(dt=st.sampled_from([0.05, 0.2, 0.5, 1.0, 3.0, 10.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(compartment=st.sampled_from(COMPARTMENTS), duration=st.sampled_from([None, 0.3, 5.0]))
    def well_behaved_start(self, compartment: str, duration: float | None) -> None:
        decision = self.policy.admit(compartment, self.now, duration)
        if isinstance(decision, Refused):
            assert decision.retry_after > 0 or decision.code is ErrorCode.ALREADY_PULSING
            return
        assert decision.start_at >= self.now
        unfinished = any(p.finished_at is None and p.end() > self.now for p in self.pulses)
        self.now = decision.start_at
        try:
            grant = self.policy.started(compartment, self.now, duration)
        except DomainError as err:
            refusal = err.code
        else:
            self._record(grant)
            return
        # Only a pulse not reported finished when admitted may make start_at optimistic.
        assert (refusal, unfinished) == (ErrorCode.POWER_BUDGET, True)

    @rule(compartment=st.sampled_from(COMPARTMENTS))
    def careless_start(self, compartment: str) -> None:
        try:
            grant = self.policy.started(compartment, self.now)
        except DomainError:
            return
        self._record(grant)

    def _record(self, grant: PulseGrant) -> None:
        self._check_start(grant.compartment, grant.started_at, grant.duration_s)
        self.pulses.append(_Recorded(grant.compartment, grant.started_at, grant.duration_s))

    @precondition(lambda self: any(p.finished_at is None for p in self.pulses))
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        pulse = data.draw(st.sampled_from([p for p in self.pulses if p.finished_at is None]))
        if pulse.end() <= self.now:
            return  # already stale: the policy settled it
        pulse.finished_at = self.now
        self.policy.finished(pulse.compartment, self.now)

    @invariant()
    def active_never_exceeds_budget(self) -> None:
        assert len(self.policy.active(self.now)) <= STATEFUL_LIMITS.max_concurrent


TestUnlockPolicyMachine = UnlockPolicyMachine.TestCase
TestUnlockPolicyMachine.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
