"""A compartment's life: assigned to an order, loaded, collected, freed; blocked or faulty.

The *phase* follows the order::

    FREE --assign--> RESERVED --deposit, door closed, occupied--> LOADED
      ^                 |  ^           (empty: deposit_empty, stays RESERVED)      |
      |                 |  '--------------- deposit reopened, empty ---------------'
      |  release        |                                                         |
      +-----------------'     collection, door closed, empty --> COLLECTED --hold--+
      |                                                            (hold 0: at once)
      +---- release / staff retrieval <-- EXPIRED <-- past expiry (RESERVED, LOADED)
                                                  <-- release of a LOADED order

Two *conditions* sit on top of the phase and show as the :attr:`Compartment.state`
while they hold: ``BLOCKED`` (maintenance: never assigned, opened by staff only) and
``FAULT`` (``fault_after`` consecutive open-not-detected, default 3: alarm
``compartment_fault`` until :meth:`Compartment.clear_fault`). The phase under them is
kept: unblocking a loaded compartment gives it back loaded.

Doors open for a *purpose* (:class:`OpenPurpose`), declared before the pulse with
:meth:`open_for_deposit`, :meth:`open_for_collection` or :meth:`open_for_staff`; the
services then report what the door did (:meth:`door_opened`, :meth:`door_closed`,
:meth:`open_not_detected`, :meth:`unlock_failed`).

Occupancy rule: *in doubt, goods are inside*. A deposit is "loaded" when the sensor
says occupied, when no sensor is fitted, and (flagged ``confirmed=False``) when the
sensor is unknown; a deposit that leaves the compartment empty is reported
(``deposit_empty``), not loaded. A collection frees the compartment only when the
sensor says empty or no sensor is fitted; occupied gives ``collection_incomplete``,
unknown gives ``collection_unconfirmed``, and the compartment stays LOADED.

Every refused operation raises :class:`~controller.domain.errors.DomainError` and changes
nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from controller.domain.errors import DomainError, ErrorCode
from controller.domain.events import AlarmKind, AlarmSet, Detail, DomainEvent, EventKind
from controller.domain.signals import OccupancyReading

__all__ = [
    "DEFAULT_FAULT_AFTER",
    "Compartment",
    "CompartmentSpec",
    "CompartmentState",
    "CompartmentStatus",
    "Compartments",
    "OpenPurpose",
    "Order",
    "Size",
    "ZoneKind",
]

#: Consecutive open-not-detected after which a compartment is faulty.
DEFAULT_FAULT_AFTER = 3


class Size(StrEnum):
    """Compartment and order sizes, S < M < L < XL (compare with :attr:`rank`)."""

    S = "S"
    M = "M"
    L = "L"
    XL = "XL"

    @property
    def rank(self) -> int:
        """0 for S up to 3 for XL."""
        return _SIZE_ORDER.index(self)

    def fits(self, requested: Size) -> bool:
        """Whether a compartment of this size holds an order of size ``requested``."""
        return self.rank >= requested.rank


_SIZE_ORDER = (Size.S, Size.M, Size.L, Size.XL)


class ZoneKind(StrEnum):
    """Temperature zone kinds."""

    AMBIENT = "ambient"
    CHILLED = "chilled"
    FROZEN = "frozen"

    @property
    def is_cold(self) -> bool:
        """Chilled and frozen zones."""
        return self is not ZoneKind.AMBIENT


class CompartmentState(StrEnum):
    """What a compartment reports: its phase, or BLOCKED / FAULT while they hold."""

    FREE = "free"
    RESERVED = "reserved"
    LOADED = "loaded"
    COLLECTED = "collected"
    EXPIRED = "expired"
    BLOCKED = "blocked"
    FAULT = "fault"


class OpenPurpose(StrEnum):
    """Why a door is being opened."""

    DEPOSIT = "deposit"
    COLLECTION = "collection"
    STAFF = "staff"


def _invalid(message: str, field: str) -> DomainError:
    return DomainError(ErrorCode.INVALID_ARGUMENT, message, field=field)


@dataclass(frozen=True, slots=True)
class Order:
    """An order placed in a compartment. Times in the caller's clock.

    ``pickup_from`` (optional) is when collection may start; ``expires_at`` is when the
    order expires (end of the pickup window, set per tenant).
    """

    order_id: str
    pool: str
    size: Size
    zone: ZoneKind
    expires_at: float
    pickup_from: float | None = None

    def __post_init__(self) -> None:
        if not self.order_id:
            raise _invalid("order id must not be empty", "order_id")
        if not self.pool:
            raise _invalid("pool must not be empty", "pool")
        if self.pickup_from is not None and self.pickup_from >= self.expires_at:
            raise _invalid("pickup window ends before it starts", "pickup_from")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reads it back."""
        return {
            "order_id": self.order_id,
            "pool": self.pool,
            "size": self.size.value,
            "zone": self.zone.value,
            "expires_at": self.expires_at,
            "pickup_from": self.pickup_from,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Order:
        """The inverse of :meth:`to_dict`."""
        return cls(
            order_id=str(data["order_id"]),
            pool=str(data["pool"]),
            size=Size(data["size"]),
            zone=ZoneKind(data["zone"]),
            expires_at=float(data["expires_at"]),
            pickup_from=None if data.get("pickup_from") is None else float(data["pickup_from"]),
        )


@dataclass(frozen=True, slots=True)
class CompartmentSpec:
    """What the cabinet config says about a compartment."""

    compartment_id: str
    size: Size
    zone: str
    zone_kind: ZoneKind
    pool: str
    has_occupancy_sensor: bool = False


@dataclass(frozen=True, slots=True)
class CompartmentStatus:
    """A snapshot of a compartment for the state topic."""

    compartment: str
    state: CompartmentState
    phase: CompartmentState
    order_id: str | None
    blocked: bool
    faulted: bool
    goods_inside: bool
    pending_open: OpenPurpose | None
    alarms: frozenset[AlarmKind]


_PHASES = (
    CompartmentState.FREE,
    CompartmentState.RESERVED,
    CompartmentState.LOADED,
    CompartmentState.COLLECTED,
    CompartmentState.EXPIRED,
)


class Compartment:
    """One compartment's state machine. Methods return events or raise
    :class:`DomainError` without changing anything."""

    def __init__(
        self,
        spec: CompartmentSpec,
        *,
        fault_after: int = DEFAULT_FAULT_AFTER,
        collected_hold_s: float = 0.0,
    ) -> None:
        if fault_after < 1:
            raise _invalid("fault_after must be >= 1", "fault_after")
        if collected_hold_s < 0:
            raise _invalid("collected_hold_s must be >= 0", "collected_hold_s")
        self.spec = spec
        self.fault_after = fault_after
        self.collected_hold_s = collected_hold_s
        self._phase = CompartmentState.FREE
        self._order: Order | None = None
        self._goods_inside = False
        self._blocked = False
        self._block_reason = ""
        self._faulted = False
        self._faulted_at: float | None = None
        self._not_detected_count = 0
        self._pending: OpenPurpose | None = None
        self._pending_before: OpenPurpose | None = None
        self._opened_for: OpenPurpose | None = None
        self._free_at: float | None = None
        self._alarms = AlarmSet(spec.compartment_id)

    # -- queries ---------------------------------------------------------------------

    @property
    def compartment_id(self) -> str:
        """The compartment id from the config."""
        return self.spec.compartment_id

    @property
    def state(self) -> CompartmentState:
        """BLOCKED, FAULT, or the phase."""
        if self._blocked:
            return CompartmentState.BLOCKED
        if self._faulted:
            return CompartmentState.FAULT
        return self._phase

    @property
    def phase(self) -> CompartmentState:
        """FREE, RESERVED, LOADED, COLLECTED or EXPIRED, whatever the conditions."""
        return self._phase

    @property
    def order(self) -> Order | None:
        """The order held, if any."""
        return self._order

    @property
    def blocked(self) -> bool:
        """Whether maintenance blocked the compartment."""
        return self._blocked

    @property
    def faulted(self) -> bool:
        """Whether the compartment is faulty (repeated open-not-detected)."""
        return self._faulted

    @property
    def faulted_at(self) -> float | None:
        """When the fault was raised (wall clock), while faulty; else None."""
        return self._faulted_at if self._faulted else None

    @property
    def goods_inside(self) -> bool:
        """Whether goods are (in doubt: may be) inside."""
        return self._goods_inside

    @property
    def pending_open(self) -> OpenPurpose | None:
        """The purpose of an open requested and not yet resolved."""
        return self._pending or self._opened_for

    @property
    def active_alarms(self) -> frozenset[AlarmKind]:
        """``{COMPARTMENT_FAULT}`` while faulty."""
        return self._alarms.active

    @property
    def is_assignable(self) -> bool:
        """FREE, not blocked, not faulty."""
        return self.state is CompartmentState.FREE

    def status(self) -> CompartmentStatus:
        """A snapshot for the state topic."""
        return CompartmentStatus(
            compartment=self.compartment_id,
            state=self.state,
            phase=self._phase,
            order_id=self._order.order_id if self._order else None,
            blocked=self._blocked,
            faulted=self._faulted,
            goods_inside=self._goods_inside,
            pending_open=self.pending_open,
            alarms=self._alarms.active,
        )

    def next_deadline(self) -> float | None:
        """The earliest time at which :meth:`tick` may change something, or None."""
        if self._phase is CompartmentState.COLLECTED:
            return self._free_at
        if self._phase in (CompartmentState.RESERVED, CompartmentState.LOADED) and self._order:
            return self._order.expires_at
        return None

    # -- dispatch operations ---------------------------------------------------------

    def assign(self, order: Order, now: float) -> list[DomainEvent]:
        """Reserve this compartment for ``order``."""
        self._refuse_if_blocked_or_faulty()
        if self._phase is not CompartmentState.FREE:
            raise self._wrong_state("assign")
        if order.pool != self.spec.pool:
            raise DomainError(
                ErrorCode.WRONG_POOL,
                f"compartment {self.compartment_id} belongs to pool {self.spec.pool!r}, "
                f"not {order.pool!r}",
                field="pool",
            )
        if not self.spec.size.fits(order.size):
            raise _invalid(
                f"order size {order.size} does not fit compartment size {self.spec.size}", "size"
            )
        if order.zone is not self.spec.zone_kind:
            raise _invalid(
                f"order zone {order.zone} but compartment zone is {self.spec.zone_kind}", "zone"
            )
        if now >= order.expires_at:
            raise DomainError(ErrorCode.ORDER_EXPIRED, "order already expired", field="expires_at")
        self._phase = CompartmentState.RESERVED
        self._order = order
        self._goods_inside = False
        return [
            self._event(
                EventKind.COMPARTMENT_ASSIGNED,
                now,
                order=order.order_id,
                pool=order.pool,
                size=order.size.value,
                zone=order.zone.value,
                expires_at=order.expires_at,
            )
        ]

    def release(self, now: float, reason: str = "cancelled") -> list[DomainEvent]:
        """Cancel the order. Goods inside: the compartment waits (EXPIRED) for a staff
        retrieval; otherwise it is freed."""
        order = self._order
        if order is None:
            raise DomainError(
                ErrorCode.NOT_ASSIGNED,
                f"compartment {self.compartment_id} holds no order",
                field="compartment",
            )
        if self._phase is CompartmentState.EXPIRED and self._goods_inside:
            raise DomainError(
                ErrorCode.WRONG_STATE,
                "goods inside: open for staff retrieval before releasing",
                field="compartment",
            )
        details: dict[str, Detail] = {"order": order.order_id, "reason": reason}
        if self._phase is CompartmentState.LOADED:
            self._phase = CompartmentState.EXPIRED
            return [self._event(EventKind.ORDER_RELEASED, now, awaiting_retrieval=True, **details)]
        events = [self._event(EventKind.ORDER_RELEASED, now, awaiting_retrieval=False, **details)]
        return events + self._free(now)

    def block(self, now: float, reason: str = "") -> list[DomainEvent]:
        """Block for maintenance: never assigned, opened by staff only."""
        if self._blocked:
            raise DomainError(ErrorCode.WRONG_STATE, "already blocked", field="compartment")
        self._blocked = True
        self._block_reason = reason
        return [self._event(EventKind.COMPARTMENT_BLOCKED, now, reason=reason)]

    def unblock(self, now: float) -> list[DomainEvent]:
        """End a block; the compartment shows its phase again."""
        if not self._blocked:
            raise DomainError(ErrorCode.WRONG_STATE, "not blocked", field="compartment")
        self._blocked = False
        self._block_reason = ""
        return [self._event(EventKind.COMPARTMENT_UNBLOCKED, now, phase=self._phase.value)]

    def clear_fault(self, now: float) -> list[DomainEvent]:
        """A technician fixed the lock: clear the fault and its alarm."""
        if not self._faulted:
            raise DomainError(ErrorCode.WRONG_STATE, "not faulty", field="compartment")
        self._faulted = False
        self._faulted_at = None
        self._not_detected_count = 0
        return self._alarms.clear(AlarmKind.COMPARTMENT_FAULT, now)

    # -- open requests ---------------------------------------------------------------

    def check_open(self, purpose: OpenPurpose) -> None:
        """Raise DomainError (blocked, faulty) when no open for ``purpose`` can be allowed
        whatever the time: checked before the lock's own limits, so a compartment out of use
        is refused as such, never with a retry. Changes nothing."""
        if purpose in (OpenPurpose.DEPOSIT, OpenPurpose.COLLECTION):
            self._refuse_if_blocked_or_faulty()

    def open_for_deposit(self, now: float) -> list[DomainEvent]:
        """Declare a courier/staff deposit open (RESERVED, or LOADED to add goods)."""
        self._refuse_if_blocked_or_faulty()
        order = self._require_order()
        if self._phase is CompartmentState.EXPIRED or now >= order.expires_at:
            raise DomainError(ErrorCode.ORDER_EXPIRED, "order expired", field="compartment")
        if self._phase not in (CompartmentState.RESERVED, CompartmentState.LOADED):
            raise self._wrong_state("open for deposit")
        return self._request(OpenPurpose.DEPOSIT, now)

    def open_for_collection(self, now: float) -> list[DomainEvent]:
        """Declare a customer collection open (LOADED, or COLLECTED within its hold)."""
        self._refuse_if_blocked_or_faulty()
        order = self._require_order()
        if self._phase is CompartmentState.EXPIRED or now >= order.expires_at:
            raise DomainError(
                ErrorCode.ORDER_EXPIRED,
                "order expired: staff retrieval only",
                field="compartment",
            )
        if self._phase not in (CompartmentState.LOADED, CompartmentState.COLLECTED):
            raise self._wrong_state("open for collection")
        if order.pickup_from is not None and now < order.pickup_from:
            raise DomainError(
                ErrorCode.PICKUP_NOT_OPEN,
                f"pickup opens in {order.pickup_from - now:.0f} s",
                field="compartment",
            )
        return self._request(OpenPurpose.COLLECTION, now)

    def open_for_staff(self, now: float, reason: str = "") -> list[DomainEvent]:
        """Declare a staff/maintenance open: allowed in every state, blocked and faulty too."""
        return self._request(OpenPurpose.STAFF, now, reason=reason)

    # -- what the door did -----------------------------------------------------------

    @property
    def open_purpose(self) -> OpenPurpose | None:
        """Why the door is open or about to open (declared, or under way), if it is."""
        return self._opened_for or self._pending

    def resume_open(self, purpose: OpenPurpose) -> None:
        """After a restart: an authorised open for ``purpose`` was under way; the door's
        resumed opening carries on with it."""
        self._pending = purpose

    def door_opened(self, now: float) -> list[DomainEvent]:
        """The door opened after a requested open (the purpose now applies)."""
        if self._pending is not None:
            self._opened_for = self._pending
            self._pending = None
            self._not_detected_count = 0
        return []

    def door_closed(self, occupancy: OccupancyReading | None, now: float) -> list[DomainEvent]:
        """The door closed; resolve the open's purpose with the occupancy reading
        (``None`` or ignored when no occupancy sensor is fitted)."""
        purpose, self._opened_for = self._opened_for, None
        if purpose is None or self._order is None:
            return []
        reading: OccupancyReading | None = None
        if self.spec.has_occupancy_sensor:
            reading = occupancy if occupancy is not None else OccupancyReading.UNKNOWN
        if purpose is OpenPurpose.DEPOSIT:
            return self._deposit_closed(reading, now)
        if purpose is OpenPurpose.COLLECTION:
            return self._collection_closed(reading, now)
        if self._phase is CompartmentState.EXPIRED and reading in (None, OccupancyReading.EMPTY):
            order = self._order.order_id
            return [self._event(EventKind.ORDER_RETRIEVED, now, order=order), *self._free(now)]
        return []

    def open_not_detected(self, now: float) -> list[DomainEvent]:
        """The board acknowledged the pulse but the door was not seen opening."""
        self._pending = None
        self._not_detected_count += 1
        if self._not_detected_count >= self.fault_after and not self._faulted:
            self._faulted = True
            self._faulted_at = now
            return self._alarms.raise_(
                AlarmKind.COMPARTMENT_FAULT,
                now,
                {"reason": "open_not_detected", "count": self._not_detected_count},
            )
        return []

    def unlock_failed(self, now: float) -> list[DomainEvent]:
        """The pulse could not be sent: the requested open is dropped."""
        self._pending = None
        return []

    def withdraw_open(self) -> None:
        """The open just requested will not be tried (refused before its pulse): the
        compartment is as it was before the request, so it expires, frees and opens as if
        nothing had been asked."""
        self._pending = self._pending_before
        self._pending_before = None

    def tick(self, now: float) -> list[DomainEvent]:
        """Time passed: expire orders, end the collected hold. Never while a door open
        is in progress."""
        if self._pending is not None or self._opened_for is not None:
            return []
        if self._phase is CompartmentState.COLLECTED:
            if self._free_at is not None and now >= self._free_at:
                return self._free(now)
            return []
        order = self._order
        if (
            self._phase in (CompartmentState.RESERVED, CompartmentState.LOADED)
            and order is not None
            and now >= order.expires_at
        ):
            self._phase = CompartmentState.EXPIRED
            return [
                self._event(
                    EventKind.ORDER_EXPIRED,
                    now,
                    order=order.order_id,
                    goods_inside=self._goods_inside,
                )
            ]
        return []

    # -- persistence -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """What the store keeps so the compartment survives a restart (open requests in
        flight are not kept: a restart ends them)."""
        return {
            "compartment": self.compartment_id,
            "phase": self._phase.value,
            "order": self._order.to_dict() if self._order else None,
            "goods_inside": self._goods_inside,
            "blocked": self._blocked,
            "block_reason": self._block_reason,
            "faulted": self._faulted,
            "faulted_at": self._faulted_at,
            "not_detected_count": self._not_detected_count,
            "free_at": self._free_at,
        }

    @classmethod
    def from_dict(
        cls,
        spec: CompartmentSpec,
        data: Mapping[str, Any],
        *,
        fault_after: int = DEFAULT_FAULT_AFTER,
        collected_hold_s: float = 0.0,
    ) -> Compartment:
        """Rebuild a compartment from :meth:`to_dict` output and its current spec."""
        if data.get("compartment") != spec.compartment_id:
            raise _invalid("stored state belongs to another compartment", "compartment")
        phase = CompartmentState(data["phase"])
        if phase not in _PHASES:
            raise _invalid(f"{phase} is not a phase", "phase")
        order = None if data.get("order") is None else Order.from_dict(data["order"])
        if (order is None) != (phase is CompartmentState.FREE):
            raise _invalid("an order exactly when not free", "order")
        compartment = cls(spec, fault_after=fault_after, collected_hold_s=collected_hold_s)
        compartment._phase = phase
        compartment._order = order
        compartment._goods_inside = bool(data.get("goods_inside", False))
        compartment._blocked = bool(data.get("blocked", False))
        compartment._block_reason = str(data.get("block_reason", ""))
        compartment._faulted = bool(data.get("faulted", False))
        compartment._not_detected_count = int(data.get("not_detected_count", 0))
        free_at = data.get("free_at")
        compartment._free_at = None if free_at is None else float(free_at)
        if compartment._faulted:
            # Restored silently: the raise was reported before the restart.
            faulted_at = data.get("faulted_at")
            compartment._faulted_at = None if faulted_at is None else float(faulted_at)
            compartment._alarms.raise_(AlarmKind.COMPARTMENT_FAULT, compartment._faulted_at or 0.0)
        return compartment

    # -- mechanics -------------------------------------------------------------------

    def _deposit_closed(self, reading: OccupancyReading | None, now: float) -> list[DomainEvent]:
        assert self._order is not None
        order = self._order.order_id
        if self._phase not in (CompartmentState.RESERVED, CompartmentState.LOADED):
            return []
        if reading is OccupancyReading.EMPTY:
            self._phase = CompartmentState.RESERVED
            self._goods_inside = False
            return [self._event(EventKind.DEPOSIT_EMPTY, now, order=order)]
        self._phase = CompartmentState.LOADED
        self._goods_inside = True
        return [
            self._event(
                EventKind.COMPARTMENT_LOADED,
                now,
                order=order,
                confirmed=reading is OccupancyReading.OCCUPIED,
                occupancy=reading.value if reading is not None else "no_sensor",
            )
        ]

    def _collection_closed(self, reading: OccupancyReading | None, now: float) -> list[DomainEvent]:
        assert self._order is not None
        order = self._order.order_id
        if self._phase not in (CompartmentState.LOADED, CompartmentState.COLLECTED):
            return []
        if reading is OccupancyReading.OCCUPIED:
            self._phase = CompartmentState.LOADED
            self._goods_inside = True
            return [self._event(EventKind.COLLECTION_INCOMPLETE, now, order=order)]
        if reading is OccupancyReading.UNKNOWN:
            self._phase = CompartmentState.LOADED
            self._goods_inside = True
            return [self._event(EventKind.COLLECTION_UNCONFIRMED, now, order=order)]
        self._goods_inside = False
        events = [
            self._event(
                EventKind.COMPARTMENT_COLLECTED,
                now,
                order=order,
                confirmed=reading is OccupancyReading.EMPTY,
            )
        ]
        if self.collected_hold_s > 0:
            self._phase = CompartmentState.COLLECTED
            self._free_at = now + self.collected_hold_s
            return events
        return events + self._free(now)

    def _free(self, now: float) -> list[DomainEvent]:
        self._phase = CompartmentState.FREE
        self._order = None
        self._goods_inside = False
        self._free_at = None
        return [self._event(EventKind.COMPARTMENT_FREED, now)]

    def _request(self, purpose: OpenPurpose, now: float, **details: Detail) -> list[DomainEvent]:
        self._pending_before = self._pending
        self._pending = purpose
        order = self._order.order_id if self._order else None
        return [
            self._event(
                EventKind.OPEN_REQUESTED, now, purpose=purpose.value, order=order, **details
            )
        ]

    def _require_order(self) -> Order:
        if self._order is None:
            raise DomainError(
                ErrorCode.NOT_ASSIGNED,
                f"compartment {self.compartment_id} holds no order",
                field="compartment",
            )
        return self._order

    def _refuse_if_blocked_or_faulty(self) -> None:
        if self._blocked:
            raise DomainError(
                ErrorCode.COMPARTMENT_BLOCKED,
                f"compartment {self.compartment_id} is blocked"
                + (f": {self._block_reason}" if self._block_reason else ""),
                field="compartment",
            )
        if self._faulted:
            raise DomainError(
                ErrorCode.COMPARTMENT_FAULT,
                f"compartment {self.compartment_id} is faulty",
                field="compartment",
            )

    def _wrong_state(self, action: str) -> DomainError:
        return DomainError(
            ErrorCode.WRONG_STATE,
            f"cannot {action}: compartment {self.compartment_id} is {self._phase}",
            field="compartment",
        )

    def _event(self, kind: EventKind, at: float, **details: Detail) -> DomainEvent:
        return DomainEvent(kind, self.compartment_id, at, details)


class Compartments:
    """Every compartment of the cabinet, by id; an order is held by at most one."""

    def __init__(self, compartments: Iterable[Compartment]) -> None:
        self._by_id: dict[str, Compartment] = {}
        for compartment in compartments:
            if compartment.compartment_id in self._by_id:
                raise _invalid(f"compartment {compartment.compartment_id} twice", "compartment")
            self._by_id[compartment.compartment_id] = compartment

    def __iter__(self) -> Iterator[Compartment]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, compartment_id: object) -> bool:
        return compartment_id in self._by_id

    def get(self, compartment_id: str, field: str = "compartment") -> Compartment:
        """The compartment ``compartment_id``, or ``unknown_compartment``."""
        try:
            return self._by_id[compartment_id]
        except KeyError:
            raise DomainError(
                ErrorCode.UNKNOWN_COMPARTMENT,
                f"no compartment {compartment_id!r} in this cabinet",
                field=field,
            ) from None

    def holding(self, order_id: str) -> Compartment | None:
        """The compartment holding ``order_id``, if any."""
        for compartment in self._by_id.values():
            if compartment.order is not None and compartment.order.order_id == order_id:
                return compartment
        return None
