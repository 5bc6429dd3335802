"""Every MQTT payload as a msgspec struct, and the one safe entry point for commands.

Outbound (cabinet → dispatch): :class:`Status` (retained), :class:`State` (retained),
:class:`Event` (QoS 1, from the outbox), :class:`Reply`, :class:`Telemetry` (QoS 0).
Inbound (dispatch → cabinet): a :data:`Command` (a union discriminated by ``type``) or a
:class:`SignedCommand` wrapping one.

All models forbid unknown fields, so the JSON Schemas generated from them
(``python -m controller.contract.schemagen``) say ``additionalProperties: false`` and a
typo in dispatch's code is refused, not ignored. Payloads are UTF-8 JSON; serialise with
:func:`encode` (drops ``None`` fields: an absent optional field and ``null`` mean the same),
read a trusted document with :func:`from_builtins` or :func:`from_json`.

The models are msgspec structs (decision 0022): building one checks nothing, reading one
(:func:`decode_command`, :func:`from_builtins`, :func:`from_json`) checks every constraint
and the ``__post_init__`` invariants. The cabinet builds its outbound messages from values
it checked already; the contract tests check what it sends against the schemas.

:func:`decode_command` turns untrusted bytes into a command or raises
:class:`~controller.contract.errors.CommandRejected`, and nothing else, whatever the input.
It checks the *shape* only; the daemon checks cabinet, boot id, deadline, signature,
idempotency and compartments, and answers with the same error codes.

Clocks: a Pi has no battery-backed clock, so deadlines are expressed in the cabinet's own
clock, a :class:`ClockReading` (boot id + milliseconds since that boot), which the cabinet
publishes in ``status``, ``telemetry`` and every ``reply``. Wall times (``at``) are
informational, ISO 8601 with a zone offset.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from types import UnionType
from typing import Annotated, Any, Literal, TypeAlias, TypeVar, Union, get_args, get_origin

import msgspec
from msgspec import Meta, ValidationError, field

from controller import strictjson
from controller.contract.constraints import pattern as _pattern
from controller.contract.errors import CommandRejected, ErrorCode
from controller.security.verify import SignaturePolicy, signature_policy

__all__ = [
    "COMMAND_MODELS",
    "COMMAND_TYPES",
    "DEFAULT_MAX_COMMAND_BYTES",
    "OPEN_REASONS",
    "QUERY_TYPES",
    "SIGNED_COMMAND_TYPES",
    "Alarm",
    "ApplyConfigArgs",
    "ApplyConfigCommand",
    "AssignArgs",
    "AssignCommand",
    "BlockArgs",
    "BlockCommand",
    "BoardState",
    "BusStats",
    "ClearFaultArgs",
    "ClearFaultCommand",
    "ClearLaneLockoutArgs",
    "ClearLaneLockoutCommand",
    "ClockReading",
    "CodeKeyInfo",
    "Command",
    "CommandEnvelope",
    "CompartmentState",
    "Event",
    "GetClockArgs",
    "GetClockCommand",
    "GetStateArgs",
    "GetStateCommand",
    "Grant",
    "LaneState",
    "Message",
    "MqttLinkStats",
    "OpenArgs",
    "OpenCommand",
    "OpenResult",
    "PulseReport",
    "ReleaseArgs",
    "ReleaseCommand",
    "Reply",
    "ReplyError",
    "RevokeGrantsArgs",
    "RevokeGrantsCommand",
    "RevokedGrant",
    "SealedCode",
    "SignedCommand",
    "State",
    "Status",
    "Telemetry",
    "UnblockArgs",
    "UnblockCommand",
    "ZoneState",
    "decode_command",
    "encode",
    "from_builtins",
    "from_json",
    "to_builtins",
]

DEFAULT_MAX_COMMAND_BYTES = 16 * 1024
_MAX_DEPTH = 16

# ---------------------------------------------------------------------------------------------
# Scalar shapes shared by the models (each becomes a "pattern" in the JSON Schema).

CommandId = Annotated[str, _pattern(r"^[A-Za-z0-9._:-]{1,64}$")]
BootId = Annotated[str, _pattern(r"^[A-Za-z0-9-]{8,64}$")]
CabinetId = Annotated[str, _pattern(r"^[a-z0-9-]{1,32}$")]
CompartmentId = Annotated[str, _pattern(r"^[A-Z0-9-]{1,8}$")]
ZoneName = Annotated[str, _pattern(r"^[a-z0-9_-]{1,32}$")]
PoolName = Annotated[str, _pattern(r"^[a-z0-9_-]{1,32}$")]
OrderId = Annotated[str, _pattern(r"^[A-Za-z0-9._:-]{1,64}$")]
EventId = Annotated[str, _pattern(r"^[0-9A-Za-z-]{16,40}$")]
EventKind = Annotated[str, _pattern(r"^[a-z][a-z0-9_.]{0,63}$")]
KeyId = Annotated[str, _pattern(r"^[A-Za-z0-9._-]{1,64}$")]
Base64 = Annotated[str, _pattern(r"^[A-Za-z0-9+/]{4,684}={0,2}$")]
Ed25519Signature = Annotated[str, _pattern(r"^[A-Za-z0-9+/]{86}==$")]
Reason = Annotated[str, Meta(min_length=1, max_length=200)]
Name = Annotated[str, _pattern(r"^[A-Za-z0-9_.:-]{1,64}$")]
NonNegativeInt = Annotated[int, Meta(ge=0)]
AwareDatetime = Annotated[datetime, Meta(tz=True)]
"""ISO 8601 with a zone offset; a time without one is refused."""

Size = Literal["S", "M", "L", "XL"]
DoorSignal = Literal["open", "closed", "unknown"]
LatchSignal = Literal["locked", "released", "unknown"]
OccupancySignal = Literal["occupied", "empty", "unknown"]
OpenReason = Literal["deposit", "collect", "staff", "maintenance", "customer_app", "audit"]
OPEN_REASONS: tuple[str, ...] = ("deposit", "collect", "staff", "maintenance", "customer_app",
                                 "audit")


class _Model(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Every message: unknown fields refused, immutable, built with keywords."""


