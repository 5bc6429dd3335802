"""The store's Redis client against a real redis-server, side by side with redis-py.

Every call shape the store uses runs on both clients, on the same server, in the same order;
their answers must be equal (the store was written against redis-py's answers). Random
values, keys and orders come from a seed printed on failure."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from controller.store import resp
from tests.support.fresh_imports import modules_after
from tests.support.services import RedisProcess

pytestmark = pytest.mark.integration

Call = Callable[[Any], Awaitable[Any]]


def _calls(rng: random.Random, prefix: str) -> list[tuple[str, Call]]:
    """A script of (description, call) in the store's call shapes; keys under ``prefix``."""
    k = [f"{prefix}:{name}" for name in ("s", "h", "l", "z", "x", "t", "missing")]
    text = "".join(rng.choice("aé€\U0001f511 \"{}:\\\n0") for _ in range(rng.randint(0, 40)))
    number = rng.randint(-(2**40), 2**40)
    fields = {f"f{i}": f"{text}{i}" for i in range(rng.randint(1, 5))}
    members = {f"m{i}": rng.randint(0, 10**6) for i in range(rng.randint(1, 6))}
    calls: list[tuple[str, Call]] = [
        ("ping", lambda c: c.ping()),
        ("set", lambda c: c.set(k[0], text)),
        ("set px", lambda c: c.set(k[5], number, px=60_000)),
        ("get", lambda c: c.get(k[0])),
        ("get int", lambda c: c.get(k[5])),
        ("get missing", lambda c: c.get(k[6])),
        ("mget", lambda c: c.mget([k[0], k[6], k[5]])),
        ("type", lambda c: c.type(k[0])),
        ("type missing", lambda c: c.type(k[6])),
        ("hset mapping", lambda c: c.hset(k[1], mapping=fields)),
        ("hset field", lambda c: c.hset(k[1], "one", text)),
        ("hsetnx new", lambda c: c.hsetnx(k[1], "two", "2")),
        ("hsetnx old", lambda c: c.hsetnx(k[1], "two", "3")),
        ("hget", lambda c: c.hget(k[1], "one")),
        ("hget missing", lambda c: c.hget(k[1], "nope")),
        ("hmget", lambda c: c.hmget(k[1], ["one", "nope", "two"])),
        ("hgetall", lambda c: c.hgetall(k[1])),
        ("hgetall missing", lambda c: c.hgetall(k[6])),
        ("hkeys", lambda c: c.hkeys(k[1])),
        ("hdel", lambda c: c.hdel(k[1], "two", "nope")),
        ("lpush", lambda c: c.lpush(k[2], text, "b", "c")),
        ("ltrim", lambda c: c.ltrim(k[2], 0, 1)),
        ("lrange", lambda c: c.lrange(k[2], 0, -1)),
        ("zadd", lambda c: c.zadd(k[3], members)),
        ("zcard", lambda c: c.zcard(k[3])),
        ("zrange", lambda c: c.zrange(k[3], 0, 2)),
        ("zrangebyscore", lambda c: c.zrangebyscore(k[3], "(10", "+inf", start=0, num=3)),
        ("zrangebyscore all", lambda c: c.zrangebyscore(k[3], 0, 10**7)),
        ("zrem", lambda c: c.zrem(k[3], "m0", "nope")),
        ("xadd", lambda c: c.xadd(k[4], {"event": text, "n": "1"}, maxlen=3,
                                  approximate=False)),
        ("xlen", lambda c: c.xlen(k[4])),
        ("xrange", lambda c: c.xrange(k[4], "-", "+", count=2)),
        ("xrevrange", lambda c: c.xrevrange(k[4], "+", "-", count=5)),
        ("xtrim", lambda c: c.xtrim(k[4], minid="0-1", approximate=False)),
        ("pexpire", lambda c: c.pexpire(k[1], 60_000)),
        ("pexpire missing", lambda c: c.pexpire(k[6], 60_000)),
        ("delete", lambda c: c.delete(k[0], k[6])),
    ]
    rng.shuffle(calls)
    return calls


