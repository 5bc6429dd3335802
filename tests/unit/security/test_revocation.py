"""Revoking a technician's grant is permanent until the grant ends: through the real command
service (store on fakeredis, verifier, grants), a revoked grant can be brought back neither
by sending the same serial again with another list, nor by a newer list without it, nor by
a flood of other revocations; a repeat is reported as such; a full list refuses."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from controller.contract.messages import Reply
from controller.security.grants import RevocationFull, RevocationList
from tests.fuzz.cabinet import FuzzCabinet

_counter = 0


def _id() -> str:
    global _counter
    _counter += 1
    return f"c-revoke-{_counter:06d}"


async def _send(cab: FuzzCabinet, message: dict[str, Any]) -> Reply:
    return Reply.model_validate_json(await cab.service.handle(json.dumps(message).encode()))


async def _revoke(cab: FuzzCabinet, serial: int, revoked: list[tuple[str, int]]) -> Reply:
    args = {"serial": serial,
            "revoked": [{"grant_id": g, "not_after": until} for g, until in revoked]}
    return await _send(cab, cab.sign(cab.command("revoke_grants", args, command_id=_id())))


async def _technician_state(cab: FuzzCabinet, key: Any, grant: dict[str, str]) -> Reply:
    return await _send(cab, cab.sign(cab.command("get_state", {}, command_id=_id()),
                                     key, "tech-1", grant))


def _refused(reply: Reply, code: str) -> None:
    assert not reply.ok, reply
    assert reply.error is not None, reply
    assert reply.error.code.value == code, reply


async def test_a_revoked_grant_cannot_be_brought_back_by_any_later_message() -> None:
    async with FuzzCabinet() as cab:
        key, grant = cab.technician(grant_id="g-stolen")
        assert (await _technician_state(cab, key, grant)).ok
        until = int(time.time()) + 3600
        first = await _revoke(cab, 5, [("g-stolen", until)])
        assert first.ok, first
        _refused(await _technician_state(cab, key, grant), "forbidden")

        # The same serial again with an empty list; a newer list without it; a flood.
        same = await _revoke(cab, 5, [])
        assert same.ok, same
        _refused(await _technician_state(cab, key, grant), "forbidden")
        newer = await _revoke(cab, 6, [("g-other", until)])
        assert newer.ok, newer
        _refused(await _technician_state(cab, key, grant), "forbidden")
        for serial in range(7, 12):
            flood = await _revoke(cab, serial, [(f"g-flood-{serial}-{i}", until)
                                                for i in range(200)])
            assert flood.ok, flood
        _refused(await _technician_state(cab, key, grant), "forbidden")
        # What the store keeps (a restart loads this) still has it.
        stored = RevocationList.from_dict(await cab.store.load_revocations())
        assert stored.is_revoked("g-stolen")
        assert stored.serial == 11


async def test_revoking_again_is_reported_as_already_revoked() -> None:
    async with FuzzCabinet() as cab:
        until = int(time.time()) + 3600
        first = await _revoke(cab, 1, [("g-a", until), ("g-b", until)])
        again = await _revoke(cab, 1, [("g-a", until), ("g-b", until)])
        assert first.result == {"serial": 1, "revoked": 2, "added": 2, "already_revoked": 0,
                                "ended": 0}
        assert again.result == {"serial": 1, "revoked": 2, "added": 0, "already_revoked": 2,
                                "ended": 0}
        # An older serial is still refused.
        _refused(await _revoke(cab, 0, [("g-c", until)]), "conflict")


async def test_a_full_list_refuses_and_drops_nothing() -> None:
    now = time.time()
    revocations = RevocationList()
    revocations.add(1, [(f"g-{i}", int(now) + 3600) for i in range(4)], now, limit=4)
    with pytest.raises(RevocationFull):
        revocations.add(2, [("g-new", int(now) + 3600)], now, limit=4)
    assert revocations.serial == 1
    assert all(revocations.is_revoked(f"g-{i}") for i in range(4))
    # Once a grant has ended its entry goes, and there is room again.
    later = now + 7200
    update = revocations.add(2, [("g-new", int(later) + 3600)], later, limit=4)
    assert update is not None
    assert update.added == ("g-new",)
    assert len(revocations) == 1


async def test_the_command_service_refuses_a_revocation_past_the_bound() -> None:
    async with FuzzCabinet() as cab:
        until = int(time.time()) + 3600
        cab.verifier.revocations.add(1, [(f"g-{i}", until) for i in range(4096)], time.time())
        before = cab.verifier.revocations.to_dict()
        reply = await _revoke(cab, 2, [("g-one-more", until)])
        _refused(reply, "conflict")
        assert reply.error is not None
        assert reply.error.field == "args.revoked"
        assert cab.verifier.revocations.to_dict() == before
