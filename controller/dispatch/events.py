"""Event bookkeeping for dispatch: dedupe by event id, gap detection by sequence number.

A cabinet delivers its ``events`` at least once (QoS 1 from a durable outbox): after a
lost acknowledgement, a broker restart or a daemon crash the same event can arrive again.
Each event carries a unique ``id``, the ``boot_id`` of the daemon that produced it and a
``seq`` that is gap-free and increasing per cabinet, across restarts (it is stored with
the outbox). So dispatch:

* **dedupes** on ``id``: an id already seen is a duplicate, to be dropped (the tracker
  remembers the last ``remember`` ids, far more than a cabinet can replay);
* **detects gaps** on ``seq``: a jump from ``n`` to ``n + k`` means ``k - 1`` events are
  missing *so far*; they usually arrive later (QoS 1 redelivery after a reconnect can
  reorder), which fills the gap. A gap still open when you look is an event not received.
  ``on_gap`` is called once per jump, with the missing range and the boot it was seen in;
* notes, per boot, the first and last sequence number seen and how many events came;
* notes a **reset**: a new id with a sequence number already passed, from a boot other
  than the one that passed it, means the cabinet's store was replaced (a new SD card, a
  wiped Redis): the numbering starts again and gaps before it are abandoned.

Give ``after_seq`` (the last sequence number your own records hold for this cabinet) to
detect a gap before the first event this tracker sees; without it the first event starts
the count. Pure bookkeeping: no I/O, no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["BootSpan", "EventTracker", "Gap", "Verdict"]


class Verdict(StrEnum):
    """What :meth:`EventTracker.accept` made of an event."""

    NEW = "new"
    """First time seen, in order (or the first event of all)."""
    LATE = "late"
    """First time seen, filling a gap: deliver it."""
    DUPLICATE = "duplicate"
    """Its id was seen before: drop it."""
    INVALID = "invalid"
    """No usable ``id`` or ``seq``: not an event of the contract."""

    @property
    def is_new(self) -> bool:
        return self in (Verdict.NEW, Verdict.LATE)


@dataclass(frozen=True, slots=True)
class Gap:
    """Events ``first``..``last`` (inclusive) were missing when ``seen_seq`` arrived."""

    first: int
    last: int
    seen_seq: int
    boot_id: str

    @property
    def size(self) -> int:
        return self.last - self.first + 1


@dataclass(slots=True)
class BootSpan:
    """The events of one boot this tracker received."""

    boot_id: str
    first_seq: int
    last_seq: int
    count: int = 0


@dataclass(slots=True)
class _Stats:
    received: int = 0
    unique: int = 0
    duplicates: int = 0
    late: int = 0
    invalid: int = 0
    resets: int = 0
    gaps: list[Gap] = field(default_factory=list)


class EventTracker:
    """Dedupe and gap detection for the events of one cabinet. See the module docstring."""

    def __init__(
        self,
        *,
        after_seq: int | None = None,
        on_gap: Callable[[Gap], None] | None = None,
        remember: int = 100_000,
    ) -> None:
        if remember < 1:
            raise ValueError("remember must be at least 1")
        self.highest: int | None = after_seq
        self.on_gap = on_gap
        self._remember = remember
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._missing: set[int] = set()
        self._highest_boot: str | None = None
        self.boots: dict[str, BootSpan] = {}
        self.stats = _Stats()

    def accept(self, payload: Mapping[str, Any]) -> Verdict:
        """Judge one received event payload (and remember it)."""
        self.stats.received += 1
        event_id, seq = payload.get("id"), payload.get("seq")
        boot_id = str(payload.get("boot_id") or "")
        if (not isinstance(event_id, str) or not event_id or not isinstance(seq, int)
                or isinstance(seq, bool) or seq < 1):
            self.stats.invalid += 1
            return Verdict.INVALID
        if event_id in self._seen:
            self._seen.move_to_end(event_id)
            self.stats.duplicates += 1
            return Verdict.DUPLICATE
        self._seen[event_id] = seq
        if len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        verdict = self._place(seq, boot_id)
        self.stats.unique += 1
        if verdict is Verdict.LATE:
            self.stats.late += 1
        span = self.boots.get(boot_id)
        if span is None:
            self.boots[boot_id] = BootSpan(boot_id, seq, seq, 1)
        else:
            span.first_seq = min(span.first_seq, seq)
            span.last_seq = max(span.last_seq, seq)
            span.count += 1
        return verdict

    def _place(self, seq: int, boot_id: str) -> Verdict:
        if self.highest is None or seq == self.highest + 1:
            self._advance(seq, boot_id)
            return Verdict.NEW
        if seq > self.highest + 1:
            gap = Gap(self.highest + 1, seq - 1, seq, boot_id)
            self._missing.update(range(gap.first, gap.last + 1))
            self.stats.gaps.append(gap)
            self._advance(seq, boot_id)
            if self.on_gap is not None:
                self.on_gap(gap)
            return Verdict.NEW
        if seq in self._missing:
            self._missing.discard(seq)
            return Verdict.LATE
        if self._highest_boot is not None and boot_id != self._highest_boot:
            # A number already passed, a new id, another boot: the store was replaced and
            # the numbering started again. What was missing before will not come.
            self.stats.resets += 1
            self._missing.clear()
            self._advance(seq, boot_id)
            return Verdict.NEW
        # A new id under a number already delivered, in the same boot: not the contract's
        # behaviour; deliver it (it is not a duplicate) and count it as late.
        return Verdict.LATE

    def _advance(self, seq: int, boot_id: str) -> None:
        self.highest = seq
        self._highest_boot = boot_id

    @property
    def missing(self) -> list[int]:
        """Sequence numbers skipped and not (yet) received, in order."""
        return sorted(self._missing)

    def summary(self) -> dict[str, Any]:
        """Counters and open gaps, as plain data (for reports)."""
        s = self.stats
        return {
            "received": s.received, "unique": s.unique, "duplicates": s.duplicates,
            "late": s.late, "invalid": s.invalid, "resets": s.resets,
            "gaps_seen": len(s.gaps), "missing": self.missing, "highest_seq": self.highest,
            "boots": {b.boot_id: {"first_seq": b.first_seq, "last_seq": b.last_seq,
                                  "count": b.count} for b in self.boots.values()},
        }
