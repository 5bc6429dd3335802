"""Pickup codes sealed to the cabinet, and the keyed verifier the cabinet keeps of them.

Neither what travels (``assign`` over the broker) nor what rests on the cabinet (Redis)
lets anyone test a guessed code: both need a secret that never leaves the cabinet.

The cabinet's code key
======================
:class:`CodeKey`, created at the first start into a file only the daemon can read
(:meth:`CodeKey.load_or_create`, mode 0600, refused when any other user may read it):

- an X25519 key pair; the public key is published in the retained ``status``
  (``code_key``), so dispatch can seal codes to this cabinet and to no other;
- a 32-byte verifier secret and a 16-byte verifier salt.

Sealing (dispatch side, :func:`seal_code`)
=========================================
For code ``i`` of order ``O`` on cabinet ``C`` (its ``code_id`` is ``<purpose>-<i>``):

1. an ephemeral X25519 key pair ``(esk, epk)``; ``shared = X25519(esk, cabinet_pk)``;
2. ``okm = HKDF-SHA256(ikm=shared, salt=epk || cabinet_pk, info="locker-code/1",
   length=44)``; ``key = okm[:32]``, ``nonce = okm[32:44]`` (the key is new for every code,
   so the nonce never repeats under one key);
3. ``sealed = ChaCha20-Poly1305(key).encrypt(nonce, code, aad)`` with the normalised code
   in ASCII and ``aad = "locker-code/1" 0x00 C 0x00 O 0x00 code_id`` (UTF-8): a sealed code
   moved to another cabinet, order or position does not open.

On the wire: ``{"purpose", "scheme": "x25519-hkdf-sha256-chacha20poly1305", "key_id",
"epk", "sealed"}``, ``epk`` and ``sealed`` in standard base64, ``key_id`` the first 16 hex
digits of SHA-256 over the cabinet's raw public key.

The verifier (cabinet side, :meth:`CodeKey.verifier`)
=====================================================
``verifier = HMAC-SHA256(secret, "locker-code-verifier/1" 0x00 || scrypt(code, salt,
n=2**14, r=8, p=1, dklen=32))``, kept as 32 hex digits (the first 16 bytes). The store keeps
only verifiers and an index verifier -> (order, code id): a typed code leads straight to
its order, so a check costs one scrypt and one lookup whatever the number of loaded orders.
Without the secret a verifier cannot be tested; with the cabinet's disk (the key file and
Redis) each guess costs one scrypt (see docs/security.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt,
    crypto_aead_chacha20poly1305_ietf_encrypt,
    crypto_scalarmult,
    crypto_scalarmult_base,
)
from nacl.exceptions import CryptoError

from controller.security.local_files import private_file_issue

__all__ = [
    "SCHEME",
    "VERIFIER_SCRYPT",
    "CodeKey",
    "CodeKeyError",
    "SealError",
    "code_key_issue",
    "key_id_of",
    "open_sealed",
    "seal_code",
]

SCHEME = "x25519-hkdf-sha256-chacha20poly1305"
_INFO = b"locker-code/1"
_VERIFIER_TAG = b"locker-code-verifier/1\x00"
#: scrypt cost of the verifier: the price of one guess for someone holding the key file.
#: A key file asking for less ``n`` is refused (the floor); r and p are fixed.
VERIFIER_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_MAX_SCRYPT_N = 2**17
_FILE_VERSION = 1


class CodeKeyError(ValueError):
    """The code key file is missing, unreadable, malformed or readable by other users."""


class SealError(ValueError):
    """A sealed code that does not open: wrong key, tampered, or bound to another
    cabinet, order or code id. ``field`` names the part at fault."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


#: Bytes of an X25519 key (private or public).
KEY_BYTES = 32
#: Bytes of the Poly1305 tag at the end of every sealed code.
TAG_BYTES = 16


def _x25519_public(private_key: bytes) -> bytes:
    """The raw public key of the raw X25519 ``private_key`` (clamped, as RFC 7748 says)."""
    return crypto_scalarmult_base(private_key)


