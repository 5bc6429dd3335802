"""Tenant rules at the lane: which code may open which compartment, for what.

Pure: no I/O, no asyncio; times come in as arguments (wall times for an order's expiry,
monotonic ones for the reopen grace: decision 0009).

- A code belongs to one order, and the order to one tenant pool; it opens only the
  compartment that holds that order, and only if that compartment belongs to the same
  pool (:func:`check_pool`: a carrier's code never opens a shop's compartment, even if
  a stale record pointed it there).
- A *deposit* code opens for a deposit (reserved, or loaded to add goods); a *collect*
  code opens for a collection. An expired order opens for staff retrieval only
  (``staff_only``): a customer's or courier's code is refused.
- A code is single use (:func:`code_use`): its first use is recorded before the door
  opens; within the tenant's ``reopen_grace_s`` of that first use the same code reopens
  (a forgotten bag); after it the code is ``code_used``. The grace runs on the monotonic
  clock, like every timer that decides whether a door opens: a step of the wall clock
  (NTP answering after a power cut) neither extends nor ends it. A use whose monotonic
  instant is not known (made before a restart of the daemon, or by another process) has
  no grace left.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from controller.domain.compartment import CompartmentState, OpenPurpose
from controller.domain.errors import DomainError, ErrorCode

__all__ = ["CodePurpose", "CodeUseDecision", "check_open", "check_pool", "code_use"]


class CodePurpose(StrEnum):
    """What a code is for (the contract's ``purpose``)."""

    DEPOSIT = "deposit"
    COLLECT = "collect"

    @property
    def open_purpose(self) -> OpenPurpose:
        return OpenPurpose.DEPOSIT if self is CodePurpose.DEPOSIT else OpenPurpose.COLLECTION


@dataclass(frozen=True, slots=True)
class CodeUseDecision:
    """A code may open: first use, or a reopen within the grace of its first use
    (``first_used_mono``, the monotonic instant of that first use)."""

    reopen: bool
    first_used_mono: float


def check_pool(order_pool: str, compartment_pool: str) -> None:
    """Raise ``wrong_pool`` unless the order's tenant owns the compartment."""
    if order_pool != compartment_pool:
        raise DomainError(
            ErrorCode.WRONG_POOL,
            "this code belongs to another tenant's compartment",
            field="code",
        )


def check_open(
    purpose: CodePurpose, phase: CompartmentState, expires_at: float, now: float
) -> None:
    """Raise unless a code of ``purpose`` may open a compartment in ``phase``:
    ``staff_only`` once the order expired, ``wrong_state`` for a code of the wrong kind."""
    if phase is CompartmentState.EXPIRED or now >= expires_at:
        raise DomainError(
            ErrorCode.STAFF_ONLY, "order expired: staff retrieval only", field="code"
        )
    allowed = (
        (CompartmentState.RESERVED, CompartmentState.LOADED)
        if purpose is CodePurpose.DEPOSIT
        else (CompartmentState.LOADED, CompartmentState.COLLECTED)
    )
    if phase not in allowed:
        raise DomainError(
            ErrorCode.WRONG_STATE,
            f"a {purpose.value} code does not open a {phase.value} compartment",
            field="code",
        )


def code_use(used: bool, first_used_mono: float | None, now_mono: float,
             reopen_grace_s: float) -> CodeUseDecision:
    """First use (not ``used``), a reopen within the grace, or ``code_used``.

    ``first_used_mono``: the monotonic instant of the first use, when known; a used code
    whose first use is not known, or was longer than the grace ago, is ``code_used``. A
    monotonic reading earlier than the first use (never, on one clock) is no reopen either.
    """
    if not used:
        return CodeUseDecision(reopen=False, first_used_mono=now_mono)
    if first_used_mono is not None and 0.0 <= now_mono - first_used_mono <= reopen_grace_s:
        return CodeUseDecision(reopen=True, first_used_mono=first_used_mono)
    raise DomainError(ErrorCode.CODE_USED, "this code was already used", field="code")