Message = TypeVar("Message", bound=msgspec.Struct)


class ClockReading(_Model, frozen=True, kw_only=True):
    """A moment in the cabinet's clock: which boot, and milliseconds since it.

    Used for ``cabinet_clock`` (now, as the cabinet sees it) and for a command's
    ``expires`` (the deadline). Compare only readings with the same ``boot_id``.
    """

    boot_id: BootId
    uptime_ms: NonNegativeInt


def encode(message: msgspec.Struct) -> bytes:
    """The wire form of any message: compact UTF-8 JSON without ``None`` fields."""
    return _ENCODER.encode(_wire(message, True, True))


def to_builtins(message: msgspec.Struct, *, omit_none: bool = True) -> dict[str, Any]:
    """The JSON object of a message as Python values (times as ISO 8601 text): what
    :func:`encode` writes, or with ``omit_none=False`` every field, ``None`` ones too."""
    return _json_object(msgspec.to_builtins(_wire(message, omit_none, False)))


def from_builtins(type_: type[Message], data: Any) -> Message:
    """Read a message from JSON-like data (a stored or built document, times as text or
    ``datetime``), checking every constraint; raises :class:`msgspec.ValidationError`
    (a ``ValueError``)."""
    return msgspec.convert(data, type_)


def from_json(type_: type[Message], raw: bytes | str) -> Message:
    """Read a message from JSON text, checking every constraint; raises
    :class:`msgspec.DecodeError` (a ``ValueError``; :class:`msgspec.ValidationError` when the
    JSON is well formed and the document is not)."""
    return msgspec.json.decode(raw, type=type_)


def _json_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):  # pragma: no cover - every message is an object
        raise TypeError("a message is a JSON object")
    return value


_ENCODER = msgspec.json.Encoder()
_FLOAT, _FLOAT_VALUES = 1, 2
_PLANS: dict[type, tuple[tuple[str, int], ...]] = {}


def _floaty(annotation: Any) -> bool:
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if annotation is float:
        return True
    return get_origin(annotation) in (Union, UnionType) and float in get_args(annotation)


def _plan(cls: type) -> tuple[tuple[str, int], ...]:
    """Each field of a struct, with what :func:`_wire` does to its value: ``float`` fields
    get a float for an ``int`` (as the pydantic models did on construction, so that ``3``
    is written ``3.0``)."""
    plan = []
    for info in msgspec.structs.fields(cls):
        kind = 0
        annotation = info.type
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        if _floaty(annotation):
            kind = _FLOAT
        elif get_origin(annotation) is dict and _floaty(get_args(annotation)[1]):
            kind = _FLOAT_VALUES
        plan.append((info.name, kind))
    _PLANS[cls] = result = tuple(plan)
    return result


def _big_float(value: float) -> msgspec.Raw:
    # The pydantic encoder wrote a positive exponent with its sign (1e+16), msgspec
    # without (1e16); the bytes on the wire stay the same.
    return msgspec.Raw(_ENCODER.encode(value).replace(b"e", b"e+"))


_SCALARS = frozenset({str, int, bool, datetime})


