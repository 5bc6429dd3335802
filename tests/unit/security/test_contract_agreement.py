"""The contract and the verifier agree: one signature policy, and every verifier refusal
reaches dispatch as a documented wire code (checked through the real command service)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from controller.contract.errors import ErrorCode
from controller.contract.messages import COMMAND_TYPES, SIGNED_COMMAND_TYPES, Reply, from_json
from controller.security import SIGNATURE_POLICY, RejectCode, SignaturePolicy, signature_policy
from controller.security.signing import generate_keypair
from tests.fuzz.cabinet import FuzzCabinet

REPO = Path(__file__).resolve().parents[3]


def test_the_contracts_signed_types_are_the_verifiers_required_types() -> None:
    required = {t for t in COMMAND_TYPES if signature_policy(t) is SignaturePolicy.REQUIRED}
    assert required == SIGNED_COMMAND_TYPES
    assert {"open", "assign", "release", "block", "unblock", "apply_config"} <= \
        SIGNED_COMMAND_TYPES


def test_every_contract_command_type_is_listed_in_the_policy_table() -> None:
    # No contract type relies on the table's fail-closed default by accident.
    assert set(COMMAND_TYPES) <= set(SIGNATURE_POLICY)
    assert {t for t in COMMAND_TYPES if t not in SIGNED_COMMAND_TYPES} == {"get_state"}


def test_the_mqtt_documentation_lists_the_signed_types() -> None:
    readme = (REPO / "docs" / "mqtt" / "README.md").read_text(encoding="utf-8")
    first_paragraph = readme.split("### Signed commands", 1)[1].strip().split("\n\n", 1)[0]
    for command_type in SIGNED_COMMAND_TYPES:
        assert f"`{command_type}`" in first_paragraph, command_type


async def _reply(payload: dict[str, Any] | bytes, cab: FuzzCabinet) -> Reply:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return from_json(Reply, await cab.service.handle(raw))


def _refusal(case: str) -> tuple[Reply, bool]:
    """Send one refused command of each verifier refusal to a fresh cabinet; returns the
    reply and whether anything changed."""

    async def run() -> tuple[Reply, bool]:
        async with FuzzCabinet() as cab:
            good = cab.command("open", command_id="c-wire-1")
            message: dict[str, Any] | bytes
            if case == "unauthenticated":
                message = good
            elif case == "unknown_key":
                message = {**cab.sign(good), "key_id": "someone-else"}
            elif case == "bad_signature":
                message = cab.sign(good, generate_keypair()[0])
            elif case == "malformed":
                # A non-canonical spelling of a valid signature (padding bits set).
                signed = cab.sign(good)
                last = signed["sig"][-3]
                alphabet = "AEIMQUYcgkosw048"
                other = alphabet[(alphabet.index(last) + 1) % 16] if last in alphabet else "B"
                message = {**signed, "sig": signed["sig"][:-3] + other + "=="}
            elif case == "wrong_cabinet":
                message = cab.sign({**good, "cabinet": "cab-sim-02"})
            elif case == "wrong_boot":
                message = cab.sign({**good, "expires": {**good["expires"],
                                                        "boot_id": "ffffffffffffffff0000"}})
            elif case == "wrong_site":
                message = cab.sign({**good, "site": "another-site"})
            elif case == "revoked":
                key, grant = cab.technician(grant_id="g-lost-laptop")
                cab.verifier.revocations.add(1, [("g-lost-laptop", 2**40)], 0)
                message = cab.sign({**good, "args": {"compartment": "A01",
                                                     "reason": "maintenance"}},
                                   key, "tech-1", grant)
            elif case == "grant_expired":
                key, grant = cab.technician(valid_from_s=-7200, valid_until_s=-60)
                message = cab.sign({**good, "args": {"compartment": "A01",
                                                     "reason": "maintenance"}},
                                   key, "tech-1", grant)
            elif case == "forbidden":
                key, grant = cab.technician()
                # A technician may open for maintenance, never for a customer.
                message = cab.sign(good, key, "tech-1", grant)
            elif case == "expired":
                message = cab.sign({**good, "expires": {**good["expires"],
                                                        "uptime_ms": cab.clock.uptime_ms - 1}})
            elif case == "too_far_in_future":
                message = cab.sign({**good, "expires": {
                    **good["expires"], "uptime_ms": cab.clock.uptime_ms + 30_001}})
            else:
                assert case == "replayed"
                # The id was accepted (its record then lost, as after a store flush, and
                # the reply the daemon keeps in memory with it, as after a restart).
                assert (await _reply(cab.sign(good), cab)).ok
                await cab.store._client.delete(f"locker:fuzz:{cab.settings.cabinet.id}"
                                               ":cmd:c-wire-1")
                cab.service._recent.clear()
                before = await cab.observe()
                reply = await _reply(cab.sign(good), cab)
                return reply, await cab.observe() != before
            before = await cab.observe()
            reply = await _reply(message, cab)
            return reply, await cab.observe() != before

    return asyncio.run(run())


WIRE = {
    RejectCode.UNAUTHENTICATED: (ErrorCode.UNAUTHENTICATED, "sig"),
    RejectCode.UNKNOWN_KEY: (ErrorCode.UNKNOWN_KEY, "key_id"),
    RejectCode.BAD_SIGNATURE: (ErrorCode.BAD_SIGNATURE, "sig"),
    RejectCode.MALFORMED: (ErrorCode.INVALID_FIELD, "sig"),
    RejectCode.WRONG_CABINET: (ErrorCode.WRONG_CABINET, "cabinet"),
    RejectCode.WRONG_BOOT: (ErrorCode.WRONG_BOOT, "expires.boot_id"),
    RejectCode.EXPIRED: (ErrorCode.EXPIRED, "expires.uptime_ms"),
    RejectCode.TOO_FAR_IN_FUTURE: (ErrorCode.EXPIRED, "expires.uptime_ms"),
    RejectCode.REPLAYED: (ErrorCode.REPLAYED, "id"),
    RejectCode.WRONG_SITE: (ErrorCode.WRONG_SITE, "site"),
    RejectCode.REVOKED: (ErrorCode.FORBIDDEN, "grant.grant"),
    RejectCode.GRANT_EXPIRED: (ErrorCode.FORBIDDEN, "grant.not_after"),
    RejectCode.FORBIDDEN: (ErrorCode.FORBIDDEN, "type"),
}


def test_the_wire_table_covers_every_refusal() -> None:
    assert set(WIRE) == set(RejectCode)


@pytest.mark.parametrize("code", list(RejectCode), ids=lambda c: c.value)
def test_each_verifier_refusal_reaches_dispatch_as_its_documented_wire_code(
    code: RejectCode,
) -> None:
    reply, changed = _refusal(code.value)
    wire, field = WIRE[code]
    assert not reply.ok
    assert reply.error is not None
    assert (reply.error.code, reply.error.field) == (wire, field), reply.error
    assert reply.id == "c-wire-1"
    assert not changed
    if code is RejectCode.TOO_FAR_IN_FUTURE:
        assert "ahead" in reply.error.message


def test_the_documented_mapping_is_the_one_in_the_docs() -> None:
    text = (REPO / "docs" / "mqtt" / "README.md").read_text(encoding="utf-8")
    for code, (wire, _) in WIRE.items():
        if code in (RejectCode.WRONG_CABINET, RejectCode.WRONG_BOOT, RejectCode.WRONG_SITE):
            assert "| `wrong_cabinet`, `wrong_boot`, `wrong_site` | same |" in text
        elif code in (RejectCode.REVOKED, RejectCode.GRANT_EXPIRED, RejectCode.FORBIDDEN):
            assert "| `revoked`, `grant_expired`, `forbidden` | `forbidden` |" in text
        else:
            assert f"| `{code.value}` | `{wire.value}` |" in text, code
