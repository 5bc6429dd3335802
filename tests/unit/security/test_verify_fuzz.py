"""Property tests: no mutation of a signed command verifies, and no input of any shape
makes the verifier raise anything but AuthRejected."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from controller.security import (
    AuthRejected,
    CommandVerifier,
    MemoryReplayStore,
    SignaturePolicy,
    VerifiedCommand,
    signature_policy,
)
from controller.security.signing import generate_keypair, sign_command
from tests.unit.security.conftest import BOOT, CABINET, KEY_ID, START_MS, ManualCabinetClock

PRIVATE_KEY, PUBLIC_KEY = generate_keypair()
COMMAND: dict[str, Any] = {
    "id": "c-2026-11-22-000123",
    "type": "open",
    "cabinet": CABINET,
    "expires": {"boot_id": BOOT, "uptime_ms": START_MS + 10_000},
    "args": {"compartment": "A01", "reason": "customer_app"},
}
SIGNED = sign_command(COMMAND, PRIVATE_KEY, KEY_ID)

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def outcome(message: Any) -> VerifiedCommand | AuthRejected:
    """Verify on a fresh cabinet (fresh replay window); any other exception fails the test."""
    verifier = CommandVerifier(CABINET, {KEY_ID: PUBLIC_KEY}, ManualCabinetClock(),
                               MemoryReplayStore())
    try:
        return asyncio.run(verifier.verify(message))
    except AuthRejected as exc:
        return exc


def test_the_unmutated_command_verifies() -> None:
    assert isinstance(outcome(SIGNED), VerifiedCommand)


@st.composite
def edits(draw: st.DrawFn, text: str) -> str:
    """``text`` with one to three random insertions, deletions or replacements."""
    chars = list(text)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        index = draw(st.integers(0, max(len(chars) - 1, 0)))
        if kind == "delete" and chars:
            del chars[index]
        elif kind == "insert":
            chars.insert(index, draw(st.characters()))
        elif chars:
            chars[index] = draw(st.characters())
    return "".join(chars)


@FUZZ
@given(mutated=edits(SIGNED["signed"]))
def test_no_edit_of_the_signed_text_verifies(mutated: str) -> None:
    assume(mutated != SIGNED["signed"])
    assert isinstance(outcome({**SIGNED, "signed": mutated}), AuthRejected)


@FUZZ
@given(sig=st.binary(min_size=64, max_size=64))
def test_no_other_64_byte_signature_verifies(sig: bytes) -> None:
    assume(sig != base64.b64decode(SIGNED["sig"]))
    assert isinstance(outcome({**SIGNED, "sig": base64.b64encode(sig).decode()}), AuthRejected)


@FUZZ
@given(mutated=edits(SIGNED["sig"]))
def test_no_edit_of_the_sig_text_verifies(mutated: str) -> None:
    assume(mutated != SIGNED["sig"])
    assert isinstance(outcome({**SIGNED, "sig": mutated}), AuthRejected)


@FUZZ
@given(key_id=st.text(max_size=70))
def test_no_other_key_id_verifies(key_id: str) -> None:
    assume(key_id != KEY_ID)
    assert isinstance(outcome({**SIGNED, "key_id": key_id}), AuthRejected)


@FUZZ
@given(data=st.data())
def test_any_edit_of_the_whole_message_is_refused_or_means_the_same(data: st.DataObject) -> None:
    # The outer envelope is not signed: an edit may survive (a space, an escape), but then
    # the verified command is exactly the signed one.
    raw = json.dumps(SIGNED)
    mutated = data.draw(edits(raw))
    result = outcome(mutated.encode("utf-8", "surrogatepass"))
    if isinstance(result, VerifiedCommand):
        assert result.signed_text == SIGNED["signed"]
        assert result.command == COMMAND


@FUZZ
@given(payload=st.binary(max_size=300))
def test_random_bytes_are_refused(payload: bytes) -> None:
    assert isinstance(outcome(payload), AuthRejected)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
FIELDS = st.sampled_from(["signed", "key_id", "sig", "id", "type", "cabinet", "expires",
                          "args", "boot_id", "uptime_ms"])


@FUZZ
@given(message=st.dictionaries(FIELDS | st.text(max_size=8), JSON, max_size=8))
def test_random_json_objects_never_act_unsigned(message: dict[str, Any]) -> None:
    result = outcome(message)
    if isinstance(result, VerifiedCommand):
        # Only a read-only type can pass unsigned.
        assert not result.is_signed
        assert signature_policy(result.type) is SignaturePolicy.OPTIONAL


@FUZZ
@given(inner=st.dictionaries(FIELDS | st.text(max_size=8), JSON, max_size=8))
def test_random_commands_signed_by_dispatch_raise_only_auth_rejected(
    inner: dict[str, Any],
) -> None:
    # Even correctly signed, arbitrary content is refused cleanly, never with a crash.
    outcome(sign_command(inner, PRIVATE_KEY, KEY_ID))
