"""TaskSupervisor: a failing task is logged with its traceback, counted and restarted with a
bounded, jittered backoff; a normal return ends it; a fatal error and cancellation pass."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from controller.services.supervisor import TaskSupervisor
from controller.settings import ConfigError, ConfigIssue

pytestmark = pytest.mark.timeout(30)


async def test_a_failing_task_is_logged_counted_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise KeyError(f"bug {runs}")

    seen: list[str] = []
    sup = TaskSupervisor(backoff_min_s=0.01, backoff_max_s=0.02, on_restart=seen.append)
    with caplog.at_level(logging.ERROR, "controller.supervisor"):
        await asyncio.wait_for(sup.run("poller", flaky), 5)
    assert runs == 4
    assert sup.restarts == {"poller": 3}
    assert seen == ["poller"] * 3
    failures = [r for r in caplog.records if "task poller failed" in r.getMessage()]
    assert len(failures) == 3
    assert all(r.exc_info is not None for r in failures)  # with the traceback


async def test_the_backoff_is_bounded_and_jittered() -> None:
    sup = TaskSupervisor(backoff_min_s=0.5, backoff_max_s=30.0, rng=random.Random(7))
    delays = [sup.backoff(n) for n in range(40)]
    assert all(0.25 <= d <= 30.0 for d in delays)
    assert max(delays) > 15.0  # it does grow
    assert len({round(d, 6) for d in delays[10:]}) > 20  # and it is jittered at the cap


async def test_a_configuration_error_and_cancellation_end_the_task() -> None:
    async def bad_config() -> None:
        raise ConfigError([ConfigIssue("cabinet.toml", "timing.poll_interval_s", "out of range")])

    sup = TaskSupervisor(backoff_min_s=0.01, backoff_max_s=0.01, fatal=(ConfigError,))
    with pytest.raises(ConfigError):
        await sup.run("zones", bad_config)
    assert sup.restarts == {}

    async def forever() -> None:
        await asyncio.Event().wait()

    task = asyncio.get_running_loop().create_task(sup.run("lane", forever))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
