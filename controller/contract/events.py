"""Every event kind the cabinet sends on ``{root}/events``, with the shape of its ``data``.

:class:`~controller.contract.messages.Event` is the envelope, the same for every kind;
``data`` depends on ``kind``. Here each kind has a model of its ``data`` (unknown fields
forbidden, like every model of the contract), and :data:`EVENT_KINDS` lists them all with
a sentence for the integrator. ``python -m controller.contract.schemagen`` writes one
schema per kind (``controller/schemas/events/<kind>.json``: the envelope with ``kind``
fixed and ``data`` its model); the contract test runs a daemon through its flows and
checks every event it sends against the schema of its kind.

The vocabulary stays open: a consumer ignores a kind it does not know (a later version
may add kinds). ``alarm_raised`` and ``alarm_cleared`` carry ``data.alarm`` naming the
alarm, and the rest of ``data`` depends on it (:data:`ALARMS`).

Times inside ``data`` (``expires_at``, ``since``) are UNIX seconds of the cabinet's wall
clock; durations end in ``_s``. Compartment states inside ``data`` (``phase``, ``state``)
use the cabinet's own words: ``reserved`` is the ``assigned`` of the ``state`` message,
``collected`` a compartment emptied and not yet free.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from controller.contract.constraints import pattern as _pattern

__all__ = ["ALARMS", "ALARM_CLEARED", "ALARM_RAISED", "EVENT_KINDS", "EventKindDoc"]

Seconds = Annotated[float, Meta(ge=0)]
Count = Annotated[int, Meta(ge=0)]
Text = Annotated[str, Meta(max_length=500)]
OrderRef = Annotated[str, _pattern(r"^[A-Za-z0-9._:-]{1,64}$")]
CommandRef = Annotated[str, _pattern(r"^[A-Za-z0-9._:-]{1,64}$")]
LaneRef = Annotated[str, _pattern(r"^[A-Za-z0-9_.:-]{1,64}$")]
Source = Annotated[str, _pattern(r"^[a-z][a-z0-9_-]{0,31}$")]
Phase = Literal["free", "reserved", "loaded", "collected", "expired"]


class _Data(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The ``data`` of one event kind."""


# -- the door and its lock ---------------------------------------------------------------


class UnlockPulseSent(_Data, frozen=True, kw_only=True):
    """The pulse frame is about to go out; ``door``: the door as read just before."""

    door: Literal["open", "closed", "unknown"]


class UnlockPulseAcked(_Data, frozen=True, kw_only=True):
    """The lock board acknowledged the pulse."""


class UnlockPulseFailed(_Data, frozen=True, kw_only=True):
    """The board did not make the pulse (no answer to a frame that did not act, a
    rejection, the bus down); ``reason`` is the driver's account."""

    reason: Text


class UnlockPulseUnconfirmed(_Data, frozen=True, kw_only=True):
    """The frame went out, its outcome is unknown; ``evidence`` says what was seen."""

    evidence: Text


class DoorOpened(_Data, frozen=True, kw_only=True):
    """``authorised``: after a pulse (``pulse_acked``, ``after_pulse_s``), or an authorised
    opening resumed across a restart (``resumed``). ``authorised: false`` is a forced
    opening (with a ``forced_open`` alarm)."""

    authorised: bool
    pulse_acked: bool | None = None
    after_pulse_s: Seconds | None = None
    resumed: Literal[True] | None = None


class DoorClosed(_Data, frozen=True, kw_only=True):
    """``open_s``: how long it was open; ``resumed``: it was open before a restart and
    closed while the cabinet could not see it."""

    authorised: bool
    open_s: Seconds | None = None
    resumed: Literal[True] | None = None


