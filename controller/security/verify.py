"""The cabinet's gate for commands: dispatch's Ed25519 signature, bound to this cabinet, this
boot, a short deadline, at most once.

A command arrives either plain or in the signed form (``docs/design-notes.md``)::

    {"signed": "<the command JSON text, exactly as signed>",
     "key_id": "dispatch-1",
     "sig": "<base64 Ed25519 signature over the UTF-8 bytes of signed>"}

:meth:`CommandVerifier.verify` checks, in this order, and stops at the first failure with
:class:`AuthRejected` (code in brackets):

1. the envelope is a JSON object of the expected shape, no larger than 16 KiB [malformed];
   a plain command whose type :data:`SIGNATURE_POLICY` does not list as ``optional``, or a
   signed form without ``key_id`` or ``sig`` [unauthenticated];
2. ``key_id`` names a trusted key [unknown_key];
3. ``sig`` is canonical base64 of 64 bytes [malformed] and verifies over the exact UTF-8
   bytes of ``signed`` [bad_signature]. Nothing inside ``signed`` is read before this;
4. ``signed`` is a JSON object with ``id``, ``type``, ``cabinet``, ``expires`` and an
   optional ``args`` object, no duplicate keys, no NaN [malformed];
5. ``cabinet`` is ours [wrong_cabinet];
6. ``expires.boot_id`` is the cabinet's current boot [wrong_boot];
7. ``now <= expires.uptime_ms`` [expired] and ``expires.uptime_ms - now`` at most the
   verifier's ``max_lifetime_ms`` (``timing.command_max_ttl_s``; never above 30 000)
   [too_far_in_future], ``now`` being the cabinet's monotonic uptime, never the wall clock;
8. (signed commands) the id was not accepted before within its deadline [replayed]; it is
   then recorded in memory and in the :class:`ReplayStore` before ``verify`` returns.

Because the signature covers the whole inner JSON text, it covers the cabinet, the
compartment (``args``), the action (``type``), the id, the deadline and the boot id: none
of them can be changed, and the command cannot be replayed on another cabinet, compartment
or boot. Reordering is allowed: an older unexpired command arriving after a newer one is
accepted once (docs/decisions/0005-command-signatures.md).

``verify`` never raises anything but :class:`AuthRejected` for bad input. Errors of the
replay store propagate unchanged, and the command is then *not* accepted (fail closed).

Keys have roles (:mod:`controller.security.grants`): a command signed by one of the
trusted root keys acts as ``dispatch``; a command signed by a technician's key carries the
grant dispatch signed for that key (``"grant"`` beside ``"sig"``), checked after step 2
[unknown_key, bad_signature, revoked, wrong_site, grant_expired], and its type must be one
the role allows [forbidden]. When the verifier knows its site, a signed command must name it
(``"site"``) [wrong_site].

A ``replayed`` refusal means "already accepted, do not act again": the caller may answer
with the first reply stored under that id (the envelope's idempotency rule).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from controller import strictjson
from controller.clock import CabinetClock
from controller.security.ed25519 import VerifyKey, signature_ok, verify_key
from controller.security.errors import AuthRejected, RejectCode
from controller.security.grants import Grant, RevocationList, check_grant, role_allows
from controller.security.replay import ReplayStore, ReplayWindow, SeenCommand

__all__ = [
    "KEY_ID_PATTERN",
    "MAX_COMMAND_LIFETIME_MS",
    "MAX_ENVELOPE_BYTES",
    "SIGNATURE_POLICY",
    "CommandVerifier",
    "SignaturePolicy",
    "VerifiedCommand",
    "signature_policy",
]

MAX_COMMAND_LIFETIME_MS = 30_000
"""A deadline may lie at most this far ahead of the cabinet's clock when the command arrives."""

MAX_ENVELOPE_BYTES = 16 * 1024
"""Upper bound on a whole message and on the ``signed`` text (UTF-8 bytes)."""

KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_COMMAND_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_COMMAND_TYPE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_SIGNED_FORM_KEYS = frozenset({"signed", "key_id", "sig", "grant"})
_ED25519_SIGNATURE_BYTES = 64