def _wire(value: Any, omit_none: bool, raw_floats: bool) -> Any:
    """``value`` with every struct as a dict of its fields (those that are not ``None``
    when ``omit_none``; ``None`` inside a free-form dict, such as an event's ``data``,
    stays), and big floats pre-encoded when ``raw_floats``. Plain values are copied as they
    are, without a call: this runs for every message sent."""
    if isinstance(value, msgspec.Struct):
        cls = type(value)
        plan = _PLANS.get(cls) or _plan(cls)
        out: dict[str, Any] = {}
        for name, kind in plan:
            item = getattr(value, name)
            if item is None:
                if not omit_none:
                    out[name] = None
            elif kind == _FLOAT and type(item) is int:
                out[name] = _wire(float(item), omit_none, raw_floats)
            elif kind == _FLOAT_VALUES and isinstance(item, dict):
                out[name] = _wire({k: float(v) if type(v) is int else v
                                   for k, v in item.items()}, omit_none, raw_floats)
            elif type(item) in _SCALARS:
                out[name] = item
            else:
                out[name] = _wire(item, omit_none, raw_floats)
        return out
    if isinstance(value, dict):
        return {k: v if type(v) in _SCALARS or v is None else _wire(v, omit_none, raw_floats)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [v if type(v) in _SCALARS or v is None else _wire(v, omit_none, raw_floats)
                for v in value]
    if raw_floats and type(value) is float and (value >= 1e16 or value <= -1e16):
        return _big_float(value)
    return value


# ---------------------------------------------------------------------------------------------
# status (retained; the Last Will is the offline form)


class CodeKeyInfo(_Model, frozen=True, kw_only=True):
    """The cabinet's public code key (``status.code_key``): dispatch seals every code of an
    ``assign`` to it (see :class:`SealedCode`)."""

    scheme: Literal["x25519-hkdf-sha256-chacha20poly1305"]
    key_id: Annotated[str, _pattern(r"^[0-9a-f]{16}$")]
    public_key: Annotated[str, _pattern(r"^[A-Za-z0-9+/]{43}=$")]


class Status(_Model, frozen=True, kw_only=True):
    """``{root}/status``, retained. ``online`` on every connect, ``offline`` as the Last Will
    and on a clean shutdown.

    ``cabinet_clock`` is the cabinet's clock when this was published; for the Last Will it is
    the clock when the connection that registered it was made. Retained, it may be hours
    old when read: its ``boot_id`` names the boot, but a deadline built from its
    ``uptime_ms`` may have passed already; read the clock now with ``get_clock``
    (:class:`GetClockCommand`).
    """

    state: Literal["online", "offline"]
    cabinet: CabinetId
    boot_id: BootId
    version: Annotated[str, Meta(min_length=1, max_length=64)]
    cabinet_clock: ClockReading
    at: AwareDatetime
    config_hash: Annotated[str, _pattern(r"^[0-9a-f]{8,64}$")] | None = None
    code_key: CodeKeyInfo | None = None


# ---------------------------------------------------------------------------------------------
# state (retained full snapshot)


class CompartmentState(_Model, frozen=True, kw_only=True):
    """One compartment in the snapshot.

    ``state``: ``free`` (may be assigned), ``assigned`` (reserved for an order, empty),
    ``loaded`` (goods inside, waiting for collection), ``expired`` (pickup window over, staff
    retrieval only), ``blocked`` (maintenance), ``fault`` (lock or sensors not usable).
    Signals are ``None`` when the compartment has no such sensor fitted.
    """

    id: CompartmentId
    size: Size
    zone: ZoneName
    pool: PoolName
    state: Literal["free", "assigned", "loaded", "expired", "blocked", "fault"]
    door: DoorSignal | None = None
    latch: LatchSignal | None = None
    occupancy: OccupancySignal | None = None
    order_id: OrderId | None = None
    blocked_reason: Reason | None = None


class ZoneState(_Model, frozen=True, kw_only=True):
    """A temperature zone. ``temperature_c`` is ``None`` when the probe does not answer;
    ``in_range`` is ``None`` when unknown, ``False`` during an excursion (before the alarm
    delay too)."""

    name: ZoneName
    kind: Literal["ambient", "chilled", "frozen"]
    temperature_c: float | None = None
    min_c: float | None = None
    max_c: float | None = None
    in_range: bool | None = None


class BoardState(_Model, frozen=True, kw_only=True):
    """A Modbus board: whether it answers."""

    name: Name
    online: bool


class Alarm(_Model, frozen=True, kw_only=True):
    """An active alarm (``forced_open``, ``door_ajar``, ``temperature``, ``tamper``,
    ``power_fail``, ``board_offline``, ``open_not_detected``, ...)."""

    kind: EventKind
    since: AwareDatetime
    compartment: CompartmentId | None = None
    zone: ZoneName | None = None
    board: Name | None = None


class LaneState(_Model, frozen=True, kw_only=True):
    """Lane I/O; ``None`` when the input is not fitted or unknown."""

    vehicle_present: bool | None = None
    help_requested: bool | None = None
    tamper: bool | None = None
    mains_ok: bool | None = None


class State(_Model, frozen=True, kw_only=True):
    """``{root}/state``, retained: the whole cabinet, republished on change (coalesced).

    ``revision`` increases with every snapshot of a boot, so a consumer can drop a stale one.
    """

    cabinet: CabinetId
    boot_id: BootId
    revision: NonNegativeInt
    at: AwareDatetime
    cabinet_clock: ClockReading
    compartments: list[CompartmentState]
    zones: list[ZoneState] = field(default_factory=list)
    boards: list[BoardState] = field(default_factory=list)
    alarms: list[Alarm] = field(default_factory=list)
    lane: LaneState | None = None
    outbox_depth: NonNegativeInt = 0


# ---------------------------------------------------------------------------------------------
# events (QoS 1 from the durable outbox)


class Event(_Model, frozen=True, kw_only=True):
    """``{root}/events``: one thing that happened, delivered at least once.

    ``id`` is unique (UUID4 or ULID): dispatch dedupes on it. ``seq`` is gap-free and
    increasing per cabinet across restarts (it is stored with the outbox): a jump means a
    missed event; ``boot_id`` is the boot that produced it. ``at`` is the original time and
    is kept when the event is replayed after an outage. ``kind`` is open-ended: every kind
    the cabinet sends, with the shape of its ``data``, is in
    :data:`controller.contract.events.EVENT_KINDS` (one schema per kind); ignore the others.
    """

    id: EventId
    boot_id: BootId
    seq: Annotated[int, Meta(ge=1)]
    kind: EventKind
    at: AwareDatetime
    cabinet_clock: Annotated[ClockReading | None, Meta(
        description="The cabinet's clock when the event was committed, in the boot that "
        "made it; stored with the event, so a replay after a restart carries the original "
        "reading. Always present in events this version makes; absent only in an event "
        "stored by an older cabinet and replayed after the upgrade.")] = None
    compartment: CompartmentId | None = None
    data: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# telemetry (QoS 0)


class BusStats(_Model, frozen=True, kw_only=True):
    """Counters of one RS-485 line since boot."""

    name: Name
    transactions: NonNegativeInt
    errors: NonNegativeInt = 0
    timeouts: NonNegativeInt = 0
    crc_errors: NonNegativeInt = 0
    retries: NonNegativeInt = 0
    #: Replies that came after their attempt's timeout: counted and discarded, never taken
    #: for the answer to the next request.
    late_replies: NonNegativeInt = 0
    #: Board addresses that keep answering late: their inputs read unknown until they
    #: answer on time again.
    degraded_units: list[Annotated[int, Meta(ge=0, le=255)]] = field(default_factory=list)
    last_error: Annotated[str, Meta(max_length=200)] | None = None


class MqttLinkStats(_Model, frozen=True, kw_only=True):
    """The MQTT connection as the cabinet sees it (``MqttLink.snapshot()``)."""

    connected: bool
    since: AwareDatetime
    reconnects: NonNegativeInt
    last_error: Annotated[str, Meta(max_length=200)] | None = None
    #: Commands received but never handled since start-up (a flood filled the queue);
    #: none of them got a reply.
    dropped_commands: NonNegativeInt = 0


TaskName = Annotated[str, _pattern(r"^[a-z][a-z0-9_-]{0,31}$")]


class Telemetry(_Model, frozen=True, kw_only=True):
    """``{root}/telemetry``, QoS 0: health, periodically."""

    cabinet: CabinetId
    boot_id: BootId
    at: AwareDatetime
    cabinet_clock: ClockReading
    uptime_s: Annotated[float, Meta(ge=0)]
    buses: list[BusStats] = field(default_factory=list)
    outbox_depth: NonNegativeInt
    memory_rss_bytes: NonNegativeInt | None = None
    cpu_percent: Annotated[float, Meta(ge=0)] | None = None
    cpu_temperature_c: float | None = None
    temperatures: dict[ZoneName, float | None] = field(default_factory=dict)
    mqtt: MqttLinkStats
    #: Failures of the daemon's long-running tasks since start-up, by task name (each was
    #: logged with its traceback and the task restarted); absent names never failed.
    task_restarts: dict[TaskName, NonNegativeInt] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# commands (inbound)


class SealedCode(_Model, frozen=True, kw_only=True):
    """A pickup or deposit code sealed to this cabinet: only the cabinet can open it, and
    only for this order and this position in ``codes`` (its code id ``<purpose>-<index>``).

    ``scheme`` ``x25519-hkdf-sha256-chacha20poly1305``: ``epk`` is dispatch's ephemeral
    X25519 public key (32 bytes), ``sealed`` the ChaCha20-Poly1305 ciphertext and tag of
    the normalised code, ``key_id`` the cabinet's ``status.code_key.key_id``. A code is
    10-15 digits (keypad) or 16-64 upper-case letters and digits (QR). The exact rule and
    test vectors: docs/mqtt/README.md, "Pickup codes".
    """

    purpose: Literal["deposit", "collect"]
    scheme: Literal["x25519-hkdf-sha256-chacha20poly1305"]
    key_id: Annotated[str, _pattern(r"^[0-9a-f]{16}$")]
    epk: Annotated[str, _pattern(r"^[A-Za-z0-9+/]{43}=$")]
    sealed: Annotated[str, _pattern(r"^[A-Za-z0-9+/]{20,160}={0,2}$")]


class AssignArgs(_Model, frozen=True, kw_only=True):
    """Reserve a compartment for an order. The cabinet chooses one matching size, zone and
    pool unless ``compartment`` names it. ``pickup_from``/``expires_at`` bound the window."""

    order_id: OrderId
    size: Size
    zone: ZoneName
    pool: PoolName
    tenant: Name | None = None
    compartment: CompartmentId | None = None
    pickup_from: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None
    codes: Annotated[list[SealedCode], Meta(max_length=4)] = field(default_factory=list)


class OpenArgs(_Model, frozen=True, kw_only=True):
    """Pulse one compartment's lock now."""

    compartment: CompartmentId
    reason: OpenReason


class ReleaseArgs(_Model, frozen=True, kw_only=True):
    """End an assignment (order cancelled or completed elsewhere): by compartment or by order,
    exactly one of the two."""

    compartment: CompartmentId | None = None
    order_id: OrderId | None = None

    def __post_init__(self) -> None:
        if (self.compartment is None) == (self.order_id is None):
            raise ValueError("give exactly one of compartment and order_id")


class BlockArgs(_Model, frozen=True, kw_only=True):
    """Take a compartment out of service."""

    compartment: CompartmentId
    reason: Reason


class UnblockArgs(_Model, frozen=True, kw_only=True):
    """Return a compartment to service."""

    compartment: CompartmentId
    reason: Reason


class ClearFaultArgs(_Model, frozen=True, kw_only=True):
    """End a compartment's ``compartment_fault`` (its lock or door sensor repaired): it is
    assigned and opened for customers again, and its count of pulses no door opening
    followed starts from zero."""

    compartment: CompartmentId
    reason: Reason


class GetStateArgs(_Model, frozen=True, kw_only=True):
    """No arguments: the reply's result is the current :class:`State`."""


class ApplyConfigArgs(_Model, frozen=True, kw_only=True):
    """A partial configuration (same keys as the TOML file) merged over the current one and
    validated by the daemon; ``base_hash``, when given, must equal the current config hash."""

    config: dict[str, Any]
    base_hash: Annotated[str, _pattern(r"^[0-9a-f]{8,64}$")] | None = None


class RevokedGrant(_Model, frozen=True, kw_only=True):
    """One revoked technician grant, kept by the cabinet until the grant's own end."""

    grant_id: Annotated[str, _pattern(r"^[A-Za-z0-9._:-]{1,64}$")]
    not_after: Annotated[int, Meta(ge=0, le=2**53 - 1)]


class RevokeGrantsArgs(_Model, frozen=True, kw_only=True):
    """Technician grants to add to the cabinet's revocation list, which keeps each entry
    until its ``not_after`` (sending the whole list again is fine: repeats are counted, never
    removed). ``serial`` never goes down (an older one is refused with ``conflict``), and
    stays within what every JSON reader holds exactly (at most 2^53 - 1): a larger one would
    freeze the list for good. Only a dispatch root key may send it."""

    serial: Annotated[int, Meta(ge=0, le=2**53 - 1)]
    revoked: Annotated[list[RevokedGrant], Meta(max_length=200)] = field(
        default_factory=list)


class CommandEnvelope(_Model, frozen=True, kw_only=True):
    """The fields every command carries (see ``docs/design-notes.md``). ``site`` is required
    in a signed command (the signature then binds site and cabinet)."""

    id: CommandId
    site: CabinetId | None = None
    cabinet: CabinetId
    expires: ClockReading


class AssignCommand(CommandEnvelope, frozen=True, kw_only=True):
    type: Literal["assign"]
    args: AssignArgs


class OpenCommand(CommandEnvelope, frozen=True, kw_only=True):
    type: Literal["open"]
    args: OpenArgs


class ReleaseCommand(CommandEnvelope, frozen=True, kw_only=True):
    type: Literal["release"]
    args: ReleaseArgs


class BlockCommand(CommandEnvelope, frozen=True, kw_only=True):
    type: Literal["block"]
    args: BlockArgs


class UnblockCommand(CommandEnvelope, frozen=True, kw_only=True):
    type: Literal["unblock"]
    args: UnblockArgs


class ClearFaultCommand(CommandEnvelope, frozen=True, kw_only=True):
    type: Literal["clear_fault"]
    args: ClearFaultArgs


class ClearLaneLockoutArgs(_Model, frozen=True, kw_only=True):
    """Give a lane's inputs their whole wrong-code budget back and end its ``code_guessing``
    alarms (staff, after looking at the lane)."""

    lane: Name
    reason: Reason


class ClearLaneLockoutCommand(CommandEnvelope, frozen=True, kw_only=True):
    type: Literal["clear_lane_lockout"]
    args: ClearLaneLockoutArgs


class GetStateCommand(CommandEnvelope, frozen=True, kw_only=True):
    type: Literal["get_state"]
    args: GetStateArgs = field(default_factory=GetStateArgs)


class ApplyConfigCommand(CommandEnvelope, frozen=True, kw_only=True):
    type: Literal["apply_config"]
    args: ApplyConfigArgs


class RevokeGrantsCommand(CommandEnvelope, frozen=True, kw_only=True):
    type: Literal["revoke_grants"]
    args: RevokeGrantsArgs


class GetClockArgs(_Model, frozen=True, kw_only=True):
    """No arguments."""


class GetClockCommand(_Model, frozen=True, kw_only=True):
    """Ask the cabinet for its clock: the one command that needs no deadline.

    It acts on nothing, reads nothing but the clock, claims no id and is never signed, so
    it is answered whatever the deadline an integrator could build: the reply's
    ``result`` (and ``cabinet_clock``) is the cabinet's clock *now*, from which the first
    real command's ``expires`` is built (the retained ``status`` carries the clock of its
    publication, which may be hours old). ``cabinet`` must be this cabinet
    (``wrong_cabinet``), ``site`` this site when given (``wrong_site``).
    """

    id: CommandId
    type: Literal["get_clock"]
    site: CabinetId | None = None
    cabinet: CabinetId
    args: GetClockArgs = field(default_factory=GetClockArgs)


Command: TypeAlias = (
    AssignCommand | OpenCommand | ReleaseCommand | BlockCommand | UnblockCommand
    | ClearFaultCommand | GetStateCommand | ApplyConfigCommand | ClearLaneLockoutCommand
    | RevokeGrantsCommand
)
"""Any plain command; ``type`` selects the model (:data:`COMMAND_MODELS`)."""

COMMAND_TYPES: tuple[str, ...] = (
    "assign", "open", "release", "block", "unblock", "clear_fault", "get_state",
    "apply_config", "clear_lane_lockout", "revoke_grants",
)
QUERY_TYPES: tuple[str, ...] = ("get_clock",)
"""Plain queries that act on nothing and carry no deadline (never signed, never recorded):
:class:`GetClockCommand`. Not in :data:`COMMAND_TYPES`, whose types the verifier checks."""
SIGNED_COMMAND_TYPES: frozenset[str] = frozenset(
    t for t in COMMAND_TYPES if signature_policy(t) is SignaturePolicy.REQUIRED
)
"""Types the daemon accepts only in the signed form (they open doors, change codes,
assignments, availability or the configuration). Derived from the verifier's
:data:`~controller.security.verify.SIGNATURE_POLICY`, the one table that decides."""

COMMAND_MODELS: dict[str, type[Command]] = {
    "assign": AssignCommand, "open": OpenCommand, "release": ReleaseCommand,
    "block": BlockCommand, "unblock": UnblockCommand, "clear_fault": ClearFaultCommand,
    "get_state": GetStateCommand,
    "apply_config": ApplyConfigCommand, "clear_lane_lockout": ClearLaneLockoutCommand,
    "revoke_grants": RevokeGrantsCommand,
}
"""The model of each plain command, by ``type`` (the tag of :data:`Command`)."""


class Grant(_Model, frozen=True, kw_only=True):
    """Dispatch's signed grant of a role, a site and a time window to a technician's key:
    ``signed`` is the grant's JSON text, ``key_id`` the root key that signed it."""

    signed: Annotated[str, Meta(min_length=2, max_length=2048)]
    key_id: KeyId
    sig: Ed25519Signature


class SignedCommand(_Model, frozen=True, kw_only=True):
    """A command signed by dispatch: ``signed`` is the command's JSON text exactly as signed,
    ``sig`` the base64 Ed25519 signature over its UTF-8 bytes, ``key_id`` the dispatch key.

    The signature is checked by the daemon against its trusted keys; :meth:`inner` decodes the
    signed text (after, never instead of, that check).
    """

    signed: Annotated[str, Meta(min_length=2, max_length=DEFAULT_MAX_COMMAND_BYTES)]
    key_id: KeyId
    sig: Ed25519Signature
    grant: Grant | None = None
    """A technician's key: dispatch's grant for ``key_id`` (absent for a root key)."""

    def signed_bytes(self) -> bytes:
        """The exact bytes the signature covers."""
        return self.signed.encode("utf-8", errors="surrogatepass")

    def inner(self, *, max_bytes: int = DEFAULT_MAX_COMMAND_BYTES) -> Command:
        """Decode the signed text as a plain command (a signed form inside is refused)."""
        decoded = decode_command(self.signed_bytes(), max_bytes=max_bytes)
        if isinstance(decoded, SignedCommand):
            raise CommandRejected(ErrorCode.INVALID_FIELD, "a signed command cannot nest",
                                  "signed")
        if isinstance(decoded, GetClockCommand):
            raise CommandRejected(ErrorCode.INVALID_FIELD, "get_clock is sent plain, never "
                                  "signed", "signed", command_id=decoded.id)
        return decoded


# ---------------------------------------------------------------------------------------------
# reply (outbound, one per command)


class ReplyError(_Model, frozen=True, kw_only=True):
    """Why a command was refused; ``field`` is a dotted path into the command."""

    code: ErrorCode
    message: Annotated[str, Meta(min_length=1, max_length=500)]
    field: Annotated[str, Meta(max_length=200)] | None = None
    #: ``rate_limited`` (a lock's cooldown or pulse rate limit): seconds after which the
    #: same command, with a new id and deadline, may be accepted.
    retry_after_s: Annotated[float, Meta(ge=0)] | None = None


class PulseReport(_Model, frozen=True, kw_only=True):
    """What the cabinet knows of the pulse an ``open`` sent (``result.pulse``).

    ``outcome`` ``pulsed``: the board acknowledged the pulse (``confirmed_by`` ``ack``), or
    its acknowledgement was lost and the lock output read back on (``readback``);
    ``accepted`` is ``true``, ``timed_by`` says who ends the pulse (``board``: the board's
    own timer; ``driver``: the cabinet switched it off), ``board_ms`` how long the board
    took to answer. ``outcome`` ``unconfirmed``: the pulse frame went out and whether it
    released the lock is unknown (the acknowledgement was lost, late or garbled, and
    nothing could be read back); it is never sent again. ``evidence`` says what the cabinet
    saw; a door that opens within ``open_detect_s`` of the verdict (when this reply is
    sent) is an authorised opening, and the
    ``events`` settle it (``door_opened`` or ``open_not_detected``). Tell the customer to
    pull the door. A pulse the board did not make is no result: the reply is the refusal
    ``hardware``. ``duration_s`` is the pulse asked for, after the cabinet's cap.
    """

    outcome: Literal["pulsed", "unconfirmed"]
    duration_s: Annotated[float, Meta(ge=0)]
    accepted: Literal[True] | None = None
    timed_by: Literal["board", "driver"] | None = None
    board_ms: Annotated[float, Meta(ge=0)] | None = None
    confirmed_by: Literal["ack", "readback"] | None = None
    evidence: Annotated[str, Meta(max_length=200)] | None = None
    open_detect_s: Annotated[float, Meta(gt=0)] | None = None

    def __post_init__(self) -> None:
        pulsed = (self.accepted, self.timed_by, self.confirmed_by)
        if self.outcome == "pulsed" and None in pulsed:
            raise ValueError("a pulsed outcome carries accepted, timed_by and confirmed_by")
        if self.outcome == "unconfirmed" and pulsed != (None, None, None):
            raise ValueError("an unconfirmed outcome carries no accepted, timed_by or "
                             "confirmed_by")


class OpenResult(_Model, frozen=True, kw_only=True):
    """The ``result`` of an ``open`` reply: the compartment and what is known of its pulse."""

    compartment: CompartmentId
    pulse: PulseReport


class Reply(_Model, frozen=True, kw_only=True):
    """``{root}/reply`` (or the request's MQTT 5 response topic): the answer to one command.

    ``id`` echoes the command id, refusals included, whenever it can be read without doubt
    (:func:`controller.strictjson.recover_id`); ``None`` only when it cannot.
    ``ok: true`` carries ``result``; ``ok: false`` carries ``error``. A repeated command id
    gets the first reply again. The result of an ``open`` is an :class:`OpenResult` (the
    cabinet builds it with that model; the reply schema documents it); its
    ``pulse.outcome`` is ``pulsed`` or ``unconfirmed`` (see :class:`PulseReport`).
    """

    id: CommandId | None = None
    ok: bool
    result: dict[str, Any] | None = None
    error: ReplyError | None = None
    cabinet_clock: ClockReading

    def __post_init__(self) -> None:
        if self.ok and (self.error is not None or self.result is None):
            raise ValueError("ok replies carry result and no error")
        if not self.ok and (self.error is None or self.result is not None):
            raise ValueError("refusals carry error and no result")

    @classmethod
    def success(cls, command_id: str, result: dict[str, Any], clock: ClockReading) -> Reply:
        return cls(id=command_id, ok=True, result=result, cabinet_clock=clock)

    @classmethod
    def refusal(cls, rejected: CommandRejected, clock: ClockReading,
                command_id: str | None = None) -> Reply:
        """The reply for a :class:`CommandRejected` (its ``command_id`` unless given)."""
        return cls(
            id=command_id if command_id is not None else rejected.command_id, ok=False,
            error=ReplyError(code=rejected.code, message=rejected.message[:500] or "refused",
                             field=rejected.field, retry_after_s=rejected.retry_after_s),
            cabinet_clock=clock,
        )


# ---------------------------------------------------------------------------------------------
# decoding untrusted input


def _too_deep(value: Any) -> bool:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_DEPTH:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


_STEP = re.compile(r"\.([^.\[]+)|\[([^\]]*)\]")


def _path(location: str) -> list[str]:
    """msgspec's location (``$.args.codes[0].sealed``) as path parts (``args``, ``codes``,
    ``0``, ``sealed``)."""
    return [name or index.strip('"') for name, index in _STEP.findall(location.lstrip("$"))]


def _split(exc: ValidationError) -> tuple[str, list[str]]:
    """msgspec's message and the path parts of its location."""
    text, at, location = str(exc).rpartition(" - at `")
    if not at:
        text, location = str(exc), "$`"
    text = text.replace("\\\\Z'", "$'")  # a pattern as the schema states it (constraints.py)
    return text, _path(location.removesuffix("`"))


_UNKNOWN = "Object contains unknown field `"
_MISSING = "Object missing required field `"
_Fault = tuple[list[str], str]  # where, and what: "missing", "unknown" or msgspec's message


def _struct_in(annotation: Any) -> type[msgspec.Struct] | None:
    """The struct an annotation (``S``, ``S | None``, ``Annotated[...]``) reads, if any."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return annotation
    if get_origin(annotation) in (Union, UnionType):
        for arg in get_args(annotation):
            found = _struct_in(arg)
            if found is not None:
                return found
    return None


def _items_of(annotation: Any) -> Any:
    """The item annotation of ``list[X]`` (``Annotated`` or not), else ``None``."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return get_args(annotation)[0] if get_origin(annotation) is list else None


def _first_fault(value: Any, annotation: Any, where: list[str]) -> _Fault | None:
    """The fault a document reports first, field by field in the model's order: a field
    missing or wrong, then a field the model does not have, then the model's own rule.

    msgspec stops at the first fault in the document's order; dispatch has always been told
    the first in the model's order (the order of the pydantic models before, decision
    0022). This runs only for a document already refused, to name the same field."""
    struct = _struct_in(annotation)
    if struct is not None and isinstance(value, dict):
        fields = msgspec.structs.fields(struct)
        for info in fields:
            if info.encode_name not in value:
                if info.required:
                    return [*where, info.encode_name], "missing"
                continue
            fault = _first_fault(value[info.encode_name], info.type, [*where, info.encode_name])
            if fault is not None:
                return fault
        known = {info.encode_name for info in fields}
        for key in value:
            if key not in known:
                return [*where, str(key)], "unknown"
    items = _items_of(annotation)
    if items is not None and isinstance(value, list):
        for index, item in enumerate(value):
            fault = _first_fault(item, items, [*where, str(index)])
            if fault is not None:
                return fault
    try:
        msgspec.convert(value, annotation)
    except ValidationError as exc:
        text, parts = _split(exc)
        for prefix, kind in ((_UNKNOWN, "unknown"), (_MISSING, "missing")):
            if text.startswith(prefix) and text.endswith("`"):
                return [*where, *parts, text[len(prefix):-1]], kind
        return [*where, *parts], text
    return None


# ASCII digits only: float() would read other scripts' digits too.
_TIME = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt_ ]([0-9]{2}:[0-9]{2})(:[0-9]{2}(?:\.[0-9]+)?)?"
    r"([Zz]|[+-][0-9]{2}:?[0-9]{2})")
