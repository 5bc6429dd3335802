"""Trivial pickup codes are refused when dispatch issues them (``check_issued``): the
first codes a guesser types at the lane must never open a door."""

from __future__ import annotations

import secrets

import pytest

from controller.domain.codes import check_issued, is_trivial
from controller.domain.errors import DomainError, ErrorCode

TRIVIAL = [
    "0000000000", "9999999999", "111111111111111",  # one digit repeated
    "1212121212", "9090909090",  # two alternating
    "0123456789", "1234567890", "3456789012", "012345678901234",  # runs up, wrapping
    "9876543210", "0987654321", "543210987654",  # runs down
    "AAAAAAAAAAAAAAAA", "ABABABABABABABAB",  # QR: repeated
    "ABCDEFGHIJKLMNOP", "ZYXWVUTSRQPONMLK", "0123456789ABCDEF",  # QR: runs
]


@pytest.mark.parametrize("code", TRIVIAL)
def test_a_trivial_code_is_refused_at_issue(code: str) -> None:
    assert is_trivial(code)
    with pytest.raises(DomainError) as caught:
        check_issued(code, field="codes[0]")
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert caught.value.field == "codes[0]"
    assert "trivial" in caught.value.message


@pytest.mark.parametrize("code", ["5830019274", "1234567899", "0123456780", "1122334455",
                                  "DEP7QRCODE4X9T2K8", "ABCDEFGHIJKLMNOQ"])
def test_codes_that_are_not_trivial_are_accepted(code: str) -> None:
    assert not is_trivial(code)
    check_issued(code)


def test_random_codes_are_almost_never_trivial() -> None:
    # 10 digits: 10 + 90 + 20 trivial codes out of 10**10; a draw of 2 000 finds none.
    for _ in range(2000):
        code = f"{secrets.randbelow(10**10):010d}"
        if is_trivial(code):  # pragma: no cover - one chance in 8 * 10**7
            pytest.fail(f"a random draw counted as trivial: {code}")
