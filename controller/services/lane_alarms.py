"""Lane-level alarms (``tamper``, ``power_fail`` from the lane's inputs, ``code_guessing``
from code checking), raised once per incident and cleared once, each with an event and an
audit line. Shared by the lane's I/O (:mod:`controller.services.lane`) and its code
checking (:mod:`controller.services.codecheck`); the lane light shows ``fault`` while any
is active."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from controller.domain.cabinet_model import Emitted
from controller.services.reporting import PendingEvent
from controller.store import Store
from controller.store.errors import StoreError

__all__ = ["Emit", "LaneAlarms"]

log = logging.getLogger(__name__)

Emit = Callable[[Sequence[Emitted | PendingEvent]], Awaitable[object]]


class LaneAlarms:
    """Lane-level alarms, raised once per incident and cleared once, each with an event
    and an audit line."""

    def __init__(self, emit: Emit, store: Store, actor: str) -> None:
        self._emit = emit
        self._store = store
        self._actor = actor
        self._active: dict[tuple[str, str | None], float] = {}

    def active(self, alarm: str | None = None) -> list[tuple[str, str | None]]:
        return [k for k in self._active if alarm is None or k[0] == alarm]

    def is_active(self, alarm: str, subject: str | None = None) -> bool:
        return (alarm, subject) in self._active

    def since(self, alarm: str, subject: str | None = None) -> float | None:
        """When an active alarm was raised (wall), or None."""
        return self._active.get((alarm, subject))

    def mark_active(self, alarm: str, subject: str | None, since_wall: float) -> None:
        """Known active from before (restored from the store): no new raise."""
        self._active.setdefault((alarm, subject), since_wall)

    async def raise_(self, alarm: str, subject: str | None, data: Mapping[str, Any],
                     *, compartment: str | None = None, wall: float | None = None) -> bool:
        key = (alarm, subject)
        if key in self._active:
            return False
        at = time.time() if wall is None else wall
        self._active[key] = at
        await self._report("alarm_raised", alarm, dict(data), at, compartment)
        return True

    async def clear(self, alarm: str, subject: str | None, data: Mapping[str, Any],
                    *, compartment: str | None = None, wall: float | None = None) -> bool:
        since = self._active.pop((alarm, subject), None)
        if since is None:
            return False
        at = time.time() if wall is None else wall
        details = {"active_s": round(max(at - since, 0.0), 3), **data}
        await self._report("alarm_cleared", alarm, details, at, compartment)
        return True

    async def _report(self, kind: str, alarm: str, data: dict[str, Any], at: float,
                      compartment: str | None) -> None:
        await self._emit([PendingEvent(kind, {**data, "alarm": alarm}, at, compartment)])
        try:
            await self._store.audit(kind, actor=self._actor, at=at, compartment=compartment,
                                    details={**data, "alarm": alarm})
        except StoreError as exc:
            log.error("audit write failed", extra={"ctx": {"alarm": alarm, "error": str(exc)}})
