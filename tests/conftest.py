"""Fixtures shared by every test: real services on free loopback ports; and the guard of
the fast tier: a test that starts a process or opens a pty must carry the ``integration``
marker (``./scripts/test --fast`` leaves those out), else it fails."""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import MosquittoProcess, RedisProcess


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoProcess]:
    """A real mosquitto broker, started for this test and stopped after it."""
    broker = MosquittoProcess(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A real redis-server with appendonly/appendfsync always, started for this test."""
    server = RedisProcess(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()


# -- the integration guard --------------------------------------------------------------------

_running: list[pytest.Item] = []
_started: dict[str, list[str]] = {}


def _watched(what: str, start: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(start)
    def watched(*args: Any, **kwargs: Any) -> Any:
        item = _running[-1] if _running else None
        if item is not None and item.get_closest_marker("integration") is None:
            _started.setdefault(item.nodeid, []).append(what)
        return start(*args, **kwargs)

    return watched


def pytest_configure(config: pytest.Config) -> None:
    # Every way a test starts a process (subprocess, asyncio subprocesses, multiprocessing)
    # or opens a pty (the simulator's serial lines) goes through one of these.
    subprocess.Popen.__init__ = _watched(  # type: ignore[method-assign]
        "a process (subprocess.Popen)", subprocess.Popen.__init__)
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp"):
        if hasattr(os, name):
            setattr(os, name, _watched(f"a process (os.{name})", getattr(os, name)))
    os.openpty = _watched("a pty (os.openpty)", os.openpty)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    _running.append(item)
    try:
        yield
    finally:
        _running.pop()


@pytest.fixture(autouse=True)
def _integration_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails a test without the ``integration`` marker that started a process or opened a
    pty (in the test or in any fixture it uses), so the fast tier stays fast and free of
    real processes."""
    yield
    started = _started.pop(request.node.nodeid, None)
    if started:
        pytest.fail(f"{request.node.nodeid} started {', '.join(sorted(set(started)))} "
                    "without @pytest.mark.integration", pytrace=False)
