"""Choosing a compartment for a new order.

Rules, in order:

1. Only compartments that are assignable: FREE, not blocked, not faulty.
2. Same pool (tenant) as the order, same zone kind (ambient / chilled / frozen).
3. A compartment of a *cold* zone currently out of its temperature range is not used for
   new orders (``unavailable_zones``, by zone name; the temperature service decides).
4. The smallest size that fits (S < M < L < XL), then the lowest compartment id, so the
   choice is deterministic and large compartments stay free for large orders.

An order is held by at most one compartment: assigning an order already held is refused
(``order_already_assigned``). When nothing fits the error says why:
``zone_out_of_range`` when only out-of-range compartments would fit, otherwise
``no_compartment_available``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from controller.domain.compartment import Compartment, Compartments, Order
from controller.domain.errors import DomainError, ErrorCode
from controller.domain.events import DomainEvent

__all__ = ["assign_order", "choose_compartment"]


def _zone_unavailable(compartment: Compartment, unavailable_zones: Collection[str]) -> bool:
    return compartment.spec.zone_kind.is_cold and compartment.spec.zone in unavailable_zones


def choose_compartment(
    compartments: Iterable[Compartment],
    order: Order,
    *,
    unavailable_zones: Collection[str] = frozenset(),
) -> Compartment:
    """The compartment the rules pick for ``order``; raises :class:`DomainError`
    (``zone_out_of_range`` or ``no_compartment_available``) when there is none."""
    fitting = [
        c
        for c in compartments
        if c.is_assignable
        and c.spec.pool == order.pool
        and c.spec.zone_kind is order.zone
        and c.spec.size.fits(order.size)
    ]
    usable = [c for c in fitting if not _zone_unavailable(c, unavailable_zones)]
    if usable:
        return min(usable, key=lambda c: (c.spec.size.rank, c.compartment_id))
    if fitting:
        raise DomainError(
            ErrorCode.ZONE_OUT_OF_RANGE,
            f"every free {order.zone} compartment of pool {order.pool!r} is in a zone "
            "out of its temperature range",
            field="zone",
        )
    raise DomainError(
        ErrorCode.NO_COMPARTMENT_AVAILABLE,
        f"no free {order.zone} compartment of size {order.size} or larger in pool {order.pool!r}",
        field="size",
    )


def assign_order(
    compartments: Compartments,
    order: Order,
    now: float,
    *,
    compartment_id: str | None = None,
    unavailable_zones: Collection[str] = frozenset(),
) -> tuple[Compartment, list[DomainEvent]]:
    """Assign ``order`` to ``compartment_id`` when dispatch names one, else to the one
    :func:`choose_compartment` picks. Returns the compartment and its events; raises
    :class:`DomainError` and changes nothing when refused."""
    holder = compartments.holding(order.order_id)
    if holder is not None:
        raise DomainError(
            ErrorCode.ORDER_ALREADY_ASSIGNED,
            f"order {order.order_id} is already in compartment {holder.compartment_id}",
            field="order_id",
        )
    if compartment_id is None:
        compartment = choose_compartment(compartments, order, unavailable_zones=unavailable_zones)
    else:
        compartment = compartments.get(compartment_id)
        if _zone_unavailable(compartment, unavailable_zones):
            raise DomainError(
                ErrorCode.ZONE_OUT_OF_RANGE,
                f"zone {compartment.spec.zone} is out of its temperature range",
                field="compartment",
            )
    return compartment, compartment.assign(order, now)
