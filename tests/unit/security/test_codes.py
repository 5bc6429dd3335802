"""Codes sealed to the cabinet and its keyed verifier: the published test vectors, the
bindings, the key file."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.security.codes import (
    SCHEME,
    CodeKey,
    CodeKeyError,
    SealError,
    _hkdf_sha256,
    open_sealed,
    seal_code,
)

# The test vectors of docs/mqtt/README.md ("Pickup codes").
CABINET_KEY = bytes(range(32))
EPHEMERAL = bytes(range(32, 64))
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
    text = CodeKey.generate().to_json()
    short = text.replace(text.split('"x25519": "')[1].split('"')[0], "AAAA")
    path.write_text(short)
    with pytest.raises(CodeKeyError, match="malformed: x25519 is 3 bytes"):
        CodeKey.load_or_create(path)


# HKDF-SHA256: RFC 5869, appendix A, test cases 1 to 3 (IKM, salt, info, L, OKM).
RFC5869 = [
    ("0b" * 22, "000102030405060708090a0b0c", "f0f1f2f3f4f5f6f7f8f9", 42,
     "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"),
    ("".join(f"{i:02x}" for i in range(0x00, 0x50)),
     "".join(f"{i:02x}" for i in range(0x60, 0xB0)),
     "".join(f"{i:02x}" for i in range(0xB0, 0x100)), 82,
     "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c6"
     "5e590e09da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87"),
    ("0b" * 22, "", "", 42,
     "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"),
]


@pytest.mark.parametrize(("ikm", "salt", "info", "length", "okm"), RFC5869)
def test_hkdf_is_rfc_5869(ikm: str, salt: str, info: str, length: int, okm: str) -> None:
    assert _hkdf_sha256(bytes.fromhex(ikm), bytes.fromhex(salt), bytes.fromhex(info),
                        length).hex() == okm


def test_hkdf_refuses_lengths_outside_the_rfc() -> None:
    for length in (0, 255 * 32 + 1):
        with pytest.raises(ValueError, match="HKDF-SHA256 gives"):
            _hkdf_sha256(b"k", b"s", b"i", length)


def test_codes_sealed_by_another_implementation_open_and_ours_open_there() -> None:
    """The scheme built from cryptography's primitives (what dispatch may use), not from
    the cabinet's: each side opens what the other sealed."""
    aead = pytest.importorskip("cryptography.hazmat.primitives.ciphers.aead")
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    key = CodeKey.generate(scrypt_n=2**8)
    aad = b"\x00".join([b"locker-code/1", b"cab-01", b"o-7", b"collect-0"])

    def key_nonce(shared: bytes, epk: bytes) -> tuple[bytes, bytes]:
        okm = HKDF(algorithm=hashes.SHA256(), length=44, salt=epk + key.public_bytes,
                   info=b"locker-code/1").derive(shared)
        return okm[:32], okm[32:]

    for _ in range(20):
        ephemeral = X25519PrivateKey.generate()
        epk = ephemeral.public_key().public_bytes_raw()
        k, nonce = key_nonce(ephemeral.exchange(X25519PublicKey.from_public_bytes(
            key.public_bytes)), epk)
        sealed = aead.ChaCha20Poly1305(k).encrypt(nonce, b"4820193375", aad)
        entry = {"purpose": "collect", "scheme": SCHEME, "key_id": key.key_id,
                 "epk": base64.b64encode(epk).decode(),
                 "sealed": base64.b64encode(sealed).decode()}
        assert key.open("cab-01", "o-7", "collect-0", entry) == "4820193375"

        ours = seal_code(key.public_bytes, "cab-01", "o-7", "collect-0", "collect",
                         "K7QW2M9XTR4PZ8HA")
        epk = base64.b64decode(ours["epk"])
        private = X25519PrivateKey.from_private_bytes(key.private_key)
        k, nonce = key_nonce(private.exchange(X25519PublicKey.from_public_bytes(epk)), epk)
        clear = aead.ChaCha20Poly1305(k).decrypt(nonce, base64.b64decode(ours["sealed"]), aad)
        assert clear == b"K7QW2M9XTR4PZ8HA"


