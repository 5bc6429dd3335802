"""Pickup codes: checked on the cabinet against salted hashes, single use, never kept clear.

Dispatch pushes, per order, a :class:`CodeHash` (scrypt over the code with a per-order
salt); the clear code exists only inside a :class:`PickupCode` for the time of a check,
and its ``repr``/``str`` hide it so it cannot reach a log by accident.

:class:`OrderCode` holds one order's hash and its use: :meth:`OrderCode.use` verifies the
code and marks it used in the same step (the caller persists that before the door is
pulsed: "marked used before opening"). A used code reopens the compartment within
``reopen_grace_s`` of its first use (a forgotten bag), and is refused after it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.domain.errors import DomainError, ErrorCode

__all__ = [
    "DEFAULT_REOPEN_GRACE_S",
    "MAX_ENTRY_CHARS",
    "CodeEntry",
    "CodeHash",
    "CodeUse",
    "OrderCode",
    "PickupCode",
    "parse_entry",
]

DEFAULT_REOPEN_GRACE_S = 120.0
MAX_ENTRY_CHARS = 256
_CODE_PATTERN = re.compile(r"[A-Z0-9]{4,32}")
# As the MQTT contract's order ids: what the store and the lockouts can key on.
_ORDER_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")


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
    upper case). Its repr and str never show it."""

    __slots__ = ("_value",)

    def __init__(self, raw: str) -> None:
        value = re.sub(r"[\s-]", "", raw).upper()
        if not _CODE_PATTERN.fullmatch(value):
            raise DomainError(
                ErrorCode.INVALID_ARGUMENT, "a code is 4 to 32 letters or digits", field="code"
            )
        self._value = value

    def secret_bytes(self) -> bytes:
        """The normalised code as bytes, for hashing only."""
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


@dataclass(frozen=True, slots=True)
class CodeHash:
    """scrypt(code, salt, n, r, p) as pushed by dispatch. ``repr`` shows no digest."""

    salt: bytes
    digest: bytes
    n: int = 2**14
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        if len(self.salt) < 16:
            raise DomainError(ErrorCode.INVALID_ARGUMENT, "salt must be >= 16 bytes", field="salt")
        if len(self.digest) < 16:
            raise DomainError(ErrorCode.INVALID_ARGUMENT, "digest too short", field="digest")

    @classmethod
    def create(
        cls, code: PickupCode, salt: bytes, *, n: int = 2**14, r: int = 8, p: int = 1
    ) -> CodeHash:
        """Hash ``code`` with ``salt`` (dispatch side, simulator and tests)."""
        return cls(salt, _scrypt(code, salt, n, r, p), n, r, p)

    def matches(self, code: PickupCode) -> bool:
        """Whether ``code`` hashes to this digest (constant-time comparison)."""
        candidate = _scrypt(code, self.salt, self.n, self.r, self.p)
        return hmac.compare_digest(candidate, self.digest)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (hex strings)."""
        return {
            "algorithm": "scrypt",
            "salt": self.salt.hex(),
            "digest": self.digest.hex(),
            "n": self.n,
            "r": self.r,
            "p": self.p,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CodeHash:
        """The inverse of :meth:`to_dict`; ``invalid_argument`` on anything else."""
        if data.get("algorithm") != "scrypt":
            raise DomainError(
                ErrorCode.INVALID_ARGUMENT, "only scrypt code hashes", field="algorithm"
            )
        try:
            return cls(
                bytes.fromhex(str(data["salt"])),
                bytes.fromhex(str(data["digest"])),
                int(data.get("n", 2**14)),
                int(data.get("r", 8)),
                int(data.get("p", 1)),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise DomainError(
                ErrorCode.INVALID_ARGUMENT, f"bad code hash: {exc}", field="code_hash"
            ) from None

    def __repr__(self) -> str:
        return f"CodeHash(scrypt n={self.n} r={self.r} p={self.p})"


def _scrypt(code: PickupCode, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(code.secret_bytes(), salt=salt, n=n, r=r, p=p, maxmem=2**26, dklen=32)


@dataclass(frozen=True, slots=True)
class CodeUse:
    """A code accepted: for ``order_id``, first use or a reopen within the grace."""

    order_id: str
    reopen: bool
    used_at: float


class OrderCode:
    """One order's code hash and its single use."""

    def __init__(
        self,
        order_id: str,
        code_hash: CodeHash,
        *,
        reopen_grace_s: float = DEFAULT_REOPEN_GRACE_S,
        used_at: float | None = None,
    ) -> None:
        self.order_id = order_id
        self.code_hash = code_hash
        self.reopen_grace_s = reopen_grace_s
        self._used_at = used_at

    @property
    def used_at(self) -> float | None:
        """When the code was first used, or None."""
        return self._used_at

    def use(self, code: PickupCode, now: float) -> CodeUse:
        """Check ``code`` and mark it used (persist before pulsing). Raises
        ``wrong_code``, or ``code_used`` after the reopen grace; nothing changes then."""
        if not self.code_hash.matches(code):
            raise DomainError(ErrorCode.WRONG_CODE, "wrong code", field="code")
        if self._used_at is None:
            self._used_at = now
            return CodeUse(self.order_id, reopen=False, used_at=now)
        if now - self._used_at <= self.reopen_grace_s:
            return CodeUse(self.order_id, reopen=True, used_at=self._used_at)
        raise DomainError(ErrorCode.CODE_USED, "this code was already used", field="code")

    def to_dict(self) -> dict[str, Any]:
        """What the store keeps (never the clear code)."""
        return {
            "order_id": self.order_id,
            "code_hash": self.code_hash.to_dict(),
            "reopen_grace_s": self.reopen_grace_s,
            "used_at": self._used_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OrderCode:
        """The inverse of :meth:`to_dict`."""
        used_at = data.get("used_at")
        return cls(
            str(data["order_id"]),
            CodeHash.from_dict(data["code_hash"]),
            reopen_grace_s=float(data.get("reopen_grace_s", DEFAULT_REOPEN_GRACE_S)),
            used_at=None if used_at is None else float(used_at),
        )
