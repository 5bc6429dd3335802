"""The verifier against the attacks a door command must survive, one test per attack.

Each test names what an attacker (or a confused dispatch) does and what the cabinet says.
The clock is the cabinet's monotonic clock, advanced by the test; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from controller.security import (
    SIGNATURE_POLICY,
    AuthRejected,
    CommandVerifier,
    MemoryReplayStore,
    RejectCode,
    SeenCommand,
    SignaturePolicy,
    signature_policy,
)
from controller.security.signing import generate_keypair, sign_command
from tests.unit.security.conftest import (
    BOOT,
    CABINET,
    KEY_ID,
    Dispatch,
    ManualCabinetClock,
)


async def rejected(verifier: CommandVerifier, message: Any) -> AuthRejected:
    with pytest.raises(AuthRejected) as info:
        await verifier.verify(message)
    return info.value


def tamper(message: dict[str, str], **inner_changes: Any) -> dict[str, str]:
    """Change fields of the signed command, keep the old signature (an attacker's edit)."""
    inner = json.loads(message["signed"])
    inner.update(inner_changes)
    return {**message, "signed": json.dumps(inner, separators=(",", ":"))}


# -- the command that must act ----------------------------------------------------------------


async def test_valid_signed_open_is_accepted(
    verifier: CommandVerifier, dispatch: Dispatch, replay_store: MemoryReplayStore,
) -> None:
    message = dispatch.signed("open")
    verified = await verifier.verify(json.dumps(message).encode())
    assert verified.type == "open"
    assert verified.command["args"] == {"compartment": "A01", "reason": "customer_app"}
    assert verified.key_id == KEY_ID
    assert verified.is_signed
    assert verified.signed_text == message["signed"]
    assert verified.deadline.boot_id == BOOT
    assert replay_store.ids(BOOT) == {verified.id}


@pytest.mark.parametrize("encode", [
    lambda m: m, lambda m: json.dumps(m), lambda m: json.dumps(m).encode(),
    lambda m: bytearray(json.dumps(m, indent=2).encode()),
], ids=["mapping", "str", "bytes", "bytearray-indented"])
async def test_any_transport_form_of_the_same_message_verifies(
    verifier: CommandVerifier, dispatch: Dispatch, encode: Callable[[dict[str, str]], Any],
) -> None:
    # The outer envelope is not signed: its spacing and key order do not matter.
    verified = await verifier.verify(encode(dispatch.signed("open")))
    assert verified.type == "open"


async def test_a_null_grant_is_no_grant(verifier: CommandVerifier, dispatch: Dispatch) -> None:
    # The schema's "grant": null (an absent optional field and null mean the same).
    verified = await verifier.verify(json.dumps({**dispatch.signed("open"), "grant": None}))
    assert verified.type == "open"
    assert verified.key_id == KEY_ID


async def test_non_ascii_text_is_signed_as_utf8(
    verifier: CommandVerifier, dispatch: Dispatch,
) -> None:
    message = dispatch.signed("block", args={"compartment": "A01", "reason": "porte abîmée ✗"})
    assert "abîmée" in message["signed"]  # kept as UTF-8, not \u-escaped
    verified = await verifier.verify(json.dumps(message, ensure_ascii=True))
    assert verified.command["args"]["reason"] == "porte abîmée ✗"


async def test_deadline_exactly_now_is_still_accepted(
    verifier: CommandVerifier, dispatch: Dispatch, clock: ManualCabinetClock,
) -> None:
    message = dispatch.signed("open", ttl_ms=1_000)
    clock.advance(1_000)
    assert (await verifier.verify(message)).type == "open"


async def test_lifetime_of_exactly_30_s_is_accepted(
    verifier: CommandVerifier, dispatch: Dispatch,
) -> None:
    assert (await verifier.verify(dispatch.signed("open", ttl_ms=30_000))).type == "open"


async def test_key_rotation_two_trusted_keys_both_verify(
    dispatch: Dispatch, clock: ManualCabinetClock,
) -> None:
    new_key, _ = generate_keypair()
    verifier = CommandVerifier(
        CABINET,
        {KEY_ID: dispatch.private_key.public_key(), "dispatch-2": new_key.public_key()},
        clock, MemoryReplayStore(),
    )
    assert (await verifier.verify(dispatch.signed())).key_id == KEY_ID
    assert (await verifier.verify(
        dispatch.sign(dispatch.command(), new_key, "dispatch-2"))).key_id == "dispatch-2"
    assert verifier.key_ids == {KEY_ID, "dispatch-2"}


# -- time ---------------------------------------------------------------------------------------


async def test_expired_command_is_refused(
    verifier: CommandVerifier, dispatch: Dispatch, clock: ManualCabinetClock,
) -> None:
    message = dispatch.signed("open", ttl_ms=5_000)
    clock.advance(5_001)
    error = await rejected(verifier, message)
    assert error.code is RejectCode.EXPIRED
    assert error.field == "expires.uptime_ms"


async def test_lifetime_over_30_s_is_refused(
    verifier: CommandVerifier, dispatch: Dispatch,
) -> None:
    error = await rejected(verifier, dispatch.signed("open", ttl_ms=30_001))
    assert error.code is RejectCode.TOO_FAR_IN_FUTURE


async def test_command_held_back_until_the_far_deadline_is_near_is_still_bounded(
    verifier: CommandVerifier, dispatch: Dispatch, clock: ManualCabinetClock,
) -> None:
    # An attacker holds a command signed with a 10-minute lifetime, hoping it becomes
    # acceptable later: it does, but only for its last 30 s, never beyond its deadline.
    message = dispatch.signed("open", ttl_ms=600_000)
    assert (await rejected(verifier, message)).code is RejectCode.TOO_FAR_IN_FUTURE
    clock.advance(600_001)
    assert (await rejected(verifier, message)).code is RejectCode.EXPIRED


async def test_command_from_before_a_reboot_is_refused(
    verifier: CommandVerifier, dispatch: Dispatch, clock: ManualCabinetClock,
) -> None:
    message = dispatch.signed("open", ttl_ms=30_000)
    # After a reboot, uptime restarts near zero: the old deadline would look far ahead in
    # uptime, or still valid; the boot id is what refuses it.
    clock.reboot("9f00aa11-boot-0002")
    error = await rejected(verifier, message)
    assert error.code is RejectCode.WRONG_BOOT
    assert error.field == "expires.boot_id"


# -- replay and reordering ----------------------------------------------------------------------


async def test_replayed_command_is_refused(
    verifier: CommandVerifier, dispatch: Dispatch, clock: ManualCabinetClock,
) -> None:
    message = dispatch.signed("open")
    await verifier.verify(message)
    clock.advance(100)
    error = await rejected(verifier, message)
    assert error.code is RejectCode.REPLAYED
    assert error.field == "id"


async def test_replay_after_the_deadline_is_refused_as_expired(
    verifier: CommandVerifier, dispatch: Dispatch, clock: ManualCabinetClock,
) -> None:
    message = dispatch.signed("open", ttl_ms=2_000)
    await verifier.verify(message)
    clock.advance(2_001)
    assert (await rejected(verifier, message)).code is RejectCode.EXPIRED


async def test_same_id_resigned_with_other_content_is_refused_while_remembered(
    verifier: CommandVerifier, dispatch: Dispatch,
) -> None:
    first = dispatch.command("open")
    await verifier.verify(dispatch.sign(first))
    other = {**first, "args": {"compartment": "B02", "reason": "customer_app"}}
    assert (await rejected(verifier, dispatch.sign(other))).code is RejectCode.REPLAYED


async def test_reordered_older_command_within_its_lifetime_acts_once(
    verifier: CommandVerifier, dispatch: Dispatch, clock: ManualCabinetClock,
) -> None:
    # The rule: commands carry no counter, order is free within the lifetime. An older
    # command (issued first, earlier deadline) arriving after a newer one is accepted once.
    older = dispatch.signed("open", ttl_ms=10_000)
    clock.advance(1_000)
    newer = dispatch.signed("open", ttl_ms=10_000, args={"compartment": "A02",
                                                          "reason": "customer_app"})
    assert (await verifier.verify(newer)).command["args"]["compartment"] == "A02"
    assert (await verifier.verify(older)).command["args"]["compartment"] == "A01"
    assert (await rejected(verifier, older)).code is RejectCode.REPLAYED
    assert (await rejected(verifier, newer)).code is RejectCode.REPLAYED


async def test_reordered_older_command_past_its_deadline_is_refused(
    verifier: CommandVerifier, dispatch: Dispatch, clock: ManualCabinetClock,
) -> None:
    older = dispatch.signed("open", ttl_ms=3_000)
    clock.advance(2_000)
    newer = dispatch.signed("open", ttl_ms=10_000)
    clock.advance(1_500)
    await verifier.verify(newer)
    assert (await rejected(verifier, older)).code is RejectCode.EXPIRED


async def test_restart_within_the_same_boot_keeps_the_replay_window(
    make_verifier: Callable[[], CommandVerifier], dispatch: Dispatch,
    clock: ManualCabinetClock,
) -> None:
    message = dispatch.signed("open", ttl_ms=20_000)
    await make_verifier().verify(message)
    clock.advance(3_000)  # the daemon restarted; same boot, the store survived
    restarted = make_verifier()
    assert (await rejected(restarted, message)).code is RejectCode.REPLAYED


async def test_restart_restores_only_unexpired_ids(
    dispatch: Dispatch, clock: ManualCabinetClock, make_verifier: Callable[[], CommandVerifier],
    replay_store: MemoryReplayStore,
) -> None:
    await replay_store.record("previous-boot", SeenCommand("x", clock.uptime_ms + 5_000))
    await replay_store.record(BOOT, SeenCommand("old", clock.uptime_ms - 1))
    await replay_store.record(BOOT, SeenCommand("live", clock.uptime_ms + 5_000))
    verifier = make_verifier()
    await verifier.restore()
    assert verifier.remembered() == 1


async def test_store_failure_refuses_the_command_and_does_not_burn_its_id(
    dispatch: Dispatch, clock: ManualCabinetClock,
) -> None:
    class FlakyStore(MemoryReplayStore):
        fail = True

        async def record(self, boot_id: str, seen: SeenCommand) -> None:
            if self.fail:
                raise ConnectionError("store unreachable")
            await super().record(boot_id, seen)

    store = FlakyStore()
    verifier = CommandVerifier(CABINET, {KEY_ID: dispatch.private_key.public_key()}, clock,
                               store)
    message = dispatch.signed("open")
    with pytest.raises(ConnectionError):
        await verifier.verify(message)
    store.fail = False
    assert (await verifier.verify(message)).type == "open"
    assert (await rejected(verifier, message)).code is RejectCode.REPLAYED


async def test_two_copies_arriving_together_act_once(
    dispatch: Dispatch, clock: ManualCabinetClock,
) -> None:
    class SlowStore(MemoryReplayStore):
        async def record(self, boot_id: str, seen: SeenCommand) -> None:
            await asyncio.sleep(0)  # yield to the other copy mid-record
            await super().record(boot_id, seen)

    verifier = CommandVerifier(CABINET, {KEY_ID: dispatch.private_key.public_key()}, clock,
                               SlowStore())
    message = dispatch.signed("open")
    results = await asyncio.gather(verifier.verify(message), verifier.verify(message),
                                   return_exceptions=True)
    accepted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, AuthRejected)]
    assert len(accepted) == 1
    assert [r.code for r in refused] == [RejectCode.REPLAYED]