@pytest.mark.parametrize("epk", [bytes(32), bytes([1]) + bytes(31), bytes(31), bytes(33)])
def test_an_ephemeral_key_of_small_order_or_wrong_size_is_refused(epk: bytes) -> None:
    key = CodeKey.generate(scrypt_n=2**8)
    entry = seal_code(key.public_bytes, "cab-01", "o-1", "collect-0", "collect", "4820193375")
    with pytest.raises(SealError) as err:
        key.open("cab-01", "o-1", "collect-0",
                 {**entry, "epk": base64.b64encode(epk).decode()})
    assert err.value.field == "epk"


def test_a_code_key_is_32_raw_bytes() -> None:
    for private in (bytes(31), "x" * 32, bytes(33)):
        with pytest.raises(CodeKeyError, match="32 raw bytes"):
            CodeKey(private, bytes(32), bytes(16))  # type: ignore[arg-type]


@pytest.mark.parametrize("length", [0, 1, 15])
def test_a_sealed_code_shorter_than_its_tag_is_refused(length: int) -> None:
    key = CodeKey.generate(scrypt_n=2**8)
    entry = seal_code(key.public_bytes, "cab-01", "o-1", "collect-0", "collect", "4820193375")
    short = base64.b64encode(base64.b64decode(entry["sealed"])[:length]).decode()
    with pytest.raises(SealError, match="shorter than its 16-byte tag") as err:
        key.open("cab-01", "o-1", "collect-0", {**entry, "sealed": short})
    assert err.value.field == "sealed"


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _unused_bit_set(text: str) -> str | None:
    """``text`` with a padding bit set: it decodes to the same bytes, but it is not their
    encoding. None when the bytes fill whole groups (no padding bit)."""
    data = text.rstrip("=")
    if len(data) == len(text):
        return None
    last = _B64[_B64.index(data[-1]) | 1]
    return data[:-1] + last + text[len(data):]


@pytest.mark.parametrize("part", ["epk", "sealed"])
def test_base64_must_be_the_one_encoding_of_its_bytes(part: str) -> None:
    key = CodeKey.generate(scrypt_n=2**8)
    entry = seal_code(key.public_bytes, "cab-01", "o-1", "collect-0", "collect", "4820193375")
    text = entry[part]
    raw = base64.b64decode(text)
    variants: list[object] = [text + "\n", " " + text, text + "==", None, 42, b"x"]
    if text.endswith("="):
        variants.append(text.rstrip("="))
    if (odd := _unused_bit_set(text)) is not None:
        assert base64.b64decode(odd) == raw
        variants.append(odd)
    if "+" in text or "/" in text:
        variants.append(base64.urlsafe_b64encode(raw).decode())
    for variant in variants:
        with pytest.raises(SealError) as err:
            key.open("cab-01", "o-1", "collect-0", {**entry, part: variant})
        assert err.value.field == part, variant


@settings(max_examples=300, deadline=None)
@given(epk=st.one_of(st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
                     st.text(max_size=60), st.none(), st.integers()),
       sealed=st.one_of(st.binary(max_size=80).map(lambda b: base64.b64encode(b).decode()),
                        st.text(max_size=100), st.none(), st.integers()))
def test_any_epk_and_sealed_raise_only_seal_error(epk: Any, sealed: Any) -> None:
    entry = {"purpose": "collect", "scheme": SCHEME, "key_id": FUZZ_KEY.key_id,
             "epk": epk, "sealed": sealed}
    with pytest.raises(SealError) as err:
        FUZZ_KEY.open("cab-01", "o-1", "collect-0", entry)
    assert err.value.field in ("epk", "sealed")


FUZZ_KEY = CodeKey.generate(scrypt_n=2**8)
