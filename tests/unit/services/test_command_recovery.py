"""A store error mid-command never leaves the id ``busy`` for ever: a retry once the store
is back acts exactly once, or gets the true reply of the attempt that acted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controller.contract.messages import Reply, encode, from_builtins
from controller.store.errors import StoreTimeout, StoreUnavailable
from tests.unit.services.conftest import Core, finished_record


def fail_once(core: Core, op: str, *, landed: bool = False) -> dict[str, int]:
    """The next ``op`` of the store fails: Redis down (nothing written), or, with
    ``landed``, the write committed and its answer lost (a timeout)."""
    real = getattr(core.store, op)
    calls = {"n": 0}

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            if landed:
                await real(*args, **kwargs)
                raise StoreTimeout("no answer from redis", op=op)
            raise StoreUnavailable("redis restarting", op=op)
        return await real(*args, **kwargs)

    setattr(core.store, op, flaky)
    return calls


def store_away(core: Core) -> None:
    """From now on Redis does not answer the command records' reads and writes."""

    async def away(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("redis away", op="any")

    for op in ("get_command", "begin_command", "finish_command"):
        setattr(core.store, op, away)


def pulses(core: Core, cid: str) -> int:
    lock = core.settings.compartment(cid).lock
    return len(core.board(lock.board).pulses(lock.channel))


# An open's pulse intent is written with its claim (begin_command): one write before
# the pulse, failing with nothing written or written with its answer lost.
@pytest.mark.parametrize(("op", "landed"), [
    ("begin_command", False), ("begin_command", True),
    ("save_compartment", False),
])
async def test_a_retry_after_a_store_error_before_the_pulse_pulses_once(
    core: Core, op: str, landed: bool,
) -> None:
    cmd = core.command("open", {"compartment": "B02", "reason": "maintenance"})
    payload = core.signed(cmd)
    calls = fail_once(core, op, landed=landed)
    first = json.loads(await core.commands.handle(payload))
    assert calls["n"] == 1
    assert first["ok"] is False
    assert first["error"]["code"] == "busy"
    assert pulses(core, "B02") == 0
    assert core.model.compartments.get("B02").pending_open is None
    again = json.loads(await core.commands.handle(payload))
    assert again["ok"] is True, again
    assert again["result"]["pulse"]["outcome"] == "pulsed"
    assert pulses(core, "B02") == 1
    record = await core.store.get_command(cmd["id"])
    assert record is not None
    assert record.finished
    assert record.may_have_pulsed("B02")
    # Done: every later repeat is the stored reply, and nothing acts again.
    assert json.loads(await core.commands.handle(payload)) == again
    assert pulses(core, "B02") == 1


async def test_a_reply_the_store_did_not_take_is_told_and_kept_for_the_repeat(
    core: Core,
) -> None:
    cmd = core.command("open", {"compartment": "B03", "reason": "maintenance"})
    payload = core.signed(cmd)
    fail_once(core, "finish_command")
    first = json.loads(await core.commands.handle(payload))
    # It acted: the reply says so now, not "busy".
    assert first["ok"] is True, first
    assert first["result"]["pulse"]["outcome"] == "pulsed"
    assert pulses(core, "B03") == 1
    record = await core.store.get_command(cmd["id"])
    assert record is not None
    assert not record.finished
    again = json.loads(await core.commands.handle(payload))
    assert again == first
    assert pulses(core, "B03") == 1
    record = await core.store.get_command(cmd["id"])
    assert record is not None
    assert record.finished


async def test_a_reply_not_stored_is_stored_with_the_next_command(core: Core) -> None:
    cmd = core.command("open", {"compartment": "B04", "reason": "maintenance"})
    fail_once(core, "finish_command")
    first = json.loads(await core.commands.handle(core.signed(cmd)))
    assert first["ok"] is True
    assert (await core.send(core.command("get_state", {}), sign=False))["ok"]
    record = await core.store.get_command(cmd["id"])
    assert record is not None
    assert record.reply is not None
    assert json.loads(encode(from_builtins(Reply, record.reply))) == first


async def test_after_a_restart_an_unfinished_intent_is_never_retaken(core: Core) -> None:
    """Only this process knows nothing was pulsed: a record alone never lets a retry act."""
    cmd = core.command("open", {"compartment": "B05", "reason": "maintenance"})
    payload = core.signed(cmd)
    fail_once(core, "save_compartment")
    assert json.loads(await core.commands.handle(payload))["error"]["code"] == "busy"
    # A new process (a restart) with the same store: it did not see the failure.
    core.commands._retake.clear()
    again = json.loads(await core.commands.handle(payload))
    assert again["error"]["code"] == "busy"
    assert pulses(core, "B05") == 0


async def test_a_reply_not_stored_is_stored_once_the_store_is_back_with_no_command(
    core: Core,
) -> None:
    """Not only when the next command comes: a restart in between would answer the id
    "interrupted", where dispatch was told it pulsed."""
    core.commands.owed_retry_s = 0.01
    cmd = core.command("open", {"compartment": "B06", "reason": "maintenance"})
    fail_once(core, "finish_command")
    first = json.loads(await core.commands.handle(core.signed(cmd)))
    assert first["ok"] is True
    record = await finished_record(core.store, cmd["id"])
    assert record.reply is not None
    assert json.loads(encode(from_builtins(Reply, record.reply))) == first
    assert record.may_have_pulsed("B06")
    await core.commands.close()


async def test_a_fault_after_the_pulse_is_answered_at_once_and_never_acted_on_again(
    core: Core, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug while a command acts: answered now as a restart would answer it, not left
    ``busy`` until one."""
    import controller.services.commands as commands_module

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug after the pulse")

    monkeypatch.setattr(commands_module, "_open_result", broken)
    cmd = core.command("open", {"compartment": "B01", "reason": "maintenance"})
    payload = core.signed(cmd)
    first = json.loads(await core.commands.handle(payload))
    assert first["id"] == cmd["id"]
    assert first["error"]["code"] == "internal"
    assert "a pulse may have been sent to B01" in first["error"]["message"]
    assert pulses(core, "B01") == 1
    record = await core.store.get_command(cmd["id"])
    assert record is not None
    assert record.finished
    assert record.may_have_pulsed("B01")
    events = [e for e in await core.store.pending(100) if e.kind == "command_interrupted"]
    assert [(e.data["command"], e.data["may_have_pulsed"], e.compartment) for e in events] \
        == [(cmd["id"], ["B01"], "B01")]
    monkeypatch.undo()
    assert json.loads(await core.commands.handle(payload)) == first  # the same, no pulse
    assert pulses(core, "B01") == 1


async def test_a_fault_before_anything_acted_names_no_compartment(
    core: Core, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(_command: Any) -> Any:
        raise RuntimeError("a bug before acting")

    monkeypatch.setattr(core.commands, "_act", broken)
    cmd = core.command("block", {"compartment": "B02", "reason": "broken hinge"})
    first = json.loads(await core.commands.handle(core.signed(cmd)))
    assert first["error"]["code"] == "internal"
    assert "pulse" not in first["error"]["message"]
    events = [e for e in await core.store.pending(100) if e.kind == "command_interrupted"]
    assert [e.data["may_have_pulsed"] for e in events] == [[]]


async def test_a_repeat_while_the_store_is_still_away_gets_the_reply_not_busy(
    core: Core,
) -> None:
    """The command acted and its reply was not stored; its repeats, with the store still
    down, get that reply from memory (``busy`` would say it did not act), other bytes
    under its id get ``conflict``, and nothing acts again."""
    cmd = core.command("open", {"compartment": "B06", "reason": "maintenance"})
    payload = core.signed(cmd)
    down = {"on": False}
    for op in ("finish_command", "get_command", "begin_command", "commit_with_reply"):
        if not hasattr(core.store, op):
            continue
        real = getattr(core.store, op)

        async def flaky(*args: Any, _real: Any = real, _op: str = op, **kwargs: Any) -> Any:
            if down["on"]:
                raise StoreUnavailable("redis away", op=_op)
            return await _real(*args, **kwargs)

        setattr(core.store, op, flaky)
    fail_once(core, "finish_command")
    first = json.loads(await core.commands.handle(payload))
    assert first["ok"] is True, first
    down["on"] = True
    for _ in range(2):
        assert json.loads(await core.commands.handle(payload)) == first
    other = core.command("open", {"compartment": "A01", "reason": "maintenance"})
    other["id"] = cmd["id"]
    refused = json.loads(await core.commands.handle(core.signed(other)))
    assert refused["error"]["code"] == "conflict"
    assert pulses(core, "B06") == 1
    assert pulses(core, "A01") == 0
    down["on"] = False
    assert json.loads(await core.commands.handle(payload)) == first
    record = await core.store.get_command(cmd["id"])
    assert record is not None
    assert record.finished


async def test_a_repeat_of_a_finished_command_gets_its_reply_with_the_store_away(
    core: Core,
) -> None:
    """The ordinary case: the reply was stored, then Redis went away. A repeat gets the
    same reply (``busy`` would say the open did not act and may be retried)."""
    cmd = core.command("open", {"compartment": "A02", "reason": "maintenance"})
    payload = core.signed(cmd)
    first = json.loads(await core.commands.handle(payload))
    assert first["ok"] is True, first
    store_away(core)
    assert json.loads(await core.commands.handle(payload)) == first
    other = core.command("open", {"compartment": "A01", "reason": "maintenance"})
    other["id"] = cmd["id"]
    assert json.loads(await core.commands.handle(core.signed(other)))["error"]["code"] \
        == "conflict"
    assert pulses(core, "A02") == 1
    assert pulses(core, "A01") == 0


async def test_an_owed_reply_stored_in_the_background_still_answers_with_the_store_away(
    core: Core,
) -> None:
    cmd = core.command("open", {"compartment": "A03", "reason": "maintenance"})
    payload = core.signed(cmd)
    fail_once(core, "finish_command")
    first = json.loads(await core.commands.handle(payload))
    assert first["ok"] is True, first
    await core.commands._settle_owed()  # the store is back: the background task stores it
    record = await core.store.get_command(cmd["id"])
    assert record is not None
    assert record.finished
    store_away(core)
    assert json.loads(await core.commands.handle(payload)) == first
    assert pulses(core, "A03") == 1
