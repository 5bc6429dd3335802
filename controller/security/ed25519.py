"""The cabinet's Ed25519 checks, with libsodium (PyNaCl).

The daemon only verifies: dispatch's command signatures and the grants its root keys sign.
It does so with libsodium through PyNaCl, which costs the daemon about 1 MB of resident
memory where ``cryptography`` costs about 7 MB (``bench/memory_floor.py``; decision 0021).
Dispatch's side (key files, signing, grants issued) stays on ``cryptography``
(:mod:`controller.security.signing`): its keys are accepted here as they are.

libsodium's check is the strict one: it refuses a signature whose ``S`` is not reduced, a
non-canonical ``R`` and a public key of small order, which no honest signer produces.
"""

from __future__ import annotations

from typing import Protocol

from nacl.exceptions import CryptoError
from nacl.signing import VerifyKey

__all__ = ["PUBLIC_KEY_BYTES", "SIGNATURE_BYTES", "VerifyKey", "signature_ok", "verify_key"]

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


class _RawPublicKey(Protocol):
    def public_bytes_raw(self) -> bytes: ...


def verify_key(key: VerifyKey | bytes | _RawPublicKey) -> VerifyKey:
    """``key`` as a verify key: a :class:`VerifyKey`, the 32 raw bytes of an Ed25519 public
    key, or a key object of dispatch's tools (``cryptography``'s ``Ed25519PublicKey``, read
    through its ``public_bytes_raw()``). TypeError for anything else."""
    if isinstance(key, VerifyKey):
        return key
    raw: object
    if isinstance(key, bytes):
        raw = key
    else:
        raw_of = getattr(key, "public_bytes_raw", None)
        raw = raw_of() if callable(raw_of) else None
    if not isinstance(raw, bytes) or len(raw) != PUBLIC_KEY_BYTES:
        raise TypeError(f"not an Ed25519 public key ({type(key).__name__})")
    return VerifyKey(raw)


def signature_ok(key: VerifyKey, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` (64 bytes) is ``key``'s over ``message``."""
    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        key.verify(message, signature)
    except (CryptoError, ValueError, TypeError):
        return False
    return True
