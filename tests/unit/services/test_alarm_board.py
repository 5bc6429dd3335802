"""The state's list of active alarms keeps one entry per subject, zones included."""

from __future__ import annotations

from controller.services.reporting import AlarmBoard, PendingEvent


def test_two_zones_in_excursion_are_two_alarms() -> None:
    board = AlarmBoard()
    for zone in ("chilled", "frozen"):
        board.feed(PendingEvent("alarm_raised", {"alarm": "temperature", "zone": zone}, 1.0))
    assert sorted(a["zone"] for a in board.active()) == ["chilled", "frozen"]
    board.feed(PendingEvent("alarm_cleared", {"alarm": "temperature", "zone": "chilled"}, 2.0))
    assert [a["zone"] for a in board.active()] == ["frozen"]
