from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.domain.codes import PickupCode, check_issued
from controller.domain.errors import DomainError, ErrorCode
from controller.domain.lockout import BudgetLimits, CodeBudget


def test_code_is_normalised_and_hidden() -> None:
    code = PickupCode(" 48a7-x9 ")
    assert code == PickupCode("48A7X9")
    assert "48A7X9" not in repr(code)
    assert "48A7X9" not in str(code)
    assert f"{code}" == "PickupCode(<hidden>)"
    assert code.secret_bytes() == b"48A7X9"
    assert not code.is_long
    assert PickupCode("K7QW-2M9X-TR4P-Z8HA").is_long


@pytest.mark.parametrize("raw", ["", "12", "ab!cd", "x" * 65])
def test_bad_entries_are_rejected(raw: str) -> None:
    with pytest.raises(DomainError) as err:
        PickupCode(raw)
    assert err.value.code is ErrorCode.INVALID_ARGUMENT
    assert raw not in err.value.message or raw == ""


@pytest.mark.parametrize("raw", ["4820193375", "482019337512345", "K7QW2M9XTR4PZ8HA",
                                 "K7QW2M9XTR4PZ8HAB3NV6Y5JD2LC9GFE4TS8RMXQ7WK3PZ2HDN5VB9CJ6LF4YG8T"])
def test_issued_codes_are_keypad_or_qr(raw: str) -> None:
    assert check_issued(raw) == PickupCode(raw)


@pytest.mark.parametrize("raw", ["123456", "482019337", "K7QW2M9XTR4PZ8H",
                                 "k7qw2m9xtr4pz8ha", "K7QW-2M9X-TR4P-Z8HA", "A" * 65, ""])
def test_weak_or_unnormalised_issued_codes_are_refused(raw: str) -> None:
    with pytest.raises(DomainError) as err:
        check_issued(raw, field="codes[0]")
    assert err.value.code is ErrorCode.INVALID_ARGUMENT
    assert err.value.field == "codes[0]"


# -- the wrong-code budget ----------------------------------------------------------------


def test_budget_slows_short_codes_once_spent_and_refills_one_per_period() -> None:
    budget = CodeBudget(BudgetLimits(burst=3, refill_s=60.0, min_interval_s=0.0), at=0.0)
    assert not budget.wrong(0.0)
    assert not budget.wrong(1.0)
    assert budget.wrong(2.0)  # spent: the third wrong code
    assert budget.wait(2.0, short=True) == pytest.approx(60.0 - 2 / 60 * 60, abs=2.1)
    assert budget.wait(2.0, short=False) == 0.0  # a long code is always checked
    assert budget.wait(70.0, short=True) == 0.0
    assert budget.wrong(70.0)  # one back, one spent
    assert not budget.full(70.0)
    assert budget.full(70.0 + 180.0)


def test_budget_min_interval_holds_every_entry() -> None:
    budget = CodeBudget(BudgetLimits(min_interval_s=0.25), at=0.0)
    assert budget.pace(10.0) == 0.0
    budget.checked(10.0)
    assert budget.pace(10.1) == pytest.approx(0.15)
    assert budget.pace(10.3) == 0.0
    assert budget.wait(10.1, short=True) == 0.0  # pacing is not a refusal


def test_budget_survives_a_restart_with_another_clock() -> None:
    limits = BudgetLimits(burst=5, refill_s=60.0)
    budget = CodeBudget(limits, at=1000.0)
    for i in range(5):
        budget.wrong(1000.0 + i)
    data = budget.to_dict(now=1010.0)
    restored = CodeBudget.from_dict(data, now=5.0, elapsed_s=30.0, limits=limits)
    assert restored.tokens(5.0) == pytest.approx(budget.tokens(1040.0), abs=1e-3)
    assert restored.wrong_total == 5


def test_budget_limits_validation() -> None:
    for bad in ({"burst": 0}, {"refill_s": 0}, {"min_interval_s": -1}):
        with pytest.raises(DomainError):
            BudgetLimits(**bad)  # type: ignore[arg-type]
    assert BudgetLimits().checks_per_day() == pytest.approx(1445)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 400), max_size=80))
def test_never_more_short_checks_than_the_bound(gaps: list[float]) -> None:
    """Whatever a guesser does, at most burst + elapsed / refill_s wrong short codes are
    checked."""
    limits = BudgetLimits(burst=5, refill_s=60.0, min_interval_s=0.0)
    budget = CodeBudget(limits, at=0.0)
    now, checked = 0.0, 0
    for gap in gaps:
        now += gap
        if budget.wait(now, short=True) > 0:
            continue
        budget.checked(now)
        checked += 1
        budget.wrong(now)
        assert checked <= limits.burst + now / limits.refill_s + 1e-9
