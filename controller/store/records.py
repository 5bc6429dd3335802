"""Value objects the store hands out: events, command records, boots, audit entries.

All are frozen dataclasses built from JSON the store wrote itself; none holds a Redis
type. Times are ISO 8601 strings in UTC with milliseconds (``2026-11-22T10:04:05.123Z``),
normalised once when the record is committed and returned unchanged ever after, so a
replayed event carries exactly the time it was first given.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from controller.store.errors import StoreDataError

__all__ = [
    "AlreadySeen",
    "AuditEntry",
    "Boot",
    "CommandRecord",
    "CommandReply",
    "Delivered",
    "Event",
    "NewCommand",
    "NewEvent",
    "ReplyTarget",
    "Timestamp",
    "to_iso",
]

Timestamp = float | int | str | datetime
"""A moment: seconds since the epoch, an ISO 8601 string with a zone, or an aware datetime."""

_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def check_id(value: object, what: str, *, op: str = "") -> str:
    """``value`` if it is a usable identifier (``[A-Za-z0-9._:-]{1,128}``), else StoreDataError."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise StoreDataError(f"{what} must match [A-Za-z0-9._:-]{{1,128}}, got {value!r}", op=op)
    return value


def to_iso(at: Timestamp, *, op: str = "") -> str:
    """Normalise a moment to ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC, milliseconds).

    Raises :class:`StoreDataError` for a naive datetime or string (no zone: ambiguous),
    a non-finite number, or anything else.
    """
    if isinstance(at, bool):
        raise StoreDataError(f"a time cannot be a bool: {at!r}", op=op)
    if isinstance(at, int | float):
        if not math.isfinite(at):
            raise StoreDataError(f"a time must be finite, got {at!r}", op=op)
        moment = datetime.fromtimestamp(at, UTC)
    elif isinstance(at, datetime):
        moment = at
    elif isinstance(at, str):
        try:
            moment = datetime.fromisoformat(at)
        except ValueError as exc:
            raise StoreDataError(f"not an ISO 8601 time: {at!r}", op=op) from exc
    else:
        raise StoreDataError(f"not a time: {at!r}", op=op)
    if moment.tzinfo is None:
        raise StoreDataError(f"a time needs a zone (UTC offset), got {at!r}", op=op)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Event:
    """One event of the outbox, as committed and as published on ``events``.

    ``id`` is unique (uuid4) and never changes, so dispatch dedupes a replay; ``seq`` is the
    cabinet's gap-free sequence number (1, 2, 3... over the whole life of the store, across
    restarts), so dispatch detects a gap; ``boot_id`` is the boot that committed it and
    ``at`` its original time. ``cabinet_clock`` is the cabinet's clock (``{"boot_id",
    "uptime_ms"}``) when the event was committed, in the boot that committed it: stored
    with the event, so a replay after a restart carries the original reading. ``None``
    only for an event stored by a version that did not record it.
    """

    id: str
    seq: int
    kind: str
    at: str
    boot_id: str
    cabinet: str
    compartment: str | None
    data: dict[str, Any]
    cabinet_clock: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object stored in Redis and published (keys as the field names)."""
        out = {
            "id": self.id,
            "seq": self.seq,
            "kind": self.kind,
            "at": self.at,
            "boot_id": self.boot_id,
            "cabinet": self.cabinet,
            "compartment": self.compartment,
            "data": self.data,
        }
        if self.cabinet_clock is not None:
            out["cabinet_clock"] = self.cabinet_clock
        return out

    @classmethod
    def from_dict(cls, raw: Any, *, op: str = "") -> Event:
        try:
            return cls(
                id=str(raw["id"]),
                seq=int(raw["seq"]),
                kind=str(raw["kind"]),
                at=str(raw["at"]),
                boot_id=str(raw["boot_id"]),
                cabinet=str(raw["cabinet"]),
                compartment=None if raw["compartment"] is None else str(raw["compartment"]),
                data=dict(raw["data"]),
                cabinet_clock=_clock_reading(raw.get("cabinet_clock")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreDataError(f"stored event is malformed: {raw!r:.200}", op=op) from exc


def _clock_reading(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    return {"boot_id": str(raw["boot_id"]), "uptime_ms": int(raw["uptime_ms"])}


@dataclass(frozen=True, slots=True)
class Delivered:
    """An event the broker acknowledged, kept in the bounded delivered log for audit."""

    entry_id: str
    event: Event
    acked_at: str


@dataclass(frozen=True, slots=True)
class ReplyTarget:
    """Where a command asked for its reply: the MQTT 5 response topic and correlation data
    of the request (``None`` under MQTT 3.1.1: the cabinet's ``reply`` topic)."""

    topic: str | None = None
    correlation: bytes | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {"topic": self.topic,
                "correlation": None if self.correlation is None
                else base64.b64encode(self.correlation).decode("ascii")}

    @classmethod
    def from_dict(cls, raw: Any) -> ReplyTarget:
        topic = raw.get("topic")
        correlation = raw.get("correlation")
        return cls(topic=str(topic) if topic is not None else None,
                   correlation=None if correlation is None
                   else base64.b64decode(str(correlation), validate=True))


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """What the store knows of one command id.

    ``state`` is ``"in_progress"`` from :meth:`Store.begin_command` until
    :meth:`Store.finish_command` stores the first reply (``"done"``, ``reply`` set).
    ``pulses`` maps each compartment for which a pulse intent was recorded to the time it
    was recorded: a compartment listed there may have been pulsed already, and is never
    pulsed again for this command id. ``reply_to`` is where the request asked for its reply
    (kept with the claim, so a reply a restart interrupted can be sent there).
    """

    id: str
    digest: str
    state: Literal["in_progress", "done"]
    begun_at: str
    boot_id: str | None
    expires: Any
    reply: dict[str, Any] | None = None
    finished_at: str | None = None
    pulses: dict[str, str] = field(default_factory=dict)
    reply_to: ReplyTarget | None = None

    @property
    def finished(self) -> bool:
        return self.state == "done"

    def may_have_pulsed(self, compartment: str) -> bool:
        """True if a pulse intent was recorded for ``compartment`` under this command."""
        return compartment in self.pulses


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to commit with :meth:`Store.commit`: what happened, when, and where.

    ``id``: the event's id, chosen by the caller (``[A-Za-z0-9._:-]{1,128}``, e.g. a
    uuid4) so that a commit whose outcome was lost can be retried without committing it
    twice (see :meth:`Store.commit`); ``None`` lets the store draw a uuid4.
    """

    kind: str
    data: Mapping[str, Any]
    at: Timestamp
    compartment: str | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class CommandReply:
    """A command's reply to store with a commit (:meth:`Store.commit_with_reply`), as
    :meth:`Store.finish_command` stores it alone: ``unpulsed`` are the compartments whose
    recorded pulse intent did not lead to a pulse."""

    command_id: str
    reply: Mapping[str, Any]
    unpulsed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NewCommand:
    """``begin_command`` created the record: this caller owns the command and may act."""

    record: CommandRecord


@dataclass(frozen=True, slots=True)
class AlreadySeen:
    """``begin_command`` found a record for this id: do not act again.

    ``reply`` is the first reply when the command finished, ``None`` while it is in progress
    (or was interrupted by a crash: see ``record.pulses``). ``digest_matches`` is False when
    the id was reused for a different command body, which dispatch should hear about.
    """

    record: CommandRecord
    digest_matches: bool

    @property
    def reply(self) -> dict[str, Any] | None:
        return self.record.reply

    @property
    def in_progress(self) -> bool:
        return not self.record.finished


@dataclass(frozen=True, slots=True)
class Boot:
    """One start of the daemon: a random id, the boot counter and the start time."""

    id: str
    number: int
    started_at: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit log: who did what, when, to which compartment."""

    entry_id: str
    action: str
    actor: str
    at: str
    compartment: str | None
    details: dict[str, Any]
