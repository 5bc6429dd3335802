"""Code checking at the drive lane: the codes typed or scanned by customers and couriers.

The lane's I/O (scanner, inputs, light, buzzer) is :mod:`controller.services.lane`; it
hands every entry to the :class:`CodeChecker` of this module and shows what came of it
(:class:`LaneFeedback`).

Code entry
==========
A code comes from the serial scanner (:class:`drivers.scanner.CodeScanner`) or from
:meth:`~controller.services.lane.LaneService.enter_code` (keypad, tests, other inputs),
both handed to :meth:`CodeChecker.enter_code`. Dispatch sends each order's
codes sealed to this cabinet (``assign.codes``, :mod:`controller.security.codes`); the
:class:`CodeBook` opens them on assign and keeps only a keyed verifier of each, indexed
verifier -> (order, code id). So collection works with the broker down, and a typed code
leads straight to its order: a check costs one verifier (one scrypt, in a worker thread)
and one store lookup, whatever the number of loaded orders, and takes the same path
whether or not an order it names exists. The clear code lives only in a
:class:`~controller.domain.codes.PickupCode` for the time of the check: it is never
stored, logged or put in an event.

The steps, in this order (each refusal is a ``code_rejected`` event and a short beep):

1. the input's wrong-code budget (:mod:`controller.domain.lockout`, per lane and input:
   keypad, scanner): while it is spent, a short entry is refused at once with the time
   to wait (``slow_down``), unchecked and uncounted; a long entry (only a QR code can
   match it) is always checked. The wrong code that spends the budget raises the
   ``code_guessing`` alarm (once; cleared when the budget is whole again, or by the staff
   command ``clear_lane_lockout``). The budget is in the store: it survives a restart;
2. the verifier of the code is looked up. No match, a match for another order than the
   one the entry names, or an order no longer here: ``wrong_code``, counted against the
   input's budget only (never against an order: nobody can lock a customer out);
3. the order's tenant (:mod:`controller.domain.tenants`), its expiry (``staff_only``) and
   the single use (``code_used`` after the reopen grace) are checked. The grace runs on
   the monotonic clock from the first use made here (decision 0009): a wall-clock step
   neither ends nor revives it, and a restart of the daemon ends it;
4. the door is opened by :class:`~controller.services.opening.OpeningService`, the same
   sequence as a command from dispatch: cooldown and rate limit, the open declared to the
   cabinet model, a slot in the power budget, then the code **marked used in the store
   before the pulse** (atomic; a second lane racing for the same code loses), the
   compartment state and the ``code_accepted`` event committed, an audit line, and the
   pulse. A refusal up to there is a ``code_rejected`` (the code stays unused when it was
   not marked); a pulse the board did not make leaves the code usable within its reopen
   grace (``pulse_failed``); a pulse whose outcome is unknown (``pulse_unconfirmed``)
   keeps the code used and the light busy: the customer pulls the door, and its opening
   is an authorised one. The door story follows from the poller.

Refusals are reported at most once a second per input: the others of that second are
counted and reported together in one ``code_rejections_coalesced`` event (a flooding
scanner cannot flood the outbox).

A scanned QR code may name its order: ``<order id>:<code>`` (the order id as dispatch
knows it). Then the code must lead to that order. Text whose order part cannot be an order
id (``order 1:123456``, control characters, over 256 characters:
:func:`~controller.domain.codes.parse_entry`) is refused as ``invalid_code`` before
anything is counted, stored or hashed. Whatever the text, :meth:`CodeChecker.enter_code`
answers and never raises; nothing a scanner sends can stop the lane. A store that cannot
record the use (Redis down, or refusing writes: decision 0004) refuses every code
``store_unavailable``, and no door opens.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from controller.domain.cabinet_model import CabinetModel, Now
from controller.domain.codes import PickupCode, check_issued, parse_entry
from controller.domain.compartment import CompartmentState, OpenPurpose
from controller.domain.errors import DomainError, ErrorCode
from controller.domain.lockout import BudgetLimits, CodeBudget
from controller.domain.tenants import CodePurpose, check_open, check_pool, code_use
from controller.security.codes import CodeKey, SealError
from controller.services.lane_alarms import Emit, LaneAlarms
from controller.services.opening import OpeningService, OpenRequest
from controller.services.reporting import PendingEvent
from controller.services.unlock import UnlockService
from controller.settings import Settings
from controller.store import Store
from controller.store.errors import StoreError

__all__ = ["GUESSING_ALARM", "INPUTS", "CodeBook", "CodeChecker", "CodeRecord", "EntryResult",
           "LaneFeedback", "Refused"]

log = logging.getLogger(__name__)

GUESSING_ALARM = "code_guessing"
#: The inputs whose wrong-code budget is restored at start (others are made on first use).
INPUTS = ("keypad", "scanner")
#: Refusals of one input are reported at most once per this many seconds; the others are
#: counted and reported together.
REPORT_WINDOW_S = 1.0
#: How often the codes of orders no compartment holds (collected, retrieved, released
#: ones, past their reopen grace) are forgotten, and once at start.
ORDER_SWEEP_S = 60.0
#: How long an accepted code waits for the power budget (another door opening).
PULSE_WAIT_S = 10.0


# -- the code book ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CodeRecord:
    """Where a code leads: one code of one order (never the code)."""

    order_id: str
    code_id: str
    purpose: CodePurpose


class CodeBook:
    """The cabinet's pickup codes: opens the sealed codes of an ``assign`` with the
    cabinet's :class:`~controller.security.codes.CodeKey`, keeps only their keyed verifiers
    and the index verifier -> (order, code id) in the store, and finds the order of a typed
    code in one lookup. The verifier (one scrypt) runs in ``pool``."""

    def __init__(self, key: CodeKey, store: Store, cabinet: str,
                 pool: concurrent.futures.Executor) -> None:
        self.key = key
        self._store = store
        self._cabinet = cabinet
        self._pool = pool
        #: Orders whose assign is between writing its codes and holding its compartment.
        self._assigning: set[str] = set()
        #: Taken to mark an assign as running and by each deletion of the sweep, so the
        #: sweep never deletes codes an assign is writing.
        self._sweep_lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def assigning(self, order_id: str) -> AsyncIterator[None]:
        """Around an assign's writes: the sweep leaves this order's codes alone."""
        async with self._sweep_lock:
            self._assigning.add(order_id)
        try:
            yield
        finally:
            self._assigning.discard(order_id)

    async def sweep(self, live: Callable[[], AbstractSet[str]]) -> list[str]:
        """Forget the codes and records of every stored order not in ``live()`` (the orders
        a compartment holds, and those still in their reopen grace) nor being assigned:
        a collected, retrieved or released order's codes no longer lead anywhere, and a
        new order may be given one of them. Returns the orders forgotten."""
        forgotten: list[str] = []
        for order_id in sorted(await self._store.stored_order_ids()):
            async with self._sweep_lock:
                if order_id in self._assigning or order_id in live():
                    continue
                await self._store.delete_codes(order_id)
                await self._store.delete_order(order_id)
            forgotten.append(order_id)
        return forgotten

    async def _verifier(self, code: PickupCode) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.key.verifier, code.secret_bytes())

    async def prepare(self, order_id: str,
                      entries: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
        """Open and check the sealed codes of an assign; the records to :meth:`save`.
        ``invalid_argument`` naming ``codes[i]`` (and nothing changes) when a code does not
        open, is too weak, repeats another code of the order, or is a live code of another
        order here."""
        records: list[dict[str, str]] = []
        for index, entry in enumerate(entries):
            purpose = CodePurpose(str(entry["purpose"]))
            code_id = f"{purpose.value}-{index}"
            where = f"codes[{index}]"
            try:
                clear = self.key.open(self._cabinet, order_id, code_id, entry)
            except SealError as exc:
                raise DomainError(ErrorCode.INVALID_ARGUMENT, str(exc),
                                  field=f"{where}.{exc.field}") from None
            code = check_issued(clear, field=where)
            verifier = await self._verifier(code)
            if any(r["verifier"] == verifier for r in records):
                raise DomainError(ErrorCode.INVALID_ARGUMENT,
                                  "two codes of one order must differ", field=where)
            held = await self._store.find_code(verifier)
            if held is not None and held.get("order_id") != order_id:
                raise DomainError(ErrorCode.INVALID_ARGUMENT,
                                  "this code is a live code of another order here: issue "
                                  "another", field=where)
            records.append({"code_id": code_id, "purpose": purpose.value, "verifier": verifier})
        return records

    async def save(self, order_id: str, records: Sequence[Mapping[str, str]]) -> None:
        clash = await self._store.save_codes(order_id, records)
        if clash:
            raise DomainError(ErrorCode.INVALID_ARGUMENT,
                              "this code is a live code of another order here: issue another",
                              field=f"codes[{clash[0]}]")

    async def find(self, code: PickupCode) -> CodeRecord | None:
        """The order and code a typed code leads to, or None."""
        found = await self._store.find_code(await self._verifier(code))
        if found is None:
            return None
        try:
            return CodeRecord(str(found["order_id"]), str(found["code_id"]),
                              CodePurpose(found["purpose"]))
        except (KeyError, ValueError) as exc:
            log.error("unusable code index entry", extra={"ctx": {"error": str(exc)}})
            return None

    async def forget(self, order_id: str) -> None:
        await self._store.delete_codes(order_id)


# -- results --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntryResult:
    """What became of one code entry (never the code). ``reason``: why a code was refused,
    or, for an accepted one, what went wrong after it was used (``pulse_failed: ...``, the
    board did not make the pulse; ``pulse_unconfirmed``, the pulse went out and its outcome
    is unknown). ``retry_after_s``: for ``slow_down``, when the input checks a short code
    again. ``latency_s``: entry to pulse acknowledged by the board."""

    accepted: bool
    reason: str | None = None
    compartment: str | None = None
    order_id: str | None = None
    purpose: str | None = None
    reopen: bool = False
    retry_after_s: float = 0.0
    latency_s: float | None = None


class Refused(Exception):
    """A code entry refused: ``reason`` is the event's and the result's."""

    def __init__(self, reason: str, message: str, *, compartment: str | None = None,
                 order_id: str | None = None, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.reason = reason
        self.compartment = compartment
        self.order_id = order_id
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class _Reports:
    """Refusals of one input not yet reported (coalesced)."""

    last_mono: float = float("-inf")
    reasons: dict[str, int] | None = None
    since_wall: float = 0.0


@dataclass(slots=True)
class _Recent:
    """An order opened from this lane, remembered for the reopen grace after the
    compartment let go of it (collected and freed)."""

    order_id: str
    compartment: str
    pool: str
    purpose: CodePurpose
    used_mono: float
    grace_s: float


# -- what the lane shows --------------------------------------------------------------


async def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class LaneFeedback:
    """What code checking asks of the lane's outputs: ``beep`` the buzzer for so many
    seconds, ``refresh`` the light (it reads :attr:`CodeChecker.checking`), a door was
    ``opened`` from the lane (busy until it closes), the lane's state ``changed``."""

    beep: Callable[[float], None] = lambda seconds: None
    refresh: Callable[[], Awaitable[None]] = _nothing
    opened: Callable[[str], None] = lambda compartment: None
    changed: Callable[[], None] = lambda: None


