"""``begin_command(retake=True)``: the owner of an attempt stopped before acting begins the
same command afresh; a finished command or another body is never retaken."""

from __future__ import annotations

from controller.store import Store
from controller.store.records import AlreadySeen, NewCommand


async def test_an_unfinished_claim_of_the_same_body_is_begun_afresh(store: Store) -> None:
    await store.begin_command("c-1", "d1", {"uptime_ms": 5})
    assert await store.record_pulse_intent("c-1", "A01")
    retaken = await store.begin_command("c-1", "d1", {"uptime_ms": 5}, retake=True)
    assert isinstance(retaken, NewCommand)
    record = await store.get_command("c-1")
    assert record is not None
    assert not record.may_have_pulsed("A01")
    assert await store.record_pulse_intent("c-1", "A01")
    assert [r.id for r in await store.unfinished_commands()] == ["c-1"]


async def test_without_retake_an_unfinished_claim_is_already_seen(store: Store) -> None:
    await store.begin_command("c-2", "d1")
    assert isinstance(await store.begin_command("c-2", "d1"), AlreadySeen)


async def test_a_finished_command_or_another_body_is_never_retaken(store: Store) -> None:
    await store.begin_command("c-3", "d1")
    other = await store.begin_command("c-3", "d2", retake=True)
    assert isinstance(other, AlreadySeen)
    assert not other.digest_matches
    await store.finish_command("c-3", {"ok": True})
    done = await store.begin_command("c-3", "d1", retake=True)
    assert isinstance(done, AlreadySeen)
    assert done.reply == {"ok": True}
