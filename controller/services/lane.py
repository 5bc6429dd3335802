"""The drive lane's I/O: the scanner, the lane's inputs, its light and its buzzer.

Codes typed or scanned at the lane are checked by :mod:`controller.services.codecheck`
(the code book, the wrong-code budgets, the reopen grace, the open path); this module
feeds it the scanner's lines and :meth:`LaneService.enter_code`, and shows the outcome.

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
import contextlib
import logging
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.domain.cabinet_model import CabinetModel, Now
from controller.domain.door import DoorState
from controller.domain.errors import DomainError
from controller.security.codes import CodeKey
from controller.services.codecheck import (
    GUESSING_ALARM,
    PULSE_WAIT_S,
    CodeBook,
    CodeChecker,
    CodeRecord,
    EntryResult,
    LaneFeedback,
)
from controller.services.lane_alarms import Emit, LaneAlarms
from controller.services.reporting import PendingEvent, honour_cancel
from controller.services.unlock import UnlockService
from controller.settings import Settings
from controller.store import Store
from controller.store.errors import StoreError

__all__ = ["GUESSING_ALARM", "CodeBook", "CodeRecord", "EntryResult", "LaneAlarms",
           "LaneService"]

log = logging.getLogger(__name__)

#: Input line names, as the simulator and the wiring docs name them, by settings key.
INPUT_LINES = {
    "vehicle": "vehicle_present",
    "help": "help_button",
    "tamper": "tamper",
    "mains_fail": "mains_fail",
}
#: Lane alarms raised by inputs.
INPUT_ALARMS = {"tamper": "tamper", "mains_fail": "power_fail"}
#: The longest the lane light stays "busy" for one door opened from the lane.
BUSY_MAX_S = 300.0


@dataclass(slots=True)
class _Busy:
    compartment: str
    until_mono: float
    seen_open: bool = False


# -- the service ----------------------------------------------------------------------


class LaneService:
    """The I/O of one drive lane, and the front of its code entry (checked by its
    :class:`~controller.services.codecheck.CodeChecker`, ``checker``). See the module
    docstring.

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
        self._emit = emit
        self._now = now
        self.lane_id = lane_id
        self._gpio = gpio
        self._scanner = scanner
        self._on_change = on_change
        self._tick_s = tick_s
        self._busy: list[_Busy] = []
        self.alarms = LaneAlarms(emit, store, actor=f"lane:{lane_id}")
        #: Code entry: the code book, the wrong-code budgets, the reopen grace.
        self.checker = CodeChecker(
            settings, model, store, unlock, emit, now=now, code_key=code_key,
            alarms=self.alarms, lane_id=lane_id, workers=workers, beep_s=beep_s,
            lockout_beep_s=lockout_beep_s, pulse_wait_s=pulse_wait_s,
            check_interval_s=check_interval_s,
            feedback=LaneFeedback(beep=self._beep, refresh=self._update_light,
                                  opened=self._door_opened, changed=on_change))
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}
        self.light = "off"
        self._edges: asyncio.Queue[tuple[str, bool, float]] = asyncio.Queue(maxsize=256)
        self._beeper: asyncio.Task[None] | None = None
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

    # -- code entry, delegated ----------------------------------------------------------

    @property
    def codes(self) -> CodeBook:
        """The cabinet's codes (the command service stores an assign's codes through it)."""
        return self.checker.codes

    @property
    def pulse_wait_s(self) -> float:
        """How long an accepted code waits for the power budget before it is refused."""
        return self.checker.pulse_wait_s

    @pulse_wait_s.setter
    def pulse_wait_s(self, seconds: float) -> None:
        self.checker.pulse_wait_s = seconds

    @property
    def accepted(self) -> int:
        return self.checker.accepted

    @property
    def rejected(self) -> int:
        return self.checker.rejected

    async def enter_code(self, raw: str, *, source: str = "keypad",
                         order_id: str | None = None) -> EntryResult:
        """Check a code typed or scanned at the lane and open its compartment
        (:meth:`CodeChecker.enter_code`): never raises, whatever the text."""
        return await self.checker.enter_code(raw, source=source, order_id=order_id)

    async def clear_lockout(self, lane_id: str, actor: str) -> dict[str, Any]:
        """The staff command ``clear_lane_lockout`` (:meth:`CodeChecker.clear_lockout`)."""
        return await self.checker.clear_lockout(lane_id, actor)

    # -- start-up -----------------------------------------------------------------------

    async def start(self) -> None:
        """Restore the lane's lockout from the store and open the lane I/O (a lane I/O
        that cannot be opened is logged and reported; code entry works without it)."""
        await self.checker.start()
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
        for key in lane.outputs.__struct_fields__:
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
        self.checker.close()
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
            honour_cancel()

    async def _on_scan(self, event: object) -> None:
        kind = type(event).__name__
        if kind == "ScannedCode":
            code = getattr(event, "code", None)
            await self.enter_code(code if isinstance(code, str) else "", source="scanner")
        elif kind == "ScanRejected":
            message = str(getattr(event, "message", ""))
            await self.checker.refuse("unreadable", message, "scanner")
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
            honour_cancel()

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
        loop = asyncio.get_running_loop()
        while True:
            await self.tick()
            honour_cancel()
            # On the grid of tick_s (not tick_s after the tick): the poller's ticker keeps
            # to the same grid, so one wake-up of the loop serves both.
            await asyncio.sleep(self._tick_s - loop.time() % self._tick_s)

    async def tick(self) -> None:
        """A budget whole again clears its alarm; coalesced refusals are reported; the
        light follows the lane."""
        now = self._now()
        await self.checker.tick(now)
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
        if self.checker.checking or self._busy:
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

    def _door_opened(self, compartment: str) -> None:
        """A door opened from the lane: the light is busy until it closes again."""
        self._busy.append(_Busy(compartment, self._now().mono + BUSY_MAX_S))

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

