"""Commands across a real redis-server killed (SIGKILL) mid-command and started again:
the id is never left ``busy``, a retry acts once, and no command pulses twice."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controller.store import Store, StoreOptions
from drivers.base import PulseReceipt
from drivers.fake import FakeLockBoard
from tests.support.services import RedisProcess
from tests.unit.services.conftest import Core, close_core, make_core

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

OPTIONS = StoreOptions(socket_timeout_s=2, connect_timeout_s=1)


class KillsRedisOnPulse:
    """The lock board; Redis dies the moment the pulse is acknowledged."""

    def __init__(self, inner: FakeLockBoard, redis: RedisProcess) -> None:
        self.inner = inner
        self.redis = redis

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def pulse(self, channel: int, duration_s: float | None = None) -> PulseReceipt:
        receipt = await self.inner.pulse(channel, duration_s)
        self.redis.kill()
        return receipt


def pulses(core: Core, cid: str) -> int:
    lock = core.settings.compartment(cid).lock
    board = core.hardware.lock_boards[lock.board]
    inner = getattr(board, "inner", board)
    assert isinstance(inner, FakeLockBoard)
    return len(inner.pulses(lock.channel))


async def test_redis_killed_before_the_pulse_then_back_the_retry_pulses_once(
    redis_server: RedisProcess,
) -> None:
    store = await Store.connect(redis_server.url, "locker", "cab-sim-01", options=OPTIONS)
    kills = {"left": 1}

    async def save(compartment: str) -> None:
        # The compartment's state is the last write before the pulse: Redis dies there.
        if kills["left"]:
            kills["left"] -= 1
            redis_server.kill()
        await store.save_compartment(compartment, core.model.stored_state(compartment))

    core = await make_core(store, save=save)
    try:
        cmd = core.command("open", {"compartment": "A03", "reason": "maintenance"},
                           ttl_ms=25_000)
        payload = core.signed(cmd)
        first = json.loads(await core.commands.handle(payload))
        assert first["error"]["code"] == "busy", first
        assert pulses(core, "A03") == 0
        assert core.model.compartments.get("A03").pending_open is None
        redis_server.start()
        again = json.loads(await core.commands.handle(payload))
        assert again["ok"] is True, again
        assert again["result"]["pulse"]["outcome"] == "pulsed"
        assert pulses(core, "A03") == 1
        assert json.loads(await core.commands.handle(payload)) == again
        assert pulses(core, "A03") == 1
    finally:
        await close_core(core)


async def test_redis_killed_after_the_pulse_the_true_reply_is_kept_for_the_repeat(
    redis_server: RedisProcess,
) -> None:
    store = await Store.connect(redis_server.url, "locker", "cab-sim-01", options=OPTIONS)
    core = await make_core(store)
    try:
        lock = core.settings.compartment("A04").lock
        inner = core.hardware.lock_boards[lock.board]
        assert isinstance(inner, FakeLockBoard)
        core.hardware.lock_boards[lock.board] = KillsRedisOnPulse(  # type: ignore[assignment]
            inner, redis_server)
        cmd = core.command("open", {"compartment": "A04", "reason": "maintenance"},
                           ttl_ms=25_000)
        payload = core.signed(cmd)
        first = json.loads(await core.commands.handle(payload))
        assert first["ok"] is True, first  # it pulsed: never "busy"
        assert pulses(core, "A04") == 1
        # Still down: a repeat gets the same reply, from memory (the contract's
        # idempotency; "busy" would say it did not act), and does not act.
        assert json.loads(await core.commands.handle(payload)) == first
        assert pulses(core, "A04") == 1
        core.hardware.lock_boards[lock.board] = inner
        redis_server.start()
        again = json.loads(await core.commands.handle(payload))
        assert again == first
        assert pulses(core, "A04") == 1
        record = await core.store.get_command(cmd["id"])
        assert record is not None
        assert record.finished
        assert record.may_have_pulsed("A04")  # the intent survived the kill (appendfsync)
    finally:
        await close_core(core)
