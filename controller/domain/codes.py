"""Pickup codes: what a code may look like, normalised, never shown.

A code as typed or scanned is normalised (spaces and dashes removed, upper case) and lives
only inside a :class:`PickupCode` for the time of a check; its ``repr``/``str`` hide it so
it cannot reach a log by accident.

Two kinds of code are issued (:func:`check_issued`, enforced when dispatch assigns them):

- a **keypad** code: 10 to 15 digits (at least 10**10 possibilities);
- a **QR** code: 16 to 64 letters and digits (dispatch draws them from a CSPRNG; 16
  base32 characters are 80 bits).

Anything shorter is refused at assignment: the lane's guessing bound (docs/security.md)
rests on these lengths. So is a **trivial** code, one a guesser types early whatever its length
(:func:`is_trivial`):

- a code whose most common character fills more than half of it (``0000000001``,
  ``AAAAAAAAAAAAAAAB``);
- a periodic code, any period up to half its length (``1212121212``, ``1234512345``);
- an arithmetic progression through the digits (a keypad code, modulo 10) or through
  ``0-9A-Z`` (a QR code, modulo 36), any constant step: runs up and down by one
  (``0123456789``, ``9876543210``, ``3456789012`` wrapping after 9, ``ABCDEFGHIJKLMNOP``),
  ``1357913579``, ``0369258147``;
- a code that, each run of one repeated character collapsed to a single one, is trivial
  by these rules (``1122334455`` -> ``12345``, ``1234567899`` -> ``123456789``), or that
  collapses to fewer than three characters (``1111122222``);
- a code one character off a periodic code or a progression (``1212121213``,
  ``1234567891``, ``ABCDEFGHIJKLMNOQ``), or two trivial runs of at least four characters
  joined (``0987612345``, ``1234567890ABCDEF``);
- a palindrome (``1234554321``);
- a code holding a date with a year from 1900 to 2099 (``DDMMYYYY``, ``MMDDYYYY``,
  ``YYYYMMDD``: ``0101199001``) or two such years (``1990202500``);
- six characters or more of a keyboard row (QWERTY, QWERTZ, AZERTY) or a keypad walk
  (``1472583690``), forwards or backwards, or a common word (``PASSWORD``).

A code one character off a majority (a character filling exactly half of it,
``0000012345``) is not refused: about 1.5 % of random keypad codes are, for little gain (a
guesser has 10 positions times 9 other digits for each such guess). The share of random
10-digit codes refused by all the rules is measured by ``bench/weak_codes.py``.

An entry at the lane is *long* (:attr:`PickupCode.is_long`) when it has 16 characters or
more: it can only match a QR code, and a guess at one has no practical chance, so the
lane's wrong-code budget only holds back short entries.
"""

from __future__ import annotations

import hmac
import itertools
import re
from dataclasses import dataclass, field

from controller.domain.errors import DomainError, ErrorCode

__all__ = [
    "KEYPAD_DIGITS",
    "LONG_CODE",
    "MAX_ENTRY_CHARS",
    "QR_LENGTH",
    "CodeEntry",
    "PickupCode",
    "check_issued",
    "is_trivial",
    "parse_entry",
]

#: Digits of a keypad code, inclusive.
KEYPAD_DIGITS = (10, 15)
#: Characters of a QR code, inclusive.
QR_LENGTH = (16, 64)
#: An entry this long or longer can only be a QR code.
LONG_CODE = QR_LENGTH[0]
_ENTRY = re.compile(r"[A-Z0-9]{4,64}")
MAX_ENTRY_CHARS = 256
# As the MQTT contract's order ids: what the store and the lockouts can key on.
_ORDER_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def _normalise(raw: str) -> str:
    return re.sub(r"[\s-]", "", raw).upper()


@dataclass(frozen=True, slots=True)
class CodeEntry:
    """What was typed or scanned at the lane, split: the order it names (``None``: any
    order this code could open) and the code text (not yet checked; keep it out of logs)."""

    order_id: str | None
    code_text: str = field(repr=False)


