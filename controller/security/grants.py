"""Keys with roles: dispatch's root keys, technician keys granted by dispatch, revocation.

Every cabinet trusts dispatch's *root* keys (``[security] dispatch_public_keys``). A command
signed directly by a root key has the role ``dispatch``: every command type.

A technician never holds a root key. Dispatch issues a **grant**: a small JSON text signed
by a root key that binds a technician's own Ed25519 public key to a role, one site and a
time window, under an id dispatch can revoke::

    {"signed": "{\\"grant\\":\\"g-7f3a\\",\\"role\\":\\"technician\\",\\"key_id\\":\\"tech-alice\\",
                 \\"public_key\\":\\"<base64 of 32 bytes>\\",\\"site\\":\\"fr-lyon-07\\",
                 \\"not_before\\":1764400000,\\"not_after\\":1764443200}",
     "key_id": "dispatch-1", "sig": "<base64 Ed25519 signature by the root key>"}

The technician signs each command with their own key and sends the grant beside the
signature (``{"signed", "key_id", "sig", "grant"}``). The cabinet checks it offline: the
grant's root signature, its role, that its site is the cabinet's site, that the cabinet's
wall clock lies in ``[not_before, not_after]`` (at most :data:`MAX_GRANT_LIFETIME_S` long),
that its id is not in the stored :class:`RevocationList`, and only then the command's
signature with the granted key. The role ``technician`` may send only maintenance actions
(:data:`ROLE_COMMANDS`).

Grants are bounded by the *wall* clock, the only clock that spans days; a cabinet without
a synchronised clock sees a grant as not yet valid or expired rather than valid for ever
(the Pi's fake-hwclock never moves the clock back past its last saved time).

Revocation: dispatch pushes revoked grant ids, each with its grant's ``not_after``, as the
signed command ``revoke_grants`` with a ``serial`` that never goes down. The cabinet *adds*
them to its :class:`RevocationList` and stores it before answering. A revocation is
permanent until the last moment a grant with that id could still be valid: no later message
(the same serial again, a newer list without the id, a flood of other ids) removes an entry
before then; only that moment passing does (the grant is expired anyway, so the list stays
short). The ``not_after`` a message gives is dispatch's word, and may be wrong (too early,
even past): an entry is kept until the later of that ``not_after`` and the moment it was
added plus :data:`MAX_GRANT_LIFETIME_S`, so a grant issued before its revocation is covered
whatever the message says; and when a revoked grant is presented, its entry is extended to
the grant's own signed ``not_after`` if that is later (a grant whose window starts after its
revocation). The limit: a grant whose window starts more than :data:`MAX_GRANT_LIFETIME_S`
after its revocation was added, revoked with a ``not_after`` too early, is off the list by
the time it is first presented, and works; a grant carries no issue time, so the cabinet
cannot tell it from a grant issued later. Dispatch must send each grant's own
``not_after``. The list
holds at most :data:`MAX_REVOKED` live entries; a message that would go past it is refused
whole (nothing is evicted to make room).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from controller import strictjson
from controller.security.ed25519 import VerifyKey, signature_ok, verify_key
from controller.security.errors import AuthRejected, RejectCode

if TYPE_CHECKING:  # dispatch's side only: the cabinet never imports cryptography
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = [
    "MAX_GRANT_LIFETIME_S",
    "MAX_REVOKED",
    "ROLES",
    "ROLE_COMMANDS",
    "Grant",
    "RevocationFull",
    "RevocationList",
    "RevocationUpdate",
    "check_grant",
    "issue_grant",
    "role_allows",
]

ROLES = ("dispatch", "technician")

MAX_GRANT_LIFETIME_S = 7 * 24 * 3600
"""A grant valid for longer than this is refused: a lost laptop is a problem for a week at
most, even if nobody revokes its grant."""

MAX_REVOKED = 4096
"""Live (not yet expired) revoked grants a cabinet keeps at most. Grants last 7 days at most,
so this is room for 4096 revocations a week per site; a message that would go past it is
refused, never served by dropping an entry."""

ROLE_COMMANDS: Mapping[str, Mapping[str, frozenset[str] | None]] = MappingProxyType({
    # A technician on site: read the state, take compartments out of and back into service,
    # clear a compartment's fault once repaired, open a door for maintenance or an audit.
    # Never assign, release, change codes or config, never open for a customer, never revoke.
    "technician": MappingProxyType({
        "get_state": None,
        "block": None,
        "unblock": None,
        "clear_fault": None,
        "open": frozenset({"maintenance", "audit"}),
        "open_all": frozenset({"maintenance", "audit"}),
        "commission": None,
    }),
})
"""Command types (and, where given, the allowed ``args.reason`` values) per restricted role.
``dispatch`` is not listed: a root key may send every type."""

_GRANT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SITE = re.compile(r"[a-z0-9-]{1,32}")
_GRANT_KEYS = frozenset({"grant", "role", "key_id", "public_key", "site", "not_before",
                         "not_after"})
_MAX_GRANT_BYTES = 2048


@dataclass(frozen=True, slots=True)
class Grant:
    """A checked grant: ``key_id``'s ``public_key`` may act as ``role`` at ``site``."""

    grant_id: str
    role: str
    key_id: str
    public_key: VerifyKey
    site: str
    not_before: int
    not_after: int
    issued_by: str


