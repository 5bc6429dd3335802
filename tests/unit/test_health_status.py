"""The systemd status line: the truth at a glance, on one bounded line."""

from __future__ import annotations

from controller.health import MAX_STATUS_CHARS, HealthStatus, health_summary


def test_all_well() -> None:
    text = health_summary({"locks-a": "online", "locks-b": "degraded"}, True, [])
    assert text == "ok: 2/2 boards online, broker connected, no alarm"


def test_a_dark_board_the_broker_and_alarms_are_named() -> None:
    text = health_summary(
        {"locks-a": "online", "locks-b": "offline", "probes": "never_polled"}, False,
        [{"kind": "board_offline", "board": "locks-b", "since": "x"},
         {"kind": "door_ajar", "compartment": "A03", "since": "y"}])
    assert text.startswith("DEGRADED: ")
    assert "boards locks-b, probes offline (1/3 online)" in text
    assert "broker down" in text
    assert "2 alarms: board_offline locks-b, door_ajar A03" in text


def test_the_broker_alone_is_enough_to_be_degraded() -> None:
    assert health_summary({"a": "online"}, False, []).startswith("DEGRADED: broker down")


def test_many_alarms_stay_on_one_bounded_line() -> None:
    alarms = [{"kind": "door_ajar", "compartment": f"A{n:02d}"} for n in range(60)]
    text = health_summary({"a": "online"}, True, alarms)
    assert len(text) <= MAX_STATUS_CHARS
    assert "\n" not in text
    assert text.startswith("DEGRADED: 60 alarms: door_ajar A00")
    assert text.endswith("(more)")


def test_status_is_sent_only_when_it_changes() -> None:
    sent: list[str] = []
    status = HealthStatus(sent.append)
    status.show({"a": "online"}, True, [])
    status.show({"a": "online"}, True, [])
    status.show({"a": "offline"}, True, [])
    status.show({"a": "online"}, True, [])
    assert sent == ["ok: 1/1 boards online, broker connected, no alarm",
                    "DEGRADED: board a offline (0/1 online)",
                    "ok: 1/1 boards online, broker connected, no alarm"]
