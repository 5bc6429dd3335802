"""Commands from dispatch: decode, authenticate, deduplicate, act, reply.

The order of the checks is the contract:

1. decode (``bad_json``, ``too_large``, ``invalid_field``, ``unknown_command``): nothing is
   recorded for a message that cannot be read;
2. a command id already on record for the *same command* (the same signed text, or the
   same bytes for a plain command) gets its first reply again and acts no more (a repeat
   is how dispatch recovers a lost reply); the same id for another command is a
   ``conflict``. This outranks every check of step 3; to spare a new command a read, the
   record is looked up when a check of step 3 refuses, and otherwise found by the claim
   of step 4, which takes no id that is already on record;
3. authenticate and bind: signature (for every type that opens, assigns, releases,
   blocks or reconfigures), cabinet, boot id, deadline in the cabinet's own clock,
   replay window;
4. claim the id in the store (``begin_command``) *before* acting; for a door, the claim
   carries the pulse intent (one fsync'd write, the only one the pulse waits for; the
   door is opened by :class:`~controller.services.opening.OpeningService`, the sequence
   the lane uses too): after a crash the id is never acted on again and a compartment is
   never pulsed twice for one command. An open stopped before its pulse drops the intent
   with its reply;
5. act through the domain (which refuses with a structured error and changes nothing),
   persist what changed, then store and send the reply.

A store error never leaves an id ``busy`` for ever. Stopped before acting (the claim, the
pulse intent, the compartment's state could not be written; an open that stops there sent
no pulse), the command is answered ``busy`` and a retry of the same id acts, once: this
process retakes its own unfinished claim. Stopped after acting (the reply could not be
stored), the command is answered with its true reply, kept in memory, and a retry gets
that reply, stored then; it never acts twice. After a restart only the record counts: an
unfinished command is answered at start-up and never acted on again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from controller.clock import CabinetClock
from controller.contract.errors import CommandRejected
from controller.contract.errors import ErrorCode as Wire
from controller.contract.messages import (
    ApplyConfigCommand,
    AssignCommand,
    BlockCommand,
    ClearFaultCommand,
    ClearLaneLockoutCommand,
    ClockReading,
    Command,
    GetClockCommand,
    GetStateCommand,
    OpenCommand,
    OpenResult,
    PulseReport,
    ReleaseCommand,
    Reply,
    RevokeGrantsCommand,
    SignedCommand,
    UnblockCommand,
    decode_command,
    encode,
    from_builtins,
    to_builtins,
)
from controller.domain.assignment import assign_order
from controller.domain.cabinet_model import CabinetModel, Emitted, Now
from controller.domain.compartment import OpenPurpose, Order, Size, ZoneKind
from controller.domain.errors import DomainError
from controller.domain.errors import ErrorCode as Dom
from controller.security.errors import AuthRejected, RejectCode
from controller.security.grants import RevocationFull
from controller.security.verify import CommandVerifier
from controller.services.opening import OpeningService, OpenOutcome, OpenRequest
from controller.services.reporting import PendingEvent
from controller.services.unlock import UnlockService
from controller.settings import Settings
from controller.store import Store
from controller.store.errors import StoreError, StoreFull, UnknownCommand
from controller.store.records import AlreadySeen, CommandReply, ReplyTarget

if TYPE_CHECKING:
    from controller.services.codecheck import CodeBook

__all__ = ["CommandService"]

log = logging.getLogger(__name__)

_DOMAIN_TO_WIRE: dict[Dom, Wire] = {
    Dom.UNKNOWN_COMPARTMENT: Wire.UNKNOWN_COMPARTMENT,
    Dom.COMPARTMENT_BLOCKED: Wire.BLOCKED,
    Dom.COMPARTMENT_FAULT: Wire.HARDWARE,
    Dom.NO_COMPARTMENT_AVAILABLE: Wire.NO_COMPARTMENT,
    Dom.ZONE_OUT_OF_RANGE: Wire.NO_COMPARTMENT,
    Dom.INVALID_ARGUMENT: Wire.INVALID_FIELD,
    Dom.POWER_BUDGET: Wire.BUSY,
    Dom.COOLDOWN: Wire.RATE_LIMITED,
    Dom.RATE_LIMITED: Wire.RATE_LIMITED,
    Dom.ALREADY_PULSING: Wire.RATE_LIMITED,
}

_AUTH_TO_WIRE: dict[RejectCode, Wire] = {
    RejectCode.MALFORMED: Wire.INVALID_FIELD,
    RejectCode.UNAUTHENTICATED: Wire.UNAUTHENTICATED,
    RejectCode.UNKNOWN_KEY: Wire.UNKNOWN_KEY,
    RejectCode.BAD_SIGNATURE: Wire.BAD_SIGNATURE,
    RejectCode.WRONG_CABINET: Wire.WRONG_CABINET,
    RejectCode.WRONG_BOOT: Wire.WRONG_BOOT,
    RejectCode.EXPIRED: Wire.EXPIRED,
    RejectCode.TOO_FAR_IN_FUTURE: Wire.EXPIRED,
    RejectCode.REPLAYED: Wire.REPLAYED,
    RejectCode.WRONG_SITE: Wire.WRONG_SITE,
    RejectCode.REVOKED: Wire.FORBIDDEN,
    RejectCode.GRANT_EXPIRED: Wire.FORBIDDEN,
    RejectCode.FORBIDDEN: Wire.FORBIDDEN,
}

#: How many command ids are remembered for recovery after store errors.
_MAX_REMEMBERED = 1024
#: Finished commands whose reply is kept in memory too, to answer a repeat with the store
#: away (a repeat comes within a command's deadline, 30 s at most): about 0.5 kB each.
_RECENT_REPLIES = 256

_PURPOSE = {
    "deposit": OpenPurpose.DEPOSIT,
    "collect": OpenPurpose.COLLECTION,
    "customer_app": OpenPurpose.COLLECTION,
    "staff": OpenPurpose.STAFF,
    "maintenance": OpenPurpose.STAFF,
    "audit": OpenPurpose.STAFF,
}


def _digest(payload: bytes, decoded: Command | SignedCommand) -> str:
    """What makes two messages the same command: for a signed command its signed text (the
    envelope around it is not signed and may be re-encoded on the way), otherwise the
    payload's bytes."""
    if isinstance(decoded, SignedCommand):
        return hashlib.sha256(b"signed:" + decoded.signed_bytes()).hexdigest()
    return hashlib.sha256(payload).hexdigest()


