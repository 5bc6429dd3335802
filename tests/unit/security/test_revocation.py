"""Revoking a technician's grant is permanent until the grant ends: through the real command
service (store on fakeredis, verifier, grants), a revoked grant can be brought back neither
by sending the same serial again with another list, nor by a newer list without it, nor by
a flood of other revocations; a repeat is reported as such; a full list refuses."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.contract.messages import Reply, from_json
from controller.security.errors import AuthRejected, RejectCode
from controller.security.grants import (
    MAX_GRANT_LIFETIME_S,
    RevocationFull,
    RevocationList,
    check_grant,
    issue_grant,
)
from tests.fuzz.cabinet import FuzzCabinet

_counter = 0


def _id() -> str:
    global _counter
    _counter += 1
    return f"c-revoke-{_counter:06d}"


async def _send(cab: FuzzCabinet, message: dict[str, Any]) -> Reply:
    return from_json(Reply, await cab.service.handle(json.dumps(message).encode()))


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


async def test_a_serial_past_what_json_holds_exactly_is_refused_and_freezes_nothing() -> None:
    async with FuzzCabinet() as cab:
        until = int(time.time()) + 3600
        for serial in (2**53, 2**70, 10**4000):
            reply = await _revoke(cab, serial, [("g-a", until)])
            _refused(reply, "invalid_field")
            assert reply.error is not None
            assert reply.error.field == "args.serial"
        _refused(await _revoke(cab, 1, [("g-a", 10**20)]), "invalid_field")
        # The list still takes the next ordinary serial.
        assert (await _revoke(cab, 2**53 - 1, [("g-a", until)])).ok
        assert (await _revoke(cab, 2**53 - 1, [])).ok


async def test_a_full_list_refuses_and_drops_nothing() -> None:
    now = time.time()
    revocations = RevocationList()
    revocations.add(1, [(f"g-{i}", int(now) + 3600) for i in range(4)], now, limit=4)
    with pytest.raises(RevocationFull):
        revocations.add(2, [("g-new", int(now) + 3600)], now, limit=4)
    assert revocations.serial == 1
    assert all(revocations.is_revoked(f"g-{i}") for i in range(4))
    # Once no grant with those ids can still be valid (the longest grant lifetime after
    # the revocation) their entries go, and there is room again.
    later = now + MAX_GRANT_LIFETIME_S + 60
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


# -- how long an entry is kept ---------------------------------------------------------

_ROOT = Ed25519PrivateKey.generate()


def _grant(grant_id: str, not_before: float, not_after: float) -> dict[str, str]:
    return issue_grant(_ROOT, "d1", grant_id=grant_id, key_id="tech-1",
                       public_key=Ed25519PrivateKey.generate().public_key(), site="s-1",
                       not_before=int(not_before), not_after=int(not_after))


def _presented(grant: dict[str, str], revoked: RevocationList, now_s: float) -> str:
    try:
        check_grant(grant, {"d1": _ROOT.public_key()}, site="s-1", now_s=now_s,
                    revoked=revoked)
    except AuthRejected as exc:
        return exc.code.value
    return "valid"


@pytest.mark.parametrize("sent_until", [8, -30])  # too early, or already past
def test_a_revocation_sent_with_a_wrong_not_after_outlives_the_grant(sent_until: int) -> None:
    # A grant valid 2 h, revoked by a message whose not_after is a dispatch mistake.
    now = 1_764_400_000.0
    grant = _grant("g-2h", now - 60, now + 7200)
    revoked = RevocationList()
    assert _presented(grant, revoked, now) == "valid"
    revoked.add(1, [("g-2h", int(now) + sent_until)], now)
    for later in (now + 9, now + 3600, now + 7200):
        # A message that prunes the list (another revocation, later) keeps it too.
        revoked.add(revoked.serial + 1, [(f"g-other-{later}", int(later) + 60)], later)
        assert _presented(grant, revoked, later) == RejectCode.REVOKED.value, later
    # Kept until the longest grant lifetime after the revocation: any grant issued before
    # it has ended by then.
    assert revoked.to_dict()["revoked"]["g-2h"] == int(now) + MAX_GRANT_LIFETIME_S


def test_a_revoked_grant_presented_extends_its_entry_to_the_grants_end() -> None:
    # A grant whose window opens after its revocation, reaching past the week the entry
    # would otherwise be kept.
    now = 1_764_400_000.0
    grant = _grant("g-late", now + 2 * 86400, now + 2 * 86400 + MAX_GRANT_LIFETIME_S)
    revoked = RevocationList()
    revoked.add(1, [("g-late", int(now) + 60)], now)
    assert _presented(grant, revoked, now + 3 * 86400) == RejectCode.REVOKED.value
    assert revoked.to_dict()["revoked"]["g-late"] == int(now) + 2 * 86400 + MAX_GRANT_LIFETIME_S
    end_of_week = now + MAX_GRANT_LIFETIME_S + 60
    revoked.add(2, [], end_of_week)
    assert _presented(grant, revoked, end_of_week) == RejectCode.REVOKED.value
