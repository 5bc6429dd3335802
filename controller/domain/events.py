"""Domain events and alarms: what the state machines report instead of doing I/O.

Every transition of a domain machine returns a list of :class:`DomainEvent` value objects,
oldest first. The services persist them (outbox) and publish them; the domain never does.

Alarms are events too: ``kind`` is :attr:`EventKind.ALARM_RAISED` or
:attr:`EventKind.ALARM_CLEARED` and ``alarm`` says which one. :class:`AlarmSet` guarantees
the "once per incident" rule: raising an alarm that is already active returns no event,
clearing one that is not active returns no event, so every raise is matched by at most
one clear and vice versa.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TypeAlias

__all__ = [
    "AlarmKind",
    "AlarmSet",
    "Detail",
    "DomainEvent",
    "EventKind",
]

#: Values allowed in :attr:`DomainEvent.details`: JSON scalars only.
Detail: TypeAlias = str | int | float | bool | None


class EventKind(StrEnum):
    """What happened. Stable strings (part of the MQTT contract)."""

    ALARM_RAISED = "alarm_raised"
    ALARM_CLEARED = "alarm_cleared"
    # door
    UNLOCK_PULSE_SENT = "unlock_pulse_sent"
    UNLOCK_PULSE_ACKED = "unlock_pulse_acked"
    UNLOCK_PULSE_FAILED = "unlock_pulse_failed"
    UNLOCK_PULSE_UNCONFIRMED = "unlock_pulse_unconfirmed"
    DOOR_OPENED = "door_opened"
    DOOR_CLOSED = "door_closed"
    OPEN_NOT_DETECTED = "open_not_detected"
    UNLOCK_UNCONFIRMED = "unlock_unconfirmed"
    # compartment
    COMPARTMENT_ASSIGNED = "compartment_assigned"
    OPEN_REQUESTED = "open_requested"
    COMPARTMENT_LOADED = "compartment_loaded"
    DEPOSIT_EMPTY = "deposit_empty"
    COMPARTMENT_COLLECTED = "compartment_collected"
    COLLECTION_INCOMPLETE = "collection_incomplete"
    COLLECTION_UNCONFIRMED = "collection_unconfirmed"
    COMPARTMENT_FREED = "compartment_freed"
    ORDER_RELEASED = "order_released"
    ORDER_EXPIRED = "order_expired"
    ORDER_RETRIEVED = "order_retrieved"
    COMPARTMENT_BLOCKED = "compartment_blocked"
    COMPARTMENT_UNBLOCKED = "compartment_unblocked"


class AlarmKind(StrEnum):
    """Conditions that stay active until they end; raised once, cleared once per incident."""

    BOARD_OFFLINE = "board_offline"
    SENSOR_UNKNOWN = "sensor_unknown"
    SENSOR_FLAPPING = "sensor_flapping"
    FORCED_OPEN = "forced_open"
    DOOR_AJAR = "door_ajar"
    COMPARTMENT_FAULT = "compartment_fault"


def _frozen(details: Mapping[str, Detail] | None) -> Mapping[str, Detail]:
    return MappingProxyType(dict(details or {}))


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """One fact reported by the domain.

    ``compartment`` is the compartment id, or None for cabinet-level facts (a board
    offline names its board in ``details["board"]``). ``at`` is the time of the fact in
    the caller's clock. ``alarm`` is set exactly when ``kind`` is an alarm raise/clear.
    """

    kind: EventKind
    compartment: str | None
    at: float
    details: Mapping[str, Detail] = field(default_factory=lambda: _frozen(None))
    alarm: AlarmKind | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "details", _frozen(self.details))
        is_alarm_kind = self.kind in (EventKind.ALARM_RAISED, EventKind.ALARM_CLEARED)
        if is_alarm_kind != (self.alarm is not None):
            raise ValueError(f"{self.kind}: alarm must be set exactly for alarm events")

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict: ``kind``, ``compartment``, ``at``, ``details`` and ``alarm``."""
        return {
            "kind": self.kind.value,
            "compartment": self.compartment,
            "at": self.at,
            "details": dict(self.details),
            "alarm": self.alarm.value if self.alarm is not None else None,
        }


class AlarmSet:
    """The active alarms of one subject (a compartment, a board), raised once per incident."""

    def __init__(
        self, compartment: str | None, *, base_details: Mapping[str, Detail] | None = None
    ) -> None:
        self._compartment = compartment
        self._base = dict(base_details or {})
        self._active: dict[AlarmKind, float] = {}

    @property
    def active(self) -> frozenset[AlarmKind]:
        """The alarms currently raised."""
        return frozenset(self._active)

    def is_active(self, alarm: AlarmKind) -> bool:
        """Whether ``alarm`` is currently raised."""
        return alarm in self._active

    def raise_(
        self, alarm: AlarmKind, at: float, details: Mapping[str, Detail] | None = None
    ) -> list[DomainEvent]:
        """Raise ``alarm``: one ``alarm_raised`` event, or none if it is already active."""
        if alarm in self._active:
            return []
        self._active[alarm] = at
        return [self._event(EventKind.ALARM_RAISED, alarm, at, details)]

    def clear(
        self, alarm: AlarmKind, at: float, details: Mapping[str, Detail] | None = None
    ) -> list[DomainEvent]:
        """Clear ``alarm``: one ``alarm_cleared`` event (with ``active_s``), or none."""
        raised_at = self._active.pop(alarm, None)
        if raised_at is None:
            return []
        merged: dict[str, Detail] = {"active_s": round(at - raised_at, 3)}
        merged.update(details or {})
        return [self._event(EventKind.ALARM_CLEARED, alarm, at, merged)]

    def _event(
        self, kind: EventKind, alarm: AlarmKind, at: float, details: Mapping[str, Detail] | None
    ) -> DomainEvent:
        merged = dict(self._base)
        merged.update(details or {})
        return DomainEvent(kind, self._compartment, at, merged, alarm)