# -- the checker ----------------------------------------------------------------------


class CodeChecker:
    """Code entry of one drive lane: the wrong-code budgets, the code book, the reopen
    grace, the refusals and their reports. See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        model: CabinetModel,
        store: Store,
        unlock: UnlockService,
        emit: Emit,
        *,
        now: Callable[[], Now],
        code_key: CodeKey,
        alarms: LaneAlarms,
        lane_id: str = "lane-1",
        feedback: LaneFeedback | None = None,
        workers: int | None = None,
        beep_s: float = 0.2,
        lockout_beep_s: float = 1.5,
        pulse_wait_s: float = PULSE_WAIT_S,
        check_interval_s: float = 0.25,
    ) -> None:
        self._settings = settings
        self._model = model
        self._store = store
        self._emit = emit
        self._now = now
        self._opening = OpeningService(model, store, unlock, emit, now=now)
        #: How long an accepted code waits for the power budget before it is refused.
        self.pulse_wait_s = pulse_wait_s
        self.lane_id = lane_id
        self.alarms = alarms
        self._feedback = feedback or LaneFeedback()
        self._beep_s = beep_s
        self._lockout_beep_s = lockout_beep_s
        sec = settings.security
        self._limits = BudgetLimits(burst=sec.code_max_attempts, refill_s=sec.code_lockout_s,
                                    min_interval_s=check_interval_s)
        self._budgets: dict[str, CodeBudget] = {}
        self._reports: dict[str, _Reports] = {}
        self._entry_lock = asyncio.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers or max(os.cpu_count() or 1, 1), thread_name_prefix="code-check")
        #: The cabinet's codes (the command service stores an assign's codes through it).
        self.codes = CodeBook(code_key, store, settings.cabinet.id, self._pool)
        self._recent: dict[str, _Recent] = {}
        #: Monotonic instant of the next sweep of ended orders' codes (None: at once).
        self._next_sweep: float | None = None
        #: (order, code id) -> monotonic instant of the code's first use here, for the
        #: reopen grace (decision 0009: never the wall clock). Not kept across a restart.
        self._first_use: dict[tuple[str, str], tuple[float, float]] = {}
        #: Entries being checked now (the light shows "busy").
        self.checking = 0
        self.accepted = 0
        self.rejected = 0

    @property
    def lane_key(self) -> str:
        return f"lane:{self.lane_id}"

    async def start(self) -> None:
        """Restore the wrong-code budgets (and their alarms) from the store."""
        for source in INPUTS:
            await self._budget(source)

    def close(self) -> None:
        """Stop the checks in flight (the verifier pool)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def tick(self, now: Now) -> None:
        """A budget whole again clears its alarm; coalesced refusals are reported."""
        for source, budget in list(self._budgets.items()):
            if budget.full(now.mono) and budget.wrong_total:
                key = self._budget_key(source)
                budget.wrong_total = 0
                if await self.alarms.clear(GUESSING_ALARM, key, self._budget_data(source),
                                           wall=now.wall):
                    await self._save_budget(source, now)
        await self._flush_reports(now.mono, now.wall)
        self._forget_graces(now.mono)
        if self._next_sweep is None or now.mono >= self._next_sweep:
            self._next_sweep = now.mono + ORDER_SWEEP_S
            await self._sweep_orders()

    def live_orders(self) -> set[str]:
        """The orders whose codes still lead somewhere: held by a compartment, or
        collected and freed but still in their reopen grace."""
        held = {c.order.order_id for c in self._model.compartments if c.order is not None}
        return held | set(self._recent) | {order for order, _code in self._first_use}

    async def _sweep_orders(self) -> None:
        try:
            forgotten = await self.codes.sweep(self.live_orders)
        except StoreError as exc:
            log.warning("order sweep skipped: store error", extra={"ctx": {"error": str(exc)}})
            return
        if forgotten:
            log.info("codes of ended orders forgotten",
                     extra={"ctx": {"orders": len(forgotten)}})

    def _forget_graces(self, mono: float) -> None:
        """Drop the first uses and recent orders whose reopen grace is over."""
        self._first_use = {k: v for k, v in self._first_use.items() if mono - v[0] <= v[1]}
        self._recent = {k: r for k, r in self._recent.items()
                        if mono - r.used_mono <= r.grace_s}

    async def _refresh(self) -> None:
        await self._feedback.refresh()

    # -- wrong-code budgets ----------------------------------------------------------

    def _budget_key(self, source: str) -> str:
        return f"{self.lane_key}:{source}"

    def _budget_data(self, source: str) -> dict[str, Any]:
        return {"lane": self.lane_id, "source": source}

    async def _budget(self, source: str) -> CodeBudget:
        """The wrong-code budget of one input, restored from the store on first use."""
        budget = self._budgets.get(source)
        if budget is not None:
            return budget
        now = self._now()
        key = self._budget_key(source)
        stored = await self._store.load_lockout(key)
        if stored is None:
            budget = CodeBudget(self._limits, at=now.mono)
        else:
            # Saved by the wall clock, the only one that spans a restart.
            saved = stored.get("saved_wall")
            elapsed = max(now.wall - float(saved), 0.0) if isinstance(saved, int | float) else 0.0
            budget = CodeBudget.from_dict(dict(stored.get("state") or {}), now.mono, elapsed,
                                          self._limits)
            alarm_since = stored.get("alarm_since")
            if isinstance(alarm_since, int | float):
                # Raised before the restart: known active, cleared when the budget is whole.
                self.alarms.mark_active(GUESSING_ALARM, key, float(alarm_since))
        self._budgets[source] = budget
        return budget

    async def _save_budget(self, source: str, now: Now) -> None:
        budget = self._budgets[source]
        key = self._budget_key(source)
        data: dict[str, Any] = {"state": budget.to_dict(now.mono), "saved_wall": now.wall}
        since = self.alarms.since(GUESSING_ALARM, key)
        if since is not None:
            data["alarm_since"] = since
        # Kept until the budget is whole again (and a day more for the audit of it).
        ttl = self._limits.burst * self._limits.refill_s + 86400.0
        await self._store.save_lockout(key, data, ttl)

    async def _wrong_code(self, source: str, budget: CodeBudget, now: Now) -> None:
        """Count a wrong code against the input; the one that spends its budget raises the
        ``code_guessing`` alarm. Persisted."""
        empty = budget.wrong(now.mono)
        if empty:
            self._feedback.beep(self._lockout_beep_s)
            data = {**self._budget_data(source), "wrong_codes": budget.wrong_total,
                    "retry_after_s": round(budget.wait(now.mono, short=True), 3)}
            await self.alarms.raise_(GUESSING_ALARM, self._budget_key(source), data,
                                     wall=now.wall)
        await self._save_budget(source, now)

    async def clear_lockout(self, lane_id: str, actor: str) -> dict[str, Any]:
        """The staff command ``clear_lane_lockout``: every input of the lane gets its whole
        budget back and the ``code_guessing`` alarms end. ``invalid_argument`` for another
        lane."""
        if lane_id != self.lane_id:
            raise DomainError(ErrorCode.INVALID_ARGUMENT, f"no lane {lane_id!r} here",
                              field="lane")
        now = self._now()
        cleared = False
        async with self._entry_lock:
            sources = set(self._budgets) | set(INPUTS)
            for source in sorted(sources):
                budget = await self._budget(source)
                key = self._budget_key(source)
                was = not budget.full(now.mono) or budget.wrong_total > 0
                self._budgets[source] = CodeBudget(self._limits, at=now.mono)
                await self._store.clear_lockout(key)
                alarm = await self.alarms.clear(
                    GUESSING_ALARM, key, {**self._budget_data(source), "cleared_by": actor},
                    wall=now.wall)
                cleared = cleared or was or alarm
        await self._refresh()
        self._feedback.changed()
        return {"lane": self.lane_id, "cleared": cleared}

    # -- reporting refusals -------------------------------------------------------------

    async def _flush_reports(self, mono: float, wall: float) -> None:
        for source, report in self._reports.items():
            if report.reasons and mono - report.last_mono >= REPORT_WINDOW_S:
                data = {"lane": self.lane_id, "source": source,
                        "count": sum(report.reasons.values()), "reasons": report.reasons,
                        "since": round(report.since_wall, 3)}
                report.reasons = None
                report.last_mono = mono
                await self._emit([PendingEvent("code_rejections_coalesced", data, wall)])

    # -- code entry -----------------------------------------------------------------------

    async def enter_code(self, raw: str, *, source: str = "keypad",
                         order_id: str | None = None) -> EntryResult:
        """Check a code typed or scanned at the lane and open its compartment.

        Never raises, whatever the text: the result (and the events) say what happened.
        An entry that cannot name an order (``parse_entry``) is ``invalid_code`` and
        changes nothing (no guess counted, no store access); a store that fails mid-check
        is ``store_unavailable``; an unexpected error is logged with its traceback and
        answered ``internal``. None of them stops the lane.
        """
        started = time.monotonic()
        try:
            entry = parse_entry(raw, order_id)
        except DomainError as exc:
            return await self._reject_event(Refused("invalid_code", exc.message), source)
        async with self._entry_lock:
            self.checking += 1
            try:
                await self._refresh()
                return await self._enter(entry.code_text, source, entry.order_id, started)
            except Refused as refused:
                return await self._reject_event(refused, source)
            except StoreError as exc:
                log.warning("code entry: store unavailable", extra={"ctx": {"error": str(exc)}})
                return await self._reject_event(
                    Refused("store_unavailable", "the store is unavailable; try again",
                             order_id=entry.order_id), source)
            except Exception:
                log.exception("code entry failed")
                return await self._reject_event(
                    Refused("internal", "the cabinet failed to check this code",
                             order_id=entry.order_id), source)
            finally:
                self.checking -= 1
                await self._refresh()

    async def refuse(self, reason: str, message: str, source: str) -> EntryResult:
        """Refuse an entry that never reached the checks (a scanner's unreadable line):
        counted, beeped and reported as any refusal."""
        return await self._reject_event(Refused(reason, message), source)

    async def _reject_event(self, refused: Refused, source: str) -> EntryResult:
        self.rejected += 1
        result = EntryResult(False, refused.reason, refused.compartment, refused.order_id,
                             retry_after_s=refused.retry_after_s)
        self._feedback.beep(self._beep_s)
        report = self._reports.setdefault(source, _Reports())
        mono, wall = time.monotonic(), time.time()
        if mono - report.last_mono < REPORT_WINDOW_S:
            # Reported together at the end of the window (a flood stays a trickle).
            if report.reasons is None:
                report.reasons, report.since_wall = {}, wall
            report.reasons[refused.reason] = report.reasons.get(refused.reason, 0) + 1
            return result
        report.last_mono = mono
        data: dict[str, Any] = {"lane": self.lane_id, "source": source, "reason": refused.reason,
                                "message": str(refused)[:200]}
        if refused.order_id is not None:
            data["order"] = refused.order_id
        if refused.retry_after_s:
            data["retry_after_s"] = refused.retry_after_s
        try:
            await self._emit([PendingEvent("code_rejected", data, wall, refused.compartment)])
        except StoreError as exc:  # the refusal stands; only its event is lost
            log.warning("code_rejected event not stored", extra={"ctx": {"error": str(exc)}})
        return result

    async def _enter(self, raw: str, source: str, order_id: str | None,
                     started: float) -> EntryResult:
        now = self._now()
        try:
            code: PickupCode | None = PickupCode(raw)
        except DomainError:
            code = None
        budget = await self._budget(source)
        wait = budget.wait(now.mono, short=code is None or not code.is_long)
        if wait > 0:
            raise Refused("slow_down", f"too many wrong codes here; try again in {wait:.0f} s",
                           retry_after_s=round(wait, 3))
        pause = budget.pace(now.mono)
        if pause > 0:
            await asyncio.sleep(pause)  # at most min_interval_s: checks are paced, not refused
        budget.checked(self._now().mono)
        # One path whether or not the order named exists: the code leads to its order.
        record = await self.codes.find(code) if code is not None else None
        cid = None
        if record is not None and order_id in (None, record.order_id):
            cid = self._openable(record.order_id)
        if record is None or cid is None:
            await self._wrong_code(source, budget, self._now())
            raise Refused("wrong_code", "wrong code", order_id=order_id)
        return await self._open(record, cid, source, started)

    def _openable(self, order_id: str) -> str | None:
        """The compartment a code of ``order_id`` may open now: the one holding the order
        (reserved, loaded, collected or expired), or the one it was just collected from
        within the reopen grace."""
        holder = self._model.compartments.holding(order_id)
        if holder is not None and holder.phase in (
                CompartmentState.RESERVED, CompartmentState.LOADED,
                CompartmentState.COLLECTED, CompartmentState.EXPIRED):
            return holder.compartment_id
        recent = self._recent.get(order_id)
        if recent is None:
            return None
        if self._now().mono - recent.used_mono > recent.grace_s:
            self._recent.pop(order_id, None)
            return None
        return recent.compartment

    async def _open(self, record: CodeRecord, cid: str, source: str,
                    started: float) -> EntryResult:
        now = self._now()
        oid = record.order_id
        where: dict[str, Any] = {"order_id": oid, "compartment": cid}
        compartment = self._model.compartments.get(cid)
        held = compartment.order is not None and compartment.order.order_id == oid
        recent = self._recent.get(oid)
        pool = compartment.order.pool if held and compartment.order else (
            recent.pool if recent is not None else "")
        grace = self._settings.tenant(pool).reopen_grace_s if pool in self._settings.tenants \
            else 0.0
        try:
            check_pool(pool, compartment.spec.pool)
            key = (oid, record.code_id)
            used = await self._store.code_used_at(oid, record.code_id) is not None
            first = self._first_use.get(key)
            decision = code_use(used, first[0] if first else None, now.mono, grace)
            if held:
                assert compartment.order is not None
                check_open(record.purpose, compartment.phase, compartment.order.expires_at,
                           now.wall)
                purpose = record.purpose.open_purpose
                reason = ""
            elif decision.reopen and compartment.phase is CompartmentState.FREE:
                # Collected and freed, not reassigned: the reopen of a forgotten bag.
                purpose = OpenPurpose.STAFF
                reason = "reopen"
            else:
                raise DomainError(ErrorCode.CODE_USED, "this code was already used",
                                  field="code")
        except DomainError as exc:
            raise Refused(exc.code.value, exc.message, **where) from exc

        async def mark_used() -> None:
            # Single use: marked used in the store before the door is pulsed (atomic: a
            # second lane racing for the same code loses).
            # The grace starts here, on the monotonic clock, whatever the pulse does next.
            if decision.reopen:
                return
            if not await self._store.mark_code_used(oid, record.code_id):
                # Used meanwhile by another process: its first use has no grace here.
                code_use(True, None, now.mono, grace)
            self._first_use[key] = (now.mono, grace)

        data = {"lane": self.lane_id, "source": source, "order": oid,
                "purpose": record.purpose.value, "reopen": decision.reopen}
        try:
            outcome = await self._opening.open(OpenRequest(
                cid, purpose, now.mono + self.pulse_wait_s,
                audit=("code_open", f"lane:{self.lane_id}", data), reason=reason,
                events=[PendingEvent("code_accepted", data, now.wall, cid)], record=mark_used,
            ))
        except DomainError as exc:
            raise Refused(exc.code.value, exc.message, **where) from exc
        except StoreError as exc:
            raise Refused("store_unavailable", str(exc), **where) from exc
        self._recent[oid] = _Recent(oid, cid, pool, record.purpose, decision.first_used_mono,
                                    grace)
        self.accepted += 1
        self._feedback.changed()
        if outcome.outcome == "not_pulsed":
            # The code stays usable within its reopen grace: the customer tries again.
            self._feedback.beep(self._beep_s)
            return EntryResult(True, f"pulse_failed: {outcome.detail}", cid, oid,
                               record.purpose.value, decision.reopen)
        self._feedback.opened(cid)
        if outcome.outcome == "unconfirmed":
            # The pulse may have released the lock: the code stays used, the light says
            # "pull the door", and a door opening now is an authorised one.
            return EntryResult(True, "pulse_unconfirmed", cid, oid, record.purpose.value,
                               decision.reopen)
        return EntryResult(True, None, cid, oid, record.purpose.value, decision.reopen,
                           latency_s=time.monotonic() - started)