def parse_entry(raw: str, order_id: str | None = None) -> CodeEntry:
    """Split a lane entry into the order and the code.

    A scanned QR may carry ``ORDER:CODE`` (the order part names which order the code is
    for; the last colon splits, since order ids may hold colons). ``order_id`` given by
    the caller wins over any colon in ``raw``. Raises ``invalid_argument`` (nothing is
    counted or changed) for an entry longer than :data:`MAX_ENTRY_CHARS` or an order part
    that is not an order id (``[A-Za-z0-9._:-]{1,64}``): such text cannot name any order,
    so it is refused before a lockout or the store is touched.
    """
    if not isinstance(raw, str) or len(raw) > MAX_ENTRY_CHARS:
        raise DomainError(ErrorCode.INVALID_ARGUMENT,
                          f"an entry is at most {MAX_ENTRY_CHARS} characters", field="code")
    code_text = raw
    if order_id is None and ":" in raw:
        order_part, _, code_text = raw.rpartition(":")
        order_id = order_part.strip() or None
    if order_id is not None and not _ORDER_ID_PATTERN.fullmatch(order_id):
        raise DomainError(ErrorCode.INVALID_ARGUMENT,
                          "the order part is not an order id ([A-Za-z0-9._:-], 1 to 64)",
                          field="order_id")
    return CodeEntry(order_id, code_text)


class PickupCode:
    """A clear pickup code as typed or scanned; normalised (spaces and dashes removed,
    upper case, 4 to 64 letters or digits). Its repr and str never show it."""

    __slots__ = ("_value",)

    def __init__(self, raw: str) -> None:
        value = _normalise(raw)
        if not _ENTRY.fullmatch(value):
            raise DomainError(
                ErrorCode.INVALID_ARGUMENT, "a code is 4 to 64 letters or digits", field="code"
            )
        self._value = value

    @property
    def is_long(self) -> bool:
        """Long enough to be only a QR code (see the module docstring)."""
        return len(self._value) >= LONG_CODE

    def secret_bytes(self) -> bytes:
        """The normalised code as bytes, for the verifier only."""
        return self._value.encode("ascii")

    def __repr__(self) -> str:
        return "PickupCode(<hidden>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PickupCode):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("PickupCode", self._value))


_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def is_trivial(code: str) -> bool:
    """Whether a normalised code is one a guesser tries early (see the module docstring):
    a majority character, a period of at most half its length, a constant step through
    the digits (a keypad code) or ``0-9A-Z`` (a QR code), or any of these once runs of a
    repeated character are collapsed; one character off a periodic code or a progression;
    two trivial runs of at least four joined; a palindrome; a date or two years; a
    keyboard or keypad walk; a common word."""
    if _trivial_shape(code):
        return True
    collapsed = "".join(char for char, _ in itertools.groupby(code))
    if collapsed != code and _trivial_shape(collapsed):
        return True
    return (_one_off_periodic(code) or _one_off_progression(code) or _two_runs(code)
            or code == code[::-1] or _has_date(code) or _has_walk_or_word(code))


def _trivial_shape(code: str) -> bool:
    n = len(code)
    if n < 3:
        return True
    if max(code.count(c) for c in set(code)) * 2 > n:
        return True
    return _run(code)