class OpenNotDetected(_Data, frozen=True, kw_only=True):
    """The pulse went out and the door was not seen opening within ``open_detect_s``.
    ``latch``: the latch feedback when the window ended: ``released``, ``engaged`` (the
    latch still holds the door; the same reading is ``locked`` in ``state``), ``unknown``,
    or ``null`` when the compartment has no latch feedback; ``jammed``: acknowledged, the
    latch never released."""

    pulse_acked: bool
    latch: Literal["released", "engaged", "unknown"] | None
    jammed: bool


class UnlockUnconfirmed(_Data, frozen=True, kw_only=True):
    """The open-detect window ended and whether the door opened is unknown: it was open
    already (``door_open``) or its sensor did not read (``sensor_unknown``,
    ``sensor_flapping``)."""

    reason: Literal["door_open", "sensor_unknown", "sensor_flapping"]


# -- compartments and orders ------------------------------------------------------------


class CompartmentAssigned(_Data, frozen=True, kw_only=True):
    """An order was assigned (``assign``); ``expires_at`` in UNIX seconds."""

    order: OrderRef
    pool: Annotated[str, _pattern(r"^[a-z0-9_-]{1,32}$")]
    size: Literal["S", "M", "L", "XL"]
    zone: Literal["ambient", "chilled", "frozen"]
    expires_at: float


class OpenRequested(_Data, frozen=True, kw_only=True):
    """An opening was declared, before its pulse. ``purpose``: ``deposit``,
    ``collection`` (a customer's collection: a code at the lane, or ``open`` with reason
    ``collect`` or ``customer_app``; the same thing is ``collect`` in a code's purpose and
    in the ``open`` reason) or ``staff`` (``open`` reasons ``staff``, ``maintenance``,
    ``audit``), with the staff ``reason``: the command's reason, ``reopen`` for a forgotten
    bag; ``command``: the command that asked (absent for a code at the lane); ``order``:
    the compartment's order or ``null``."""

    purpose: Literal["deposit", "collection", "staff"]
    order: OrderRef | None
    reason: Text | None = None
    command: CommandRef | None = None


class CompartmentLoaded(_Data, frozen=True, kw_only=True):
    """Closed after a deposit with goods inside. ``confirmed``: the occupancy sensor read
    ``occupied``; ``occupancy`` ``unknown`` or ``no_sensor`` otherwise."""

    order: OrderRef
    confirmed: bool
    occupancy: Literal["occupied", "unknown", "no_sensor"]


class OrderOnly(_Data, frozen=True, kw_only=True):
    """``order``: the order concerned."""

    order: OrderRef


class CompartmentCollected(_Data, frozen=True, kw_only=True):
    """Closed after a collection, empty. ``confirmed``: the occupancy sensor read
    ``empty`` (``false`` without a sensor)."""

    order: OrderRef
    confirmed: bool


class NoData(_Data, frozen=True, kw_only=True):
    """No data."""


class OrderReleased(_Data, frozen=True, kw_only=True):
    """``release``: ``awaiting_retrieval`` when goods are inside (the compartment waits,
    ``expired``, for staff)."""

    order: OrderRef
    reason: Text
    awaiting_retrieval: bool


class OrderExpired(_Data, frozen=True, kw_only=True):
    """The order's pickup window ended; ``goods_inside`` says whether staff must retrieve
    it."""

    order: OrderRef
    goods_inside: bool


class CompartmentBlocked(_Data, frozen=True, kw_only=True):
    """``block``, with its reason."""

    reason: Text


class CompartmentUnblocked(_Data, frozen=True, kw_only=True):
    """``unblock``; ``phase``: the compartment's state again."""

    phase: Phase


# -- the lane ---------------------------------------------------------------------------


class LaneOnly(_Data, frozen=True, kw_only=True):
    """``lane``: the lane (e.g. ``lane-1``)."""

    lane: LaneRef


class LaneIoUnavailable(_Data, frozen=True, kw_only=True):
    """The lane's GPIO could not be opened; code entry works without it."""

    lane: LaneRef
    error: Text


class ScannerStatus(_Data, frozen=True, kw_only=True):
    """The QR scanner's serial line came (``scanner_connected``) or went."""

    lane: LaneRef
    detail: Text


