"""The ``result`` of each command's ``ok`` reply, by command type.

A reply's envelope is :class:`~controller.contract.messages.Reply`; what ``result`` holds
depends on the command answered. ``python -m controller.contract.schemagen`` writes one
schema per command (``controller/schemas/results/<type>.json``), and the contract test
checks every ok reply a running daemon sends against the schema of its command.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from controller.contract.constraints import pattern as _pattern
from controller.contract.messages import ClockReading, OpenResult, State

__all__ = [
    "RESULTS",
    "ApplyConfigResult",
    "AssignResult",
    "BlockResult",
    "ClearLaneLockoutResult",
    "ReleaseResult",
    "RevokeGrantsResult",
]

CompartmentId = Annotated[str, _pattern(r"^[A-Z0-9-]{1,8}$")]


class _Result(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The ``result`` of one command's ok reply."""


class AssignResult(_Result, frozen=True, kw_only=True):
    """The compartment the order was assigned to (the cabinet's choice unless named)."""

    compartment: CompartmentId
    order_id: Annotated[str, _pattern(r"^[A-Za-z0-9._:-]{1,64}$")]


class ReleaseResult(_Result, frozen=True, kw_only=True):
    """The compartment the order left."""

    compartment: CompartmentId
    released: Literal[True]


class BlockResult(_Result, frozen=True, kw_only=True):
    """``blocked``: ``true`` after ``block``, ``false`` after ``unblock``."""

    compartment: CompartmentId
    blocked: bool


class ClearFaultResult(_Result, frozen=True, kw_only=True):
    """The compartment whose fault was cleared (a compartment not in fault is refused,
    ``conflict``)."""

    compartment: CompartmentId
    cleared: Literal[True]


class ApplyConfigResult(_Result, frozen=True, kw_only=True):
    """The configuration's new hash (SHA-256, 64 hex digits; ``status.config_hash`` after
    the restart), the sections changed, and ``restart: true``: the daemon restarts to
    apply it (a new ``boot_id``)."""

    config_hash: Annotated[str, _pattern(r"^[0-9a-f]{64}$")]
    sections: list[Literal["timing", "tenants", "zones", "log"]]
    restart: Literal[True]


class ClearLaneLockoutResult(_Result, frozen=True, kw_only=True):
    """``cleared: false``: nothing was held back."""

    lane: Annotated[str, _pattern(r"^[A-Za-z0-9_.:-]{1,64}$")]
    cleared: bool


class RevokeGrantsResult(_Result, frozen=True, kw_only=True):
    """The stored list's serial, how many grants it revokes now (an entry is kept until
    its ``not_after`` or seven days after it was added, whichever is later), and what this
    message did: grants added, grants the list already revoked, and grants sent with a
    ``not_after`` already past (kept all the same, and counted in ``added`` too)."""

    serial: Annotated[int, Meta(ge=0)]
    revoked: Annotated[int, Meta(ge=0)]
    added: Annotated[int, Meta(ge=0)]
    already_revoked: Annotated[int, Meta(ge=0)]
    ended: Annotated[int, Meta(ge=0)]


RESULTS: dict[str, type[msgspec.Struct]] = {
    "assign": AssignResult,
    "open": OpenResult,
    "release": ReleaseResult,
    "block": BlockResult,
    "unblock": BlockResult,
    "clear_fault": ClearFaultResult,
    "get_state": State,
    "get_clock": ClockReading,
    "apply_config": ApplyConfigResult,
    "clear_lane_lockout": ClearLaneLockoutResult,
    "revoke_grants": RevokeGrantsResult,
}
"""The model of ``result`` in the ok reply to each command type."""
