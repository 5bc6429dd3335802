"""Fixtures for the store's unit tests: Stores on an in-process fakeredis server.

A test that "restarts" the daemon opens a second Store on the same FakeServer, exactly as
a restarted daemon opens a new connection to the same redis-server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import fakeredis
import pytest

from controller.store import Store, StoreOptions

OpenStore = Callable[..., Awaitable[Store]]


class FakeClock:
    """Seconds since the epoch, moved by hand."""

    def __init__(self, now: float = 1_795_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def raw(server: fakeredis.FakeServer) -> Any:
    """A plain client on the same server, to look at keys behind the store's back."""
    return fakeredis.FakeAsyncRedis(server=server, decode_responses=True)


@pytest.fixture
async def open_store(
    server: fakeredis.FakeServer, clock: FakeClock
) -> AsyncIterator[OpenStore]:
    """``await open_store(**options)``: a new Store on the shared server (closed after)."""
    opened: list[Store] = []

    async def _open(*, boot: bool = True, cabinet: str = "cab-01", **options: Any) -> Store:
        client = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
        store = Store(client, "locker", cabinet, options=StoreOptions(**options), clock=clock)
        opened.append(store)
        if boot:
            await store.new_boot()
        return store

    yield _open
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: OpenStore) -> Store:
    return await open_store()