async def test_replay_memory_is_bounded_by_the_lifetime(
    verifier: CommandVerifier, dispatch: Dispatch, clock: ManualCabinetClock,
) -> None:
    for _ in range(500):
        await verifier.verify(dispatch.signed("open", ttl_ms=30_000))
        clock.advance(10)
    assert verifier.remembered() == 500
    clock.advance(30_001)
    await verifier.verify(dispatch.signed("open"))
    assert verifier.remembered() == 1


# -- binding: cabinet, compartment, action ------------------------------------------------------


async def test_command_for_another_cabinet_is_refused(
    verifier: CommandVerifier, dispatch: Dispatch,
) -> None:
    error = await rejected(verifier, dispatch.signed("open", cabinet="cab-02"))
    assert error.code is RejectCode.WRONG_CABINET
    assert error.field == "cabinet"


@pytest.mark.parametrize("change", [
    {"args": {"compartment": "A02", "reason": "customer_app"}},  # another compartment
    {"type": "open_all"},                                          # another action
    {"cabinet": "cab-02"},                                         # another cabinet
    {"id": "c-other"},                                             # another id (replay)
    {"expires": {"boot_id": BOOT, "uptime_ms": 10**9}},            # a later deadline
    {"expires": {"boot_id": "new-boot-0002", "uptime_ms": 1}},     # another boot
], ids=["compartment", "action", "cabinet", "id", "deadline", "boot"])
async def test_any_changed_field_breaks_the_signature(
    verifier: CommandVerifier, dispatch: Dispatch, change: dict[str, Any],
) -> None:
    error = await rejected(verifier, tamper(dispatch.signed("open"), **change))
    assert error.code is RejectCode.BAD_SIGNATURE
    assert error.field == "sig"