_SECONDS = re.compile(r"[+-]?(?:[0-9]+|(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _lenient_time(text: str) -> str | None:
    """The RFC 3339 form of a time as pydantic read it, which msgspec reads the same:
    ``_`` between date and time, no seconds, digits past the microsecond cut off (msgspec
    refuses the first two and rounds the last), or UNIX seconds as a number in a string
    (milliseconds above 2e10), which msgspec refuses. ``None`` for anything else."""
    parts = _TIME.fullmatch(text)
    if parts is not None:
        date, minutes, seconds, zone = parts.groups()
        # Digits past the microsecond are dropped, not rounded.
        return f"{date}T{minutes}{(seconds or ':00')[:10]}{zone}"
    if _SECONDS.fullmatch(text) is None or len(text) > 32:
        return None
    # As pydantic read it: a float, its fraction rounded to the microsecond (to the
    # millisecond's microsecond for milliseconds).
    value = float(text)
    if not math.isfinite(value):
        return None
    whole = math.floor(value)
    fraction = value - whole
    if abs(whole) > 20_000_000_000:
        whole, milliseconds = divmod(whole, 1000)
        micros = milliseconds * 1000 + math.floor(fraction * 1000 + 0.5)
    else:
        micros = math.floor(fraction * 1_000_000 + 0.5)
    try:
        return (_EPOCH + timedelta(seconds=whole, microseconds=micros)).isoformat()
    except OverflowError:
        return None


def _is_time(annotation: Any) -> bool:
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, UnionType):
        return any(_is_time(arg) for arg in get_args(annotation))
    return annotation is datetime