class CodeAccepted(_Data, frozen=True, kw_only=True):
    """A code opened its compartment. ``source``: ``keypad`` or ``scanner``;
    ``purpose``: the code's (``deposit`` or ``collect``); ``reopen``: a used code
    reopening within the tenant's grace (a forgotten bag)."""

    lane: LaneRef
    source: Source
    order: OrderRef
    purpose: Literal["deposit", "collect"]
    reopen: bool


class CodeRejected(_Data, frozen=True, kw_only=True):
    """A code refused at the lane, at most one a second per input. ``reason``:
    ``wrong_code``, ``slow_down`` (with ``retry_after_s``), ``invalid_code``,
    ``unreadable``, ``code_used``, ``staff_only``, ``store_unavailable``, ``internal``, or
    another refusal of the domain (``order_expired``, ``pickup_not_open``, ...); ``order``
    when the entry named one."""

    lane: LaneRef
    source: Source
    reason: Annotated[str, _pattern(r"^[a-z][a-z0-9_]{0,63}$")]
    message: Text
    order: OrderRef | None = None
    retry_after_s: Seconds | None = None


class CodeRejectionsCoalesced(_Data, frozen=True, kw_only=True):
    """The refusals of one input within a second after a reported one: ``count`` of them,
    by reason, since ``since`` (UNIX seconds)."""

    lane: LaneRef
    source: Source
    count: Annotated[int, Meta(ge=1)]
    reasons: dict[Annotated[str, _pattern(r"^[a-z][a-z0-9_]{0,63}$")], Count]
    since: float


# -- the cabinet ------------------------------------------------------------------------


class ZoneWindow(_Data, frozen=True, kw_only=True):
    """One zone's readings over the window (``samples: 0``: none could be read)."""

    samples: Count
    min_c: float | None = None
    max_c: float | None = None
    mean_c: float | None = None


class ZoneTemperatures(_Data, frozen=True, kw_only=True):
    """The temperature record of every zone with a probe over the last ``window_s``."""

    window_s: Seconds
    zones: dict[Annotated[str, _pattern(r"^[a-z0-9_-]{1,32}$")], ZoneWindow]


class DaemonStarted(_Data, frozen=True, kw_only=True):
    """The daemon started (a new ``boot_id``): ``boot_number`` counts starts;
    ``outputs_off``: each output bank switched off at start (``true``) or not."""

    version: Annotated[str, Meta(min_length=1, max_length=64)]
    boot_number: Annotated[int, Meta(ge=1)]
    outputs_off: dict[Annotated[str, Meta(max_length=64)], bool]


class ConfigApplied(_Data, frozen=True, kw_only=True):
    """``apply_config`` accepted (the daemon restarts to apply it)."""

    command: CommandRef
    sections: list[Literal["timing", "tenants", "zones", "log"]]
    config_hash: Annotated[str, _pattern(r"^[0-9a-f]{64}$")]


class ConfigOverlayRefused(_Data, frozen=True, kw_only=True):
    """The configuration applied earlier is no longer valid with the file: the cabinet
    runs on its file alone; ``key`` is at fault."""

    key: Annotated[str, Meta(max_length=200)] | None
    message: Text


class CommandInterrupted(_Data, frozen=True, kw_only=True):
    """A command under way when the daemon stopped; answered ``internal`` and never
    acted on again (that reply is published at start-up, once, on the topic the command
    asked for; a repeat of its id returns it too). ``may_have_pulsed``: compartments whose
    pulse may have gone out."""

    command: CommandRef
    may_have_pulsed: list[Annotated[str, _pattern(r"^[A-Z0-9-]{1,8}$")]]


class ReconcileMismatch(_Data, frozen=True, kw_only=True):
    """At start, the store and the occupancy sensor disagree about a compartment."""

    stored_goods_inside: bool
    occupancy: Literal["occupied", "empty"]
    state: Annotated[str, _pattern(r"^[a-z_]{1,32}$")]
    known_before: bool


