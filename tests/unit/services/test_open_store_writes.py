"""What a signed ``open`` asks of the store before its pulse, wired as the daemon wires it
(state keeper, group commit): one write (the claim with the pulse intent, one MULTI/EXEC,
one fsync), and no read: a new command's id is found free by its claim. Everything else
follows the pulse."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from controller.domain.unlock import UnlockPolicy
from controller.services.commands import CommandService
from controller.services.reporting import EventSink, StateKeeper
from controller.services.setup import unlock_limits
from controller.services.unlock import UnlockService
from controller.store import Store, StoreUnavailable
from tests.unit.services.conftest import Core, _now, finished_record


class CountingStore(Store):
    """The real store on fakeredis, logging each operation: ``read`` (plain commands) or
    ``write`` (a transaction that reached EXEC)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ops: list[tuple[str, str]] = []

    async def _call(self, op: str, fn: Callable[[Any], Awaitable[Any]], *,
                    repeatable: bool = True) -> Any:
        self.ops.append(("read" if repeatable else "write", op))
        return await super()._call(op, fn, repeatable=repeatable)

    async def _transaction(self, op: str, watch: Sequence[str], plan: Any) -> Any:
        wrote = False

        async def spy(pipe: Any) -> Any:
            nonlocal wrote
            step = await plan(pipe)
            wrote = hasattr(step, "result")
            return step

        try:
            return await super()._transaction(op, watch, spy)
        finally:
            self.ops.append(("write" if wrote else "read", op))


def _as_the_daemon_wires(core: Core, store: Store, *,
                         retry_s: float = 0.5) -> tuple[EventSink, CommandService]:
    """The sink, the state keeper, the unlock and command services around ``store``, wired
    as ``controller.daemon.app`` wires them (group commit, the reply with the ack)."""
    sink = EventSink(store, retry_s=retry_s)
    keeper = StateKeeper(core.model, store, sink)
    policy = UnlockPolicy(unlock_limits(core.settings))
    unlock = UnlockService(core.settings, core.model, core.hardware, policy, keeper.emit,
                           now=_now, submit=keeper.submit)
    commands = CommandService(
        core.settings, core.model, store, unlock, core.commands._verifier, keeper.emit,
        now=_now, cabinet_clock=core.clock, snapshot=core.commands._snapshot,
        save=keeper.save, submit=keeper.submit, finish=keeper.finish_command)
    return sink, commands


async def test_a_signed_open_writes_once_before_its_pulse(core: Core) -> None:
    store = await CountingStore.connect("memory://", "test", core.settings.cabinet.id)
    try:
        await store.new_boot()
        sink, commands = _as_the_daemon_wires(core, store)
        lock = core.settings.compartment("A03").lock
        board = core.board(lock.board)
        real_pulse = board.pulse
        before_pulse: list[tuple[str, str]] = []

        async def spying_pulse(channel: int, duration_s: float | None = None) -> Any:
            before_pulse.extend(store.ops)
            record = await store.get_command(cmd["id"])
            assert record is not None
            assert record.may_have_pulsed("A03")  # the intent is durable before the frame
            return await real_pulse(channel, duration_s)

        board.pulse = spying_pulse  # type: ignore[method-assign]
        store.ops.clear()
        cmd = core.command("open", {"compartment": "A03", "reason": "maintenance"})
        reply = await commands.handle(core.signed(cmd))
        assert b'"ok":true' in reply
        assert before_pulse == [("write", "begin_command")]
        # After the pulse: the events and the state, in order, and the reply.
        kinds: list[str] = []
        for _ in range(100):
            kinds = [e.kind for e in await store.pending(100)]
            if "unlock_pulse_acked" in kinds:
                break
            await asyncio.sleep(0.01)
        assert kinds.index("open_requested") < kinds.index("unlock_pulse_sent") \
            < kinds.index("unlock_pulse_acked")
        stored = await store.load_compartment("A03")
        assert stored is not None
        await sink.close()
    finally:
        await store.close()



