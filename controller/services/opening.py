"""Open this compartment for this purpose: the one door-open sequence of the cabinet.

A code accepted at the lane (:mod:`controller.services.codecheck`) and an ``open`` command
from dispatch (:mod:`controller.services.commands`) both open a door through
:meth:`OpeningService.open`. The steps, in this order:

1. admission: the compartment's cooldown and rate limit, then the cabinet model's rules
   for the purpose (``CabinetModel.request_open``: blocked, faulty, expired, wrong
   phase...), which declares the open;
2. the power budget: a slot for this pulse, no later than the request's deadline (the
   :class:`~controller.services.unlock.UnlockService` holds it from here to the pulse);
3. write before acting: the caller's record (a command's pulse intent, a code marked
   used), the compartment's state saved, then the ``open_requested`` event and the
   caller's own events committed, and an audit line. With a ``submit`` (the daemon's
   group commit) only the record is waited for: the state and the events are queued for
   the next commit, in order, and the audit line is written after the pulse, beside the
   reply;
4. the pulse.

One failure rule. Whatever stops the sequence before the pulse (steps 1 to 3: a domain
refusal, the power budget, the caller's record refusing, the store failing) leaves no
trace in the model: the declared open is withdrawn, so the compartment expires, frees and
opens as if nothing had been asked, and the error propagates unchanged
(``DomainError``, ``StoreError``, or the caller's own). :meth:`OpeningService.open`
raising therefore means that no pulse frame was sent. Once the pulse was tried, the
outcome is returned, never raised, and says what is known (:class:`OpenOutcome`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from controller.domain.cabinet_model import CabinetModel, Emitted, Now
from controller.domain.compartment import OpenPurpose
from controller.services.reporting import PendingEvent
from controller.services.unlock import PulseFailed, UnlockService
from controller.store import Store
from controller.store.errors import StoreError
from drivers.base import PulseReceipt

__all__ = ["OpenOutcome", "OpenRequest", "OpeningService"]

log = logging.getLogger(__name__)

Emit = Callable[[Sequence[Emitted | PendingEvent]], Awaitable[object]]


async def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class OpenRequest:
    """One open: which compartment, why, until when, and what to write before the pulse.

    ``reason`` goes to the model (a staff open's reason, ``"reopen"``...); ``tag`` is
    added to the ``open_requested`` event (``{"command": id}``); ``events`` are committed
    with it (a lane's ``code_accepted``). ``record`` is the caller's write before acting;
    it may raise to refuse (nothing is sent then). ``audit`` is ``(action, actor,
    details)`` for the audit log. ``ack_with_caller``: the caller commits the board's
    acknowledgement with its own record after the pulse (a command's reply, see
    :meth:`UnlockService.pulse`).
    """

    compartment: str
    purpose: OpenPurpose
    deadline_mono: float
    audit: tuple[str, str, Mapping[str, Any]]
    reason: str = ""
    tag: Mapping[str, Any] = field(default_factory=dict)
    events: Sequence[PendingEvent] = ()
    record: Callable[[], Awaitable[object]] = _nothing
    ack_with_caller: bool = False


@dataclass(frozen=True, slots=True)
class OpenOutcome:
    """What is known once the pulse was tried.

    ``pulsed``: the board acknowledged it (``receipt.confirmed_by`` ``"ack"``) or the driver
    read the output back on (``"readback"``). ``not_pulsed``: the driver says nothing was
    energised (``detail`` its error); the model dropped the declared open. ``unconfirmed``:
    the frame went out and its effect is unknown (``detail`` the driver's evidence); the
    model keeps the open declared for the open-detection timeout, so a door opening then is
    an authorised opening, and the door's story (``door_opened`` or ``open_not_detected``)
    settles it.
    """

    compartment: str
    outcome: Literal["pulsed", "not_pulsed", "unconfirmed"]
    receipt: PulseReceipt | None = None
    duration_s: float = 0.0
    detail: str = ""
    waited_s: float = 0.0
    open_detect_s: float = 0.0


class OpeningService:
    """Runs :class:`OpenRequest` s; see the module docstring.

    ``save`` persists one compartment's state (the daemon's ``StateKeeper.save``; by
    default the store directly) and raises ``StoreError``.
    """

    def __init__(
        self,
        model: CabinetModel,
        store: Store,
        unlock: UnlockService,
        emit: Emit,
        *,
        now: Callable[[], Now],
        save: Callable[[str], Awaitable[None]] | None = None,
        submit: Emit | None = None,
    ) -> None:
        self._model = model
        self._store = store
        self._unlock = unlock
        self._emit = emit
        self._now = now
        self._save = save or self._save_directly
        #: Queues events (with the states they leave) for the next group commit without
        #: waiting for it (the daemon's ``StateKeeper.submit``). Given, only the caller's
        #: record precedes the pulse; the events follow in order, the audit line after.
        self._submit = submit
        self._background: set[asyncio.Task[None]] = set()

    async def _save_directly(self, compartment: str) -> None:
        await self._store.save_compartment(compartment, self._model.stored_state(compartment))

    async def open(self, request: OpenRequest) -> OpenOutcome:
        """Open ``request.compartment``. Raises (and leaves no trace in the model) when
        stopped before the pulse; returns the pulse's outcome otherwise."""
        cid = request.compartment
        now = self._now()
        # Out of use (blocked, faulty) first, then the lock's cooldown and rate limit: a
        # compartment that cannot be opened for this is never answered "retry later".
        self._model.check_open(cid, request.purpose)
        self._unlock.check(cid, now.mono)  # refuse before anything
        declared = self._model.request_open(cid, request.purpose, now, reason=request.reason)
        events: list[Emitted | PendingEvent] = [
            PendingEvent(e.kind.value, {**e.data(), **request.tag}, e.at_wall, e.compartment)
            for e in declared
        ]
        events.extend(request.events)

        async def audit() -> None:
            action, actor, details = request.audit
            try:
                await self._store.audit(action, actor=actor, at=now.wall, compartment=cid,
                                        details=dict(details))
            except StoreError as exc:
                log.error("audit write failed",
                          extra={"ctx": {"action": action, "error": str(exc)}})

        async def write_before_acting() -> None:
            await request.record()
            if self._submit is not None:
                # The record is the promise (one fsync); the declared open and its events
                # are committed by the next group commit, in order, while the frame is on
                # the wire. Crash in between: the record says a pulse may have happened.
                await self._submit(events)
                return
            await self._save(cid)
            await self._emit(events)
            await audit()

        try:
            pulse = await self._unlock.pulse(cid, deadline_mono=request.deadline_mono,
                                             before=write_before_acting,
                                             ack_with_caller=request.ack_with_caller)
        except PulseFailed as exc:
            # The model dropped the open with the failure (CabinetModel.pulse_failed).
            if self._submit is not None:
                self._later(audit())
            await self._save_quietly(cid)
            return OpenOutcome(cid, "not_pulsed", detail=exc.reason)
        except Exception:
            self._model.withdraw_open(cid)
            raise
        if self._submit is not None:
            # The audit line does not hold the reply back: written beside it.
            self._later(audit())
        timeout = self._model.setup(cid).timing.open_detect_timeout_s
        if pulse.receipt is None:
            await self._save_quietly(cid)
            return OpenOutcome(cid, "unconfirmed", None, pulse.duration_s, pulse.evidence,
                               pulse.waited_s, timeout)
        return OpenOutcome(cid, "pulsed", pulse.receipt, pulse.receipt.duration_s,
                           waited_s=pulse.waited_s, open_detect_s=timeout)

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work, name="open-audit")
        self._background.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("audit write failed", exc_info=t.exception())

        task.add_done_callback(done)

    async def _save_quietly(self, compartment: str) -> None:
        """After the pulse nothing may undo the outcome: a store error is logged, and the
        state is saved with the compartment's next change."""
        try:
            await self._save(compartment)
        except StoreError as exc:
            log.error("compartment state not saved",
                      extra={"ctx": {"compartment": compartment, "error": str(exc)}})