# -- alarms -----------------------------------------------------------------------------


class _Alarm(_Data, frozen=True, kw_only=True):
    pass


class _Cleared(_Data, frozen=True, kw_only=True):
    #: How long the alarm was active.
    active_s: Seconds


class ForcedOpen(_Alarm, frozen=True, kw_only=True):
    """A door opened without a pulse (``compartment`` set)."""

    alarm: Literal["forced_open"]


class ForcedOpenCleared(_Cleared, frozen=True, kw_only=True):
    alarm: Literal["forced_open"]


class DoorAjar(_Alarm, frozen=True, kw_only=True):
    """A door stayed open longer than ``timing.door_ajar_s``."""

    alarm: Literal["door_ajar"]
    open_s: Seconds


class DoorAjarCleared(_Cleared, frozen=True, kw_only=True):
    alarm: Literal["door_ajar"]


class SensorUnknown(_Alarm, frozen=True, kw_only=True):
    """A door sensor cannot be read (its board does not answer, or it reads nonsense)."""

    alarm: Literal["sensor_unknown"]


class SensorUnknownCleared(_Cleared, frozen=True, kw_only=True):
    alarm: Literal["sensor_unknown"]


class SensorFlapping(_Alarm, frozen=True, kw_only=True):
    """An input changed more than ``changes`` times within ``window_s``: it reads
    ``unknown`` until steady."""

    alarm: Literal["sensor_flapping"]
    signal: Literal["door", "latch", "occupancy"]
    board: Annotated[str, Meta(max_length=64)]
    channel: Count
    changes: Count
    window_s: Seconds


class SensorFlappingCleared(_Cleared, frozen=True, kw_only=True):
    alarm: Literal["sensor_flapping"]
    signal: Literal["door", "latch", "occupancy"]
    board: Annotated[str, Meta(max_length=64)]
    channel: Count


class BoardOffline(_Alarm, frozen=True, kw_only=True):
    """A Modbus board stopped answering (``failures`` polls in a row)."""

    alarm: Literal["board_offline"]
    board: Annotated[str, Meta(max_length=64)]
    failures: Count
    reason: Text


class BoardOfflineCleared(_Cleared, frozen=True, kw_only=True):
    alarm: Literal["board_offline"]
    board: Annotated[str, Meta(max_length=64)]


class CompartmentFault(_Alarm, frozen=True, kw_only=True):
    """The door did not open after ``count`` acknowledged pulses in a row: the compartment
    is out of use until a technician clears it."""

    alarm: Literal["compartment_fault"]
    reason: Literal["open_not_detected"]
    count: Count


class CompartmentFaultCleared(_Cleared, frozen=True, kw_only=True):
    alarm: Literal["compartment_fault"]


class Temperature(_Alarm, frozen=True, kw_only=True):
    """A zone out of its range for longer than ``delay_s`` (``temperature_c`` ``null``:
    the probe stopped answering)."""

    alarm: Literal["temperature"]
    zone: Annotated[str, _pattern(r"^[a-z0-9_-]{1,32}$")]
    temperature_c: float | None
    min_c: float | None
    max_c: float | None
    delay_s: Seconds


class TemperatureCleared(Temperature, frozen=True, kw_only=True):
    """Back in range; ``excursion``: the readings while it was out."""

    active_s: Seconds | None = None
    excursion: ZoneWindow


class LaneInput(_Alarm, frozen=True, kw_only=True):
    """The lane's tamper switch (``tamper``) or its mains sensor (``power_fail``)."""

    alarm: Literal["tamper", "power_fail"]
    lane: LaneRef


class LaneInputCleared(_Cleared, frozen=True, kw_only=True):
    alarm: Literal["tamper", "power_fail"]
    lane: LaneRef


