"""Opening, closing, options, and the translation of every Redis error."""

from __future__ import annotations

from typing import Any

import pytest
from redis import exceptions as redis_errors

from controller.store import (
    Store,
    StoreClosed,
    StoreConfigError,
    StoreError,
    StoreFull,
    StoreOptions,
    StoreRejected,
    StoreTimeout,
    StoreUnavailable,
    resp,
)
from tests.support.services import free_port


async def test_memory_url_and_context_manager() -> None:
    async with await Store.connect("memory://", "locker", "cab-01") as store:
        assert await store.ping() >= 0
        await store.new_boot()
        assert (await store.append("k", {}, at=0)).seq == 1
    assert store.closed


async def test_named_memory_store_is_shared_within_the_process() -> None:
    name = "unit-test-shared"
    try:
        async with await Store.connect(f"memory://{name}", "locker", "cab-01") as one:
            await one.save_order("o-1", {"a": 1})
        async with await Store.connect(f"memory://{name}", "locker", "cab-01") as two:
            assert await two.load_order("o-1") == {"a": 1}
        async with await Store.connect("memory://", "locker", "cab-01") as fresh:
            assert await fresh.load_order("o-1") is None
    finally:
        Store.forget_memory(name)


async def test_close_is_idempotent_and_later_use_raises_closed() -> None:
    store = await Store.connect("memory://", "locker", "cab-01")
    await store.close()
    await store.close()
    with pytest.raises(StoreClosed) as caught:
        await store.depth()
    assert isinstance(caught.value, StoreUnavailable)
    assert caught.value.op == "depth"
    with pytest.raises(StoreClosed):
        await store.append("k", {}, at=0)


@pytest.mark.parametrize(
    "url", ["http://localhost", "localhost:6379", "", "redis:/oops", "memory:/x"]
)
async def test_unsupported_urls(url: str) -> None:
    with pytest.raises(StoreConfigError):
        await Store.connect(url, "locker", "cab-01")


@pytest.mark.parametrize(
    ("prefix", "cabinet"),
    [("", "c"), (":", "c"), ("a::b", "c"), ("a b", "c"), ("x" * 129, "c"), ("p", "c d"),
     ("p", ""), ("p", "a:b")],
)
async def test_bad_namespaces(prefix: str, cabinet: str) -> None:
    with pytest.raises(StoreConfigError):
        await Store.connect("memory://", prefix, cabinet)


@pytest.mark.parametrize(
    "options",
    [
        {"socket_timeout_s": 0},
        {"connect_timeout_s": float("nan")},
        {"command_retention_s": -1},
        {"delivered_max_age_s": 0},
        {"delivered_max_entries": 0},
        {"audit_max_entries": 1.5},
        {"max_transaction_attempts": 0},
    ],
)
async def test_bad_options(options: dict[str, Any]) -> None:
    with pytest.raises(StoreConfigError):
        await Store.connect("memory://", "locker", "cab-01", options=StoreOptions(**options))


async def test_nothing_listening_is_unavailable_at_once() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(StoreUnavailable) as caught:
        await Store.connect(url, "locker", "cab-01")
    assert isinstance(caught.value.__cause__, resp.ConnectionFailed)
    assert isinstance(caught.value, ConnectionError)
    assert "Connection refused" in str(caught.value)


class RaisingClient:
    """A client whose every command fails with the given redis-py error."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.closed = 0

    async def ping(self) -> None:
        raise self.error

    async def aclose(self) -> None:
        self.closed += 1


@pytest.mark.parametrize(
    ("error", "expected", "builtin"),
    [
        (redis_errors.TimeoutError("t"), StoreTimeout, TimeoutError),
        (redis_errors.ConnectionError("reset"), StoreUnavailable, ConnectionError),
        (redis_errors.BusyLoadingError("loading"), StoreUnavailable, ConnectionError),
        (redis_errors.AuthenticationError("auth"), StoreUnavailable, ConnectionError),
        (redis_errors.ResponseError("OOM command not allowed"), StoreFull, StoreRejected),
        (redis_errors.ResponseError("MISCONF Errors writing to the AOF file"), StoreFull,
         StoreRejected),
        (redis_errors.ResponseError("WRONGTYPE Operation"), StoreRejected, StoreError),
        (redis_errors.ReadOnlyError("READONLY"), StoreRejected, StoreError),
        (redis_errors.DataError("bad"), StoreError, Exception),
        (ConnectionResetError("socket"), StoreUnavailable, OSError),
        (TimeoutError("socket"), StoreTimeout, TimeoutError),
    ],
)
async def test_redis_errors_are_translated_with_cause(
    error: Exception, expected: type[Exception], builtin: type[Exception]
) -> None:
    client = RaisingClient(error)
    store = Store(client, "locker", "cab-01")
    with pytest.raises(expected) as caught:
        await store.ping()
    assert isinstance(caught.value, builtin)
    assert caught.value.__cause__ is error
    assert isinstance(caught.value, StoreError)
    assert caught.value.op == "ping"
    assert str(caught.value).startswith("ping: ")
    await store.close()
    await store.close()
    assert client.closed == 1


async def test_connect_closes_the_client_when_ping_fails() -> None:
    with pytest.raises(StoreUnavailable):
        await Store.connect(f"redis://127.0.0.1:{free_port()}/0", "locker", "cab-01",
                            options=StoreOptions(connect_timeout_s=1))


async def test_wrong_type_key_is_rejected_not_crashed(raw: Any, store: Store) -> None:
    await raw.delete("locker:cab-01:outbox:seq")
    await raw.hset("locker:cab-01:outbox:seq", "x", "1")
    with pytest.raises(StoreRejected):
        await store.append("k", {}, at=0)


class FlakyClient:
    """Fails the first call of each command with a broken connection, then answers."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.connection_pool = self

    async def disconnect(self, inuse_connections: bool = True) -> None:
        self.calls["disconnect"] = self.calls.get("disconnect", 0) + 1

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.calls[name] == 1:
            raise redis_errors.ConnectionError("Connection closed by server.")

    async def zcard(self, key: str) -> int:
        self._count("zcard")
        return 7

    async def hsetnx(self, key: str, field: str, value: str) -> int:
        self._count("hsetnx")
        return 1

    async def aclose(self) -> None:
        pass


async def test_a_read_is_repeated_once_on_a_fresh_connection() -> None:
    client = FlakyClient()
    store = Store(client, "locker", "cab-01")
    assert await store.depth() == 7
    assert client.calls == {"zcard": 2, "disconnect": 1}


async def test_a_write_of_unknown_outcome_is_not_repeated() -> None:
    client = FlakyClient()
    store = Store(client, "locker", "cab-01")
    with pytest.raises(StoreUnavailable):
        await store.mark_code_used("o-1", "k1")
    assert client.calls == {"hsetnx": 1}


@pytest.mark.parametrize(
    ("prefix", "base"),
    [("locker", "locker:cab-01"), ("locker:fr-lyon-07:", "locker:fr-lyon-07:cab-01")],
)
async def test_prefix_may_have_segments_and_a_trailing_colon(prefix: str, base: str) -> None:
    name = "unit-test-prefix"
    try:
        async with await Store.connect(f"memory://{name}", prefix, "cab-01") as store:
            await store.save_order("o-1", {})
            keys = await store._client.keys("*")
        assert keys == [f"{base}:orders"]
    finally:
        Store.forget_memory(name)
