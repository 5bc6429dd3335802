from __future__ import annotations

import pytest

from controller.domain.errors import DomainError, ErrorCode
from controller.domain.events import AlarmKind, AlarmSet, DomainEvent, EventKind


def test_event_details_are_read_only_and_serialisable() -> None:
    source = {"a": 1}
    event = DomainEvent(EventKind.DOOR_OPENED, "A01", 2.5, source)
    source["a"] = 2
    assert event.details["a"] == 1
    with pytest.raises(TypeError):
        event.details["b"] = 3  # type: ignore[index]
    assert event.to_dict() == {
        "kind": "door_opened",
        "compartment": "A01",
        "at": 2.5,
        "details": {"a": 1},
        "alarm": None,
    }


def test_alarm_field_required_exactly_for_alarm_events() -> None:
    with pytest.raises(ValueError, match="alarm"):
        DomainEvent(EventKind.ALARM_RAISED, "A01", 0.0)
    with pytest.raises(ValueError, match="alarm"):
        DomainEvent(EventKind.DOOR_OPENED, "A01", 0.0, alarm=AlarmKind.DOOR_AJAR)


def test_alarm_set_raises_and_clears_once() -> None:
    alarms = AlarmSet("A01", base_details={"zone": "chilled"})
    raised = alarms.raise_(AlarmKind.DOOR_AJAR, 10.0, {"open_s": 60})
    assert len(raised) == 1
    assert raised[0].details == {"zone": "chilled", "open_s": 60}
    assert alarms.raise_(AlarmKind.DOOR_AJAR, 11.0) == []
    assert alarms.is_active(AlarmKind.DOOR_AJAR)
    cleared = alarms.clear(AlarmKind.DOOR_AJAR, 15.0)
    assert cleared[0].kind is EventKind.ALARM_CLEARED
    assert cleared[0].details["active_s"] == 5.0
    assert alarms.clear(AlarmKind.DOOR_AJAR, 16.0) == []
    assert alarms.active == frozenset()


def test_domain_error_is_structured() -> None:
    err = DomainError(ErrorCode.WRONG_STATE, "not now", field="args.compartment")
    assert isinstance(err, ValueError)
    assert err.to_dict() == {
        "code": "wrong_state",
        "message": "not now",
        "field": "args.compartment",
    }
    assert "wrong_state" in str(err)
    assert "wrong_state" in repr(err)
