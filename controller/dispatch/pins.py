"""The cabinet's code key, pinned on dispatch's side.

Pickup codes are sealed to the cabinet's public code key, which the cabinet publishes in
its retained ``status``. Whoever can write that status (anyone holding the cabinet's MQTT
certificate) can publish a key of their own: a dispatch that sealed to "the key in the last
status" would seal the customer's code to them. So dispatch pins the key once, with its key
id read out of band at commissioning (``locker-controller --show-code-key`` on the
cabinet), seals only to the pin, and treats a status showing another key as an incident,
never as an update (docs/security.md).

- :class:`PinnedCodeKey`: a key id and the raw X25519 public key it names (the id is
  always computed from the key, never taken on trust);
- :class:`CodeKeyPins`: a small JSON file mapping ``site/cabinet`` to a pin, written
  atomically with mode 0600;
- :class:`CodeKeyNotPinned`, :class:`CodeKeyChanged`: the refusals.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.security.codes import SCHEME, key_id_of
from controller.security.local_files import private_file_issue

__all__ = [
    "CodeKeyChanged",
    "CodeKeyNotPinned",
    "CodeKeyPinError",
    "CodeKeyPins",
    "PinnedCodeKey",
]


class CodeKeyPinError(ValueError):
    """A pin or a published code key that cannot be used (malformed, unreadable file)."""


class CodeKeyNotPinned(CodeKeyPinError):
    """No code key is pinned for this cabinet: codes are never sealed to a key taken from
    the broker alone."""


class CodeKeyChanged(CodeKeyPinError):
    """The cabinet's status shows another code key than the one pinned (or than the key id
    read out of band): an incident. Nothing was sealed."""

    def __init__(self, cabinet: str, pinned_key_id: str, seen_key_id: str,
                 what: str = "pinned") -> None:
        super().__init__(
            f"cabinet {cabinet}: its status shows code key {seen_key_id}, but the key "
            f"{what} is {pinned_key_id}: nothing sealed. Treat it as an incident (a stolen "
            "cabinet certificate can publish a status); re-pin only after checking the key id "
            "on the cabinet itself (locker-controller --show-code-key)")
        self.cabinet = cabinet
        self.pinned_key_id = pinned_key_id
        self.seen_key_id = seen_key_id


@dataclass(frozen=True, slots=True)
class PinnedCodeKey:
    """A cabinet's public code key: ``key_id`` (16 hex digits of SHA-256 over the key) and
    ``public_key`` (32 raw X25519 bytes). The id must be the key's own."""

    key_id: str
    public_key: bytes

    def __post_init__(self) -> None:
        if len(self.public_key) != 32:
            raise CodeKeyPinError("a code key is 32 bytes (raw X25519)")
        if key_id_of(self.public_key) != self.key_id:
            raise CodeKeyPinError(f"key id {self.key_id!r} is not the id of this public key "
                                  f"({key_id_of(self.public_key)})")

    @classmethod
    def of(cls, public_key: bytes) -> PinnedCodeKey:
        """The pin of a raw public key (its id computed)."""
        if len(public_key) != 32:
            raise CodeKeyPinError("a code key is 32 bytes (raw X25519)")
        return cls(key_id_of(public_key), bytes(public_key))

    @classmethod
    def from_published(cls, published: Mapping[str, Any]) -> PinnedCodeKey:
        """From a status's ``code_key`` (``scheme``, ``key_id``, ``public_key`` in base64);
        refused when the scheme is another or the key id is not the key's."""
        if published.get("scheme") != SCHEME:
            raise CodeKeyPinError(f"code key scheme {published.get('scheme')!r}, expected "
                                  f"{SCHEME!r}")
        try:
            raw = base64.b64decode(str(published.get("public_key")), validate=True)
        except (binascii.Error, ValueError):
            raise CodeKeyPinError("code key: public_key is not base64") from None
        return cls(str(published.get("key_id")), raw)

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(self.public_key).decode()


def _entry_name(site: str, cabinet: str) -> str:
    return f"{site}/{cabinet}"


