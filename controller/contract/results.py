"""The ``result`` of each command's ``ok`` reply, by command type.

A reply's envelope is :class:`~controller.contract.messages.Reply`; what ``result`` holds
depends on the command answered. ``python -m controller.contract.schemagen`` writes one
schema per command (``controller/schemas/results/<type>.json``), and the contract test
checks every ok reply a running daemon sends against the schema of its command.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

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

CompartmentId = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9-]{1,8}$")]


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AssignResult(_Result):
    """The compartment the order was assigned to (the cabinet's choice unless named)."""

    compartment: CompartmentId
    order_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]


class ReleaseResult(_Result):
    """The compartment the order left."""

    compartment: CompartmentId
    released: Literal[True]


class BlockResult(_Result):
    """``blocked``: ``true`` after ``block``, ``false`` after ``unblock``."""

    compartment: CompartmentId
    blocked: bool


class ApplyConfigResult(_Result):
    """The configuration's new hash (SHA-256, 64 hex digits; ``status.config_hash`` after
    the restart), the sections changed, and ``restart: true``: the daemon restarts to
    apply it (a new ``boot_id``)."""

    config_hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    sections: list[Literal["timing", "tenants", "zones", "log"]]
    restart: Literal[True]


class ClearLaneLockoutResult(_Result):
    """``cleared: false``: nothing was held back."""

    lane: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
    cleared: bool


class RevokeGrantsResult(_Result):
    """The stored list's serial, how many grants it revokes now (an entry is kept until
    its ``not_after`` or seven days after it was added, whichever is later), and what this
    message did: grants added, grants the list already revoked, and grants sent with a
    ``not_after`` already past (kept all the same, and counted in ``added`` too)."""

    serial: Annotated[int, Field(ge=0)]
    revoked: Annotated[int, Field(ge=0)]
    added: Annotated[int, Field(ge=0)]
    already_revoked: Annotated[int, Field(ge=0)]
    ended: Annotated[int, Field(ge=0)]


RESULTS: dict[str, type[BaseModel]] = {
    "assign": AssignResult,
    "open": OpenResult,
    "release": ReleaseResult,
    "block": BlockResult,
    "unblock": BlockResult,
    "get_state": State,
    "get_clock": ClockReading,
    "apply_config": ApplyConfigResult,
    "clear_lane_lockout": ClearLaneLockoutResult,
    "revoke_grants": RevokeGrantsResult,
}
"""The model of ``result`` in the ok reply to each command type."""