class SignaturePolicy(StrEnum):
    """Whether a command type must come in the signed form."""

    REQUIRED = "required"
    """Opens a door, changes codes, assignments, availability or config: signed or refused."""
    OPTIONAL = "optional"
    """Reads only: accepted plain (still bound to cabinet, boot and deadline) or signed."""


SIGNATURE_POLICY: Mapping[str, SignaturePolicy] = MappingProxyType({
    # Pulses a lock: the door opens.
    "open": SignaturePolicy.REQUIRED,
    # Several or all locks at once (commissioning, emergency evacuation of a cabinet).
    "open_all": SignaturePolicy.REQUIRED,
    "commission": SignaturePolicy.REQUIRED,
    # Binds an order to a compartment and carries the pickup code hashes: whoever assigns
    # chooses the code that will open the door.
    "assign": SignaturePolicy.REQUIRED,
    "set_codes": SignaturePolicy.REQUIRED,
    # Ends an assignment: a forged release loses a customer's order.
    "release": SignaturePolicy.REQUIRED,
    # Takes a compartment out of / back into service: unblock would hand out a compartment
    # blocked for a broken door.
    "block": SignaturePolicy.REQUIRED,
    "unblock": SignaturePolicy.REQUIRED,
    # Returns a faulty compartment to customers: a forged one would send orders to a door
    # whose lock or sensor is broken.
    "clear_fault": SignaturePolicy.REQUIRED,
    # Changes the configuration: lock channels, polarity, zones. Wiring is security.
    "apply_config": SignaturePolicy.REQUIRED,
    # Gives a lane its wrong-code budget back: a forged one would let a guesser on.
    "clear_lane_lockout": SignaturePolicy.REQUIRED,
    # Replaces the list of revoked technician grants: a forged one would revive a stolen key.
    "revoke_grants": SignaturePolicy.REQUIRED,
    # Reads the state snapshot; changes nothing.
    "get_state": SignaturePolicy.OPTIONAL,
})
"""The policy table. A type not listed here requires a signature (fail closed)."""


def signature_policy(command_type: str) -> SignaturePolicy:
    """The policy of ``command_type``; :attr:`SignaturePolicy.REQUIRED` when not listed."""
    return SIGNATURE_POLICY.get(command_type, SignaturePolicy.REQUIRED)


@dataclass(frozen=True, slots=True)
class VerifiedCommand:
    """A command that passed every check, ready for the contract layer to decode.

    ``command`` is the inner command as parsed from the signed bytes (a fresh object owned
    by the caller); ``key_id`` and ``signed_text`` are ``None`` for a plain command that
    the policy let through unsigned.
    """

    command: dict[str, Any] = field(repr=False)
    id: str
    type: str
    deadline: CabinetClock
    key_id: str | None
    signed_text: str | None = field(default=None, repr=False)
    role: str | None = None
    """``dispatch`` (a root key), ``technician`` (a granted key), ``None`` when unsigned."""
    grant_id: str | None = None

    @property
    def is_signed(self) -> bool:
        return self.key_id is not None


def _reject(code: RejectCode, message: str, field: str | None = None) -> AuthRejected:
    return AuthRejected(code, message, field)