def _rejected(code: Wire, message: str, field: str | None = None) -> CommandRejected:
    return CommandRejected(code, message, field)


def _from_domain(exc: DomainError) -> CommandRejected:
    wire = _DOMAIN_TO_WIRE.get(exc.code, Wire.CONFLICT)
    # The reply carries the code once; the domain's own code only when it says more.
    message = exc.message if exc.code.value == wire.value else f"{exc.code.value}: {exc.message}"
    return CommandRejected(wire, message, _arg_field(exc.field),
                           retry_after_s=exc.retry_after_s)


def _arg_field(field: str | None) -> str | None:
    return f"args.{field}" if field else None


class CommandService:
    """Handles one command at a time in arrival order; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        model: CabinetModel,
        store: Store,
        unlock: UnlockService,
        verifier: CommandVerifier,
        emit: Callable[[Sequence[Emitted | PendingEvent]], Awaitable[object]],
        *,
        now: Callable[[], Now],
        cabinet_clock: Callable[[], CabinetClock],
        snapshot: Callable[[], Awaitable[dict[str, Any]]],
        on_change: Callable[[], None] = lambda: None,
        max_bytes: int = 16 * 1024,
        unavailable_zones: Callable[[], Collection[str]] = frozenset,
        apply_config: Callable[[ApplyConfigCommand], Awaitable[dict[str, Any]]] | None = None,
        save: Callable[[str], Awaitable[None]] | None = None,
        codes: CodeBook | None = None,
        clear_lane: Callable[[str, str], Awaitable[dict[str, Any]]] | None = None,
        submit: Callable[[Sequence[Emitted | PendingEvent]], Awaitable[object]] | None = None,
        finish: Callable[[CommandReply], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self._settings = settings
        self._model = model
        self._store = store
        self._verifier = verifier
        self._emit = emit
        self._now = now
        self._clock = cabinet_clock
        self._snapshot = snapshot
        self._on_change = on_change
        self._max_bytes = max_bytes
        #: Zones not to assign new cold orders to (temperature excursions).
        self._unavailable_zones = unavailable_zones
        self._apply_config = apply_config
        #: The lane's code book (assign's sealed codes) and its lockout clearing.
        self._codes = codes
        self._clear_lane = clear_lane
        self._save = save or self._save_directly
        self._opening = OpeningService(model, store, unlock, emit, now=now, save=self._save,
                                       submit=submit)
        #: Stores a reply with the events queued before it, in one transaction (the
        #: daemon's ``StateKeeper.finish_command``): a door command's acknowledgement is
        #: then queued, not committed on its own, before the reply (one fsync, not two).
        self._finish_queued = finish
        #: Opens that stopped before their pulse: their recorded intent is dropped.
        self._unpulsed: dict[str, str] = {}
        #: Replies of commands that acted but whose reply the store did not take.
        self._owed: OrderedDict[str, CommandReply] = OrderedDict()
        #: The digest of each owed reply's command: a repeat must be the same command.
        self._owed_digest: dict[str, str] = {}
        #: The last finished commands' digests and encoded replies (see _RECENT_REPLIES).
        self._recent: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        #: Stores the owed replies as soon as the store answers again (see ``_owe``).
        self._settler: asyncio.Task[None] | None = None
        self.owed_retry_s = 0.5
        #: Commands stopped by a store error before acting, in this process.
        self._retake: OrderedDict[str, None] = OrderedDict()
        #: The role of the key that signed the command in hand (None: unsigned).
        self._role: str | None = None
        #: Who signed the command being handled (its key id, and a technician's grant id):
        #: written into that command's audit lines.
        self._signer: dict[str, str] = {}
        self.handled = 0
        self.refused = 0

    def _reading(self) -> ClockReading:
        c = self._clock()
        return ClockReading(boot_id=c.boot_id, uptime_ms=c.uptime_ms)

    async def handle(self, payload: bytes, *, received_bytes: int | None = None,
                     reply_to: ReplyTarget | None = None) -> bytes:
        """Handle one ``cmd`` payload; returns the reply payload. Never raises for bad input.

        ``received_bytes``: the message's size when ``payload`` was kept cut (its
        ``too_large`` refusal states it). ``reply_to``: where the request asked for its
        reply (MQTT 5 response topic and correlation data), kept with the command's claim
        so that a reply a restart interrupted is sent there at start-up."""
        self.handled += 1
        command_id: str | None = None
        try:
            decoded = decode_command(payload, max_bytes=self._max_bytes,
                                     received_bytes=received_bytes)
            if isinstance(decoded, GetClockCommand):
                # Acts on nothing and claims nothing: answered without a deadline, so
                # dispatch can read the clock its first real command needs.
                command_id = decoded.id
                self._check_place(decoded)
                reading = self._reading()
                return encode(Reply.success(decoded.id, to_builtins(reading), reading))
            command_id = decoded.id if not isinstance(decoded, SignedCommand) else None
            digest = _digest(payload, decoded)
            if isinstance(decoded, SignedCommand):
                inner = decoded.inner(max_bytes=self._max_bytes)
                command_id = inner.id
            else:
                inner = decoded
                if isinstance(inner, GetStateCommand):
                    # A plain read claims nothing: anyone on the broker could otherwise
                    # take an id away from a signed command for the record's lifetime.
                    command = await self._authenticate(payload, inner)
                    result = await self._act(command)
                    await self._settle_owed()
                    return encode(Reply.success(command.id, result, self._reading()))
            if inner.id in self._owed:
                return await self._owed_reply(inner.id, digest)
            if inner.id in self._recent:
                return self._recent_reply(inner.id, digest)
            try:
                command = await self._authenticate(payload, inner)
            except CommandRejected:
                # A repeat of a command on record gets its first reply, whatever the
                # checks now say (its deadline passed, another boot, a replay): looked
                # up here, where it can change the answer. A command that passes them
                # and is on record is found by its claim (``_execute``): a new command,
                # the common case, costs the store no read before its claim.
                repeat = await self._repeat(inner.id, digest)
                if repeat is not None:
                    return repeat
                raise
            return await self._execute(command, digest, reply_to)
        except CommandRejected as exc:
            self.refused += 1
            reply = Reply.refusal(exc, self._reading(), command_id or exc.command_id)
            return encode(reply)
        except StoreFull as exc:
            # Redis answers but refuses writes: nothing recorded, nothing acted, and it
            # lasts until room is made (the store_full alarm says so).
            self.refused += 1
            log.error("store full while handling a command",
                      extra={"ctx": {"command": command_id, "error": str(exc)}})
            reply = Reply.refusal(
                CommandRejected(Wire.STORE_FULL, "the cabinet's store refuses writes (full); "
                                "retry with the same id once it has room"),
                self._reading(), command_id)
            return encode(reply)
        except StoreError as exc:
            self.refused += 1
            log.error("store unavailable while handling a command",
                      extra={"ctx": {"command": command_id, "error": str(exc)}})
            reply = Reply.refusal(
                CommandRejected(Wire.BUSY, "the cabinet's store is unavailable; retry"),
                self._reading(), command_id)
            return encode(reply)

    async def _owed_reply(self, command_id: str, digest: str) -> bytes:
        """A repeat of a command that acted and whose reply the store has not taken yet:
        the same reply, from memory if the store is still away (not ``busy``: the command
        is done, and says so again)."""
        if self._owed_digest.get(command_id) != digest:
            raise _rejected(Wire.CONFLICT, "this command id was used for another command", "id")
        owed = self._owed[command_id]
        try:
            stored = await self._store_reply(owed)
        except UnknownCommand:  # its record expired meanwhile: memory holds all there is
            self._forget_owed(command_id)
            return encode(from_builtins(Reply, owed.reply))
        except StoreError:
            return encode(from_builtins(Reply, owed.reply))
        self._forget_owed(command_id)
        return self._remember(command_id, digest, stored)

    def _recent_reply(self, command_id: str, digest: str) -> bytes:
        """A repeat of a command finished lately: its reply, without asking the store
        (which may be away: ``busy`` would tell dispatch the command did not act)."""
        known, answer = self._recent[command_id]
        if known != digest:
            raise _rejected(Wire.CONFLICT, "this command id was used for another command", "id")
        self._recent.move_to_end(command_id)
        return answer

    def _remember(self, command_id: str, digest: str, reply: Mapping[str, Any]) -> bytes:
        """``reply``, encoded, kept as the answer to a repeat of ``command_id``."""
        answer = encode(from_builtins(Reply, reply))
        self._recent[command_id] = (digest, answer)
        self._recent.move_to_end(command_id)
        while len(self._recent) > _RECENT_REPLIES:
            self._recent.popitem(last=False)
        return answer

    def _forget_owed(self, command_id: str) -> None:
        self._owed.pop(command_id, None)
        self._owed_digest.pop(command_id, None)

    async def _repeat(self, command_id: str, digest: str) -> bytes | None:
        record = await self._store.get_command(command_id)
        if record is None:
            return None
        if record.digest != digest:
            raise _rejected(Wire.CONFLICT, "this command id was used for another command", "id")
        if record.reply is None:
            # (A reply this process owes was answered before, by _owed_reply.)
            if command_id in self._retake:
                return None  # stopped by the store before acting: act now
            raise _rejected(Wire.BUSY, "this command is in progress or was interrupted", "id")
        return self._remember(command_id, digest, record.reply)

    async def _authenticate(self, payload: bytes, inner: Command) -> Command:
        self._role = None
        self._signer = {}
        if not self._settings.security.require_signed_commands:
            self._check_binding(inner)
            return inner
        try:
            verified = await self._verifier.verify(payload)
        except AuthRejected as exc:
            raise _rejected(_AUTH_TO_WIRE.get(exc.code, Wire.UNAUTHENTICATED), exc.message,
                            exc.field) from exc
        # The role of the key that signed the command being handled (one at a time).
        self._role = verified.role
        if verified.key_id is not None:
            self._signer = {"key_id": verified.key_id}
            if verified.grant_id is not None:
                self._signer["grant"] = verified.grant_id
        return inner

    def _check_place(self, command: Command | GetClockCommand) -> None:
        """The command names this cabinet (and this site, when it names one)."""
        if command.cabinet != self._settings.cabinet.id:
            raise _rejected(Wire.WRONG_CABINET, "command is for another cabinet", "cabinet")
        if command.site is not None and command.site != self._settings.cabinet.site:
            raise _rejected(Wire.WRONG_SITE, "command is for another site", "site")

    def _check_binding(self, command: Command) -> None:
        """Cabinet, boot and deadline, for commands that the verifier did not check."""
        now = self._clock()
        self._check_place(command)
        if command.expires.boot_id != now.boot_id:
            raise _rejected(Wire.WRONG_BOOT, "deadline is in another boot's clock", "expires")
        if now.uptime_ms > command.expires.uptime_ms:
            raise _rejected(Wire.EXPIRED, "the command's deadline has passed", "expires")
        max_ttl_s = self._settings.timing.command_max_ttl_s
        if command.expires.uptime_ms - now.uptime_ms > max_ttl_s * 1000:
            raise _rejected(Wire.EXPIRED, f"deadline more than {max_ttl_s:g} s ahead",
                            "expires")

    async def _execute(self, command: Command, digest: str,
                       reply_to: ReplyTarget | None = None) -> bytes:
        # A door command's pulse intent is recorded with its claim: one fsync'd write
        # before the pulse (an open stopped before its pulse drops it when it finishes).
        pulse = command.args.compartment if isinstance(command, OpenCommand) else None
        try:
            claim = await self._store.begin_command(
                command.id, digest, to_builtins(command.expires),
                retake=command.id in self._retake, pulse=pulse,
                reply_to=reply_to)
        except StoreError:
            # Nothing acted (the claim may or may not have landed): a retry may act.
            self._may_retake(command.id)
            raise
        if isinstance(claim, AlreadySeen):
            # Lost a race with an identical message: answer like a repeat.
            repeat = await self._repeat(command.id, digest)
            if repeat is not None:
                return repeat
            raise _rejected(Wire.BUSY, "this command is in progress", "id")
        self._retake.pop(command.id, None)
        try:
            result = await self._act(command)
            reply = Reply.success(command.id, result, self._reading())
        except CommandRejected as exc:
            self.refused += 1
            reply = Reply.refusal(exc, self._reading(), command.id)
        except DomainError as exc:
            self.refused += 1
            reply = Reply.refusal(_from_domain(exc), self._reading(), command.id)
        except StoreError:
            # Stopped by the store: an open that raises sent no pulse and left no declared
            # open (OpeningService); the other commands act on the model through the
            # domain, which refuses to do twice what is done. The claim is kept, and this
            # process lets a retry of the id retake it once the store is back.
            self._unpulsed.pop(command.id, None)
            self._may_retake(command.id)
            raise
        except Exception:
            # A bug while acting: how far the command got is not known (an open may have
            # pulsed). It is finished now as a restart finishes an interrupted command,
            # never acted on again, and the id answers with this reply from now on.
            log.exception("command failed while acting", extra={"ctx": {"command": command.id}})
            self.refused += 1
            unsent = self._unpulsed.get(command.id)  # raised before its frame: no pulse
            pulsed = [pulse] if pulse is not None and unsent is None else []
            reply = Reply.refusal(CommandRejected(
                Wire.INTERNAL, "the cabinet failed while acting on this command; not executed "
                "again" + (f" (a pulse may have been sent to {pulse})" if pulsed else "")),
                self._reading(), command.id)
            await self._emit([PendingEvent.command_interrupted(command.id, pulsed)])
        answer = to_builtins(reply, omit_none=False)
        unpulsed = self._unpulsed.pop(command.id, None)
        finished = CommandReply(command.id, answer, () if unpulsed is None else (unpulsed,))
        try:
            stored = await self._store_reply(finished)
        except StoreError as exc:
            # It acted: tell the truth now, and store it as soon as the store is back
            # (after the events queued before it, which the sink holds meanwhile).
            self._owe(finished, digest)
            log.error("reply not stored; kept to answer a repeat",
                      extra={"ctx": {"command": command.id, "error": str(exc)}})
            return encode(reply)
        await self._settle_owed()
        return self._remember(command.id, digest, stored)

    def _may_retake(self, command_id: str) -> None:
        """``command_id`` stopped on a store error before acting: a retry may act."""
        self._verifier.release(command_id)
        self._retake[command_id] = None
        self._retake.move_to_end(command_id)
        while len(self._retake) > _MAX_REMEMBERED:
            self._retake.popitem(last=False)

    async def _store_reply(self, reply: CommandReply) -> dict[str, Any]:
        """Store ``reply`` after the events queued before it (with the daemon's sink: in
        the same transaction as the last of them); the reply on record comes back."""
        if self._finish_queued is not None:
            return await self._finish_queued(reply)
        return await self._store.finish_command(reply.command_id, reply.reply,
                                                unpulsed=reply.unpulsed)

    def _owe(self, reply: CommandReply, digest: str) -> None:
        """Keep a reply the store did not take (it was sent: the command acted), and store
        it as soon as the store answers again, not only when the next command comes: a
        restart in between would answer its id "interrupted", where it was answered.
        A crash before the store is back loses it with the events held in memory; the
        record's pulse intent still makes the next start report the id interrupted, with
        the compartments that may have been pulsed."""
        self._owed[reply.command_id] = reply
        self._owed_digest[reply.command_id] = digest
        self._owed.move_to_end(reply.command_id)
        while len(self._owed) > _MAX_REMEMBERED:
            # Forgotten here, the record stays unfinished: the next start answers it.
            forgotten, _ = self._owed.popitem(last=False)
            self._owed_digest.pop(forgotten, None)
        if self._settler is None or self._settler.done():
            self._settler = asyncio.get_running_loop().create_task(
                self._settle_when_back(), name="owed-replies")

    async def _settle_when_back(self) -> None:
        for _ in range(200_000):  # bounded: about a day at the retry interval
            await asyncio.sleep(self.owed_retry_s)
            await self._settle_owed()
            if not self._owed:
                return

    async def _settle_owed(self) -> None:
        """Store the replies that could not be stored (the store answers again)."""
        for command_id, reply in list(self._owed.items()):
            digest = self._owed_digest.get(command_id)
            try:
                stored = await self._store_reply(reply)
            except UnknownCommand:
                # Its record expired meanwhile: nothing left to finish.
                log.warning("owed reply dropped: the command's record is gone",
                            extra={"ctx": {"command": command_id}})
            except StoreError:
                return
            else:
                if digest is not None:  # still answers a repeat if the store goes again
                    self._remember(command_id, digest, stored)
            self._forget_owed(command_id)

    async def close(self) -> None:
        """Stop storing owed replies in the background (they stay owed)."""
        if self._settler is not None:
            self._settler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._settler

    async def _act(self, command: Command) -> dict[str, Any]:
        if isinstance(command, GetStateCommand):
            return await self._snapshot()
        if isinstance(command, OpenCommand):
            return await self._open(command)
        if isinstance(command, AssignCommand):
            return await self._assign(command)
        if isinstance(command, ReleaseCommand):
            return await self._release(command)
        if isinstance(command, BlockCommand):
            cid = command.args.compartment
            return await self._maintain(command, self._model.block(cid, self._now(),
                                                                   command.args.reason),
                                        {"blocked": True})
        if isinstance(command, UnblockCommand):
            return await self._maintain(
                command, self._model.unblock(command.args.compartment, self._now()),
                {"blocked": False})
        if isinstance(command, ClearFaultCommand):
            return await self._maintain(
                command, self._model.clear_fault(command.args.compartment, self._now()),
                {"cleared": True})
        if isinstance(command, RevokeGrantsCommand):
            return await self._revoke_grants(command)
        if isinstance(command, ApplyConfigCommand) and self._apply_config is not None:
            result = await self._apply_config(command)
            await self._audit("apply_config", command, None,
                              {"sections": sorted(command.args.config),
                               "config_hash": result.get("config_hash")})
            return result
        if isinstance(command, ClearLaneLockoutCommand) and self._clear_lane is not None:
            result = await self._clear_lane(command.args.lane, f"command:{command.id}")
            await self._audit("clear_lane_lockout", command, None,
                              {"lane": command.args.lane, "reason": command.args.reason,
                               "cleared": result.get("cleared")})
            return result
        raise _rejected(Wire.UNKNOWN_COMMAND,
                        f"{command.type} is not supported by this cabinet", "type")

    async def _commit(
        self, events: Sequence[Emitted | PendingEvent], compartment: str | None
    ) -> None:
        """Persist the compartment, then commit its events (state before story)."""
        if compartment is not None:
            await self._save(compartment)
        await self._emit(events)
        self._on_change()

    async def _save_directly(self, compartment: str) -> None:
        await self._store.save_compartment(compartment, self._model.stored_state(compartment))

    async def _maintain(self, command: BlockCommand | UnblockCommand | ClearFaultCommand,
                        events: list[Emitted], result: dict[str, Any]) -> dict[str, Any]:
        """A compartment's maintenance command whose model change gave ``events``: commit
        them, audit it with its reason; the result names the compartment."""
        cid = command.args.compartment
        await self._commit(events, cid)
        await self._audit(command.type, command, cid, {"reason": command.args.reason})
        return {"compartment": cid, **result}

    async def _audit(self, action: str, command: Command, compartment: str | None,
                     details: dict[str, Any]) -> None:
        try:
            await self._store.audit(action, actor=f"command:{command.id}",
                                    compartment=compartment, details={**details, **self._signer})
        except StoreError as exc:
            log.error("audit write failed", extra={"ctx": {"action": action, "error": str(exc)}})

    async def _revoke_grants(self, command: RevokeGrantsCommand) -> dict[str, Any]:
        """Add dispatch's revoked technician grants to the stored list (never an older
        serial, never removing a grant that has not ended), stored before it takes effect."""
        current = self._verifier.revocations
        serial = command.args.serial
        wall = self._now().wall
        entries = [(r.grant_id, r.not_after) for r in command.args.revoked]
        candidate = current.copy()
        try:
            update = candidate.add(serial, entries, wall)
        except RevocationFull as exc:
            raise _rejected(Wire.CONFLICT, str(exc), "args.revoked") from None
        if update is None:
            raise _rejected(Wire.CONFLICT, f"revocation list {serial} is older than the "
                            f"stored list {current.serial}", "args.serial")
        # Stored before it takes effect in memory: a restart never forgets a revocation.
        await self._store.save_revocations(candidate.to_dict())
        current.add(serial, entries, wall)
        result = {"serial": serial, "revoked": len(current), "added": len(update.added),
                  "already_revoked": len(update.already), "ended": len(update.expired)}
        await self._audit("revoke_grants", command, None,
                          {**result, "grants": list(update.added)})
        return result

    def _check_technician_open(self, cid: str) -> None:
        """A technician opens for maintenance, never into a customer's order: only a
        compartment that holds no order (free, or out of service without one). The reason
        is the technician's own word, and blocking is in a technician's hands, so neither
        lifts this; dispatch's root key may open any compartment."""
        if self._role != "technician":
            return
        try:
            compartment = self._model.compartments.get(cid)
        except DomainError as exc:
            raise _from_domain(exc) from exc
        if compartment.order is not None:
            raise _rejected(Wire.FORBIDDEN, f"a technician key may not open {cid}: it holds "
                            "an order (ask dispatch to release it or to open it)",
                            "args.compartment")

    async def _open(self, command: OpenCommand) -> dict[str, Any]:
        cid = command.args.compartment
        self._check_technician_open(cid)
        now = self._now()
        clock = self._clock()
        remaining_s = max(0.0, (command.expires.uptime_ms - clock.uptime_ms) / 1000.0)

        # Write before acting: the pulse intent went into the command's record with its
        # claim (``_execute``), durable before the solenoid moves.
        try:
            outcome = await self._opening.open(OpenRequest(
                cid, _PURPOSE[command.args.reason], now.mono + remaining_s,
                audit=("open", f"command:{command.id}",
                       {"reason": command.args.reason, **self._signer}),
                reason=command.args.reason, tag={"command": command.id},
                ack_with_caller=self._finish_queued is not None,
            ))
        except BaseException:
            # OpeningService raising means no frame was sent: the intent is dropped when
            # the command finishes.
            self._unpulsed[command.id] = cid
            raise
        if outcome.outcome == "not_pulsed":
            raise _rejected(Wire.HARDWARE, f"the lock board did not make the pulse: "
                            f"{outcome.detail}", "args.compartment")
        return to_builtins(_open_result(outcome))

    async def _assign(self, command: AssignCommand) -> dict[str, Any]:
        args = command.args
        now = self._now()
        try:
            zone = self._settings.zone(args.zone)
        except KeyError:
            raise _rejected(Wire.UNKNOWN_ZONE, f"no zone {args.zone!r}", "args.zone") from None
        if args.pool not in self._settings.tenants:
            raise _rejected(Wire.INVALID_FIELD, f"no tenant pool {args.pool!r}", "args.pool")
        policy = self._settings.tenant(args.pool)
        expires_at = (_wall(args.expires_at) if args.expires_at is not None
                      else now.wall + policy.expiry_s)
        pickup_from = _wall(args.pickup_from) if args.pickup_from is not None else None
        try:
            order = Order(order_id=args.order_id, pool=args.pool, size=Size(args.size),
                          zone=ZoneKind(zone.kind), expires_at=expires_at,
                          pickup_from=pickup_from)
        except DomainError as exc:
            raise _from_domain(exc) from exc
        records: list[dict[str, str]] = []
        if args.codes:
            if self._codes is None:
                raise _rejected(Wire.INVALID_FIELD, "this cabinet checks no codes", "args.codes")
            # Opened and checked before anything changes; only keyed verifiers are kept.
            records = await self._codes.prepare(args.order_id,
                                                [to_builtins(c) for c in args.codes])
        holder = self._model.compartments.holding(args.order_id)
        if holder is not None:
            # Before the codes are written: saving them would replace the held order's.
            raise _from_domain(DomainError(
                Dom.ORDER_ALREADY_ASSIGNED,
                f"order {args.order_id} is already in compartment {holder.compartment_id}",
                field="order_id"))
        async with (self._codes.assigning(args.order_id) if self._codes is not None
                    else contextlib.nullcontext()):
            if records:
                # Written, all or nothing, before the model changes: a code that clashes
                # with a live code of another order (the store checks again, atomically)
                # refuses the assign, and a store error stops it, with nothing assigned.
                assert self._codes is not None
                await self._codes.save(args.order_id, records)
            try:
                compartment, events = assign_order(
                    self._model.compartments, order, now.wall,
                    compartment_id=args.compartment,
                    unavailable_zones=self._unavailable_zones())
            except DomainError:
                if records:
                    assert self._codes is not None
                    await self._codes.forget(args.order_id)
                raise
            cid = compartment.compartment_id
            await self._store.save_order(args.order_id, {**order.to_dict(), "compartment": cid})
            await self._commit(self._model._wrap_wall(events, now), cid)
        return {"compartment": cid, "order_id": args.order_id}

    async def _release(self, command: ReleaseCommand) -> dict[str, Any]:
        args = command.args
        now = self._now()
        cid = args.compartment
        if cid is None:
            holder = self._model.compartments.holding(args.order_id or "")
            if holder is None:
                raise _rejected(Wire.UNKNOWN_ORDER, f"no order {args.order_id!r} here",
                                "args.order_id")
            cid = holder.compartment_id
        order = self._model.compartments.get(cid).order
        await self._commit(self._model.release(cid, now), cid)
        if order is not None:
            await self._store.delete_order(order.order_id)
            await self._store.delete_codes(order.order_id)
        return {"compartment": cid, "released": True}


def _open_result(outcome: OpenOutcome) -> OpenResult:
    """The reply's ``result`` for an open whose pulse went out: what is known of it."""
    receipt = outcome.receipt
    if receipt is None:
        pulse = PulseReport(outcome="unconfirmed", duration_s=outcome.duration_s,
                            evidence=outcome.detail[:200] or None,
                            open_detect_s=outcome.open_detect_s)
    else:
        pulse = PulseReport(
            outcome="pulsed", accepted=True, duration_s=receipt.duration_s,
            timed_by="driver" if receipt.timed_by == "driver" else "board",
            board_ms=max(round((receipt.acked_at - receipt.sent_at) * 1000, 3), 0.0),
            confirmed_by="readback" if receipt.confirmed_by == "readback" else "ack",
        )
    return OpenResult(compartment=outcome.compartment, pulse=pulse)


def _wall(value: datetime) -> float:
    return value.timestamp()
