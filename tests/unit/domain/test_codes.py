from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.domain.codes import CodeHash, OrderCode, PickupCode
from controller.domain.errors import DomainError, ErrorCode
from controller.domain.lockout import LockoutLimits, WrongCodeLockout

SALT = bytes(range(16))


def fast_hash(code: str) -> CodeHash:
    return CodeHash.create(PickupCode(code), SALT, n=2**10)


def test_code_is_normalised_and_hidden() -> None:
    code = PickupCode(" 48a7-x9 ")
    assert code == PickupCode("48A7X9")
    assert "48A7X9" not in repr(code)
    assert "48A7X9" not in str(code)
    assert f"{code}" == "PickupCode(<hidden>)"
    assert code.secret_bytes() == b"48A7X9"


@pytest.mark.parametrize("raw", ["", "12", "ab!cd", "x" * 33])
def test_bad_codes_are_rejected(raw: str) -> None:
    with pytest.raises(DomainError) as err:
        PickupCode(raw)
    assert err.value.code is ErrorCode.INVALID_ARGUMENT
    assert raw not in err.value.message or raw == ""


def test_hash_matches_only_its_code_and_round_trips() -> None:
    h = CodeHash.create(PickupCode("123456"), SALT)  # default scrypt parameters
    assert h.matches(PickupCode("123456"))
    assert not h.matches(PickupCode("123457"))
    assert CodeHash.from_dict(h.to_dict()) == h
    assert h.digest.hex() not in repr(h)


def test_same_code_different_salt_different_digest() -> None:
    a = CodeHash.create(PickupCode("123456"), SALT, n=2**10)
    b = CodeHash.create(PickupCode("123456"), bytes(16), n=2**10)
    assert a.digest != b.digest


def test_hash_validation() -> None:
    with pytest.raises(DomainError):
        CodeHash(b"short", bytes(32))
    with pytest.raises(DomainError):
        CodeHash.from_dict({"algorithm": "md5"})
    with pytest.raises(DomainError):
        CodeHash.from_dict({"algorithm": "scrypt", "salt": "zz", "digest": "00"})


def test_single_use_with_reopen_grace() -> None:
    order = OrderCode("o-1", fast_hash("123456"), reopen_grace_s=120.0)
    first = order.use(PickupCode("123456"), 10.0)
    assert (first.reopen, first.used_at) == (False, 10.0)
    assert order.used_at == 10.0
    again = order.use(PickupCode("123456"), 100.0)
    assert again.reopen is True
    with pytest.raises(DomainError) as err:
        order.use(PickupCode("123456"), 131.0)
    assert err.value.code is ErrorCode.CODE_USED


def test_wrong_code_changes_nothing() -> None:
    order = OrderCode("o-1", fast_hash("123456"))
    with pytest.raises(DomainError) as err:
        order.use(PickupCode("654321"), 10.0)
    assert err.value.code is ErrorCode.WRONG_CODE
    assert order.used_at is None


def test_order_code_round_trip_keeps_no_clear_code() -> None:
    order = OrderCode("o-1", fast_hash("123456"))
    order.use(PickupCode("123456"), 10.0)
    data = order.to_dict()
    assert "123456" not in repr(data)
    back = OrderCode.from_dict(data)
    assert back.used_at == 10.0
    assert back.use(PickupCode("123456"), 20.0).reopen


# -- lockout -----------------------------------------------------------------------------


def test_lockout_after_five_wrong_codes() -> None:
    lockout = WrongCodeLockout()
    for i in range(4):
        assert lockout.wrong_code("lane-1", "o-1", now=float(i)) == 0.0
        lockout.check("lane-1", "o-1", now=float(i))
    assert lockout.wrong_code("lane-1", "o-1", now=4.0) == 60.0
    with pytest.raises(DomainError) as err:
        lockout.check("lane-1", now=10.0)
    assert err.value.code is ErrorCode.LOCKED_OUT
    with pytest.raises(DomainError):
        lockout.check("lane-2", "o-1", now=10.0)  # the order is locked on any lane
    lockout.check("lane-1", now=64.0)


def test_lockout_escalates_and_is_capped() -> None:
    lockout = WrongCodeLockout(LockoutLimits(max_attempts=1, lockout_s=60, max_lockout_s=200))
    assert lockout.wrong_code("k", now=0.0) == 60.0
    assert lockout.wrong_code("k", now=100.0) == 120.0
    assert lockout.wrong_code("k", now=300.0) == 200.0
    lockout.right_code("k")
    assert lockout.wrong_code("k", now=600.0) == 60.0


def test_lockout_survives_a_restart_with_another_clock() -> None:
    lockout = WrongCodeLockout()
    for i in range(5):
        lockout.wrong_code("lane-1", now=1000.0 + i)
    data = lockout.to_dict(now=1010.0)  # 54 s left
    restored = WrongCodeLockout.from_dict(data, now=5.0)  # monotonic clock restarted
    assert restored.remaining("lane-1", 5.0) == pytest.approx(54.0)
    with pytest.raises(DomainError):
        restored.check("lane-1", now=50.0)
    restored.check("lane-1", now=59.0)
    assert restored.to_dict(59.0)["lane-1"]["lockouts"] == 1


def test_lockout_limits_validation() -> None:
    with pytest.raises(DomainError):
        LockoutLimits(max_attempts=0)
    with pytest.raises(DomainError):
        LockoutLimits(lockout_s=0)
    with pytest.raises(DomainError):
        LockoutLimits(escalation=0.5)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(0, 100)), max_size=40))
def test_never_more_than_max_attempts_between_lockouts(steps: list[tuple[bool, float]]) -> None:
    lockout = WrongCodeLockout(LockoutLimits(max_attempts=3, lockout_s=10))
    now, wrong_in_a_row = 0.0, 0
    for wrong, dt in steps:
        now += dt
        try:
            lockout.check("k", now=now)
        except DomainError:
            continue  # a locked key gets no attempt at all
        if wrong:
            wrong_in_a_row += 1
            lockout.wrong_code("k", now=now)
            assert wrong_in_a_row < 3 or lockout.remaining("k", now) > 0
            if wrong_in_a_row == 3:
                wrong_in_a_row = 0
        else:
            lockout.right_code("k")
            wrong_in_a_row = 0
