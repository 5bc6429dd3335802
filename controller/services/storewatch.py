"""The store's write path, watched: the ``store_full`` and ``store_unavailable`` alarms.

Everything the cabinet must not forget goes through Redis before it acts (decision 0004),
so a store that cannot write stops commands, code entry and event delivery at once, safely
(nothing is pulsed that was not recorded), but silently unless someone is told. This watch
makes one small write every ``interval_s`` (:meth:`~controller.store.Store.probe_write`,
a key that expires by itself) and:

- Redis refuses it (memory cap reached under ``noeviction``, data files not writable:
  ``StoreFull``): the ``store_full`` alarm, at once;
- Redis has not answered for ``unavailable_after_s``, counted from its last answer to the
  probe or to any other operation of the store
  (down, stopped, restarting in a loop: with ``appendfsync always`` a card that is full
  makes Redis exit at its first failed write): the ``store_unavailable`` alarm, as soon as
  a probe fails that late (a probe waits at most the store's socket timeout, and while
  failing one is made every ``retry_s``);
- the write succeeds again: the alarm is cleared (``active_s``).

While the store refuses writes the alarm's events wait in memory with the others
(:class:`~controller.services.reporting.EventSink`) and reach dispatch, in order, when it
writes again; the alarm shows at once in the retained ``state`` message (``on_change``)
and in the log (a warning for each raise), before the alarm's event is handed to a store
that may take a socket timeout to refuse it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from controller.services.reporting import PendingEvent
from controller.store import Store
from controller.store.errors import StoreError, StoreFull

__all__ = ["FULL_ALARM", "UNAVAILABLE_ALARM", "StoreWatch"]

log = logging.getLogger(__name__)

FULL_ALARM = "store_full"
UNAVAILABLE_ALARM = "store_unavailable"


class StoreWatch:
    """Probes the store's write path and raises and clears its two alarms."""

    def __init__(
        self,
        store: Store,
        emit: Callable[[Sequence[PendingEvent]], Awaitable[Any]],
        *,
        interval_s: float = 5.0,
        retry_s: float = 1.0,
        unavailable_after_s: float = 10.0,
        on_change: Callable[[], None] = lambda: None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._emit = emit
        self._interval_s = interval_s
        self._retry_s = retry_s
        self._unavailable_after_s = unavailable_after_s
        self._on_change = on_change
        self._mono = monotonic
        self._wall = wall
        #: Raised alarms -> (monotonic, wall) instant of the raise.
        self._active: dict[str, tuple[float, float]] = {}
        self._failing_since: float | None = None
        # The last probe answered (the store answered when it was opened, just before).
        self._last_answer = monotonic()
        self.probes = 0
        self.failures = 0

    @property
    def active(self) -> list[str]:
        return sorted(self._active)

    @property
    def healthy(self) -> bool:
        return self._failing_since is None

    async def check(self) -> None:
        """One probe, and the alarms it calls for."""
        now = self._mono()
        self.probes += 1
        try:
            await self._store.probe_write()
        except StoreFull as exc:
            self._failed(now)
            await self._raise(FULL_ALARM, exc)
            return
        except StoreError as exc:
            self._failed(now)
            # Judged when the probe gave up (it may have waited a whole socket timeout),
            # against the last answer to any of the store's operations, the probe's or
            # another's: "has not answered for unavailable_after_s".
            answered = max(self._last_answer,
                           getattr(self._store, "answered_at", self._last_answer))
            if self._mono() - answered >= self._unavailable_after_s:
                await self._raise(UNAVAILABLE_ALARM, exc)
            return
        self._last_answer = self._mono()
        self._failing_since = None
        for alarm in sorted(self._active):
            await self._clear(alarm)

    async def run(self) -> None:
        """Until cancelled: a probe every ``interval_s``, every ``retry_s`` while failing."""
        while True:
            await self.check()
            # The watch's own pace, not a wait for another process.
            await asyncio.sleep(self._interval_s if self.healthy else self._retry_s)

    def _failed(self, now: float) -> None:
        self.failures += 1
        if self._failing_since is None:
            self._failing_since = now

    async def _raise(self, alarm: str, exc: StoreError) -> None:
        if alarm in self._active:
            return
        self._active[alarm] = (self._mono(), self._wall())
        detail = str(exc)[:200]
        log.error("store refuses writes" if alarm == FULL_ALARM else "store unavailable",
                  extra={"ctx": {"alarm": alarm, "error": detail}})
        self._on_change()  # the retained state shows it now, whatever the store does
        await self._report("alarm_raised", {"alarm": alarm, "error": detail})

    async def _clear(self, alarm: str) -> None:
        since_mono, _since_wall = self._active.pop(alarm)
        self._on_change()
        await self._report("alarm_cleared", {
            "alarm": alarm, "active_s": round(max(self._mono() - since_mono, 0.0), 3)})

    async def _report(self, kind: str, data: dict[str, Any]) -> None:
        try:
            await self._emit([PendingEvent(kind, data, self._wall(), None)])
        except StoreError as exc:  # held in memory by the sink; never stops the watch
            log.warning("store alarm event not committed yet",
                        extra={"ctx": {"alarm": data["alarm"], "error": str(exc)}})