def _reject(message: str, field: str = "grant", code: RejectCode = RejectCode.MALFORMED
            ) -> AuthRejected:
    return AuthRejected(code, message, field)


def issue_grant(root_key: Ed25519PrivateKey, root_key_id: str, *, grant_id: str,
                key_id: str, public_key: Ed25519PublicKey, site: str, not_before: int,
                not_after: int, role: str = "technician") -> dict[str, str]:
    """Dispatch's side: sign a grant with a root key (see the module docstring)."""
    if role not in ROLES or role == "dispatch":
        raise ValueError(f"a grant's role is one of {ROLES[1:]}, got {role!r}")
    if not _GRANT_ID.fullmatch(grant_id) or not _KEY_ID.fullmatch(key_id):
        raise ValueError("grant id or key id has characters outside [A-Za-z0-9._:-]")
    if not _SITE.fullmatch(site):
        raise ValueError(f"site {site!r} is not [a-z0-9-]{{1,32}}")
    if not 0 < not_after - not_before <= MAX_GRANT_LIFETIME_S:
        raise ValueError(f"a grant lasts between 1 s and {MAX_GRANT_LIFETIME_S} s")
    raw = public_key.public_bytes_raw()
    text = json.dumps({"grant": grant_id, "role": role, "key_id": key_id,
                       "public_key": base64.b64encode(raw).decode(), "site": site,
                       "not_before": not_before, "not_after": not_after},
                      separators=(",", ":"))
    sig = root_key.sign(text.encode())
    return {"signed": text, "key_id": root_key_id, "sig": base64.b64encode(sig).decode()}