def _run(code: str) -> bool:
    """A period of at most half the code's length, or a constant step."""
    n = len(code)
    if any(all(code[i] == code[i - p] for i in range(p, n)) for p in range(1, n // 2 + 1)):
        return True
    if any(c not in _ALPHABET for c in code):
        return False
    size = 10 if code.isdigit() else len(_ALPHABET)
    steps = {(_ALPHABET.index(b) - _ALPHABET.index(a)) % size for a, b in itertools.pairwise(code)}
    return len(steps) == 1


def _one_off_periodic(code: str) -> bool:
    """One substitution from a code with a period of at most half its length: in every
    class of positions ``i mod p`` the characters agree, but for one position in all."""
    n = len(code)
    for p in range(1, n // 2 + 1):
        off = 0
        for r in range(p):
            column = code[r::p]
            off += len(column) - max(column.count(c) for c in set(column))
            if off > 1:
                break
        if off <= 1:
            return True
    return False


def _one_off_progression(code: str) -> bool:
    """One substitution from a constant step through the digits or ``0-9A-Z``: for some
    step ``s`` (one of the code's own steps), ``code[i] - s*i`` takes one value at all but
    one position."""
    if any(c not in _ALPHABET for c in code):
        return False
    n = len(code)
    size = 10 if code.isdigit() else len(_ALPHABET)
    values = [_ALPHABET.index(c) for c in code]
    for step in {(b - a) % size for a, b in itertools.pairwise(values)}:
        starts = [(v - step * i) % size for i, v in enumerate(values)]
        if max(starts.count(x) for x in set(starts)) >= n - 1:
            return True
    return False


#: The shortest run :func:`_two_runs` counts as one of the two.
_RUN = 4


def _two_runs(code: str) -> bool:
    """Two runs of at least :data:`_RUN` characters, each periodic or a constant step on
    its own (``0987612345``, ``1234567890ABCDEF``)."""
    return any(_run(code[:k]) and _run(code[k:])
               for k in range(_RUN, len(code) - _RUN + 1))


_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_YEAR = re.compile(r"(?=(19\d\d|20\d\d))")


def _is_date(day: str, month: str) -> bool:
    d, m = int(day), int(month)
    return 1 <= m <= 12 and 1 <= d <= _DAYS[m - 1]


def _has_date(code: str) -> bool:
    """A date with a year from 1900 to 2099 (``DDMMYYYY``, ``MMDDYYYY``, ``YYYYMMDD``) or two
    such years anywhere in the code."""
    if not any(c.isdigit() for c in code):
        return False
    years = [m.start() for m in _YEAR.finditer(code)]
    if any(b - a >= 4 for a, b in itertools.combinations(years, 2)):
        return True
    for at in years:
        before, after = code[max(at - 4, 0):at], code[at + 4:at + 8]
        if len(before) == 4 and before.isdigit() and (
                _is_date(before[:2], before[2:]) or _is_date(before[2:], before[:2])):
            return True
        if len(after) >= 4 and after[:4].isdigit() and _is_date(after[2:4], after[:2]):
            return True
    return False


#: Keyboard rows (QWERTY, QWERTZ, AZERTY) and keypad walks a person types for a code.
_WALKS = ("QWERTYUIOP", "ASDFGHJKL", "ZXCVBNM", "QWERTZUIOP", "YXCVBNM", "AZERTYUIOP",
          "QSDFGHJKLM", "WXCVBN", "1QAZ2WSX3EDC4RFV", "1472583690", "7894561230",
          "1470258369", "7410852963")
#: The shortest piece of a walk that counts.
_WALK_PIECE = 6
_PIECES = frozenset(
    w[i:i + _WALK_PIECE] for walk in _WALKS for w in (walk, walk[::-1])
    for i in range(len(walk) - _WALK_PIECE + 1))
#: Words people choose for a secret, and the product's own words.
_WORDS = ("PASSWORD", "PASSWORT", "MOTDEPASSE", "LETMEIN", "WELCOME", "SECRET", "ADMIN",
          "LOCKER", "PARCEL", "PACKAGE", "PICKUP", "DELIVERY", "ILOVEYOU",
          "MONKEY", "DRAGON", "SUNSHINE", "PRINCESS", "FOOTBALL", "BASEBALL", "MASTER",
          "SHADOW", "QWERTY", "AZERTY")


def _has_walk_or_word(code: str) -> bool:
    """A piece of a keyboard row or keypad walk at least :data:`_WALK_PIECE` long, or a
    common word."""
    if any(code[i:i + _WALK_PIECE] in _PIECES for i in range(len(code) - _WALK_PIECE + 1)):
        return True
    return not code.isdigit() and any(word in code for word in _WORDS)


def check_issued(raw: str, field: str = "code") -> PickupCode:
    """The code dispatch issues, checked: a keypad code (10-15 digits) or a QR code (16-64
    letters and digits), already normalised. ``invalid_argument`` otherwise."""
    lo, hi = KEYPAD_DIGITS
    qlo, qhi = QR_LENGTH
    ok = raw == _normalise(raw) and (
        (raw.isdigit() and lo <= len(raw) <= hi)
        or (qlo <= len(raw) <= qhi and re.fullmatch(r"[A-Z0-9]+", raw) is not None))
    if not ok:
        raise DomainError(
            ErrorCode.INVALID_ARGUMENT,
            f"a code is {lo}-{hi} digits (keypad) or {qlo}-{qhi} upper-case letters and "
            "digits (QR), normalised",
            field=field,
        )
    if is_trivial(raw):
        raise DomainError(
            ErrorCode.INVALID_ARGUMENT,
            "a trivial code (a character filling more than half of it, a repeated pattern, "
            "a constant step such as 0123456789 or 13579..., or one of these with its "
            "characters doubled) is among the first a guesser types: issue a random one",
            field=field,
        )
    return PickupCode(raw)