async def test_a_signed_opens_acknowledgement_and_reply_are_one_write(core: Core) -> None:
    """After the pulse: the board's acknowledgement (``unlock_pulse_acked``) and the stored
    reply are committed in one transaction (one fsync), and both are on record when the
    reply is sent."""
    store = await CountingStore.connect("memory://", "test", core.settings.cabinet.id)
    try:
        await store.new_boot()
        sink, commands = _as_the_daemon_wires(core, store)
        board = core.board(core.settings.compartment("A03").lock.board)
        real_pulse = board.pulse
        after_pulse: list[tuple[str, str]] = []

        async def spying_pulse(channel: int, duration_s: float | None = None) -> Any:
            receipt = await real_pulse(channel, duration_s)
            # What the door path still writes from here: recorded from the ack on.
            store.ops.clear()
            after_pulse.append(("pulsed", ""))
            return receipt

        board.pulse = spying_pulse  # type: ignore[method-assign]
        cmd = core.command("open", {"compartment": "A03", "reason": "maintenance"})
        reply = await commands.handle(core.signed(cmd))
        assert b'"ok":true' in reply
        assert after_pulse == [("pulsed", "")]
        # The audit line is written beside the reply, by a task of its own.
        writes = [op for kind, op in store.ops if kind == "write" and op != "audit"]
        # The group commit of open_requested and unlock_pulse_sent may or may not still be
        # under way at the ack; after it, one commit carries the ack and the reply, and
        # there is no write of the reply on its own.
        assert "finish_command" not in writes
        assert writes[-1] == "commit"
        assert len(writes) <= 2
        # Both on record when the reply comes back: no waiting.
        kinds = [e.kind for e in await store.pending(100)]
        assert "unlock_pulse_acked" in kinds
        record = await store.get_command(cmd["id"])
        assert record is not None
        assert record.state == "done"
        assert record.reply is not None
        assert record.reply["ok"] is True
        await sink.close()
    finally:
        await store.close()


class DownStore(CountingStore):
    """Redis away while ``down``: every transaction fails as a lost connection does."""

    down = False

    async def _transaction(self, op: str, watch: Sequence[str], plan: Any) -> Any:
        if self.down:
            raise StoreUnavailable("redis is away", op=op)
        return await super()._transaction(op, watch, plan)


async def test_an_ack_and_reply_the_store_missed_are_stored_in_order_once_it_is_back(
    core: Core,
) -> None:
    """The store goes away between the pulse and the reply: the reply is sent (the door
    was pulsed), and once the store is back, with no other command, the acknowledgement
    is committed and the reply stored after it."""
    store = await DownStore.connect("memory://", "test", core.settings.cabinet.id)
    try:
        await store.new_boot()
        sink, commands = _as_the_daemon_wires(core, store, retry_s=0.01)
        commands.owed_retry_s = 0.01
        board = core.board(core.settings.compartment("A04").lock.board)
        real_pulse = board.pulse

        async def pulse_then_redis_goes(channel: int, duration_s: float | None = None) -> Any:
            receipt = await real_pulse(channel, duration_s)
            store.down = True
            return receipt

        board.pulse = pulse_then_redis_goes  # type: ignore[method-assign]
        cmd = core.command("open", {"compartment": "A04", "reason": "maintenance"})
        first = json.loads(await commands.handle(core.signed(cmd)))
        assert first["ok"] is True, first
        record = await store.get_command(cmd["id"])
        assert record is not None
        assert not record.finished
        store.down = False
        record = await finished_record(store, cmd["id"])
        assert record.reply is not None
        assert record.reply["ok"] is True
        kinds = [e.kind for e in await store.pending(100)]
        assert "unlock_pulse_acked" in kinds
        await commands.close()
        await sink.close()
    finally:
        await store.close()
