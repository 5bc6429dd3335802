"""A door command's pulse outcome (``unlock_pulse_acked``) and its stored reply go in one
transaction, wired as the daemon wires it: the same events in the same order, the same
record, the reply sent only after both are on disk; with the store away at that moment,
the reply is told from memory and stored later, as before."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from controller.domain.unlock import UnlockPolicy
from controller.services.commands import CommandService
from controller.services.reporting import EventSink, StateKeeper
from controller.services.setup import unlock_limits
from controller.services.unlock import UnlockService
from controller.store import Store
from controller.store.errors import StoreUnavailable
from tests.unit.services.conftest import Core, _now
from tests.unit.services.test_open_store_writes import CountingStore


def _wire(core: Core, store: Store, *, finishing: bool) -> tuple[EventSink, CommandService]:
    sink = EventSink(store, retry_s=0.05)
    keeper = StateKeeper(core.model, store, sink)
    policy = UnlockPolicy(unlock_limits(core.settings))
    unlock = UnlockService(core.settings, core.model, core.hardware, policy, keeper.emit,
                           now=_now, submit=keeper.submit,
                           emit_finishing=keeper.emit_finishing if finishing else None)
    commands = CommandService(
        core.settings, core.model, store, unlock, core.commands._verifier, keeper.emit,
        now=_now, cabinet_clock=core.clock, snapshot=core.commands._snapshot,
        save=keeper.save, submit=keeper.submit)
    return sink, commands


async def _open(core: Core, commands: CommandService, compartment: str
                ) -> tuple[str, dict[str, Any]]:
    cmd = core.command("open", {"compartment": compartment, "reason": "maintenance"})
    return cmd["id"], json.loads(await commands.handle(core.signed(cmd)))


def _sent(stored: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored reply as the wire carries it (fields that are None left out)."""
    return None if stored is None else {k: v for k, v in stored.items() if v is not None}


def _story(events: list[Any], command_id: str) -> list[tuple[str, str | None]]:
    return [(e.kind, e.compartment) for e in events
            if e.compartment == "A03" or e.data.get("command") == command_id]


async def test_the_pulse_outcome_and_the_reply_share_one_transaction(core: Core) -> None:
    recorded: dict[bool, Any] = {}
    for finishing in (False, True):
        store = await CountingStore.connect("memory://", f"t{finishing}",
                                            core.settings.cabinet.id)
        try:
            await store.new_boot()
            sink, commands = _wire(core, store, finishing=finishing)
            store.ops.clear()
            command_id, reply = await _open(core, commands, "A03")
            assert reply["ok"] is True, reply
            record = await store.get_command(command_id)
            assert record is not None
            assert record.state == "done"
            assert _sent(record.reply) == reply  # the reply sent is the reply on record
            events = await store.pending(100)
            recorded[finishing] = (
                [op for op in store.ops if op[0] == "write"], _story(events, command_id),
                sorted(f for f in (await store._client.hgetall(
                    store._keys.command(command_id)))), record.pulses.keys(),
                await store.unfinished_commands())
            await sink.close()
        finally:
            await store.close()
    (writes_before, story_before, fields_before, pulses_before, open_before) = recorded[False]
    (writes_after, story_after, fields_after, pulses_after, open_after) = recorded[True]
    assert ("write", "finish_command") in writes_before
    assert ("write", "finish_command") not in writes_after
    assert len(writes_after) == len(writes_before) - 1  # one fsync fewer per command
    assert story_after == story_before  # same events, same order
    assert "unlock_pulse_acked" in [kind for kind, _ in story_after]
    assert fields_after == fields_before
    assert pulses_after == pulses_before
    assert open_before == open_after == []


async def test_with_the_store_away_the_reply_is_told_and_stored_later(core: Core) -> None:
    class Flaky(Store):
        fail = 0

        async def commit_finishing(self, *args: Any, **kwargs: Any) -> Any:
            if self.fail:
                self.fail -= 1
                raise StoreUnavailable("Redis restarting", op="commit")
            return await super().commit_finishing(*args, **kwargs)

        async def finish_command(self, *args: Any, **kwargs: Any) -> Any:
            if self.fail_finish:
                self.fail_finish -= 1
                raise StoreUnavailable("Redis restarting", op="finish_command")
            return await super().finish_command(*args, **kwargs)

        fail_finish = 0

    store = await Flaky.connect("memory://", "flaky", core.settings.cabinet.id)
    try:
        await store.new_boot()
        sink, commands = _wire(core, store, finishing=True)
        store.fail, store.fail_finish = 1, 1
        command_id, reply = await _open(core, commands, "A03")
        assert reply["ok"] is True, reply  # the truth, told from memory
        record = await store.get_command(command_id)
        assert record is not None
        assert record.reply is None
        # The events are held and committed by the sink's retry, without the reply ...
        for _ in range(200):
            if "unlock_pulse_acked" in [e.kind for e in await store.pending(100)]:
                break
            await asyncio.sleep(0.01)
        kinds = [e.kind for e in await store.pending(100)]
        assert kinds.index("unlock_pulse_sent") < kinds.index("unlock_pulse_acked")
        # ... and the reply owed is stored by the next command, as before.
        _, second = await _open(core, commands, "A04")
        assert second["ok"] is True
        record = await store.get_command(command_id)
        assert record is not None
        assert _sent(record.reply) == reply
        await sink.close()
    finally:
        await store.close()