async def _run_both(server: RedisProcess, seed: int) -> None:
    rng = random.Random(seed)
    ours = resp.Client.from_url(server.url, socket_timeout=5, socket_connect_timeout=5)
    theirs = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        script = _calls(rng, f"t{seed}")
        for side, client in (("ours", ours), ("redis-py", theirs)):
            await theirs.flushall()
            answers = []
            for name, call in script:
                answer = await call(client)
                if name == "xadd":  # the stream's ids are times: compare their form only
                    answer = answer.count("-")
                if name in ("xrange", "xrevrange"):
                    answer = [fields for _id, fields in answer]
                answers.append((name, answer))
            if side == "ours":
                mine = answers
        assert mine == answers, f"seed {seed}"
    finally:
        await ours.aclose()
        await theirs.aclose()


async def test_every_call_answers_as_redis_py_does(redis_server: RedisProcess) -> None:
    base = int(os.environ.get("RESP_SEED", random.randrange(10**6)))
    for seed in range(base, base + 20):
        await _run_both(redis_server, seed)


async def test_transactions_answer_as_redis_py_does(redis_server: RedisProcess) -> None:
    """WATCH, reads in immediate mode, MULTI/EXEC; a watched key changed by another
    connection makes EXEC do nothing (WatchConflict where redis-py raises WatchError); a
    plain batch is one round trip with its answers in order."""
    client = resp.Client.from_url(redis_server.url)
    other = resp.Client.from_url(redis_server.url)
    try:
        await client.set("n", "1")
        async with client.pipeline(transaction=True) as pipe:
            await pipe.watch("n")
            value = int(await pipe.get("n"))
            seconds, micros = await pipe.time()
            assert seconds > 1_700_000_000
            assert 0 <= micros < 10**6
            pipe.multi()
            pipe.set("n", value + 1)
            pipe.hset("h", mapping={"a": "1"})
            pipe.zadd("z", {"m": 3})
            assert await pipe.execute() == [True, 1, 1]
        assert await client.get("n") == "2"

        async with client.pipeline(transaction=True) as pipe:
            await pipe.watch("n")
            await pipe.get("n")
            await other.set("n", "99")  # another writer between the read and EXEC
            pipe.multi()
            pipe.set("n", "3")
            with pytest.raises(resp.WatchConflict):
                await pipe.execute()
        assert await client.get("n") == "99"

        # Left without EXEC: the watch is dropped (UNWATCH) before the connection is pooled,
        # so the next transaction on it is not failed by this one's watch.
        async with client.pipeline(transaction=True) as pipe:
            await pipe.watch("n")
            await pipe.get("n")
        await other.set("n", "5")
        async with client.pipeline(transaction=True) as pipe:
            pipe.multi()
            pipe.set("k", "v")
            assert await pipe.execute() == [True]

        async with client.pipeline(transaction=False) as batch:
            batch.get("n")
            batch.hmget("h", ["a", "b"])
            batch.type("z")
            batch.time()
            answers = await batch.execute()
        assert answers[:3] == ["5", ["1", None], "zset"]

        # A command Redis refuses inside a transaction: raised, named, and nothing else of
        # the transaction (or of the batch's answers) is lost on the connection.
        async with client.pipeline(transaction=True) as pipe:
            await pipe.watch("h")
            pipe.multi()
            pipe.set("k", "w")
            pipe.get("h")  # WRONGTYPE at EXEC
            with pytest.raises(resp.ReplyError, match=r"Command # 2 \(GET\).*WRONGTYPE"):
                await pipe.execute()
        assert await client.get("k") == "w"  # EXEC ran the others: Redis has no rollback
        async with client.pipeline(transaction=True) as pipe:
            pipe.multi()
            pipe.set("k", "x", px=-5)  # refused when queued: the whole EXEC is discarded
            with pytest.raises(resp.ReplyError, match=r"Command # 1 \(SET\)"):
                await pipe.execute()
        assert await client.get("k") == "w"
        assert await client.ping() is True
    finally:
        await client.aclose()
        await other.aclose()