def _lenient_times(value: Any, annotation: Any) -> bool:
    """Rewrite, in place, the times of a command to the RFC 3339 form of what pydantic
    read (:func:`_lenient_time`): whether any changed. Only ``assign``'s window has times."""
    struct = _struct_in(annotation)
    if struct is None or not isinstance(value, dict):
        return False
    changed = False
    for info in msgspec.structs.fields(struct):
        item = value.get(info.encode_name)
        if isinstance(item, str) and _is_time(info.type):
            fixed = _lenient_time(item)
            if fixed is not None and fixed != item:
                value[info.encode_name] = fixed
                changed = True
        elif isinstance(item, dict):
            changed = _lenient_times(item, info.type) or changed
    return changed


def _rejection(exc: msgspec.DecodeError, command_id: str | None, model: type[msgspec.Struct],
               document: Any, text: str | None = None) -> CommandRejected:
    """The refusal for a document msgspec could not read as ``model``. ``field`` is the
    dotted path of the field at fault (``args.codes.0.sealed``; an unknown or missing
    field's own path), as dispatch has always been told."""
    if not isinstance(exc, ValidationError):
        # Python's reader took it and msgspec's did not: a lone surrogate escape.
        where = strictjson.lone_surrogate(text) if text is not None else None
        return CommandRejected(ErrorCode.BAD_JSON, f"payload refused: {where}" if where
                               else "payload is not valid JSON", command_id=command_id)
    fault = _first_fault(document, model, [])
    if fault is None:  # pragma: no cover - the two readings of one document agree
        text, parts = _split(exc)
        fault = parts, text
    parts, what = fault
    field = ".".join(parts) or None
    if what in ("missing", "unknown"):
        message = f"{what} field {field}"
    else:
        message = f"{field or 'command'}: {what}"
    return CommandRejected(ErrorCode.INVALID_FIELD, message[:300], field, command_id=command_id)


