"""The unlock queue: every door pulse of the cabinet goes through here.

Policy (power budget, gap between pulses, per-compartment cooldown and rate limit, hard
cap on pulse length) is :class:`~controller.domain.unlock.UnlockPolicy`; this service adds
the waiting and the I/O. A pulse waits for the power budget at most until ``deadline``
(a door command's expiry): a door command is never queued for later. The door sensor
is never consulted: a cut sensor wire reads "open", and a customer must still get in.

Each pulse is reported as three facts in the model: sent; then acknowledged by the board,
failed (the driver says nothing was energised) or unconfirmed (the frame went out and its
effect is unknown: the driver never sends it again); and, later, from the sensors, opened
or not detected.

The caller's write-before-act (a command's pulse intent, a code marked used) runs inside
:meth:`UnlockService.pulse`, once the power budget has a slot for this pulse: a pulse that
the budget refuses has written nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from controller.domain.cabinet_model import CabinetModel, Emitted, Now
from controller.domain.errors import DomainError, ErrorCode
from controller.domain.unlock import Refused, UnlockPolicy
from controller.services.hardware import Hardware
from controller.settings import Settings
from drivers.base import PulseReceipt
from drivers.errors import DriverError, PulseUnconfirmed

__all__ = ["PulseFailed", "PulseOutcome", "UnlockService"]

log = logging.getLogger(__name__)


class PulseFailed(Exception):
    """The pulse was not made: the driver says nothing was energised (no answer to a frame
    that did not act, a rejection, the bus down)."""

    def __init__(self, compartment: str, reason: str) -> None:
        super().__init__(f"{compartment}: pulse failed: {reason}")
        self.compartment = compartment
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PulseOutcome:
    """A pulse frame went out. ``receipt`` is the board's acknowledgement (or the driver's
    read-back); ``None`` when the outcome is unconfirmed, and then ``evidence`` says what
    the driver tried and saw. ``duration_s`` is the (capped) duration asked for."""

    compartment: str
    receipt: PulseReceipt | None
    waited_s: float
    duration_s: float = 0.0
    evidence: str = ""


class UnlockService:
    def __init__(
        self,
        settings: Settings,
        model: CabinetModel,
        hardware: Hardware,
        policy: UnlockPolicy,
        emit: Callable[[list[Emitted]], Awaitable[object]],
        *,
        now: Callable[[], Now],
        on_change: Callable[[], None] = lambda: None,
        submit: Callable[[list[Emitted]], Awaitable[object]] | None = None,
    ) -> None:
        self._settings = settings
        self._model = model
        self._hardware = hardware
        self._policy = policy
        self._emit = emit
        #: Queues ``pulse_sent`` for the next group commit instead of waiting for its
        #: fsync before the frame (the caller's record is what must precede the pulse).
        self._submit = submit
        self._now = now
        self._on_change = on_change
        self._lock = asyncio.Lock()

    def check(self, compartment: str, mono: float) -> None:
        """Raise DomainError now if cooldown or rate limit forbids a pulse (nothing changes)."""
        admission = self._policy.admit(compartment, mono)
        if isinstance(admission, Refused):
            raise admission.to_error()

    async def pulse(
        self,
        compartment: str,
        *,
        deadline_mono: float | None = None,
        before: Callable[[], Awaitable[object]] | None = None,
        ack_with_caller: bool = False,
    ) -> PulseOutcome:
        """Pulse the lock of ``compartment``. Waits for the power budget no later than
        ``deadline_mono``; raises DomainError (refused, nothing sent) or PulseFailed (the
        driver says nothing was energised); returns the outcome once a frame went out,
        confirmed or not.

        ``before`` (write before acting) is awaited once the budget has a slot for this
        pulse and before the frame is sent; if it raises, nothing is sent and the error
        propagates.

        ``ack_with_caller``: the board's acknowledgement (``unlock_pulse_acked``) is
        queued for the next group commit, not waited for, because the caller commits it
        with its own record next (a command's reply: ``EventSink.finish_command``).
        Without a ``submit`` it is committed here as always."""
        lock_ref = self._settings.compartment(compartment).lock
        board = self._hardware.lock_boards[lock_ref.board]
        started = time.monotonic()
        async with self._lock:
            prepared = before is None
            while True:  # bounded: each round waits, or the deadline ends it
                now = self._now()
                admission = self._policy.admit(compartment, now.mono)
                if isinstance(admission, Refused):
                    raise admission.to_error()
                wait = admission.start_at - now.mono
                if wait <= 0:
                    if not prepared:
                        # The lock keeps every other pulse out: the slot stays ours while
                        # the caller writes; cooldowns and rate limits only relax with time.
                        assert before is not None
                        await before()
                        prepared = True
                        continue
                    try:
                        grant = self._policy.started(compartment, now.mono)
                    except DomainError as exc:
                        if exc.code is not ErrorCode.POWER_BUDGET:
                            raise
                        wait = max(self._policy.next_start_time(now.mono) - now.mono, 0.01)
                    else:
                        break
                if deadline_mono is not None and now.mono + wait > deadline_mono:
                    raise DomainError(
                        ErrorCode.POWER_BUDGET,
                        f"another door is opening; next pulse in {wait:.2f} s, after the "
                        "command's deadline",
                        field="compartment",
                    )
                await asyncio.sleep(wait)
            sent = self._model.pulse_sent(compartment, now)
            try:
                await (self._submit or self._emit)(sent)
            except BaseException:
                self._model.pulse_abandoned(compartment)  # no frame: no verdict to wait for
                raise
            try:
                receipt = await board.pulse(lock_ref.channel, grant.duration_s)
            except PulseUnconfirmed as exc:
                # The frame went out; whether the solenoid moved is unknown. The budget
                # counts it energised for its whole duration; the model keeps the open
                # declared, so the customer who pulls the door is not a burglar.
                at = self._now()
                self._policy.finished(compartment, at.mono)
                evidence = (exc.evidence or str(exc))[:200]
                await self._emit(self._model.pulse_unconfirmed(compartment, at, evidence))
                self._on_change()
                log.warning("unlock pulse unconfirmed",
                            extra={"ctx": {"compartment": compartment, "evidence": evidence}})
                return PulseOutcome(compartment, None, time.monotonic() - started,
                                    exc.duration_s or grant.duration_s, evidence)
            except DriverError as exc:
                failed_at = self._now()
                self._policy.finished(compartment, failed_at.mono)
                await self._emit(self._model.pulse_failed(compartment, failed_at, str(exc)))
                self._on_change()
                log.warning("unlock pulse failed",
                            extra={"ctx": {"compartment": compartment, "error": str(exc)}})
                raise PulseFailed(compartment, str(exc)) from exc
            except BaseException:
                # No verdict will come (cancelled, or an error outside the driver
                # contract): the unlock window, which waits for the verdict, ends at its
                # deadline instead.
                self._model.pulse_abandoned(compartment)
                raise
            acked = self._now()
            if ack_with_caller and self._submit is not None:
                await self._submit(self._model.pulse_acked(compartment, acked))
            else:
                await self._emit(self._model.pulse_acked(compartment, acked))
            self._on_change()
            # A board-timed pulse ends by itself; the policy counts it energised until its
            # natural end. A driver-timed pulse has already been switched off here.
            self._policy.finished(compartment, acked.mono)
        return PulseOutcome(compartment, receipt, time.monotonic() - started,
                            receipt.duration_s)
