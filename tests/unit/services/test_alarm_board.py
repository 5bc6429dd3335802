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


def test_two_flapping_signals_of_one_compartment_are_two_incidents() -> None:
    board = AlarmBoard()
    for signal, channel in (("door", 0), ("latch", 1)):
        board.feed(PendingEvent("alarm_raised", {"alarm": "sensor_flapping", "signal": signal,
                                                 "board": "locks-a", "channel": channel},
                                1.0, "A01"))
    board.feed(PendingEvent("alarm_cleared", {"alarm": "sensor_flapping", "signal": "door",
                                              "board": "locks-a", "channel": 0}, 2.0, "A01"))
    assert [(a["kind"], a["compartment"]) for a in board.active()] == [
        ("sensor_flapping", "A01")]


def test_an_alarm_restored_at_start_is_listed_once_with_its_first_raise_time() -> None:
    board = AlarmBoard()
    board.restore("compartment_fault", 100.0, compartment="A03")
    board.restore("compartment_fault", 200.0, compartment="A03")  # twice: one entry
    board.feed(PendingEvent("alarm_raised", {"alarm": "compartment_fault"}, 300.0, "A03"))
    [alarm] = board.active()
    assert (alarm["kind"], alarm["compartment"]) == ("compartment_fault", "A03")
    assert alarm["since"].timestamp() == 100.0  # the first raise
    board.feed(PendingEvent("alarm_cleared", {"alarm": "compartment_fault"}, 400.0, "A03"))
    assert board.active() == []
