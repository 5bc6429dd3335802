"""The one error the domain raises: :class:`DomainError`, with a machine-readable code.

A rejected operation raises :class:`DomainError` *before* changing anything, so the caller
can turn it into a structured reply (``{"code", "message", "field"}``) and carry on::

    DomainError (ValueError)
       .code     one of :class:`ErrorCode` (stable strings, part of the MQTT contract)
       .message  a sentence for a human
       .field    the argument at fault, when one is (``"args.compartment"``), else None
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DomainError", "ErrorCode"]


class ErrorCode(StrEnum):
    """Stable codes of rejected domain operations."""

    UNKNOWN_COMPARTMENT = "unknown_compartment"
    COMPARTMENT_BLOCKED = "compartment_blocked"
    COMPARTMENT_FAULT = "compartment_fault"
    NOT_ASSIGNED = "not_assigned"
    WRONG_STATE = "wrong_state"
    ORDER_EXPIRED = "order_expired"
    PICKUP_NOT_OPEN = "pickup_not_open"
    ORDER_ALREADY_ASSIGNED = "order_already_assigned"
    NO_COMPARTMENT_AVAILABLE = "no_compartment_available"
    ZONE_OUT_OF_RANGE = "zone_out_of_range"
    WRONG_POOL = "wrong_pool"
    INVALID_ARGUMENT = "invalid_argument"
    POWER_BUDGET = "power_budget"
    COOLDOWN = "cooldown"
    RATE_LIMITED = "rate_limited"
    ALREADY_PULSING = "already_pulsing"
    WRONG_CODE = "wrong_code"
    CODE_USED = "code_used"
    LOCKED_OUT = "locked_out"
    STAFF_ONLY = "staff_only"


class DomainError(ValueError):
    """A domain operation was refused; nothing was changed."""

    def __init__(self, code: ErrorCode, message: str, *, field: str | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.field = field
        #: When asking again may succeed (a lock's cooldown, its pulse rate limit).
        self.retry_after_s = retry_after_s

    def to_dict(self) -> dict[str, str | None]:
        """The structured error of a reply: ``{"code", "message", "field"}``."""
        return {"code": self.code.value, "message": self.message, "field": self.field}

    def __repr__(self) -> str:
        return f"DomainError({self.code.value!r}, {self.message!r}, field={self.field!r})"