def decode_command(
    payload: bytes | bytearray | memoryview | str, *, max_bytes: int = DEFAULT_MAX_COMMAND_BYTES,
    received_bytes: int | None = None,
) -> Command | SignedCommand | GetClockCommand:
    """Decode one ``cmd`` payload; raise :class:`CommandRejected` for any bad input, and
    nothing else.

    Checks, in order: size (``too_large``), UTF-8 and JSON without duplicate keys, NaN or
    more than 16 levels of nesting (``bad_json``), a JSON object (``bad_json``), then the
    signed form if the object has ``signed``, else a known ``type`` (``unknown_command``)
    and the model of that type, strictly: no coercion of ``"5"`` to ``5``, no unknown field
    (``invalid_field`` with the field's dotted path). The rejection carries the command id
    when one could be read, for the reply.

    ``received_bytes`` is the size of the message as it arrived when ``payload`` was kept
    cut (the link keeps an oversized payload to the limit plus one byte): the ``too_large``
    refusal states it. Without it, a payload of exactly the limit plus one byte may be a
    cut one, and the refusal says "more than" the limit.
    """
    command_id: str | None = None
    try:
        if isinstance(payload, str):
            raw = payload.encode("utf-8", errors="surrogatepass")
        elif isinstance(payload, (bytes, bytearray, memoryview)):
            raw = bytes(payload)
        else:
            raise CommandRejected(ErrorCode.BAD_JSON, "payload must be bytes")
        if len(raw) > max_bytes:
            size = max(len(raw), received_bytes or 0)
            if received_bytes is None and len(raw) == max_bytes + 1:
                told = f"payload is more than {max_bytes} bytes"
            else:
                told = f"payload is {size} bytes"
            raise CommandRejected(ErrorCode.TOO_LARGE, f"{told}, the limit is {max_bytes}")
        try:
            text = raw.decode("utf-8")
            obj = strictjson.loads(text)
        except ValueError as exc:
            raise CommandRejected(ErrorCode.BAD_JSON,
                                  f"payload refused: {strictjson.describe(exc)}") from exc
        if not isinstance(obj, dict):
            raise CommandRejected(ErrorCode.BAD_JSON, "a command must be a JSON object")
        if _too_deep(obj):
            raise CommandRejected(ErrorCode.BAD_JSON, "nested too deep")
        maybe_id = obj.get("id")
        if isinstance(maybe_id, str) and len(maybe_id) <= 64 and all(
            c.isascii() and (c.isalnum() or c in "._:-") for c in maybe_id
        ) and maybe_id:
            command_id = maybe_id
        if "signed" in obj:
            if command_id is None and isinstance(obj.get("signed"), str):
                command_id = _recover_id(obj["signed"])
            try:
                return msgspec.json.decode(raw, type=SignedCommand)
            except msgspec.DecodeError as exc:
                raise _rejection(exc, command_id, SignedCommand, obj, text) from None
        kind = obj.get("type")
        if kind == "get_clock":
            try:
                return msgspec.json.decode(raw, type=GetClockCommand)
            except msgspec.DecodeError as exc:
                raise _rejection(exc, command_id, GetClockCommand, obj, text) from None
        if "type" not in obj:
            raise CommandRejected(ErrorCode.INVALID_FIELD, "missing field type", "type",
                                  command_id=command_id)
        if not isinstance(kind, str) or kind not in COMMAND_TYPES:
            raise CommandRejected(ErrorCode.UNKNOWN_COMMAND, "unknown command type", "type",
                                  command_id=command_id)
        model = COMMAND_MODELS[kind]
        try:
            command = msgspec.json.decode(raw, type=model)
        except ValidationError as exc:
            if model is not AssignCommand or not _lenient_times(obj, model):
                raise _rejection(exc, command_id, model, obj) from None
        except msgspec.DecodeError as exc:
            raise _rejection(exc, command_id, model, obj, text) from None
        else:
            if model is not AssignCommand or not _lenient_times(obj, model):
                return command
        # An assign whose window was written in a form pydantic read differently.
        try:
            return msgspec.convert(obj, model)
        except ValidationError as exc:
            raise _rejection(exc, command_id, model, obj) from None
    except CommandRejected as exc:
        if exc.command_id is None:
            # Refused before its id was read (too large, duplicate keys, NaN, a signed
            # command's outer form): read the id leniently, to label the refusal only.
            exc.command_id = _recover_id(payload)
        raise
    except Exception as exc:  # the promise: nothing but CommandRejected leaves this function
        raise CommandRejected(ErrorCode.INTERNAL, "command could not be decoded",
                              command_id=command_id or _recover_id(payload)) from exc


def _recover_id(payload: object) -> str | None:
    try:
        if isinstance(payload, str):
            return strictjson.recover_id(payload)
        if isinstance(payload, (bytes, bytearray, memoryview)):
            return strictjson.recover_id(bytes(payload))
    except Exception:  # labelling a refusal must never fail it
        return None
    return None