async def test_every_flipped_byte_of_signed_breaks_the_signature(
    verifier: CommandVerifier, dispatch: Dispatch,
) -> None:
    message = dispatch.signed("open")
    raw = message["signed"].encode()
    for index in range(len(raw)):
        flipped = bytearray(raw)
        flipped[index] ^= 0x01  # ASCII stays ASCII: the text is still a string
        error = await rejected(verifier, {**message, "signed": flipped.decode()})
        assert error.code is RejectCode.BAD_SIGNATURE, index


async def test_every_flipped_bit_of_sig_breaks_the_signature(
    verifier: CommandVerifier, dispatch: Dispatch,
) -> None:
    message = dispatch.signed("open")
    sig = base64.b64decode(message["sig"])
    for bit in range(len(sig) * 8):
        flipped = bytearray(sig)
        flipped[bit // 8] ^= 1 << (bit % 8)
        bad = {**message, "sig": base64.b64encode(bytes(flipped)).decode()}
        assert (await rejected(verifier, bad)).code is RejectCode.BAD_SIGNATURE, bit


async def test_whitespace_added_to_signed_breaks_the_signature(
    verifier: CommandVerifier, dispatch: Dispatch,
) -> None:
    # Same JSON meaning, other bytes: no canonicalisation, so it does not verify.
    message = dispatch.signed("open")
    spaced = json.dumps(json.loads(message["signed"]))
    assert json.loads(spaced) == json.loads(message["signed"])
    assert (await rejected(verifier, {**message, "signed": spaced})).code is \
        RejectCode.BAD_SIGNATURE


# -- who signed ---------------------------------------------------------------------------------


@pytest.mark.parametrize("type_", sorted(t for t, p in SIGNATURE_POLICY.items()
                                         if p is SignaturePolicy.REQUIRED))
async def test_unsigned_door_code_and_config_commands_are_refused(
    verifier: CommandVerifier, dispatch: Dispatch, type_: str,
) -> None:
    # What a client holding valid broker credentials (but no dispatch key) can send.
    error = await rejected(verifier, dispatch.command(type_))
    assert error.code is RejectCode.UNAUTHENTICATED


async def test_unknown_command_type_must_be_signed(
    verifier: CommandVerifier, dispatch: Dispatch,
) -> None:
    assert signature_policy("self_destruct") is SignaturePolicy.REQUIRED
    error = await rejected(verifier, dispatch.command("self_destruct"))
    assert error.code is RejectCode.UNAUTHENTICATED


@pytest.mark.parametrize("missing", ["sig", "key_id"])
async def test_signed_form_without_signature_or_key_is_unauthenticated(
    verifier: CommandVerifier, dispatch: Dispatch, missing: str,
) -> None:
    message = dispatch.signed("open")
    del message[missing]
    error = await rejected(verifier, message)
    assert error.code is RejectCode.UNAUTHENTICATED
    assert error.field == missing


async def test_unknown_key_id_is_refused(verifier: CommandVerifier, dispatch: Dispatch) -> None:
    message = dispatch.sign(dispatch.command(), key_id="dispatch-9")
    error = await rejected(verifier, message)
    assert error.code is RejectCode.UNKNOWN_KEY
    assert error.field == "key_id"


async def test_signature_by_another_key_claiming_dispatch_is_refused(
    verifier: CommandVerifier, dispatch: Dispatch,
) -> None:
    # A valid broker user (a cabinet's certificate, say) with its own key pair.
    intruder_key, _ = generate_keypair()
    message = sign_command(dispatch.command("open"), intruder_key, KEY_ID)
    assert (await rejected(verifier, message)).code is RejectCode.BAD_SIGNATURE


async def test_unsigned_get_state_is_accepted_but_still_bound(
    verifier: CommandVerifier, dispatch: Dispatch, clock: ManualCabinetClock,
    replay_store: MemoryReplayStore,
) -> None:
    assert signature_policy("get_state") is SignaturePolicy.OPTIONAL
    verified = await verifier.verify(dispatch.command("get_state", args={}))
    assert verified.type == "get_state"
    assert not verified.is_signed
    assert replay_store.ids(BOOT) == set()
    assert (await rejected(verifier, dispatch.command("get_state", cabinet="cab-02"))).code \
        is RejectCode.WRONG_CABINET
    stale = dispatch.command("get_state", ttl_ms=10)
    clock.advance(11)
    assert (await rejected(verifier, stale)).code is RejectCode.EXPIRED


async def test_unsigned_command_cannot_burn_the_id_of_a_signed_one(
    verifier: CommandVerifier, dispatch: Dispatch,
) -> None:
    door = dispatch.command("open")
    await verifier.verify({**dispatch.command("get_state"), "id": door["id"]})
    assert (await verifier.verify(dispatch.sign(door))).id == door["id"]


async def test_signed_get_state_is_accepted(
    verifier: CommandVerifier, dispatch: Dispatch,
) -> None:
    assert (await verifier.verify(dispatch.signed("get_state", args={}))).is_signed


# -- order of the checks: the first failing one is reported --------------------------------------


async def test_nothing_unverified_is_judged_before_the_signature(
    verifier: CommandVerifier, dispatch: Dispatch, clock: ManualCabinetClock,
) -> None:
    # Wrong cabinet, old boot and expired, but the signature is checked first.
    command = dispatch.command("open", cabinet="cab-02")
    clock.reboot("new-boot-0002")
    message = tamper(dispatch.sign(command), id="c-x")
    assert (await rejected(verifier, message)).code is RejectCode.BAD_SIGNATURE
    unknown = dispatch.sign(command, key_id="nobody")
    assert (await rejected(verifier, unknown)).code is RejectCode.UNKNOWN_KEY


async def test_checks_after_the_signature_run_in_the_documented_order(
    verifier: CommandVerifier, dispatch: Dispatch, clock: ManualCabinetClock,
) -> None:
    both = dispatch.signed("open", cabinet="cab-02", ttl_ms=1)
    clock.reboot("new-boot-0002")
    assert (await rejected(verifier, both)).code is RejectCode.WRONG_CABINET
    boot_and_time = dispatch.sign({**dispatch.command("open"),
                                   "expires": {"boot_id": BOOT, "uptime_ms": 1}})
    assert (await rejected(verifier, boot_and_time)).code is RejectCode.WRONG_BOOT


# -- malformed input ----------------------------------------------------------------------------


def _malformed_outer(dispatch: Dispatch) -> Iterable[tuple[str, Any]]:
    good = dispatch.signed("open")
    yield "not json", b"{not json"
    yield "not utf-8", b'{"signed": "\xff"}'
    yield "utf-16", json.dumps(good).encode("utf-16")
    yield "json array", b"[]"
    yield "json string", '"open"'
    yield "signed not a string", {**good, "signed": {"id": "x"}}
    yield "key_id not a string", {**good, "key_id": 7}
    yield "sig not a string", {**good, "sig": ["AAAA"]}
    yield "sig not base64", {**good, "sig": "!!!!" + good["sig"][4:]}
    yield "sig without padding", {**good, "sig": good["sig"].rstrip("=")}
    yield "sig too short", {**good, "sig": base64.b64encode(b"\0" * 63).decode()}
    yield "sig too long", {**good, "sig": base64.b64encode(b"\0" * 65).decode()}
    yield "sig non-canonical", {**good, "sig": good["sig"][:85] + chr(ord(good["sig"][85]) ^ 1)
                                + "=="}
    yield "extra field", {**good, "cabinet": CABINET}
    yield "sig without signed", {"sig": good["sig"], "key_id": KEY_ID}
    yield "lone surrogate", json.dumps({**good, "signed": "\ud800"})
    yield "too large", json.dumps({**good, "pad": "x" * 20_000}).encode()
    yield "too large str", json.dumps({**good, "pad": "x" * 20_000})
    yield "duplicate key", ('{"signed": "a", "signed": ' + json.dumps(good["signed"])
                            + f', "key_id": "{KEY_ID}", "sig": "{good["sig"]}"}}')
    yield "deep nesting", "[" * 100_000 + "]" * 100_000
    yield "huge integer", '{"signed": ' + "9" * 5000 + "}"
    yield "NaN", '{"signed": NaN}'
    yield "not a message type", 3.5


async def test_malformed_envelopes_are_refused(
    verifier: CommandVerifier, dispatch: Dispatch,
) -> None:
    for name, message in _malformed_outer(dispatch):
        error = await rejected(verifier, message)
        assert error.code is RejectCode.MALFORMED, name


@pytest.mark.parametrize(("text", "field"), [
    ("not json", "signed"),
    ("[1, 2]", "signed"),
    ('{"id": "a", "id": "b"}', "signed"),
    ('{"uptime_ms": NaN}', "signed"),
    ("{}", "id"),
    ('{"id": "has space", "type": "open"}', "id"),
    ('{"id": "' + "x" * 65 + '", "type": "open"}', "id"),
    ('{"id": "c1", "type": 5}', "type"),
    ('{"id": "c1", "type": "Open!"}', "type"),
    ('{"id": "c1", "type": "open", "cabinet": null}', "cabinet"),
    ('{"id": "c1", "type": "open", "cabinet": "cab-01", "args": [], "expires": {}}', "args"),
    ('{"id": "c1", "type": "open", "cabinet": "cab-01", "expires": 5}', "expires"),
    ('{"id": "c1", "type": "open", "cabinet": "cab-01", "expires": {"uptime_ms": 1}}',
     "expires.boot_id"),
    ('{"id": "c1", "type": "open", "cabinet": "cab-01", '
     '"expires": {"boot_id": "b", "uptime_ms": true}}', "expires.uptime_ms"),
    ('{"id": "c1", "type": "open", "cabinet": "cab-01", '
     '"expires": {"boot_id": "b", "uptime_ms": 1.5}}', "expires.uptime_ms"),
    ('{"id": "c1", "type": "open", "cabinet": "cab-01", '
     '"expires": {"boot_id": "b", "uptime_ms": -1}}', "expires.uptime_ms"),
])
async def test_validly_signed_but_malformed_commands_are_refused(
    verifier: CommandVerifier, dispatch: Dispatch, text: str, field: str,
) -> None:
    # Even dispatch's own key cannot make an ambiguous or ill-typed command act.
    sig = base64.b64encode(dispatch.private_key.sign(text.encode())).decode()
    error = await rejected(verifier, {"signed": text, "key_id": KEY_ID, "sig": sig})
    assert error.code is RejectCode.MALFORMED
    assert error.field == field


async def test_rejection_is_a_structured_reply_error(
    verifier: CommandVerifier, dispatch: Dispatch,
) -> None:
    error = await rejected(verifier, dispatch.signed("open", cabinet="cab-02"))
    assert error.to_dict() == {"code": "wrong_cabinet", "message": error.message,
                               "field": "cabinet"}
    assert isinstance(error, ValueError)
    assert "wrong_cabinet" in repr(error)


def test_verifier_refuses_bad_key_tables(clock: ManualCabinetClock) -> None:
    _, public = generate_keypair()
    with pytest.raises(ValueError, match="key id"):
        CommandVerifier(CABINET, {"bad id!": public}, clock, MemoryReplayStore())
    with pytest.raises(TypeError):
        CommandVerifier(CABINET, {KEY_ID: "not a key"}, clock,  # type: ignore[dict-item]
                        MemoryReplayStore())