async def test_a_restarted_server_costs_one_failed_command_at_most(
    redis_server: RedisProcess,
) -> None:
    """Idle pooled connections the server closed are dropped when next taken; the first
    command after the restart works, as with redis-py (the store relies on it)."""
    client = resp.Client.from_url(redis_server.url)
    try:
        await client.set("x", "1")
        async with client.pipeline(transaction=False) as batch:  # two pooled connections
            batch.get("x")
            await asyncio.gather(batch.execute(), client.get("x"))
        redis_server.kill()
        with pytest.raises(resp.ConnectionFailed):
            await client.get("x")
        redis_server.start()
        deadline = asyncio.get_running_loop().time() + 10
        while True:  # the server closed our sockets; asyncio sees their EOF soon after
            try:
                assert await client.get("x") == "1"
                break
            except resp.ConnectionFailed:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()


def test_the_daemon_on_a_real_redis_never_loads_redis_py(redis_server: RedisProcess) -> None:
    """The daemon's modules and a store on a redis-server: redis-py (7 MB of the cabinet's
    memory) stays out of the process; only ``memory://`` (fakeredis) brings it in."""
    loaded = modules_after(
        "import asyncio, time\n"
        "import controller.daemon.main, controller.daemon.app\n"
        "from controller.store import NewEvent, Store\n"
        "async def main():\n"
        f"    store = await Store.connect({redis_server.url!r}, 'locker', 'cab-01')\n"
        "    await store.new_boot()\n"
        "    [event] = await store.commit([NewEvent('door_opened', {}, time.time(), 'A01')])\n"
        "    assert await store.ack(event.id)\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    assert "controller.store.resp" in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("redis", "fakeredis", "hiredis")}


class _DuplicatingProxy:
    """Between a client and redis-server on loopback: now and then (seeded) sends a chunk
    of the server's answers twice, as a faulty proxy or a stray reply would."""

    def __init__(self, target_port: int, rng: random.Random, every: tuple[int, int]) -> None:
        self.target_port = target_port
        self.rng = rng
        self.every = every
        self.duplicated = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                       duplicate: bool) -> None:
            countdown = self.rng.randint(*self.every)
            with contextlib.suppress(ConnectionError, OSError):
                while chunk := await src.read(65536):
                    dst.write(chunk)
                    countdown -= 1
                    if duplicate and countdown <= 0:
                        dst.write(chunk)
                        self.duplicated += 1
                        countdown = self.rng.randint(*self.every)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()


async def test_duplicated_answers_never_reach_a_command(redis_server: RedisProcess) -> None:
    """Every answer the client returns is the right one, with answers duplicated on the way
    at random; a disturbed exchange fails (and its connection is closed) instead."""
    seed = int(os.environ.get("RESP_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    proxy = _DuplicatingProxy(redis_server.port, rng, (2, 9))
    port = await proxy.start()
    client = resp.Client.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=2)
    known: dict[str, str] = {}
    failed = answered = 0
    try:
        for i in range(400):
            try:
                if rng.random() < 0.4 or not known:
                    key, value = f"k{i}", f"v{i}-{rng.randrange(10**9)}"
                    assert await client.set(key, value) is True
                    known[key] = value
                else:
                    keys = rng.sample(sorted(known), min(3, len(known)))
                    assert await client.mget(keys) == [known[k] for k in keys], f"seed {seed}"
                    key = rng.choice(keys)
                    async with client.pipeline(transaction=False) as batch:
                        batch.get(key)
                        batch.type(key)
                        assert await batch.execute() == [known[key], "string"], f"seed {seed}"
                answered += 1
            except (resp.ConnectionFailed, resp.Timeout):
                failed += 1
    finally:
        await client.aclose()
        await proxy.close()
    assert proxy.duplicated > 20, f"seed {seed}: the proxy hardly disturbed anything"
    assert failed > 0, f"seed {seed}: nothing failed"
    assert answered > 100, f"seed {seed}: {failed} failed, {answered} answered"