def _int(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _reject(f"grant {field} must be an integer >= 0", f"grant.{field}")
    return value


def check_grant(envelope: Any, roots: Mapping[str, Any], *, site: str | None,
                now_s: float, revoked: RevocationList) -> Grant:
    """The cabinet's side: return the grant in ``envelope`` or raise :class:`AuthRejected`.
    ``roots`` maps a root key id to its public key, in any form
    :func:`~controller.security.ed25519.verify_key` takes.

    Order: shape [malformed], root key [unknown_key], root signature [bad_signature], then
    the grant's content [malformed], revocation [revoked], site [wrong_site] and time window
    [grant_expired]. Nothing inside ``signed`` is read before its signature verified.
    """
    if not isinstance(envelope, dict) or set(envelope) != {"signed", "key_id", "sig"}:
        raise _reject("grant must be {signed, key_id, sig}")
    text, root_id, sig = envelope["signed"], envelope["key_id"], envelope["sig"]
    if not (isinstance(text, str) and isinstance(root_id, str) and isinstance(sig, str)):
        raise _reject("grant fields must be strings")
    root = roots.get(root_id)
    if root is None:
        raise _reject(f"grant signed by no trusted root key ({root_id[:40]!r})",
                      "grant.key_id", RejectCode.UNKNOWN_KEY)
    try:
        signature = base64.b64decode(sig, validate=True)
        signed_bytes = text.encode("utf-8")
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise _reject("grant sig is not base64 or signed is not text", "grant.sig") from None
    if len(signed_bytes) > _MAX_GRANT_BYTES or len(signature) != 64 \
            or base64.b64encode(signature).decode() != sig:
        raise _reject("grant sig is not the base64 of 64 bytes", "grant.sig")
    if not signature_ok(verify_key(root), signature, signed_bytes):
        raise _reject(f"grant signature does not verify with root key {root_id}",
                      "grant.sig", RejectCode.BAD_SIGNATURE)
    try:
        # Strictly, as a command's signed text: with a key twice, dispatch's tools and the
        # cabinet could each read another grant id or site out of the same signed text.
        body = strictjson.loads(text)
    except ValueError as exc:
        raise _reject(f"grant signed text: {strictjson.describe(exc)}") from None
    if not isinstance(body, dict) or set(body) != _GRANT_KEYS:
        raise _reject(f"grant must carry exactly {sorted(_GRANT_KEYS)}")
    grant_id, role, key_id, site_of = body["grant"], body["role"], body["key_id"], body["site"]
    if not (isinstance(grant_id, str) and _GRANT_ID.fullmatch(grant_id)):
        raise _reject("grant id must match [A-Za-z0-9._:-]{1,64}", "grant.grant")
    if role not in ROLE_COMMANDS:
        raise _reject(f"grant role must be one of {sorted(ROLE_COMMANDS)}", "grant.role")
    if not (isinstance(key_id, str) and _KEY_ID.fullmatch(key_id)) or key_id in roots:
        raise _reject("grant key_id must be a key id that is not a root key", "grant.key_id")
    if not (isinstance(site_of, str) and _SITE.fullmatch(site_of)):
        raise _reject("grant site must match [a-z0-9-]{1,32}", "grant.site")
    not_before, not_after = _int(body["not_before"], "not_before"), _int(body["not_after"],
                                                                         "not_after")
    try:
        raw = base64.b64decode(body["public_key"], validate=True)
        public_key = verify_key(raw)
    except (binascii.Error, ValueError, TypeError):
        raise _reject("grant public_key is not a base64 Ed25519 key",
                      "grant.public_key") from None
    if revoked.is_revoked(grant_id):
        revoked.presented(grant_id, not_after)
        raise _reject(f"grant {grant_id} is revoked", "grant.grant", RejectCode.REVOKED)
    if site is not None and site_of != site:
        raise _reject(f"grant is for site {site_of}", "grant.site", RejectCode.WRONG_SITE)
    if not_after - not_before > MAX_GRANT_LIFETIME_S:
        raise _reject(f"grant lasts more than {MAX_GRANT_LIFETIME_S} s", "grant.not_after",
                      RejectCode.GRANT_EXPIRED)
    if not not_before <= now_s <= not_after:
        raise _reject("grant is not valid at the cabinet's time", "grant.not_after",
                      RejectCode.GRANT_EXPIRED)
    return Grant(grant_id, role, key_id, public_key, site_of, not_before, not_after, root_id)


def role_allows(role: str, command_type: str, args: Any) -> bool:
    """Whether ``role`` may send ``command_type`` with ``args`` (see :data:`ROLE_COMMANDS`)."""
    if role == "dispatch":
        return True
    allowed = ROLE_COMMANDS.get(role, {})
    if command_type not in allowed:
        return False
    reasons = allowed[command_type]
    if reasons is None:
        return True
    return isinstance(args, dict) and args.get("reason") in reasons


class RevocationFull(ValueError):
    """Adding these revocations would hold more than :data:`MAX_REVOKED` live entries."""


@dataclass(frozen=True, slots=True)
class RevocationUpdate:
    """What :meth:`RevocationList.add` did: ``added`` ids newly revoked, ``already`` ids
    that were revoked before (a repeat changes nothing), ``expired`` ids sent whose grant
    has already ended (nothing to keep)."""

    serial: int
    added: tuple[str, ...]
    already: tuple[str, ...]
    expired: tuple[str, ...]


class RevocationList:
    """Revoked grant ids pushed by dispatch, each kept until its grant's ``not_after``.

    Additive and permanent (see the module docstring): :meth:`add` never removes a live
    entry, and refuses an older ``serial``, so neither a replayed old message nor a repeat
    nor a flood can bring a revoked grant back.
    """

    def __init__(self, serial: int = 0, entries: Mapping[str, int] | None = None) -> None:
        self.serial = serial
        self._entries = dict(entries or {})

    def is_revoked(self, grant_id: str) -> bool:
        return grant_id in self._entries

    def presented(self, grant_id: str, not_after: int) -> None:
        """A revoked grant ending at ``not_after`` was presented: keep its entry at least
        until then (its window may reach past what the revocation was kept for)."""
        if grant_id in self._entries:
            self._entries[grant_id] = max(self._entries[grant_id], not_after)

    def __len__(self) -> int:
        return len(self._entries)

    def copy(self) -> RevocationList:
        return RevocationList(self.serial, self._entries)

    def add(self, serial: int, entries: Iterable[tuple[str, int]], now_s: float,
            *, limit: int = MAX_REVOKED) -> RevocationUpdate | None:
        """Revoke ``entries`` (``(grant_id, not_after)``) under ``serial``. None (and no
        change) when ``serial`` is older than ours; :class:`RevocationFull` (and no change)
        when the live entries would exceed ``limit``. Each entry is kept until the later of
        its ``not_after`` and ``now_s`` + :data:`MAX_GRANT_LIFETIME_S` (a ``not_after`` sent
        too early, or already past, never shortens a revocation: ``expired`` lists those
        sent already past, revoked all the same); entries whose time has passed are
        dropped; an entry's end only ever grows."""
        if serial < self.serial:
            return None
        kept = {gid: until for gid, until in self._entries.items() if until >= now_s}
        added: list[str] = []
        already: list[str] = []
        expired: list[str] = []
        floor = int(now_s) + MAX_GRANT_LIFETIME_S
        for gid, until in entries:
            if until < now_s and gid not in expired:
                expired.append(gid)
            if gid in kept:
                already.append(gid)
                kept[gid] = max(kept[gid], until)
            else:
                added.append(gid)
                kept[gid] = max(until, floor)
        if len(kept) > limit:
            raise RevocationFull(
                f"the cabinet keeps at most {limit} revoked grants that have not ended; "
                f"this would make {len(kept)} (none is dropped to make room): wait until "
                "older grants end, or revoke the technician's key at the broker")
        self.serial = serial
        self._entries = kept
        return RevocationUpdate(serial, tuple(added), tuple(already), tuple(expired))

    def to_dict(self) -> dict[str, Any]:
        return {"serial": self.serial, "revoked": dict(sorted(self._entries.items()))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RevocationList:
        if not data:
            return cls()
        serial = data.get("serial", 0)
        revoked = data.get("revoked", {})
        if not isinstance(serial, int) or not isinstance(revoked, dict):
            raise ValueError("stored revocation list has the wrong shape")
        return cls(serial, {str(k): int(v) for k, v in revoked.items()})