def _short(value: object, limit: int = 40) -> str:
    """A shortened repr of unverified input, for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _loads(text: str | bytes, where: str) -> Any:
    """Strict JSON: no duplicate keys, no NaN/Infinity; every failure is ``malformed``."""
    try:
        return strictjson.loads(text)
    except ValueError as exc:
        # JSONDecodeError, UnicodeDecodeError, over-long integers, duplicates, too deep.
        raise _reject(RejectCode.MALFORMED, f"{where} is not valid JSON: "
                      f"{type(exc).__name__}", where) from None


def _utf8_len(text: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return -1


class CommandVerifier:
    """Verifies commands for one cabinet. See the module docstring for the checks.

    ``public_keys`` maps a ``key_id`` to dispatch's Ed25519 public key (several during a
    key rotation): a :class:`~nacl.signing.VerifyKey`, its 32 raw bytes, or the key
    object of dispatch's tools (:func:`controller.security.ed25519.verify_key`). ``clock``
    returns the cabinet's clock *now* (boot id and monotonic uptime); it is called once per
    :meth:`verify`. ``replay_store`` persists accepted ids
    (:class:`~controller.security.replay.MemoryReplayStore` in tests and the simulator).

    Use from one event loop. The store is loaded on the first :meth:`verify` (or an explicit
    :meth:`restore`), so a daemon restart within the same boot keeps the replay window.
    """

    def __init__(
        self,
        cabinet_id: str,
        public_keys: Mapping[str, Any],
        clock: Callable[[], CabinetClock],
        replay_store: ReplayStore,
        *,
        site_id: str | None = None,
        wall: Callable[[], float] = time.time,
        revocations: RevocationList | None = None,
        max_lifetime_ms: int = MAX_COMMAND_LIFETIME_MS,
    ) -> None:
        if not 0 < max_lifetime_ms <= MAX_COMMAND_LIFETIME_MS:
            raise ValueError(f"max_lifetime_ms must be in 1..{MAX_COMMAND_LIFETIME_MS}, "
                             f"not {max_lifetime_ms}")
        keys: dict[str, VerifyKey] = {}
        for key_id, key in public_keys.items():
            if not KEY_ID_PATTERN.fullmatch(key_id):
                raise ValueError(f"key id {key_id!r} does not match {KEY_ID_PATTERN.pattern}")
            try:
                keys[key_id] = verify_key(key)
            except TypeError:
                raise TypeError(f"key {key_id!r} is not an Ed25519 public key") from None
        self._cabinet_id = cabinet_id
        self._site_id = site_id
        self._wall = wall
        self.revocations = revocations if revocations is not None else RevocationList()
        self._keys = keys
        self._clock = clock
        self._max_lifetime_ms = max_lifetime_ms
        self._store = replay_store
        self._window = ReplayWindow()
        self._window_boot: str | None = None
        self._restore_lock = asyncio.Lock()

    @property
    def cabinet_id(self) -> str:
        return self._cabinet_id

    @property
    def key_ids(self) -> frozenset[str]:
        """The key ids this verifier trusts."""
        return frozenset(self._keys)

    def remembered(self) -> int:
        """How many accepted ids are held in memory (bounded by rate x lifetime)."""
        return len(self._window)

    def release(self, command_id: str) -> None:
        """Forget an accepted id whose command was then not claimed (the store refused the
        record, so it never acted): dispatch may retry with the same id. A command that
        acted is never released; its record in the store answers repeats."""
        self._window.discard(command_id)

    async def restore(self) -> None:
        """Load the ids recorded for the current boot from the replay store (idempotent
        within a boot; called by :meth:`verify` when needed)."""
        async with self._restore_lock:
            now = self._clock()
            if self._window_boot == now.boot_id:
                return
            window = ReplayWindow()
            for seen in await self._store.load(now.boot_id):
                window.add(seen.command_id, seen.deadline_uptime_ms)
            window.prune(now.uptime_ms)
            self._window, self._window_boot = window, now.boot_id

    async def verify(self, message: bytes | str | Mapping[str, Any]) -> VerifiedCommand:
        """Check ``message`` (raw payload, or an already-decoded JSON object) and return the
        command it carries, recorded as seen. Raises :class:`AuthRejected` on any refusal."""
        outer = self._decode_outer(message)
        grant: Grant | None = None
        if "signed" in outer:
            key_id, signed_text, grant = self._check_signature(outer)
            inner = _loads(signed_text, "signed")
            if not isinstance(inner, dict):
                raise _reject(RejectCode.MALFORMED, "the signed command is not a JSON object",
                              "signed")
        else:
            if outer.keys() & {"key_id", "sig"}:
                raise _reject(RejectCode.MALFORMED, "key_id/sig without signed", "signed")
            key_id, signed_text, inner = None, None, dict(outer)
            command_type = inner.get("type")
            if not isinstance(command_type, str) or (
                    signature_policy(command_type) is not SignaturePolicy.OPTIONAL):
                raise _reject(RejectCode.UNAUTHENTICATED,
                              f"command type {_short(command_type)} must be signed", "sig")
        command_id, command_type, deadline = self._check_shape(inner)
        now = self._clock()
        self._check_binding(inner, deadline, now)
        self._check_site(inner, signed=key_id is not None)
        role = None if key_id is None else ("dispatch" if grant is None else grant.role)
        if role is not None and not role_allows(role, command_type, inner.get("args")):
            raise _reject(RejectCode.FORBIDDEN, f"a {role} key may not send "
                          f"{_short(command_type)} with these arguments", "type")
        if key_id is not None:
            await self._accept_once(command_id, deadline, now)
        return VerifiedCommand(command=inner, id=command_id, type=command_type,
                               deadline=deadline, key_id=key_id, signed_text=signed_text,
                               role=role, grant_id=None if grant is None else grant.grant_id)

    # -- the steps, in order ------------------------------------------------------------------

    @staticmethod
    def _decode_outer(message: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
        if isinstance(message, Mapping):
            outer: Any = dict(message)
        elif isinstance(message, bytes | bytearray | memoryview):
            raw = bytes(message)
            if len(raw) > MAX_ENVELOPE_BYTES:
                raise _reject(RejectCode.MALFORMED, f"message larger than {MAX_ENVELOPE_BYTES}"
                              " bytes")
            try:
                # UTF-8 only: json.loads(bytes) would also guess UTF-16/32.
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _reject(RejectCode.MALFORMED, "message is not UTF-8") from None
            outer = _loads(text, "message")
        elif isinstance(message, str):
            if not 0 <= _utf8_len(message) <= MAX_ENVELOPE_BYTES:
                raise _reject(RejectCode.MALFORMED, "message is not UTF-8 text of at most "
                              f"{MAX_ENVELOPE_BYTES} bytes")
            outer = _loads(message, "message")
        else:
            raise _reject(RejectCode.MALFORMED, f"message of type {type(message).__name__}")
        if not isinstance(outer, dict):
            raise _reject(RejectCode.MALFORMED, "message is not a JSON object")
        return outer

    def _check_signature(self, outer: dict[str, Any]) -> tuple[str, str, Grant | None]:
        extra = outer.keys() - _SIGNED_FORM_KEYS
        if extra:
            # Unsigned fields beside the signature could be mistaken for signed ones.
            raise _reject(RejectCode.MALFORMED, "unexpected field beside the signature",
                          sorted(extra)[0][:64])
        signed_text, key_id, sig = outer.get("signed"), outer.get("key_id"), outer.get("sig")
        if not isinstance(signed_text, str):
            raise _reject(RejectCode.MALFORMED, "signed must be the command's JSON text",
                          "signed")
        if key_id is None or sig is None:
            missing = "key_id" if key_id is None else "sig"
            raise _reject(RejectCode.UNAUTHENTICATED, f"signed form without {missing}", missing)
        if not isinstance(key_id, str):
            raise _reject(RejectCode.MALFORMED, "key_id must be a string", "key_id")
        if not isinstance(sig, str):
            raise _reject(RejectCode.MALFORMED, "sig must be a base64 string", "sig")
        grant: Grant | None = None
        if outer.get("grant") is not None:  # null and absent mean the same (no grant)
            grant = check_grant(outer["grant"], self._keys, site=self._site_id,
                                now_s=self._wall(), revoked=self.revocations)
            if grant.key_id != key_id:
                raise _reject(RejectCode.UNKNOWN_KEY, "key_id is not the key of the grant",
                              "key_id")
            key: VerifyKey | None = grant.public_key
        else:
            key = self._keys.get(key_id)
        if key is None:
            raise _reject(RejectCode.UNKNOWN_KEY, f"no trusted key {_short(key_id)}", "key_id")
        signature = _decode_signature(sig)
        signed_bytes = _encode_signed(signed_text)
        if not signature_ok(key, signature, signed_bytes):
            raise _reject(RejectCode.BAD_SIGNATURE,
                          f"signature does not verify with key {key_id}", "sig")
        return key_id, signed_text, grant

    @staticmethod
    def _check_shape(inner: dict[str, Any]) -> tuple[str, str, CabinetClock]:
        command_id = inner.get("id")
        if not isinstance(command_id, str) or not _COMMAND_ID.fullmatch(command_id):
            raise _reject(RejectCode.MALFORMED, "id must match [A-Za-z0-9._:-]{1,64}", "id")
        command_type = inner.get("type")
        if not isinstance(command_type, str) or not _COMMAND_TYPE.fullmatch(command_type):
            raise _reject(RejectCode.MALFORMED, "type must be a command name", "type")
        if not isinstance(inner.get("cabinet"), str):
            raise _reject(RejectCode.MALFORMED, "cabinet must be a string", "cabinet")
        if "args" in inner and not isinstance(inner["args"], dict):
            raise _reject(RejectCode.MALFORMED, "args must be an object", "args")
        expires = inner.get("expires")
        if not isinstance(expires, dict):
            raise _reject(RejectCode.MALFORMED, "expires must be an object", "expires")
        boot_id, uptime_ms = expires.get("boot_id"), expires.get("uptime_ms")
        if not isinstance(boot_id, str):
            raise _reject(RejectCode.MALFORMED, "expires.boot_id must be a string",
                          "expires.boot_id")
        # bool is an int in Python; true/false is not a deadline.
        if not isinstance(uptime_ms, int) or isinstance(uptime_ms, bool) or uptime_ms < 0:
            raise _reject(RejectCode.MALFORMED, "expires.uptime_ms must be an integer >= 0",
                          "expires.uptime_ms")
        return command_id, command_type, CabinetClock(boot_id, uptime_ms)

    def _check_binding(self, inner: dict[str, Any], deadline: CabinetClock,
                       now: CabinetClock) -> None:
        if inner["cabinet"] != self._cabinet_id:
            raise _reject(RejectCode.WRONG_CABINET,
                          f"command for cabinet {_short(inner['cabinet'])}", "cabinet")
        if deadline.boot_id != now.boot_id:
            raise _reject(RejectCode.WRONG_BOOT, "deadline is in another boot's clock",
                          "expires.boot_id")
        if now.uptime_ms > deadline.uptime_ms:
            raise _reject(RejectCode.EXPIRED,
                          f"deadline passed {now.uptime_ms - deadline.uptime_ms} ms ago",
                          "expires.uptime_ms")
        if deadline.uptime_ms - now.uptime_ms > self._max_lifetime_ms:
            raise _reject(RejectCode.TOO_FAR_IN_FUTURE,
                          f"deadline {deadline.uptime_ms - now.uptime_ms} ms ahead, more than "
                          f"{self._max_lifetime_ms}", "expires.uptime_ms")

    def _check_site(self, inner: dict[str, Any], *, signed: bool) -> None:
        if self._site_id is None:
            return
        site = inner.get("site")
        if site is None and not signed:
            return  # a plain read-only command may leave the site out
        if site != self._site_id:
            raise _reject(RejectCode.WRONG_SITE, f"command for site {_short(site)}", "site")

    async def _accept_once(self, command_id: str, deadline: CabinetClock,
                           now: CabinetClock) -> None:
        if self._window_boot != now.boot_id:
            await self.restore()
        # No await between this check and the add: two copies of one command arriving
        # together cannot both pass.
        self._window.prune(now.uptime_ms)
        if command_id in self._window:
            raise _reject(RejectCode.REPLAYED, f"command {command_id} was already accepted",
                          "id")
        self._window.add(command_id, deadline.uptime_ms)
        try:
            await self._store.record(now.boot_id, SeenCommand(command_id, deadline.uptime_ms))
        except BaseException:
            # Not durably recorded: not accepted. Dispatch may retry with the same id.
            self._window.discard(command_id)
            raise


def _decode_signature(sig: str) -> bytes:
    try:
        signature = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        raise _reject(RejectCode.MALFORMED, "sig is not base64", "sig") from None
    # Only the canonical encoding: a second spelling of the same signature is not accepted.
    if len(signature) != _ED25519_SIGNATURE_BYTES or base64.b64encode(signature).decode() != sig:
        raise _reject(RejectCode.MALFORMED,
                      f"sig is not the base64 of {_ED25519_SIGNATURE_BYTES} bytes", "sig")
    return signature


def _encode_signed(signed_text: str) -> bytes:
    try:
        signed_bytes = signed_text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate ("\ud800" in the JSON string) has no UTF-8 bytes to verify.
        raise _reject(RejectCode.MALFORMED, "signed is not valid Unicode text",
                      "signed") from None
    if len(signed_bytes) > MAX_ENVELOPE_BYTES:
        raise _reject(RejectCode.MALFORMED,
                      f"signed is larger than {MAX_ENVELOPE_BYTES} bytes", "signed")
    return signed_bytes
