"""A store that cannot write, on a real redis-server (decision 0004): Redis at its memory
cap refuses writes (``StoreFull``), a card that is full makes it exit (``StoreUnavailable``).
Either way nothing acts that was not recorded, commands get a structured refusal, the
alarm is raised at once in memory and reaches the outbox, in order, when the store writes
again, and a retry of the refused command acts once."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from controller.services.storewatch import FULL_ALARM, UNAVAILABLE_ALARM, StoreWatch
from controller.store import Store, StoreOptions
from controller.store.errors import StoreFull, StoreUnavailable
from controller.store.records import NewEvent
from drivers.fake import FakeLockBoard
from tests.support.services import RedisProcess, wait_for_port
from tests.unit.services.conftest import Core, close_core, make_core

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

OPTIONS = StoreOptions(socket_timeout_s=2, connect_timeout_s=1)
FILLER = "filler:"


def pulses(core: Core, cid: str) -> int:
    lock = core.settings.compartment(cid).lock
    board = core.hardware.lock_boards[lock.board]
    assert isinstance(board, FakeLockBoard)
    return len(board.pulses(lock.channel))


def fill_to_the_cap(raw: redis.Redis) -> int:
    """Cap Redis's memory a little above what it uses, under noeviction, and fill it until
    it refuses. Returns the filler keys written."""
    used = int(raw.info("memory")["used_memory"])
    raw.config_set("maxmemory-policy", "noeviction")
    raw.config_set("maxmemory", str(used + 256 * 1024))
    for i in range(10_000):  # bounded: 256 KiB of headroom is gone well before
        try:
            raw.set(f"{FILLER}{i}", "x" * 4096)
        except redis.exceptions.OutOfMemoryError:
            return i
    raise AssertionError("Redis never refused a write at its memory cap")


def alarm_kinds(core: Core) -> list[str]:
    return [a["kind"] for a in core.sink.alarms.active()]


async def test_at_the_memory_cap_commands_are_refused_store_full_and_act_once_after(
    redis_server: RedisProcess,
) -> None:
    store = await Store.connect(redis_server.url, "locker", "cab-sim-01", options=OPTIONS)
    core = await make_core(store)
    raw = redis.Redis(host="127.0.0.1", port=redis_server.port)
    watch = StoreWatch(store, core.sink.emit)
    try:
        await watch.check()
        assert watch.active == []
        written = fill_to_the_cap(raw)
        assert written > 0

        # The store says what it is: full, not "unavailable", for a write in a
        # transaction (redis-py words it differently there) as for a plain one.
        with pytest.raises(StoreFull):
            await store.commit([NewEvent("probe", {}, time.time(), None)])
        with pytest.raises(StoreFull):
            await store.probe_write()
        assert await store.depth() >= 0  # reads still work

        cmd = core.command("open", {"compartment": "A03", "reason": "maintenance"},
                           ttl_ms=25_000)
        payload = core.signed(cmd)
        refused = json.loads(await core.commands.handle(payload))
        assert refused["ok"] is False
        assert refused["error"]["code"] == "store_full", refused
        assert pulses(core, "A03") == 0
        assert core.model.compartments.get("A03").pending_open is None

        await watch.check()
        assert watch.active == [FULL_ALARM]
        assert FULL_ALARM in alarm_kinds(core)  # in the state message at once
        assert core.sink.backlog >= 1  # its event waits in memory
        await watch.check()
        assert core.sink.backlog == 1, "raised once per incident"

        # A technician makes room: the filler goes, and the cap is raised.
        for start in range(0, written, 500):
            raw.delete(*[f"{FILLER}{i}" for i in range(start, min(start + 500, written))])
        raw.config_set("maxmemory", "0")
        await watch.check()
        assert watch.active == []
        assert FULL_ALARM not in alarm_kinds(core)
        await core.sink.flush()
        assert core.sink.backlog == 0
        stored = [e for e in await core.events() if e["data"].get("alarm") == FULL_ALARM]
        assert [e["kind"] for e in stored] == ["alarm_raised", "alarm_cleared"]
        assert stored[0]["seq"] < stored[1]["seq"]
        assert "active_s" in stored[1]["data"]

        again = json.loads(await core.commands.handle(payload))
        assert again["ok"] is True, again
        assert pulses(core, "A03") == 1
        assert json.loads(await core.commands.handle(payload)) == again
        assert pulses(core, "A03") == 1
    finally:
        raw.close()
        await close_core(core)


class SmallCardRedis(RedisProcess):
    """A redis-server whose files may not grow past ``limit`` bytes (RLIMIT_FSIZE, with
    SIGXFSZ ignored so the write fails with EFBIG as on a full card): the production
    durability settings, so its first failed write to the append-only file ends it."""

    name = "redis-small-card"

    def __init__(self, workdir: Path, limit: int | None) -> None:
        super().__init__(workdir)
        self.limit = limit

    def start(self) -> None:
        limit = self.limit

        def small_card() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self._argv(), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=small_card)
        wait_for_port(self.port)


async def test_a_full_card_ends_redis_the_alarm_follows_and_nothing_acknowledged_is_lost(
    tmp_path: Path,
) -> None:
    server = SmallCardRedis(tmp_path / "redis", limit=256 * 1024)
    server.start()
    store = await Store.connect(server.url, "locker", "cab-sim-01", options=OPTIONS)
    core = await make_core(store)
    watch = StoreWatch(store, core.sink.emit, unavailable_after_s=0.0)
    try:
        await watch.check()
        acknowledged: list[int] = []
        for i in range(2_000):  # bounded: 256 KiB of card is full well before
            try:
                committed = await store.commit(
                    [NewEvent("filler", {"i": i, "pad": "x" * 1024}, time.time(), None)])
            except StoreUnavailable:
                break
            acknowledged.extend(e.seq for e in committed)
        else:
            raise AssertionError("the card never filled")
        assert server.proc is not None
        assert server.proc.wait(10) != 0, "Redis should exit on a failed AOF write"
        assert "AOF" in server.log_path.read_text()

        cmd = core.command("open", {"compartment": "A03", "reason": "maintenance"},
                           ttl_ms=25_000)
        payload = core.signed(cmd)
        refused = json.loads(await core.commands.handle(payload))
        assert refused["error"]["code"] == "busy", refused
        assert pulses(core, "A03") == 0
        await watch.check()
        assert watch.active == [UNAVAILABLE_ALARM]
        assert UNAVAILABLE_ALARM in alarm_kinds(core)

        # Room made on the card; systemd starts Redis again; it loads what it acknowledged.
        server.limit = None
        server.start()
        await watch.check()
        assert watch.active == []
        await core.sink.flush()
        seqs = [e["seq"] for e in await core.events() if e["kind"] == "filler"]
        assert seqs[:len(acknowledged)] == acknowledged, "an acknowledged event was lost"
        kinds = [e["data"]["alarm"] + ":" + e["kind"] for e in await core.events()
                 if e["kind"].startswith("alarm_")]
        assert kinds == [f"{UNAVAILABLE_ALARM}:alarm_raised", f"{UNAVAILABLE_ALARM}:alarm_cleared"]
        again = json.loads(await core.commands.handle(payload))
        assert again["ok"] is True, again
        assert pulses(core, "A03") == 1
    finally:
        await close_core(core)
        server.kill()