class CodeGuessing(_Alarm, frozen=True, kw_only=True):
    """An input spent its wrong-code budget (``wrong_codes`` in all); short entries there
    are refused for ``retry_after_s``."""

    alarm: Literal["code_guessing"]
    lane: LaneRef
    source: Source
    wrong_codes: Count
    retry_after_s: Seconds


class CodeGuessingCleared(_Cleared, frozen=True, kw_only=True):
    """The budget came back whole, or staff cleared it (``cleared_by``:
    ``command:<id>`` of a ``clear_lane_lockout``)."""

    alarm: Literal["code_guessing"]
    lane: LaneRef
    source: Source
    cleared_by: Annotated[str, Meta(max_length=100)] | None = None


class SessionTakeover(_Alarm, frozen=True, kw_only=True):
    """Another client took the cabinet's MQTT session over ``takeovers`` times within
    ``window_s``: its identity is in someone else's hands."""

    alarm: Literal["session_takeover"]
    takeovers: Count
    window_s: Seconds


class SessionTakeoverCleared(_Data, frozen=True, kw_only=True):
    """No takeover for 5 minutes; ``takeovers`` in the incident."""

    alarm: Literal["session_takeover"]
    takeovers: Count


class StoreAlarm(_Alarm, frozen=True, kw_only=True):
    """The cabinet's store refuses writes (``store_full``: its memory cap is reached, at
    once) or does not answer (``store_unavailable``: for 10 s). Commands are refused
    meanwhile; events wait in memory and arrive, in order, once the store writes again."""

    alarm: Literal["store_full", "store_unavailable"]
    error: Annotated[str, Meta(max_length=500)]


class StoreAlarmCleared(_Cleared, frozen=True, kw_only=True):
    """The first write that succeeded after the incident."""

    alarm: Literal["store_full", "store_unavailable"]


ALARMS: dict[str, tuple[type[msgspec.Struct], type[msgspec.Struct]]] = {
    "forced_open": (ForcedOpen, ForcedOpenCleared),
    "door_ajar": (DoorAjar, DoorAjarCleared),
    "sensor_unknown": (SensorUnknown, SensorUnknownCleared),
    "sensor_flapping": (SensorFlapping, SensorFlappingCleared),
    "board_offline": (BoardOffline, BoardOfflineCleared),
    "compartment_fault": (CompartmentFault, CompartmentFaultCleared),
    "temperature": (Temperature, TemperatureCleared),
    "tamper": (LaneInput, LaneInputCleared),
    "power_fail": (LaneInput, LaneInputCleared),
    "code_guessing": (CodeGuessing, CodeGuessingCleared),
    "session_takeover": (SessionTakeover, SessionTakeoverCleared),
    "store_full": (StoreAlarm, StoreAlarmCleared),
    "store_unavailable": (StoreAlarm, StoreAlarmCleared),
}
"""Every alarm: the model of its ``alarm_raised`` data and of its ``alarm_cleared`` data."""

ALARM_RAISED = "alarm_raised"
ALARM_CLEARED = "alarm_cleared"


class EventKindDoc(msgspec.Struct, frozen=True, kw_only=True):
    """One event kind: its ``data`` model(s), whether ``compartment`` is set, and a
    sentence for the integrator."""

    data: tuple[type[msgspec.Struct], ...]
    compartment: Literal["always", "never", "sometimes"]
    summary: str


def _kind(summary: str, *data: type[msgspec.Struct],
          compartment: Literal["always", "never", "sometimes"] = "always") -> EventKindDoc:
    return EventKindDoc(data=data, compartment=compartment, summary=summary)


def _unique(models: list[type[msgspec.Struct]]) -> tuple[type[msgspec.Struct], ...]:
    return tuple(dict.fromkeys(models))


