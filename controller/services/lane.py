"""The drive lane: codes typed or scanned by customers and couriers, and the lane's I/O.

Code entry
==========
A code comes from the serial scanner (:class:`drivers.scanner.CodeScanner`) or from
:meth:`LaneService.enter_code` (keypad, tests, other inputs). Dispatch sends each order's
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
   the single use (``code_used`` after the reopen grace) are checked;
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
anything is counted, stored or hashed. Whatever the text, :meth:`LaneService.enter_code`
answers and never raises; nothing a scanner sends can stop the lane.

Lane I/O
========
Inputs (debounced by :mod:`drivers.gpio`): vehicle presence (``vehicle_arrived`` /
``vehicle_left``), help button (``help_requested``), cabinet tamper switch and UPS
mains-fail (alarms ``tamper`` and ``power_fail``, raised once per incident and cleared
when the input returns). Outputs: the lane light shows ``fault`` (red) while a lane
alarm is active (``code_guessing`` included), ``busy`` (amber; green and red together
when no amber lamp is fitted) while a code is checked and while a door it opened is open,
``idle`` (green) otherwise; the buzzer beeps on a refused code and sounds longer when an
input's wrong-code budget is spent. Every alarm raise and clear is also written to the audit log.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from controller.domain.cabinet_model import CabinetModel, Emitted, Now
from controller.domain.codes import PickupCode, check_issued, parse_entry
from controller.domain.compartment import CompartmentState, OpenPurpose
from controller.domain.door import DoorState
from controller.domain.errors import DomainError, ErrorCode
from controller.domain.lockout import BudgetLimits, CodeBudget
from controller.domain.tenants import CodePurpose, check_open, check_pool, code_use
from controller.security.codes import CodeKey, SealError
from controller.services.opening import OpeningService, OpenRequest
from controller.services.reporting import PendingEvent
from controller.services.unlock import UnlockService
from controller.settings import Settings
from controller.store import Store
from controller.store.errors import StoreError

__all__ = ["CodeBook", "CodeRecord", "EntryResult", "LaneAlarms", "LaneService"]

log = logging.getLogger(__name__)

Emit = Callable[[Sequence[Emitted | PendingEvent]], Awaitable[object]]

#: Input line names, as the simulator and the wiring docs name them, by settings key.
INPUT_LINES = {
    "vehicle": "vehicle_present",
    "help": "help_button",
    "tamper": "tamper",
    "mains_fail": "mains_fail",
}
#: Lane alarms raised by inputs.
INPUT_ALARMS = {"tamper": "tamper", "mains_fail": "power_fail"}
GUESSING_ALARM = "code_guessing"
#: The inputs whose wrong-code budget is restored at start (others are made on first use).
INPUTS = ("keypad", "scanner")
#: Refusals of one input are reported at most once per this many seconds; the others are
#: counted and reported together.
REPORT_WINDOW_S = 1.0
#: The longest the lane light stays "busy" for one door opened from the lane.
BUSY_MAX_S = 300.0
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


class _Refused(Exception):
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
    used_wall: float
    grace_s: float


@dataclass(slots=True)
class _Busy:
    compartment: str
    until_mono: float
    seen_open: bool = False


# -- alarms ---------------------------------------------------------------------------


class LaneAlarms:
    """Lane-level alarms, raised once per incident and cleared once, each with an event
    and an audit line."""

    def __init__(self, emit: Emit, store: Store, actor: str) -> None:
        self._emit = emit
        self._store = store
        self._actor = actor
        self._active: dict[tuple[str, str | None], float] = {}

    def active(self, alarm: str | None = None) -> list[tuple[str, str | None]]:
        return [k for k in self._active if alarm is None or k[0] == alarm]

    def is_active(self, alarm: str, subject: str | None = None) -> bool:
        return (alarm, subject) in self._active

    def mark_active(self, alarm: str, subject: str | None, since_wall: float) -> None:
        """Known active from before (restored from the store): no new raise."""
        self._active.setdefault((alarm, subject), since_wall)

    async def raise_(self, alarm: str, subject: str | None, data: Mapping[str, Any],
                     *, compartment: str | None = None, wall: float | None = None) -> bool:
        key = (alarm, subject)
        if key in self._active:
            return False
        at = time.time() if wall is None else wall
        self._active[key] = at
        await self._report("alarm_raised", alarm, dict(data), at, compartment)
        return True

    async def clear(self, alarm: str, subject: str | None, data: Mapping[str, Any],
                    *, compartment: str | None = None, wall: float | None = None) -> bool:
        since = self._active.pop((alarm, subject), None)
        if since is None:
            return False
        at = time.time() if wall is None else wall
        details = {"active_s": round(max(at - since, 0.0), 3), **data}
        await self._report("alarm_cleared", alarm, details, at, compartment)
        return True

    async def _report(self, kind: str, alarm: str, data: dict[str, Any], at: float,
                      compartment: str | None) -> None:
        await self._emit([PendingEvent(kind, {**data, "alarm": alarm}, at, compartment)])
        try:
            await self._store.audit(kind, actor=self._actor, at=at, compartment=compartment,
                                    details={**data, "alarm": alarm})
        except StoreError as exc:
            log.error("audit write failed", extra={"ctx": {"alarm": alarm, "error": str(exc)}})


# -- the service ----------------------------------------------------------------------


class LaneService:
    """Code entry and lane I/O of one drive lane. See the module docstring.

    ``gpio`` is an opened-or-not :class:`drivers.gpio.GpioBackend` (the composition root
    chooses it by name); ``scanner`` is any async iterable of scanner events (a
    :class:`drivers.scanner.CodeScanner`). Both are optional: :meth:`enter_code` works
    without them.
    """

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
        lane_id: str = "lane-1",
        gpio: Any = None,
        scanner: AsyncIterable[Any] | None = None,
        on_change: Callable[[], None] = lambda: None,
        tick_s: float = 0.25,
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
        self._gpio = gpio
        self._scanner = scanner
        self._on_change = on_change
        self._tick_s = tick_s
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
        self._busy: list[_Busy] = []
        self._checking = 0
        self.alarms = LaneAlarms(emit, store, actor=f"lane:{lane_id}")
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}
        self.light = "off"
        self._edges: asyncio.Queue[tuple[str, bool, float]] = asyncio.Queue(maxsize=256)
        self._beeper: asyncio.Task[None] | None = None
        self.accepted = 0
        self.rejected = 0
        self._owns_io = False
        self._io_error: str | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        model: CabinetModel,
        store: Store,
        unlock: UnlockService,
        emit: Emit,
        *,
        now: Callable[[], Now],
        on_change: Callable[[], None] = lambda: None,
        code_key_file: Path | None = None,
    ) -> LaneService:
        """The lane as ``[lane]`` describes it: the GPIO backend chosen by name (imported
        now, so a missing library is reported at start-up and the lane runs without I/O)
        and the serial scanner, if any. The service owns and closes them. The cabinet's code
        key is read from ``security.code_key_file`` (else ``code_key_file``, the default the
        daemon gives: beside its config file), created there at the first start;
        :class:`~controller.security.codes.CodeKeyError` when it is unusable or readable
        by other users."""
        from drivers.errors import DriverError
        from drivers.gpio import open_backend

        code_key = CodeKey.load_or_create(
            settings.security.code_key_file or code_key_file or Path("code.key"))
        lane = settings.lane
        gpio: Any = None
        error: str | None = None
        options = dict(lane.options)
        if lane.backend == "gpiod":
            options.setdefault("chip", lane.chip)
        try:
            gpio = open_backend(lane.backend, options)
        except DriverError as exc:
            error = str(exc)
            log.error("lane GPIO backend unavailable", extra={"ctx": {"error": error}})
        scanner: Any = None
        if lane.scanner is not None:
            from drivers.scanner import CodeScanner

            scanner = CodeScanner(lane.scanner.port, lane.scanner.baudrate)
        service = cls(settings, model, store, unlock, emit, now=now, code_key=code_key,
                      gpio=gpio, scanner=scanner, on_change=on_change)
        service._owns_io = True
        service._io_error = error
        return service

    @property
    def lane_key(self) -> str:
        return f"lane:{self.lane_id}"

    # -- start-up -----------------------------------------------------------------------

    async def start(self) -> None:
        """Restore the lane's lockout from the store and open the lane I/O (a lane I/O
        that cannot be opened is logged and reported; code entry works without it)."""
        for source in INPUTS:
            await self._budget(source)
        if self._io_error is not None:
            await self._emit([PendingEvent(
                "lane_io_unavailable", {"lane": self.lane_id, "error": self._io_error[:200]},
                time.time())])
        if self._gpio is not None:
            try:
                await self._open_io()
            except Exception as exc:  # a dead GPIO chip must not stop collections
                log.error("lane I/O unavailable", extra={"ctx": {"error": str(exc)}})
                await self._emit([PendingEvent(
                    "lane_io_unavailable", {"lane": self.lane_id, "error": str(exc)[:200]},
                    time.time())])
                self.inputs, self.outputs = {}, {}
        await self._update_light()

    async def _open_io(self) -> None:
        from drivers.gpio import InputSpec, OutputSpec

        lane = self._settings.lane
        for key, line_name in INPUT_LINES.items():
            cfg = getattr(lane.inputs, key)
            if cfg is None:
                continue
            spec = InputSpec(line_name, cfg.pin, pull="up", active_low=cfg.active_low,
                             debounce_s=cfg.debounce_ms / 1000.0)
            line = await self._gpio.open_input(spec)
            self.inputs[key] = line
            line.add_listener(lambda edge, key=key: self._queue_edge(key, edge.value))
        for key in type(lane.outputs).model_fields:
            cfg = getattr(lane.outputs, key)
            if cfg is None:
                continue
            self.outputs[key] = await self._gpio.open_output(
                OutputSpec(key, cfg.pin, active_low=cfg.active_low))
        # Inputs already active at start-up are incidents too.
        for key, line in self.inputs.items():
            if line.value:
                self._queue_edge(key, True)

    def snapshot(self) -> dict[str, bool | None]:
        """The lane's inputs now, for the state message (None: line not fitted)."""
        def value(key: str) -> bool | None:
            line = self.inputs.get(key)
            return None if line is None else bool(line.value)

        mains_fail = value("mains_fail")
        return {"vehicle_present": value("vehicle"), "help_requested": value("help"),
                "tamper": value("tamper"),
                "mains_ok": None if mains_fail is None else not mains_fail}

    def _queue_edge(self, key: str, value: bool) -> None:
        try:
            self._edges.put_nowait((key, value, time.time()))
        except asyncio.QueueFull:
            log.warning("lane input edges dropped", extra={"ctx": {"input": key}})

    async def close(self) -> None:
        """Stop the buzzer and the checks; close the I/O this service opened."""
        if self._beeper is not None:
            self._beeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._beeper
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._owns_io:
            for part in (self._scanner, self._gpio):
                closer = getattr(part, "close", None)
                if closer is not None:
                    with contextlib.suppress(Exception):
                        await closer()

    # -- running ------------------------------------------------------------------------

    async def run(self) -> None:
        """Until cancelled: scanner codes, input edges, and the lane's timers. If one of
        them fails, the others are stopped and the failure raised (the daemon's supervisor
        restarts the whole lane, never a half of it)."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._scan_loop(), name="lane-scanner")
            tg.create_task(self._edge_loop(), name="lane-inputs")
            tg.create_task(self._tick_loop(), name="lane-ticks")

    async def _scan_loop(self) -> None:
        if self._scanner is None:
            return
        start = getattr(self._scanner, "start", None)
        if start is not None:
            await start()  # opens the port in the background, reconnecting as needed
        async for event in self._scanner:
            try:
                await self._on_scan(event)
            except StoreError as exc:
                log.warning("scanner event not stored", extra={"ctx": {"error": str(exc)}})

    async def _on_scan(self, event: object) -> None:
        kind = type(event).__name__
        if kind == "ScannedCode":
            code = getattr(event, "code", None)
            await self.enter_code(code if isinstance(code, str) else "", source="scanner")
        elif kind == "ScanRejected":
            message = str(getattr(event, "message", ""))
            await self._reject_event(_Refused("unreadable", message), "scanner")
        elif kind == "ScannerStatus":
            connected = bool(getattr(event, "connected", False))
            detail = str(getattr(event, "detail", ""))
            await self._emit([PendingEvent(
                "scanner_connected" if connected else "scanner_disconnected",
                {"lane": self.lane_id, "detail": detail[:200]}, time.time())])

    async def _edge_loop(self) -> None:
        while True:
            key, value, wall = await self._edges.get()
            await self._on_input(key, value, wall)

    async def _on_input(self, key: str, value: bool, wall: float) -> None:
        lane = {"lane": self.lane_id}
        if key == "vehicle":
            await self._emit([PendingEvent(
                "vehicle_arrived" if value else "vehicle_left", lane, wall)])
        elif key == "help":
            if value:
                await self._emit([PendingEvent("help_requested", lane, wall)])
        elif key in INPUT_ALARMS:
            alarm = INPUT_ALARMS[key]
            if value:
                await self.alarms.raise_(alarm, None, lane, wall=wall)
            else:
                await self.alarms.clear(alarm, None, lane, wall=wall)
            await self._update_light()
        self._on_change()

    async def _tick_loop(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self._tick_s)

    async def tick(self) -> None:
        """A budget whole again clears its alarm; coalesced refusals are reported; the
        light follows the lane."""
        now = self._now()
        for source, budget in list(self._budgets.items()):
            if budget.full(now.mono) and budget.wrong_total:
                key = self._budget_key(source)
                budget.wrong_total = 0
                if await self.alarms.clear(GUESSING_ALARM, key, self._budget_data(source),
                                           wall=now.wall):
                    await self._save_budget(source, now)
        await self._flush_reports(now.mono, now.wall)
        mono = now.mono
        still: list[_Busy] = []
        for busy in self._busy:
            try:
                state = self._model.door_state(busy.compartment)
            except DomainError:
                continue
            is_open = state in (DoorState.OPEN, DoorState.AJAR, DoorState.FORCED_OPEN)
            busy.seen_open = busy.seen_open or is_open
            done = state is DoorState.OPEN_NOT_DETECTED or (
                busy.seen_open and not is_open and state is not DoorState.UNLOCK_SENT)
            if not done and mono < busy.until_mono:
                still.append(busy)
        self._busy = still
        await self._update_light()

    # -- the light and the buzzer -------------------------------------------------------

    def _wanted_light(self) -> str:
        if self.alarms.active():
            return "fault"
        if self._checking or self._busy:
            return "busy"
        return "idle"

    async def _update_light(self) -> None:
        wanted = self._wanted_light()
        if wanted == self.light:
            return
        self.light = wanted
        amber = "light_amber" in self.outputs
        lamps = {
            "light_green": wanted == "idle" or (wanted == "busy" and not amber),
            "light_red": wanted == "fault" or (wanted == "busy" and not amber),
            "light_amber": wanted == "busy",
        }
        for name, on in lamps.items():
            line = self.outputs.get(name)
            if line is None:
                continue
            try:
                await line.set(on)
            except Exception as exc:
                log.warning("lane light not set", extra={"ctx": {"line": name, "error": str(exc)}})

    def _beep(self, seconds: float) -> None:
        buzzer = self.outputs.get("buzzer")
        if buzzer is None:
            return
        if self._beeper is not None and not self._beeper.done():
            return

        async def beep() -> None:
            try:
                await buzzer.pulse(seconds)
            except Exception as exc:
                log.warning("buzzer failed", extra={"ctx": {"error": str(exc)}})

        self._beeper = asyncio.get_running_loop().create_task(beep(), name="lane-buzzer")

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
        since = self.alarms._active.get((GUESSING_ALARM, key))
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
            self._beep(self._lockout_beep_s)
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
        await self._update_light()
        self._on_change()
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
            return await self._reject_event(_Refused("invalid_code", exc.message), source)
        async with self._entry_lock:
            self._checking += 1
            try:
                await self._update_light()
                return await self._enter(entry.code_text, source, entry.order_id, started)
            except _Refused as refused:
                return await self._reject_event(refused, source)
            except StoreError as exc:
                log.warning("code entry: store unavailable", extra={"ctx": {"error": str(exc)}})
                return await self._reject_event(
                    _Refused("store_unavailable", "the store is unavailable; try again",
                             order_id=entry.order_id), source)
            except Exception:
                log.exception("code entry failed")
                return await self._reject_event(
                    _Refused("internal", "the cabinet failed to check this code",
                             order_id=entry.order_id), source)
            finally:
                self._checking -= 1
                await self._update_light()

    async def _reject_event(self, refused: _Refused, source: str) -> EntryResult:
        self.rejected += 1
        result = EntryResult(False, refused.reason, refused.compartment, refused.order_id,
                             retry_after_s=refused.retry_after_s)
        self._beep(self._beep_s)
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
            raise _Refused("slow_down", f"too many wrong codes here; try again in {wait:.0f} s",
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
            raise _Refused("wrong_code", "wrong code", order_id=order_id)
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
        if self._now().wall - recent.used_wall > recent.grace_s:
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
            used_iso = await self._store.code_used_at(oid, record.code_id)
            used_at = _wall_of(used_iso) if used_iso is not None else None
            decision = code_use(used_at, now.wall, grace)
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
            raise _Refused(exc.code.value, exc.message, **where) from exc

        async def mark_used() -> None:
            # Single use: marked used in the store before the door is pulsed (atomic: a
            # second lane racing for the same code loses).
            if not decision.reopen and not await self._store.mark_code_used(oid, record.code_id):
                used_iso = await self._store.code_used_at(oid, record.code_id)
                code_use(_wall_of(used_iso) if used_iso else None, now.wall, grace)

        data = {"lane": self.lane_id, "source": source, "order": oid,
                "purpose": record.purpose.value, "reopen": decision.reopen}
        try:
            outcome = await self._opening.open(OpenRequest(
                cid, purpose, now.mono + self.pulse_wait_s,
                audit=("code_open", f"lane:{self.lane_id}", data), reason=reason,
                events=[PendingEvent("code_accepted", data, now.wall, cid)], record=mark_used,
            ))
        except DomainError as exc:
            raise _Refused(exc.code.value, exc.message, **where) from exc
        except StoreError as exc:
            raise _Refused("store_unavailable", str(exc), **where) from exc
        self._recent[oid] = _Recent(oid, cid, pool, record.purpose, decision.first_used_at,
                                    grace)
        self.accepted += 1
        self._on_change()
        if outcome.outcome == "not_pulsed":
            # The code stays usable within its reopen grace: the customer tries again.
            self._beep(self._beep_s)
            return EntryResult(True, f"pulse_failed: {outcome.detail}", cid, oid,
                               record.purpose.value, decision.reopen)
        self._busy.append(_Busy(cid, now.mono + BUSY_MAX_S))
        if outcome.outcome == "unconfirmed":
            # The pulse may have released the lock: the code stays used, the light says
            # "pull the door", and a door opening now is an authorised one.
            return EntryResult(True, "pulse_unconfirmed", cid, oid, record.purpose.value,
                               decision.reopen)
        return EntryResult(True, None, cid, oid, record.purpose.value, decision.reopen,
                           latency_s=time.monotonic() - started)


def _wall_of(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
