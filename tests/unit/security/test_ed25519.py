"""The cabinet's Ed25519 checks (libsodium): the keys it takes, the signatures it refuses,
and that the daemon runs them without loading cryptography's bindings."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.signing import VerifyKey

from controller.security.ed25519 import signature_ok, verify_key
from tests.support.fresh_imports import modules_after

# The order of the Ed25519 group: a signature's S must be below it.
L = 2**252 + 27742317777372353535851937790883648493


def _pair() -> tuple[Ed25519PrivateKey, bytes]:
    private = Ed25519PrivateKey.generate()
    return private, private.public_key().public_bytes_raw()


def test_a_key_is_taken_in_each_of_its_forms() -> None:
    private, raw = _pair()
    signature = private.sign(b"open A01")
    for form in (raw, VerifyKey(raw), private.public_key()):
        key = verify_key(form)
        assert bytes(key) == raw
        assert signature_ok(key, signature, b"open A01")


@pytest.mark.parametrize("bad", [b"", bytes(31), bytes(33), "A" * 44, 42, None, object()])
def test_anything_else_is_not_a_key(bad: object) -> None:
    with pytest.raises(TypeError, match="not an Ed25519 public key"):
        verify_key(bad)  # type: ignore[arg-type]


def test_signatures_that_do_not_verify() -> None:
    private, raw = _pair()
    key = verify_key(raw)
    message = b'{"id":"c-1","type":"open"}'
    good = private.sign(message)
    assert signature_ok(key, good, message)
    assert not signature_ok(key, good, message + b" ")
    assert not signature_ok(key, good[:-1], message)
    assert not signature_ok(key, good + b"\x00", message)
    assert not signature_ok(key, bytes(64), message)
    flipped = bytes([good[0] ^ 1]) + good[1:]
    assert not signature_ok(key, flipped, message)
    other, _ = _pair()
    assert not signature_ok(key, other.sign(message), message)
    # The same signature with S + L: the same point on the curve, a different encoding.
    s = int.from_bytes(good[32:], "little") + L
    if s < 2**256:
        assert not signature_ok(key, good[:32] + s.to_bytes(32, "little"), message)


def test_a_public_key_of_small_order_verifies_nothing() -> None:
    # The identity point: with it, a forged (R = identity, S = 0) would pass a lax check.
    identity = bytes([1]) + bytes(31)
    forged = identity + bytes(32)
    assert not signature_ok(verify_key(identity), forged, b"open A01")


@pytest.mark.integration  # runs a Python process of its own
def test_the_daemon_does_not_load_cryptography() -> None:
    loaded = modules_after("import controller.daemon.main, controller.daemon.app, "
                           "controller.daemon.startup")
    # redis-py looks whether cryptography is installed (its package and version only).
    assert {m for m in loaded if m.startswith("cryptography")} <= {
        "cryptography", "cryptography.__about__"}
    assert "nacl.bindings" in loaded