def _x25519(private_key: bytes, peer: bytes) -> bytes:
    """The X25519 shared secret; ValueError for a peer key that is not 32 bytes or whose
    result is all zeros (a point of small order: no secret is shared)."""
    if len(peer) != KEY_BYTES:
        raise ValueError(f"an X25519 key is {KEY_BYTES} bytes, not {len(peer)}")
    try:
        return crypto_scalarmult(private_key, peer)
    except CryptoError:
        raise ValueError("the key is of small order: no secret is shared") from None


def _canonical_b64(value: object) -> bytes:
    """The bytes of ``value``, standard base64 with its padding and nothing else: the one
    text that encodes them (unused bits set, missing padding, another alphabet or spaces
    are refused). ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError("not a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not standard base64") from None
    if base64.b64encode(raw).decode() != value:
        raise ValueError("not canonical base64 (it must be the one encoding of its bytes)")
    return raw


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF with SHA-256 (RFC 5869): extract, then expand to ``length`` bytes (at most
    255 x 32). Checked against the RFC's test vectors (tests/unit/security/test_codes.py)."""
    if not 0 < length <= 255 * 32:
        raise ValueError(f"HKDF-SHA256 gives 1 to {255 * 32} bytes, not {length}")
    prk = hmac.new(salt, ikm, "sha256").digest()
    okm, block = b"", b""
    counter = 0
    while len(okm) < length:
        counter += 1
        block = hmac.new(prk, block + info + bytes((counter,)), "sha256").digest()
        okm += block
    return okm[:length]


