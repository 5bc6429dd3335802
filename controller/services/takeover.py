"""A second client with this cabinet's identity: the ``session_takeover`` alarm.

The broker forces the client id to the certificate's name, so a thief with a copy of the
cabinet's certificate and key kicks the real cabinet off whenever it connects (MQTT 5
DISCONNECT reason 0x8E, "session taken over"), and the cabinet, reconnecting, kicks the thief
off in turn. One such disconnection can be an honest restart race; ``threshold`` of them
within ``window_s`` is an incident. The watch then commits one ``alarm_raised`` event
(``alarm: session_takeover``) to the outbox, which dispatch receives as soon as the cabinet
holds the connection long enough to publish, and an ``alarm_cleared`` once no takeover was
seen for ``clear_after_s``. Revoke the certificate (deploy/tls/crl.sh) and reissue one.

:meth:`note` is called on the loop with the link's takeover count (synchronous, from the
link's connection callback); :meth:`run` is the supervised task that commits the events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from controller.services.reporting import PendingEvent

__all__ = ["TakeoverWatch"]

log = logging.getLogger(__name__)

ALARM = "session_takeover"


class TakeoverWatch:
    """Counts session takeovers in a sliding window; raises and clears one alarm."""

    def __init__(self, emit: Callable[[Sequence[PendingEvent]], Awaitable[Any]], *,
                 threshold: int = 3, window_s: float = 60.0, clear_after_s: float = 300.0,
                 monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._emit = emit
        self._threshold = threshold
        self._window_s = window_s
        self._clear_after_s = clear_after_s
        self._mono = monotonic
        self._wall = wall
        self._seen = 0
        self._times: deque[float] = deque(maxlen=threshold)
        self._incident_count = 0
        self._active = False
        self._wake = asyncio.Event()

    @property
    def active(self) -> bool:
        return self._active

    def note(self, takeovers: int) -> None:
        """The link's takeover count now; each new one is timed."""
        now = self._mono()
        for _ in range(max(0, takeovers - self._seen)):
            self._times.append(now)
            self._incident_count += 1
        self._seen = max(self._seen, takeovers)
        self._wake.set()

    def _due(self, now: float) -> str | None:
        # The span of the last ``threshold`` takeovers, not their age now: a watch that runs
        # late (a busy loop) must not let an incident slip out of the window.
        if not self._active and len(self._times) >= self._threshold \
                and self._times[-1] - self._times[0] <= self._window_s:
            return "raise"
        if self._active and self._times and now - self._times[-1] >= self._clear_after_s:
            return "clear"
        return None

    async def run(self) -> None:
        """Commit the alarm's events as they become due; runs until cancelled."""
        while True:  # bounded: each turn waits for a takeover or the clear deadline
            self._wake.clear()
            now = self._mono()
            decision = self._due(now)
            if decision == "raise":
                log.error("session taken over %d times within %.0f s: another client uses "
                          "this cabinet's identity", len(self._times), self._window_s)
                await self._emit([PendingEvent(
                    "alarm_raised", {"alarm": ALARM, "takeovers": len(self._times),
                                     "window_s": self._window_s}, self._wall(), None)])
                self._active = True
                continue
            if decision == "clear":
                await self._emit([PendingEvent(
                    "alarm_cleared", {"alarm": ALARM, "takeovers": self._incident_count},
                    self._wall(), None)])
                self._active = False
                self._incident_count = 0
                self._times.clear()
                continue
            timeout = None
            if self._active and self._times:
                timeout = max(0.0, self._times[-1] + self._clear_after_s - now)
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
