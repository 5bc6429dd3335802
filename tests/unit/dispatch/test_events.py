"""Dedupe by event id and gap detection by sequence number."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.dispatch import EventTracker, Gap, Verdict


def _event(seq: int, boot: str = "boot-a", event_id: str | None = None) -> dict[str, Any]:
    return {"id": event_id or f"ev-{boot}-{seq}", "seq": seq, "boot_id": boot, "kind": "x"}


def test_in_order_events_are_new_and_repeats_are_duplicates() -> None:
    tracker = EventTracker()
    assert [tracker.accept(_event(s)) for s in (1, 2, 3)] == [Verdict.NEW] * 3
    assert tracker.accept(_event(2)) is Verdict.DUPLICATE
    summary = tracker.summary()
    assert summary["unique"] == 3
    assert summary["duplicates"] == 1
    assert summary["missing"] == []
    assert summary["boots"] == {"boot-a": {"first_seq": 1, "last_seq": 3, "count": 3}}


def test_a_jump_is_a_gap_reported_once_and_filled_by_late_events() -> None:
    gaps: list[Gap] = []
    tracker = EventTracker(on_gap=gaps.append)
    tracker.accept(_event(1))
    assert tracker.accept(_event(5)) is Verdict.NEW
    assert gaps == [Gap(2, 4, 5, "boot-a")]
    assert gaps[0].size == 3
    assert tracker.missing == [2, 3, 4]
    assert tracker.accept(_event(3)) is Verdict.LATE
    assert tracker.accept(_event(3)) is Verdict.DUPLICATE
    assert tracker.missing == [2, 4]
    assert len(gaps) == 1


def test_after_seq_detects_a_gap_before_the_first_event() -> None:
    gaps: list[Gap] = []
    tracker = EventTracker(after_seq=10, on_gap=gaps.append)
    tracker.accept(_event(13))
    assert gaps == [Gap(11, 12, 13, "boot-a")]


def test_numbering_continues_across_boots_without_a_gap() -> None:
    tracker = EventTracker()
    tracker.accept(_event(1, "boot-a"))
    tracker.accept(_event(2, "boot-a"))
    assert tracker.accept(_event(3, "boot-b")) is Verdict.NEW
    assert tracker.missing == []
    assert set(tracker.boots) == {"boot-a", "boot-b"}


def test_a_numbering_restarted_under_a_new_boot_is_a_reset_not_a_duplicate() -> None:
    tracker = EventTracker()
    for seq in (1, 2, 3, 5):
        tracker.accept(_event(seq, "boot-a"))
    assert tracker.missing == [4]
    # The store was wiped: the new boot numbers from 1 again.
    assert tracker.accept(_event(1, "boot-b")) is Verdict.NEW
    assert tracker.stats.resets == 1
    assert tracker.missing == []
    assert tracker.accept(_event(2, "boot-b")) is Verdict.NEW


@pytest.mark.parametrize("payload", [
    {}, {"id": "e", "seq": 0}, {"id": "", "seq": 1}, {"id": "e", "seq": "1"},
    {"id": "e", "seq": True}, {"id": 7, "seq": 1},
])
def test_what_is_not_an_event_is_invalid(payload: dict[str, Any]) -> None:
    tracker = EventTracker()
    assert tracker.accept(payload) is Verdict.INVALID
    assert tracker.stats.invalid == 1
    assert tracker.highest is None


def test_memory_of_ids_is_bounded() -> None:
    tracker = EventTracker(remember=2)
    for seq in (1, 2, 3):
        tracker.accept(_event(seq))
    assert len(tracker._seen) == 2


@given(st.permutations(list(range(1, 30))), st.lists(st.integers(1, 29), max_size=20))
def test_any_order_with_repeats_gives_each_event_once_and_no_gap_at_the_end(
    order: list[int], repeats: list[int],
) -> None:
    tracker = EventTracker(after_seq=0)
    delivered = []
    for seq in [*order, *repeats]:
        if tracker.accept(_event(seq)).is_new:
            delivered.append(seq)
    assert sorted(delivered) == list(range(1, 30))
    assert tracker.missing == []
    assert tracker.stats.duplicates == len(repeats)
