"""How dispatch signs a command: the other half of :mod:`controller.security.verify`.

Used by ``lockerctl`` and as the reference for dispatch's own implementation::

    private_key, public_key = generate_keypair()
    save_private_key(private_key, "dispatch-1.key")       # mode 0600, never overwritten
    save_public_key(public_key, "dispatch-1.pub")         # installed on every cabinet

    # The cabinet's clock, as last read from its status/telemetry/reply, and the local
    # monotonic time at which that reading arrived:
    expires = deadline_from_reading(reading, received_at=t_rx, now=time.monotonic(),
                                    ttl_ms=10_000)
    command = {"id": "c-000123", "type": "open", "site": "fr-lyon-07", "cabinet": "cab-01",
               "expires": expires, "args": {"compartment": "A01", "reason": "customer_app"}}
    message = sign_command(command, load_private_key("dispatch-1.key"), "dispatch-1")
    # publish json.dumps(message) to lockers/v1/{site}/{cabinet}/cmd

:func:`sign_command` serialises the command to compact JSON text once and signs those
exact UTF-8 bytes; the text travels as a string, so the cabinet verifies the same bytes
without any canonicalisation (docs/decisions/0005-command-signatures.md). Private keys are
never logged or put in exception messages; their files are created 0600 and refused when
readable by group or others.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from controller.clock import CabinetClock
from controller.security.errors import KeyFileError
from controller.security.verify import KEY_ID_PATTERN, MAX_COMMAND_LIFETIME_MS

__all__ = [
    "DEFAULT_TTL_MS",
    "deadline_from_reading",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "load_public_keys",
    "save_private_key",
    "save_public_key",
    "sign_command",
]

DEFAULT_TTL_MS = 10_000
"""Lifetime dispatch gives a command: room for broker and network delay, well under 30 s."""


def generate_keypair() -> tuple[Ed25519PrivateKey, Ed25519PublicKey]:
    """A fresh Ed25519 key pair (private, public)."""
    private_key = Ed25519PrivateKey.generate()
    return private_key, private_key.public_key()


def save_private_key(private_key: Ed25519PrivateKey, path: str | os.PathLike[str]) -> None:
    """Write ``private_key`` as unencrypted PKCS#8 PEM, file mode 0600.

    Refuses to overwrite an existing file (losing a signing key locks dispatch out of
    every cabinet that trusts it). The file is created with its final mode, never briefly
    readable by others.
    """
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{os.fspath(path)} exists; not overwriting a key") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Read an Ed25519 private key written by :func:`save_private_key`.

    Raises :class:`KeyFileError` if the file is readable or writable by group or others
    (as ssh does), or holds anything but an unencrypted Ed25519 private key.
    """
    name = os.fspath(path)
    try:
        mode = os.stat(name).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(f"{name} is accessible by group or others "
                               f"(mode {stat.S_IMODE(mode):o}); chmod 600 it")
        data = Path(name).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {name}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # The parser's message could quote the file; say only what kind of failure.
        raise KeyFileError(f"{name} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{name} is not an Ed25519 private key")
    return key


def save_public_key(public_key: Ed25519PublicKey, path: str | os.PathLike[str]) -> None:
    """Write ``public_key`` as SubjectPublicKeyInfo PEM (mode 0644)."""
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    Path(path).write_bytes(pem)
    os.chmod(path, 0o644)


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Read an Ed25519 public key written by :func:`save_public_key`."""
    name = os.fspath(path)
    try:
        data = Path(name).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {name}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise KeyFileError(f"{name} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{name} is not an Ed25519 public key")
    return key


def load_public_keys(paths: Mapping[str, str | os.PathLike[str]]) -> dict[str, Ed25519PublicKey]:
    """``{key_id: path}`` -> ``{key_id: key}``, for :class:`CommandVerifier` (a cabinet
    trusts one key, two during a rotation)."""
    keys: dict[str, Ed25519PublicKey] = {}
    for key_id, path in paths.items():
        if not KEY_ID_PATTERN.fullmatch(key_id):
            raise KeyFileError(f"key id {key_id!r} does not match {KEY_ID_PATTERN.pattern}")
        keys[key_id] = load_public_key(path)
    return keys


def sign_command(command: Mapping[str, Any], private_key: Ed25519PrivateKey,
                 key_id: str, *, grant: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The signed form of ``command``: ``{"signed": text, "key_id": key_id, "sig": b64}``,
    plus ``"grant"`` when ``private_key`` is a technician's key granted by dispatch
    (:func:`controller.security.grants.issue_grant`).

    ``text`` is ``command`` as compact JSON (no spaces, non-ASCII kept as UTF-8, NaN
    refused); the signature is over ``text.encode("utf-8")``. Publish the returned object
    with any JSON encoder: only ``text`` is signed, and it travels as a string.
    """
    if not KEY_ID_PATTERN.fullmatch(key_id):
        raise ValueError(f"key id {key_id!r} does not match {KEY_ID_PATTERN.pattern}")
    text = json.dumps(command, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    signature = private_key.sign(text.encode("utf-8"))
    signed: dict[str, Any] = {"signed": text, "key_id": key_id,
                              "sig": base64.b64encode(signature).decode("ascii")}
    if grant is not None:
        signed["grant"] = dict(grant)
    return signed


def deadline_from_reading(reading: CabinetClock, *, received_at: float, now: float,
                          ttl_ms: int = DEFAULT_TTL_MS) -> dict[str, str | int]:
    """The ``expires`` object for a command sent ``now``, from a cabinet clock reading.

    ``received_at`` and ``now`` are dispatch's *own monotonic* seconds: when ``reading``
    arrived, and now. The cabinet's uptime now is at least ``reading.uptime_ms`` plus the
    time elapsed here since it arrived (the reading was taken before it arrived), so the
    deadline this returns is at most ``ttl_ms`` after the cabinet's real now: never "too
    far in the future", and the command lives at most ``ttl_ms``. Clock rate differences
    (tens of ppm) are negligible over the minutes a reading stays fresh; refresh it from
    each reply.
    """
    if not 0 < ttl_ms <= MAX_COMMAND_LIFETIME_MS:
        raise ValueError(f"ttl_ms must be in 1..{MAX_COMMAND_LIFETIME_MS}, not {ttl_ms}")
    if now < received_at:
        raise ValueError("now is before received_at: use one monotonic clock for both")
    elapsed_ms = int((now - received_at) * 1000)
    return {"boot_id": reading.boot_id, "uptime_ms": reading.uptime_ms + elapsed_ms + ttl_ms}