def key_id_of(public_key: bytes) -> str:
    """The key id dispatch sends with a sealed code: 16 hex digits of SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def _aad(cabinet: str, order_id: str, code_id: str) -> bytes:
    return b"\x00".join([_INFO, cabinet.encode(), order_id.encode(), code_id.encode()])


def _key_nonce(shared: bytes, epk: bytes, cabinet_pk: bytes) -> tuple[bytes, bytes]:
    okm = _hkdf_sha256(shared, epk + cabinet_pk, _INFO, 44)
    return okm[:32], okm[32:]


def seal_code(public_key: bytes, cabinet: str, order_id: str, code_id: str, purpose: str,
              code: str, *, ephemeral: bytes | None = None) -> dict[str, Any]:
    """Seal ``code`` (already normalised) to the cabinet whose raw X25519 public key is
    ``public_key``: the ``assign.codes[i]`` entry dispatch sends. ``ephemeral`` (a raw
    private key) is for test vectors only: a new key for every code is what keeps the nonce
    unique."""
    if ephemeral is None:
        ephemeral = os.urandom(KEY_BYTES)
    if len(ephemeral) != KEY_BYTES:
        raise ValueError(f"an X25519 private key is {KEY_BYTES} bytes")
    epk = _x25519_public(ephemeral)
    key, nonce = _key_nonce(_x25519(ephemeral, public_key), epk, public_key)
    sealed = crypto_aead_chacha20poly1305_ietf_encrypt(
        code.encode("ascii"), _aad(cabinet, order_id, code_id), nonce, key)
    return {"purpose": purpose, "scheme": SCHEME, "key_id": key_id_of(public_key),
            "epk": base64.b64encode(epk).decode(), "sealed": base64.b64encode(sealed).decode()}


def open_sealed(private_key: bytes, cabinet: str, order_id: str, code_id: str,
                entry: Mapping[str, Any]) -> str:
    """The code inside ``entry`` (an ``assign.codes[i]``), opened with the cabinet's raw
    X25519 ``private_key``; :class:`SealError` otherwise."""
    if entry.get("scheme") != SCHEME:
        raise SealError(f"scheme must be {SCHEME!r}", "scheme")
    public = _x25519_public(private_key)
    if entry.get("key_id") != key_id_of(public):
        raise SealError("sealed to another key: read code_key from this cabinet's status",
                        "key_id")
    try:
        epk = _canonical_b64(entry.get("epk"))
        shared = _x25519(private_key, epk)
    except ValueError as exc:
        raise SealError(f"bad ephemeral key: {exc}", "epk") from None
    try:
        sealed = _canonical_b64(entry.get("sealed"))
    except ValueError as exc:
        raise SealError(f"sealed: {exc}", "sealed") from None
    if len(sealed) < TAG_BYTES:
        raise SealError(f"sealed is {len(sealed)} bytes: shorter than its {TAG_BYTES}-byte "
                        "tag", "sealed")
    key, nonce = _key_nonce(shared, epk, public)
    try:
        clear = crypto_aead_chacha20poly1305_ietf_decrypt(
            sealed, _aad(cabinet, order_id, code_id), nonce, key)
    except (CryptoError, ValueError, TypeError):
        raise SealError("does not open: tampered, or sealed for another cabinet, order or "
                        "code position", "sealed") from None
    try:
        return clear.decode("ascii")
    except UnicodeDecodeError:
        raise SealError("the sealed code is not ASCII", "sealed") from None


@dataclass(frozen=True, slots=True)
class CodeKey:
    """The cabinet's code key: see the module docstring. ``repr`` shows no secret.
    ``private_key`` is the raw X25519 private key (32 bytes)."""

    private_key: bytes
    secret: bytes
    salt: bytes
    scrypt_n: int = VERIFIER_SCRYPT["n"]

    def __post_init__(self) -> None:
        if not isinstance(self.private_key, bytes) or len(self.private_key) != KEY_BYTES:
            raise CodeKeyError(f"the X25519 private key is {KEY_BYTES} raw bytes")

    @classmethod
    def generate(cls, *, scrypt_n: int = VERIFIER_SCRYPT["n"]) -> CodeKey:
        """A new key. A ``scrypt_n`` under the floor is for in-memory test keys only: a
        key file with it is refused."""
        return cls(os.urandom(KEY_BYTES), os.urandom(32), os.urandom(16), scrypt_n)

    @property
    def public_bytes(self) -> bytes:
        return _x25519_public(self.private_key)

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_bytes)

    def published(self) -> dict[str, str]:
        """What the retained ``status`` carries as ``code_key``."""
        return {"scheme": SCHEME, "key_id": self.key_id,
                "public_key": base64.b64encode(self.public_bytes).decode()}

    def open(self, cabinet: str, order_id: str, code_id: str, entry: Mapping[str, Any]) -> str:
        return open_sealed(self.private_key, cabinet, order_id, code_id, entry)

    def verifier(self, code: bytes) -> str:
        """The keyed verifier of a normalised code (one scrypt: run it off the loop)."""
        stretched = hashlib.scrypt(code, salt=self.salt, n=self.scrypt_n,
                                   r=VERIFIER_SCRYPT["r"], p=VERIFIER_SCRYPT["p"],
                                   maxmem=2**28, dklen=32)
        return hmac.new(self.secret, _VERIFIER_TAG + stretched, "sha256").hexdigest()[:32]

    def __repr__(self) -> str:
        return f"CodeKey(key_id={self.key_id})"

    # -- the file -------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps({
            "version": _FILE_VERSION, "scheme": SCHEME,
            "x25519": base64.b64encode(self.private_key).decode(),
            "verifier_secret": base64.b64encode(self.secret).decode(),
            "verifier_salt": base64.b64encode(self.salt).decode(),
            "scrypt_n": self.scrypt_n,
        }, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "code key") -> CodeKey:
        try:
            data = json.loads(text)
            if data.get("version") != _FILE_VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            private = base64.b64decode(data["x25519"], validate=True)
            if len(private) != KEY_BYTES:
                raise ValueError(f"x25519 is {len(private)} bytes, not {KEY_BYTES}")
            secret = base64.b64decode(data["verifier_secret"], validate=True)
            salt = base64.b64decode(data["verifier_salt"], validate=True)
            scrypt_n = int(data.get("scrypt_n", VERIFIER_SCRYPT["n"]))
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            raise CodeKeyError(f"{source}: malformed: {exc}") from None
        if len(secret) < 32 or len(salt) < 16:
            raise CodeKeyError(f"{source}: verifier secret or salt too short")
        floor = VERIFIER_SCRYPT["n"]
        if not (floor <= scrypt_n <= _MAX_SCRYPT_N and scrypt_n & (scrypt_n - 1) == 0):
            raise CodeKeyError(f"{source}: scrypt_n {scrypt_n} refused: a power of two from "
                               f"{floor} (the cost floor) to {_MAX_SCRYPT_N}")
        return cls(private, secret, salt, scrypt_n)

    @classmethod
    def load_or_create(cls, path: Path) -> CodeKey:
        """Read the key file, or create it (mode 0600, never overwriting) at the first
        start. Refused (:class:`CodeKeyError`) when group or others may read or write it,
        when another user owns it, and when its directory would let someone else replace it
        (see :func:`_check_key_directory`)."""
        _check_key_directory(path, frozenset({0, os.geteuid()}))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        except OSError as exc:
            raise CodeKeyError(f"{path}: cannot create: {exc.strerror}") from None
        else:
            key = cls.generate()
            with os.fdopen(fd, "w") as out:
                out.write(key.to_json())
                out.flush()
                os.fsync(out.fileno())
            return key
        try:
            _check_key_file(path, frozenset({os.geteuid()}))
            return cls.from_json(path.read_text(), str(path))
        except OSError as exc:
            raise CodeKeyError(f"{path}: cannot read: {exc.strerror}") from None


def code_key_issue(path: Path, owners: frozenset[int] | None) -> str | None:
    """What :meth:`CodeKey.load_or_create` would refuse about the key at ``path``, found
    without creating or changing anything (``--check``), or None: its directory (when there
    is no key yet, the daemon's first start makes it there), the key file's mode and owner,
    and whether it reads as a code key. ``owners``: who may own the key and its directory
    (:func:`controller.settings.deployment.trusted_owners`: the daemon's user, and root for
    the directory; None: unknown, owners not checked). A directory that is not there yet is
    left to the start (systemd makes the state directory)."""
    try:
        _check_key_directory(path, owners)
        if not path.exists():
            return None
        _check_key_file(path, None if owners is None else owners - {0} or owners)
        CodeKey.from_json(path.read_text(), str(path))
    except CodeKeyError as exc:
        return str(exc)
    except OSError as exc:
        return f"{path}: cannot read: {exc.strerror}"
    return None


def _check_key_file(path: Path, owners: frozenset[int] | None) -> None:
    """Refuse a key file group or others may reach, or owned by a user outside ``owners``
    (None: not checked)."""
    info = path.stat()
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CodeKeyError(
            f"{path}: mode {stat.S_IMODE(info.st_mode):04o}: other users may read the "
            "code key; chmod 600 and check who read it")
    if owners is not None and info.st_uid not in owners:
        raise CodeKeyError(f"{path}: owned by uid {info.st_uid}, not by this daemon")


def _check_key_directory(path: Path, owners: frozenset[int] | None) -> None:
    """Refuse a key that someone other than this daemon (or root) could replace: they could
    put a key of their own in its place (the codes sealed to it, and the verifier secret,
    would be theirs) or remove it. Symlinks followed, every directory on the way from ``/``
    to the key (and to each link) must be owned by this daemon's user or root (``owners``;
    None: unknown, not checked) and writable by neither group nor others; a sticky
    directory (``/tmp``) is accepted above the key's own directory, never as it
    (:func:`controller.security.local_files.private_file_issue`)."""
    issue = private_file_issue(
        path, owners, what="the code key", check_file=False,
        fix="Keep the key in a directory only the daemon writes (/var/lib/locker), on a "
            "path only root and the daemon's user can write")
    if issue is not None:
        raise CodeKeyError(issue)
