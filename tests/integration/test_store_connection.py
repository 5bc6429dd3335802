"""Connection loss: every operation fails promptly with StoreUnavailable while Redis is
gone, and the same Store works again once Redis is back, without being reopened."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from controller.store import NewCommand, Store, StoreOptions, StoreTimeout, StoreUnavailable
from tests.support.services import RedisProcess

pytestmark = pytest.mark.integration

OPTIONS = StoreOptions(socket_timeout_s=0.5, connect_timeout_s=0.5)

OPERATIONS: list[tuple[str, Callable[[Store], Awaitable[Any]]]] = [
    ("ping", lambda s: s.ping()),
    ("append", lambda s: s.append("k", {}, at=0)),
    ("pending", lambda s: s.pending()),
    ("ack", lambda s: s.ack(1)),
    ("depth", lambda s: s.depth()),
    ("begin_command", lambda s: s.begin_command("c-9", "d")),
    ("record_pulse_intent", lambda s: s.record_pulse_intent("c-1", "A01")),
    ("finish_command", lambda s: s.finish_command("c-1", {"ok": True})),
    ("save_compartment", lambda s: s.save_compartment("A01", {})),
    ("load_orders", lambda s: s.load_orders()),
    ("audit", lambda s: s.audit("x", actor="y")),
    ("new_boot", lambda s: s.new_boot()),
]


async def test_unavailable_while_down_and_resumes_after_restart(
    redis_server: RedisProcess,
) -> None:
    async with await Store.connect(
        redis_server.url, "locker", "cab-01", options=OPTIONS
    ) as store:
        await store.new_boot()
        first = await store.append("k", {}, at=0)
        await store.begin_command("c-1", "d")

        redis_server.kill()
        for name, operation in OPERATIONS:
            with pytest.raises(StoreUnavailable) as caught:
                await operation(store)
            assert caught.value.op == name
            assert caught.value.__cause__ is not None

        redis_server.start()
        assert await store.ping() >= 0
        assert await store.pending() == [first]
        second = await store.append("k", {}, at=0)
        assert second.seq == 2
        assert await store.record_pulse_intent("c-1", "A01") is True


async def test_graceful_restart_is_transparent_after_one_failure(
    redis_server: RedisProcess,
) -> None:
    async with await Store.connect(
        redis_server.url, "locker", "cab-01", options=OPTIONS
    ) as store:
        await store.new_boot()
        await store.append("k", {}, at=0)
        redis_server.restart()
        # Pooled connections died with the old process; the pool replaces them on checkout.
        assert await store.depth() == 1
        assert (await store.append("k", {}, at=0)).seq == 2
        # Several pooled connections, then a restart; a transaction comes first this time.
        await asyncio.gather(*(store.pending() for _ in range(5)))
        redis_server.restart()
        assert (await store.append("k", {}, at=0)).seq == 3
        redis_server.restart()
        assert isinstance(await store.begin_command("c-1", "d"), NewCommand)


async def test_a_write_with_unknown_outcome_is_not_repeated(redis_server: RedisProcess) -> None:
    async with await Store.connect(
        redis_server.url, "locker", "cab-01", options=OPTIONS
    ) as store:
        assert await store.mark_code_used("o-1", "k1") is True
        redis_server.restart()
        # hsetnx cannot be repeated blindly: the stale connection's failure is reported.
        with pytest.raises(StoreUnavailable):
            await store.mark_code_used("o-1", "k2")
        assert await store.mark_code_used("o-1", "k2") is True


async def test_a_hung_redis_times_out_instead_of_blocking(redis_server: RedisProcess) -> None:
    async with await Store.connect(
        redis_server.url, "locker", "cab-01", options=OPTIONS
    ) as store:
        await store.new_boot()
        pid = redis_server.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(StoreTimeout):
                await store.append("k", {}, at=0)
            with pytest.raises(StoreTimeout):
                await store.ping()
        finally:
            os.kill(pid, signal.SIGCONT)
        assert await store.ping() >= 0
        # The timed-out append may or may not have landed; the sequence stays gap-free.
        last = await store.last_seq()
        assert [e.seq for e in await store.pending()] == list(range(1, last + 1))


class UnixRedis(RedisProcess):
    """redis-server listening on a unix socket too (the production setup)."""

    def __init__(self, workdir: Path, socket_path: Path) -> None:
        super().__init__(workdir)
        self.socket_path = socket_path

    def _argv(self) -> list[str]:
        return [*super()._argv(), "--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]


async def test_unix_socket_url(tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # unix socket paths are short
        server = UnixRedis(tmp_path / "redis", Path(short) / "redis.sock")
        server.start()
        try:
            url = f"unix://{server.socket_path}?db=0"
            async with await Store.connect(url, "locker", "cab-01") as store:
                await store.new_boot()
                assert (await store.append("k", {}, at=0)).seq == 1
        finally:
            server.kill()
