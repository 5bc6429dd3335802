"""Supervision of the daemon's long-running tasks: nothing from outside ends the process.

Each task (poller, outbox pump, command loop, lane, ...) runs under
:meth:`TaskSupervisor.run`. An unexpected exception is logged with its traceback, counted
per task name (:attr:`TaskSupervisor.restarts`, shown in telemetry as ``task_restarts``)
and the task is started again after a backoff: exponential from ``backoff_min_s`` to
``backoff_max_s`` with "equal jitter" (half the ceiling plus a random half), reset once
the task has run ``healthy_after_s`` without failing. A task that returns normally is
done and is not restarted (a loop with nothing to do, e.g. no scanner fitted).

Only the exceptions named ``fatal`` (a configuration error) and cancellation end a
supervised task for good: they propagate to the task group, which ends the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping

__all__ = ["TaskSupervisor"]

log = logging.getLogger("controller.supervisor")


class TaskSupervisor:
    """Runs coroutine factories again when they fail. See the module docstring.

    Parameters:
        backoff_min_s, backoff_max_s: the first and the longest pause before a restart.
        healthy_after_s: a task that ran this long before failing starts its backoff over.
        fatal: exception types that are never caught (they end the daemon).
        rng: the jitter source (inject a seeded one in tests).
        on_restart: called with the task name after each counted failure.
    """

    def __init__(
        self,
        *,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        healthy_after_s: float = 60.0,
        fatal: tuple[type[BaseException], ...] = (),
        rng: random.Random | None = None,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        if not 0 < backoff_min_s <= backoff_max_s:
            raise ValueError("need 0 < backoff_min_s <= backoff_max_s")
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.healthy_after_s = healthy_after_s
        self.fatal = fatal
        self._rng = rng or random.Random()
        self._on_restart = on_restart
        self._restarts: dict[str, int] = {}

    @property
    def restarts(self) -> Mapping[str, int]:
        """Failures (hence restarts) per task name since start-up; names never failed are
        absent."""
        return dict(self._restarts)

    def backoff(self, attempt: int) -> float:
        """The pause before restart number ``attempt + 1`` of a task (0-based)."""
        ceiling = min(self.backoff_max_s, self.backoff_min_s * 2.0 ** min(attempt, 30))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    async def run(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """Run ``factory()`` until it returns; restart it after each unexpected exception.
        Bounded only by cancellation, a normal return or a ``fatal`` exception."""
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except self.fatal:
                raise
            except Exception:
                if time.monotonic() - started >= self.healthy_after_s:
                    attempt = 0
                delay = self.backoff(attempt)
                attempt += 1
                self._restarts[name] = self._restarts.get(name, 0) + 1
                log.exception(
                    "task %s failed; restarting in %.2f s", name, delay,
                    extra={"ctx": {"task": name, "restarts": self._restarts[name],
                                   "delay_s": round(delay, 3)}})
                if self._on_restart is not None:
                    try:
                        self._on_restart(name)
                    except Exception:
                        log.exception("on_restart hook failed")
                await asyncio.sleep(delay)