EVENT_KINDS: dict[str, EventKindDoc] = {
    # door and lock
    "unlock_pulse_sent": _kind("a pulse frame is going out to the lock", UnlockPulseSent),
    "unlock_pulse_acked": _kind("the board acknowledged the pulse", UnlockPulseAcked),
    "unlock_pulse_failed": _kind("the board did not make the pulse", UnlockPulseFailed),
    "unlock_pulse_unconfirmed": _kind("the pulse went out, its outcome is unknown",
                                      UnlockPulseUnconfirmed),
    "door_opened": _kind("the door opened (authorised or forced)", DoorOpened),
    "door_closed": _kind("the door closed", DoorClosed),
    "open_not_detected": _kind("the pulse went out, the door did not open",
                               OpenNotDetected),
    "unlock_unconfirmed": _kind("whether the door opened after its pulse is unknown",
                                UnlockUnconfirmed),
    # compartments and orders
    "compartment_assigned": _kind("an order was assigned to the compartment",
                                  CompartmentAssigned),
    "open_requested": _kind("an opening was declared (before its pulse)", OpenRequested),
    "compartment_loaded": _kind("deposit done: goods inside", CompartmentLoaded),
    "deposit_empty": _kind("closed after a deposit, still empty (the occupancy sensor)",
                           OrderOnly),
    "compartment_collected": _kind("collection done: empty", CompartmentCollected),
    "collection_incomplete": _kind("closed after a collection, goods still inside",
                                   OrderOnly),
    "collection_unconfirmed": _kind("closed after a collection, occupancy unknown",
                                    OrderOnly),
    "compartment_freed": _kind("the compartment is free again", NoData),
    "order_released": _kind("release: the order left the compartment", OrderReleased),
    "order_expired": _kind("the order's pickup window ended", OrderExpired),
    "order_retrieved": _kind("staff took an expired order out", OrderOnly),
    "compartment_blocked": _kind("block", CompartmentBlocked),
    "compartment_unblocked": _kind("unblock", CompartmentUnblocked),
    # the lane
    "code_accepted": _kind("a code at the lane opened its compartment", CodeAccepted),
    "code_rejected": _kind("a code at the lane was refused", CodeRejected,
                           compartment="sometimes"),
    "code_rejections_coalesced": _kind("the other refusals of that second",
                                       CodeRejectionsCoalesced, compartment="never"),
    "vehicle_arrived": _kind("a vehicle stopped at the lane", LaneOnly, compartment="never"),
    "vehicle_left": _kind("the vehicle left the lane", LaneOnly, compartment="never"),
    "help_requested": _kind("the help button was pressed", LaneOnly, compartment="never"),
    "scanner_connected": _kind("the QR scanner's line is up", ScannerStatus,
                               compartment="never"),
    "scanner_disconnected": _kind("the QR scanner's line is down", ScannerStatus,
                                  compartment="never"),
    "lane_io_unavailable": _kind("the lane's GPIO could not be opened", LaneIoUnavailable,
                                 compartment="never"),
    # the cabinet
    "daemon_started": _kind("the daemon started (new boot id)", DaemonStarted,
                            compartment="never"),
    "config_applied": _kind("apply_config accepted; the daemon restarts", ConfigApplied,
                            compartment="never"),
    "config_overlay_refused": _kind("the applied configuration no longer loads",
                                    ConfigOverlayRefused, compartment="never"),
    "command_interrupted": _kind("a command cut by a restart, or by a fault of the cabinet "
                                  "while it acted (its reply: internal); never acted on again",
                                 CommandInterrupted, compartment="sometimes"),
    "reconcile_mismatch": _kind("store and occupancy sensor disagree at start",
                                ReconcileMismatch),
    "zone_temperatures": _kind("the zones' temperature record over a window",
                               ZoneTemperatures, compartment="never"),
    # alarms
    ALARM_RAISED: _kind("an alarm started (once per incident)",
                        *_unique([raised for raised, _ in ALARMS.values()]),
                        compartment="sometimes"),
    ALARM_CLEARED: _kind("an alarm ended (once per incident)",
                         *_unique([cleared for _, cleared in ALARMS.values()]),
                         compartment="sometimes"),
}
"""Every event kind the cabinet sends, by ``kind``."""
