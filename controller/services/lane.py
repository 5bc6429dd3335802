"""The drive lane: codes typed or scanned by customers and couriers, and the lane's I/O.

Code entry
==========
A code comes from the serial scanner (:class:`drivers.scanner.CodeScanner`) or from
:meth:`LaneService.enter_code` (keypad, tests, other inputs). It is checked on the
cabinet against the salted hashes dispatch pushed with each order (``assign.codes``,
kept by the store), so collection works with the broker down. The clear code lives only
in a :class:`~controller.domain.codes.PickupCode` for the time of the check: it is never
stored, logged or put in an event.

The steps, in this order (each refusal is a ``code_rejected`` event and a short beep):

1. the lane is locked out (too many wrong codes): ``locked_out``, nothing is hashed;
2. the code is compared with the hashes of the orders it could open (deposit codes of
   reserved or loaded compartments, collect codes of loaded ones, codes used within
   their reopen grace), in worker threads, most likely first, stopping at the first
   match. No match: ``wrong_code``, counted against the lane (and the order, when the
   entry named one, see below); the ``max_attempts``-th wrong code locks the keypad for
   ``code_lockout_s``, longer on each repeat, with a ``code_lockout`` alarm raised once
   and cleared when the lock ends. Counters and locks are in the store: they survive a
   restart;
3. the order's own lockout, its tenant (:mod:`controller.domain.tenants`), its expiry
   (``staff_only``) and the single use (``code_used`` after the reopen grace) are checked;
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

A scanned QR code may name its order: ``<order id>:<code>`` (the order id as dispatch
knows it). Then only that order's hashes are checked and wrong codes also count against
the order, so a thief cannot spread guesses over lanes. A bare code is checked against
every candidate order. Text whose order part cannot be an order id (``order 1:123456``,
control characters, over 256 characters: :func:`~controller.domain.codes.parse_entry`) is
refused as ``invalid_code`` before anything is counted, stored or hashed. Whatever the
text, :meth:`LaneService.enter_code` answers and never raises; nothing a scanner sends can
stop the lane.

Lane I/O
========
Inputs (debounced by :mod:`drivers.gpio`): vehicle presence (``vehicle_arrived`` /
``vehicle_left``), help button (``help_requested``), cabinet tamper switch and UPS
mains-fail (alarms ``tamper`` and ``power_fail``, raised once per incident and cleared
when the input returns). Outputs: the lane light shows ``fault`` (red) while a lane
alarm is active or the keypad is locked, ``busy`` (amber; green and red together when no
amber lamp is fitted) while a code is checked and while a door it opened is open,
``idle`` (green) otherwise; the buzzer beeps on a refused code and sounds longer on a
lockout. Every alarm raise and clear is also written to the audit log.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import hashlib
import hmac
import logging
import os
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.domain.cabinet_model import CabinetModel, Emitted, Now
from controller.domain.codes import PickupCode, parse_entry
from controller.domain.compartment import CompartmentState, OpenPurpose
from controller.domain.door import DoorState
from controller.domain.errors import DomainError, ErrorCode
from controller.domain.lockout import LockoutLimits, WrongCodeLockout
from controller.domain.tenants import CodePurpose, check_open, check_pool, code_use
from controller.services.opening import OpeningService, OpenRequest
from controller.services.reporting import PendingEvent
from controller.services.unlock import UnlockService
from controller.settings import Settings
from controller.store import Store
from controller.store.errors import StoreError

__all__ = ["EntryResult", "LaneAlarms", "LaneService", "verify_code"]

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
LOCKOUT_ALARM = "code_lockout"

_MAX_SCRYPT_N = 2**20
_MAX_PBKDF2_ITERATIONS = 5_000_000
#: How long a lockout subject is remembered after its last wrong code (attempts and the
#: escalation of repeated lockouts), beyond any lock still running.
LOCKOUT_MEMORY_S = 24 * 3600.0
#: The longest the lane light stays "busy" for one door opened from the lane.
BUSY_MAX_S = 300.0
#: How long an accepted code waits for the power budget (another door opening).
PULSE_WAIT_S = 10.0


# -- code hashes ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _HashRecord:
    """One code hash of one order, as pushed by dispatch (``assign.codes[i]``)."""

    order_id: str
    code_id: str
    purpose: CodePurpose
    algorithm: str
    salt: bytes
    digest: bytes
    params: Mapping[str, int]

    def __repr__(self) -> str:
        return f"_HashRecord({self.order_id}/{self.code_id} {self.algorithm})"


def _records(order_id: str, stored: Mapping[str, Any] | None) -> list[_HashRecord]:
    """The usable hash records of an order; malformed ones are skipped (and logged)."""
    if not stored:
        return []
    out: list[_HashRecord] = []
    for index, item in enumerate(stored.get("codes") or ()):
        try:
            purpose = CodePurpose(item["purpose"])
            algorithm = str(item["algorithm"])
            if algorithm not in ("scrypt", "pbkdf2-sha256"):
                raise ValueError(f"algorithm {algorithm!r}")
            params = {str(k): int(v) for k, v in dict(item.get("params") or {}).items()}
            out.append(_HashRecord(
                order_id, f"{purpose.value}-{index}", purpose, algorithm,
                base64.b64decode(item["salt"], validate=True),
                base64.b64decode(item["hash"], validate=True), params,
            ))
        except (KeyError, ValueError, TypeError, binascii.Error) as exc:
            log.error("unusable code hash skipped",
                      extra={"ctx": {"order": order_id, "index": index, "error": str(exc)}})
    return out


def verify_code(code: PickupCode, algorithm: str, salt: bytes, digest: bytes,
                params: Mapping[str, int]) -> bool:
    """Whether ``code`` (normalised) derives to ``digest`` (constant-time compare).

    ``scrypt``: params ``n`` (power of two, default 16384), ``r`` (8), ``p`` (1);
    ``pbkdf2-sha256``: ``iterations`` (required). The derived length is the digest's.
    Unreasonable parameters (a denial of service on the lane) verify nothing.
    """
    secret = code.secret_bytes()
    if not 16 <= len(digest) <= 64:
        return False
    if algorithm == "scrypt":
        n, r, p = params.get("n", 2**14), params.get("r", 8), params.get("p", 1)
        if not (2 <= n <= _MAX_SCRYPT_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
            return False
        maxmem = min(max(2**26, 130 * r * (n + p + 2)), 2**30)
        try:
            candidate = hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=maxmem,
                                       dklen=len(digest))
        except (ValueError, MemoryError):
            return False
    elif algorithm == "pbkdf2-sha256":
        iterations = params.get("iterations", 0)
        if not 1 <= iterations <= _MAX_PBKDF2_ITERATIONS:
            return False
        candidate = hashlib.pbkdf2_hmac("sha256", secret, salt, iterations, dklen=len(digest))
    else:
        return False
    return hmac.compare_digest(candidate, digest)


# -- results --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntryResult:
    """What became of one code entry (never the code). ``reason``: why a code was refused,
    or, for an accepted one, what went wrong after it was used (``pulse_failed: ...``, the
    board did not make the pulse; ``pulse_unconfirmed``, the pulse went out and its outcome
    is unknown). ``latency_s``: entry to pulse acknowledged by the board."""

    accepted: bool
    reason: str | None = None
    compartment: str | None = None
    order_id: str | None = None
    purpose: str | None = None
    reopen: bool = False
    locked_for_s: float = 0.0
    latency_s: float | None = None


class _Refused(Exception):
    def __init__(self, reason: str, message: str, *, compartment: str | None = None,
                 order_id: str | None = None, locked_for_s: float = 0.0) -> None:
        super().__init__(message)
        self.reason = reason
        self.compartment = compartment
        self.order_id = order_id
        self.locked_for_s = locked_for_s


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
        lane_id: str = "lane-1",
        gpio: Any = None,
        scanner: AsyncIterable[Any] | None = None,
        on_change: Callable[[], None] = lambda: None,
        tick_s: float = 0.25,
        workers: int | None = None,
        beep_s: float = 0.2,
        lockout_beep_s: float = 1.5,
        pulse_wait_s: float = PULSE_WAIT_S,
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
        self._limits = LockoutLimits(
            max_attempts=sec.code_max_attempts, lockout_s=sec.code_lockout_s,
            max_lockout_s=sec.code_lockout_max_s,
        )
        self._lockouts: dict[str, WrongCodeLockout] = {}
        self._lock_alarm_wall: dict[str, float] = {}
        self._entry_lock = asyncio.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers or max(os.cpu_count() or 1, 1), thread_name_prefix="code-check")
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
    ) -> LaneService:
        """The lane as ``[lane]`` describes it: the GPIO backend chosen by name (imported
        now, so a missing library is reported at start-up and the lane runs without I/O)
        and the serial scanner, if any. The service owns and closes them."""
        from drivers.errors import DriverError
        from drivers.gpio import open_backend

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
        service = cls(settings, model, store, unlock, emit, now=now, gpio=gpio,
                      scanner=scanner, on_change=on_change)
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
        await self._load_lockout(self.lane_key)
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
        """Lockouts that ended clear their alarm; the light follows the lane."""
        now = self._now()
        for key, lockout in list(self._lockouts.items()):
            if lockout.remaining(key, now.mono) <= 0 and self.alarms.is_active(LOCKOUT_ALARM, key):
                compartment = self._compartment_of_key(key)
                await self.alarms.clear(LOCKOUT_ALARM, key, self._key_data(key),
                                        compartment=compartment, wall=now.wall)
                await self._save_lockout(key, now)
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
        mono = self._now().mono
        locked = self._lockouts.get(self.lane_key)
        if self.alarms.active() or (locked is not None and locked.remaining(self.lane_key, mono)):
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

    # -- lockouts -------------------------------------------------------------------------

    def _lockout(self, key: str) -> WrongCodeLockout:
        lockout = self._lockouts.get(key)
        if lockout is None:
            lockout = self._lockouts[key] = WrongCodeLockout(self._limits)
        return lockout

    async def _load_lockout(self, key: str) -> None:
        if key in self._lockouts:
            return
        now = self._now()
        stored = await self._store.load_lockout(key)
        if stored is None:
            self._lockouts[key] = WrongCodeLockout(self._limits)
            return
        # Remaining times were stored relative to the save: take off the time since (by
        # the wall clock, the only one that spans a restart).
        saved = stored.get("saved_wall")
        elapsed = max(now.wall - float(saved), 0.0) if isinstance(saved, int | float) else 0.0
        state = {
            k: {**v, "remaining_s": max(float(v.get("remaining_s", 0.0)) - elapsed, 0.0)}
            for k, v in dict(stored.get("state", {})).items() if isinstance(v, dict)
        }
        self._lockouts[key] = WrongCodeLockout.from_dict(state, now.mono, self._limits)
        alarm_since = stored.get("alarm_since")
        if isinstance(alarm_since, int | float):
            # Raised before the restart: known active, cleared when the lock ends.
            self.alarms.mark_active(LOCKOUT_ALARM, key, float(alarm_since))

    async def _save_lockout(self, key: str, now: Now) -> None:
        lockout = self._lockout(key)
        remaining = lockout.remaining(key, now.mono)
        data: dict[str, Any] = {"state": lockout.to_dict(now.mono), "saved_wall": now.wall}
        since = self.alarms._active.get((LOCKOUT_ALARM, key))
        if since is not None:
            data["alarm_since"] = since
        await self._store.save_lockout(key, data, remaining + LOCKOUT_MEMORY_S)

    def _check_lock(self, key: str, mono: float, **where: Any) -> None:
        left = self._lockout(key).remaining(key, mono)
        if left > 0:
            raise _Refused("locked_out", f"too many wrong codes; try again in {left:.0f} s",
                           locked_for_s=round(left, 3), **where)

    def _compartment_of_key(self, key: str) -> str | None:
        if not key.startswith("order:"):
            return None
        holder = self._model.compartments.holding(key.removeprefix("order:"))
        return holder.compartment_id if holder is not None else None

    def _key_data(self, key: str) -> dict[str, Any]:
        data: dict[str, Any] = {"lane": self.lane_id}
        if key.startswith("order:"):
            data["order"] = key.removeprefix("order:")
        return data

    async def _wrong_code(self, keys: list[str], now: Now) -> float:
        """Count a wrong code against ``keys``; lock, alarm and persist. Returns the
        longest lock now in force."""
        longest = 0.0
        for key in keys:
            lockout = self._lockout(key)
            left = lockout.wrong_code(key, now=now.mono)
            longest = max(longest, left)
            if left > 0:
                compartment = self._compartment_of_key(key)
                data = {**self._key_data(key), "locked_for_s": round(left, 3)}
                await self.alarms.raise_(LOCKOUT_ALARM, key, data, compartment=compartment,
                                         wall=now.wall)
            await self._save_lockout(key, now)
        return longest

    async def _right_code(self, keys: list[str], now: Now) -> None:
        for key in keys:
            lockout = self._lockout(key)
            if lockout.to_dict(now.mono):
                lockout.right_code(key)
                await self._store.clear_lockout(key)

    # -- code entry -----------------------------------------------------------------------

    async def enter_code(self, raw: str, *, source: str = "keypad",
                         order_id: str | None = None) -> EntryResult:
        """Check a code typed or scanned at the lane and open its compartment.

        Never raises, whatever the text: the result (and the events) say what happened.
        An entry that cannot name an order (``parse_entry``) is ``invalid_code`` and
        changes nothing (no lockout count, no store access); a store that fails mid-check
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
        data: dict[str, Any] = {"lane": self.lane_id, "source": source, "reason": refused.reason,
                                "message": str(refused)[:200]}
        if refused.order_id is not None:
            data["order"] = refused.order_id
        if refused.locked_for_s:
            data["locked_for_s"] = refused.locked_for_s
        try:
            await self._emit([PendingEvent("code_rejected", data, time.time(),
                                           refused.compartment)])
        except StoreError as exc:  # the refusal stands; only its event is lost
            log.warning("code_rejected event not stored", extra={"ctx": {"error": str(exc)}})
        self._beep(self._lockout_beep_s if refused.reason == "locked_out" else self._beep_s)
        return EntryResult(False, refused.reason, refused.compartment, refused.order_id,
                           locked_for_s=refused.locked_for_s)

    async def _enter(self, raw: str, source: str, order_id: str | None,
                     started: float) -> EntryResult:
        now = self._now()
        self._check_lock(self.lane_key, now.mono)
        order_key = f"order:{order_id}" if order_id else None
        if order_key is not None:
            await self._load_lockout(order_key)
            self._check_lock(order_key, now.mono, order_id=order_id)
        try:
            code = PickupCode(raw)
        except DomainError:
            code = None
        match = await self._match(code, order_id) if code is not None else None
        if match is None:
            keys = [self.lane_key] + ([order_key] if order_key else [])
            left = await self._wrong_code(keys, self._now())
            if left > 0:
                self._beep(self._lockout_beep_s)
            raise _Refused("wrong_code", "wrong code", order_id=order_id,
                           locked_for_s=round(left, 3))
        record, cid = match
        order_key = f"order:{record.order_id}"
        await self._load_lockout(order_key)
        self._check_lock(order_key, now.mono, order_id=record.order_id, compartment=cid)
        return await self._open(record, cid, order_key, source, started)

    def _candidates(self, order_id: str | None) -> list[tuple[str, str, str]]:
        """(order id, compartment, why) of the orders a code could open now."""
        out: list[tuple[str, str, str]] = []
        for compartment in self._model.compartments:
            order = compartment.order
            if order is None or (order_id is not None and order.order_id != order_id):
                continue
            if compartment.phase in (CompartmentState.RESERVED, CompartmentState.LOADED,
                                     CompartmentState.COLLECTED, CompartmentState.EXPIRED):
                out.append((order.order_id, compartment.compartment_id, "held"))
        held = {o for o, _, _ in out}
        wall = self._now().wall
        for recent in list(self._recent.values()):
            if wall - recent.used_wall > recent.grace_s:
                self._recent.pop(recent.order_id, None)
                continue
            if recent.order_id not in held and order_id in (None, recent.order_id):
                out.append((recent.order_id, recent.compartment, "recent"))
        # Most likely first: loaded orders waiting for their customer, oldest expiry first.
        rank = {CompartmentState.LOADED: 0, CompartmentState.RESERVED: 1}

        def key(item: tuple[str, str, str]) -> tuple[int, float]:
            c = self._model.compartments.get(item[1])
            expires = c.order.expires_at if c.order is not None else 0.0
            return (rank.get(c.phase, 2) if item[2] == "held" else 3, expires)

        return sorted(out, key=key)

    async def _match(self, code: PickupCode,
                     order_id: str | None) -> tuple[_HashRecord, str] | None:
        records: list[tuple[_HashRecord, str]] = []
        for oid, cid, _why in self._candidates(order_id):
            for record in _records(oid, await self._store.load_code_hashes(oid)):
                records.append((record, cid))
        if not records:
            return None
        loop = asyncio.get_running_loop()
        futures: dict[asyncio.Future[bool], tuple[_HashRecord, str]] = {
            loop.run_in_executor(self._pool, verify_code, code, r.algorithm, r.salt, r.digest,
                                 r.params): (r, cid)
            for r, cid in records
        }
        pending: set[asyncio.Future[bool]] = set(futures)
        try:
            while pending:  # bounded: each round completes at least one future
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for fut in done:
                    if fut.exception() is None and fut.result():
                        return futures[fut]
        finally:
            for fut in pending:
                fut.cancel()
        return None

    async def _open(self, record: _HashRecord, cid: str, order_key: str, source: str,
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
        # The code was used to open: the wrong-code counts of the lane and the order end.
        try:
            await self._right_code([self.lane_key, order_key], now)
        except StoreError as exc:
            log.error("lockout not cleared", extra={"ctx": {"error": str(exc)}})
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
