"""Codes sealed to the cabinet and its keyed verifier: the published test vectors, the
bindings, the key file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from controller.security.codes import (
    SCHEME,
    CodeKey,
    CodeKeyError,
    SealError,
    open_sealed,
    seal_code,
)

# The test vectors of docs/mqtt/README.md ("Pickup codes").
CABINET_KEY = X25519PrivateKey.from_private_bytes(bytes(range(32)))
EPHEMERAL = X25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
VECTOR_KEY = CodeKey(CABINET_KEY, bytes([0x11]) * 32, bytes([0x22]) * 16)
VECTORS = [
    ("4820193375", "ord-88412", "collect-0", "collect",
     "cTiAC0uLZYgMSR7t28/ApJn4LwRRLj3UubM=", "709ef74fb9323ca888a1e49fa7e1f899"),
    ("K7QW2M9XTR4PZ8HA", "ord-88412", "deposit-1", "deposit",
     "DjfjbEj/b+NvLqg1paDSbAsUSRtLg/kpBoRPaI93uJQ=", "826342148ca3e2d41986971d5379c605"),
]


def test_published_key() -> None:
    assert VECTOR_KEY.published() == {
        "scheme": SCHEME, "key_id": "eedd883da0a94515",
        "public_key": "j0DFrbaPJWJK5bIU6nZ6bslNgp09e14a0bpvPiE4KF8="}


@pytest.mark.parametrize(("code", "order", "code_id", "purpose", "sealed", "verifier"), VECTORS)
def test_vectors(code: str, order: str, code_id: str, purpose: str, sealed: str,
                 verifier: str) -> None:
    entry = seal_code(VECTOR_KEY.public_bytes, "cab-01", order, code_id, purpose, code,
                      ephemeral=EPHEMERAL)
    assert entry == {"purpose": purpose, "scheme": SCHEME, "key_id": "eedd883da0a94515",
                     "epk": "NYBy1jZYgNGu6jKa35EhODhR7SGijjt16WXQ0s0WYlQ=", "sealed": sealed}
    assert VECTOR_KEY.open("cab-01", order, code_id, entry) == code
    assert VECTOR_KEY.verifier(code.encode()) == verifier


def test_a_sealed_code_opens_only_where_it_was_sealed_for() -> None:
    key = CodeKey.generate(scrypt_n=2**8)
    entry = seal_code(key.public_bytes, "cab-01", "o-1", "collect-0", "collect", "4820193375")
    assert key.open("cab-01", "o-1", "collect-0", entry) == "4820193375"
    for cabinet, order, code_id in [("cab-02", "o-1", "collect-0"), ("cab-01", "o-2", "collect-0"),
                                    ("cab-01", "o-1", "collect-1")]:
        with pytest.raises(SealError) as err:
            key.open(cabinet, order, code_id, entry)
        assert err.value.field == "sealed"
    other = CodeKey.generate(scrypt_n=2**8)
    with pytest.raises(SealError) as err:
        other.open("cab-01", "o-1", "collect-0", entry)
    assert err.value.field == "key_id"
    forged = {**entry, "key_id": other.key_id}
    with pytest.raises(SealError):
        open_sealed(other.private_key, "cab-01", "o-1", "collect-0", forged)
    tampered = {**entry, "sealed": entry["sealed"][:-4] + "AAA="}
    with pytest.raises(SealError):
        key.open("cab-01", "o-1", "collect-0", tampered)
    with pytest.raises(SealError) as err:
        key.open("cab-01", "o-1", "collect-0", {**entry, "scheme": "scrypt"})
    assert err.value.field == "scheme"
    with pytest.raises(SealError) as err:
        key.open("cab-01", "o-1", "collect-0", {**entry, "epk": "AAAA"})
    assert err.value.field == "epk"


def test_two_seals_of_one_code_differ_and_the_verifier_needs_the_secret() -> None:
    key = CodeKey.generate(scrypt_n=2**8)
    a = seal_code(key.public_bytes, "cab-01", "o-1", "collect-0", "collect", "4820193375")
    b = seal_code(key.public_bytes, "cab-01", "o-1", "collect-0", "collect", "4820193375")
    assert a["sealed"] != b["sealed"]
    twin = CodeKey(key.private_key, os.urandom(32), key.salt, key.scrypt_n)
    assert twin.verifier(b"4820193375") != key.verifier(b"4820193375")
    assert "4820193375" not in repr(key)


def test_key_file_is_created_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "code.key"
    created = CodeKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = CodeKey.load_or_create(path)
    assert again.public_bytes == created.public_bytes
    assert again.verifier(b"4820193375") == created.verifier(b"4820193375")


def test_a_key_file_others_may_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "code.key"
    CodeKey.load_or_create(path)
    path.chmod(0o644)
    with pytest.raises(CodeKeyError, match="other users may read"):
        CodeKey.load_or_create(path)


def test_a_weak_or_broken_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "code.key"
    path.write_text(CodeKey.generate(scrypt_n=2**4).to_json())
    path.chmod(0o600)
    with pytest.raises(CodeKeyError, match="cost floor"):
        CodeKey.load_or_create(path)
    path.write_text("{}")
    with pytest.raises(CodeKeyError, match="malformed"):
        CodeKey.load_or_create(path)
    with pytest.raises(CodeKeyError, match="cannot create"):
        CodeKey.load_or_create(tmp_path / "missing-dir" / "code.key")
