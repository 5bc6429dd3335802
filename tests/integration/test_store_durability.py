"""What the daemon wrote survives kill -9 of redis-server (appendfsync always): the outbox
with its ids, seqs and times, command records with their pulse intents, state, audit."""

from __future__ import annotations

import pytest

from controller.store import AlreadySeen, Store
from tests.support.services import RedisProcess

pytestmark = pytest.mark.integration


async def test_everything_survives_kill_9(redis_server: RedisProcess) -> None:
    async with await Store.connect(redis_server.url, "locker", "cab-01") as store:
        boot = await store.new_boot()
        events = [
            await store.append("door_opened", {"n": n}, at=1.0e9 + n, compartment="A01")
            for n in range(200)
        ]
        for event in events[::3]:
            assert await store.ack(event.id)
        await store.begin_command("c-1", "digest")
        assert await store.record_pulse_intent("c-1", "A01")
        await store.begin_command("c-2", "digest")
        await store.finish_command("c-2", {"id": "c-2", "ok": True})
        await store.save_compartment("A01", {"status": "loaded"})
        await store.save_order("o-1", {"tenant": "grocery"})
        await store.mark_code_used("o-1", "k1")
        await store.save_lockout("lane-1", {"failures": 5}, ttl_s=600)
        audit = await store.audit("door_opened", actor="dispatch", compartment="A01")

    redis_server.kill()
    redis_server.start()

    async with await Store.connect(redis_server.url, "locker", "cab-01") as store:
        expected = [e for i, e in enumerate(events) if i % 3]
        assert await store.pending(1000) == expected
        assert await store.last_seq() == 200
        assert [d.event for d in await store.delivered(1000)] == events[::3]
        assert (await store.current_boot()) == boot
        (unfinished,) = await store.unfinished_commands()
        assert unfinished.id == "c-1"
        assert unfinished.may_have_pulsed("A01")
        assert await store.record_pulse_intent("c-1", "A01") is False
        repeat = await store.begin_command("c-2", "digest")
        assert isinstance(repeat, AlreadySeen)
        assert repeat.reply == {"id": "c-2", "ok": True}
        assert await store.load_compartment("A01") == {"status": "loaded"}
        assert await store.load_order("o-1") == {"tenant": "grocery"}
        assert await store.mark_code_used("o-1", "k1") is False
        assert await store.load_lockout("lane-1") == {"failures": 5}
        assert await store.audit_log() == [audit]
        next_boot = await store.new_boot()
        assert next_boot.number == boot.number + 1
        assert (await store.append("k", {}, at=0)).seq == 201