class CodeKeyPins:
    """The pinned code keys of the cabinets one dispatch talks to, in a JSON file::

        {"version": 1, "pins": {"fr-lyon-07/cab-01":
            {"key_id": "...", "public_key": "<base64>", "pinned_at": "2026-11-30T01:02:03Z"}}}

    Written atomically (a temporary file in the same directory, fsync, rename) with mode
    0600. Before every read and every write the file must be this user's (or root's) and
    writable by neither group nor others, and so must every directory on its path, symlinks
    followed, up to ``/`` (a sticky directory such as ``/tmp`` only when the file is this
    user's own): whoever can replace the file pins their own key, and the codes sealed
    with it are theirs (:func:`controller.security.local_files.private_file_issue`).
    """

    VERSION = 1

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _check(self) -> None:
        issue = private_file_issue(
            self.path, frozenset({0, os.geteuid()}), what="the pinned code keys",
            fix="Keep the pin file in a directory only this user can write (chmod 700 on it, "
                "chmod 600 on the file, owned by this user), then check every pin against "
                "the cabinets (locker-controller --show-code-key)", sticky_home=True)
        if issue is not None:
            raise CodeKeyPinError(issue)

    def _read(self) -> dict[str, dict[str, Any]]:
        self._check()
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except OSError as exc:
            raise CodeKeyPinError(f"{self.path}: cannot read: {exc.strerror}") from None
        except ValueError as exc:
            raise CodeKeyPinError(f"{self.path}: not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != self.VERSION or not isinstance(
                data.get("pins"), dict):
            raise CodeKeyPinError(f"{self.path}: not a code key pin file (version "
                                  f"{self.VERSION}, pins)")
        pins: dict[str, dict[str, Any]] = data["pins"]
        return pins

    def entries(self) -> dict[str, dict[str, Any]]:
        """Every pin: ``site/cabinet`` -> ``{key_id, public_key, pinned_at}``."""
        pins = self._read()
        for name in pins:
            self._pin_of(name, pins[name])  # each one checked
        return dict(sorted(pins.items()))

    def _pin_of(self, name: str, entry: Any) -> PinnedCodeKey:
        if not isinstance(entry, dict):
            raise CodeKeyPinError(f"{self.path}: pin {name!r} is not an object")
        try:
            raw = base64.b64decode(str(entry.get("public_key")), validate=True)
            return PinnedCodeKey(str(entry.get("key_id")), raw)
        except (binascii.Error, ValueError) as exc:
            raise CodeKeyPinError(f"{self.path}: pin {name!r}: {exc}") from None

    def get(self, site: str, cabinet: str) -> PinnedCodeKey | None:
        """The pin of ``site/cabinet``, or ``None``."""
        name = _entry_name(site, cabinet)
        entry = self._read().get(name)
        return None if entry is None else self._pin_of(name, entry)

    def pin(self, site: str, cabinet: str, key: PinnedCodeKey, *,
            replace: bool = False) -> bool:
        """Pin ``key`` for ``site/cabinet``; ``True`` when the file changed. Another key
        already pinned there is refused (:class:`CodeKeyChanged`) unless ``replace``
        (after the change was checked on the cabinet)."""
        pins = self._read()
        name = _entry_name(site, cabinet)
        old = pins.get(name)
        if old is not None:
            current = self._pin_of(name, old)
            if current == key:
                return False
            if not replace:
                raise CodeKeyChanged(name, current.key_id, key.key_id)
        pins[name] = {"key_id": key.key_id, "public_key": key.public_key_b64,
                      "pinned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self._write(pins)
        return True

    def _write(self, pins: dict[str, dict[str, Any]]) -> None:
        text = json.dumps({"version": self.VERSION, "pins": dict(sorted(pins.items()))},
                          indent=1) + "\n"
        directory = self.path.parent
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise CodeKeyPinError(f"{self.path}: cannot write: {exc.strerror}") from None
        self._check()
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        except OSError as exc:
            raise CodeKeyPinError(f"{self.path}: cannot write: {exc.strerror}") from None
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
            with contextlib.suppress(OSError):  # the rename itself, on power loss
                dir_fd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise CodeKeyPinError(f"{self.path}: cannot write: {exc.strerror}") from None
