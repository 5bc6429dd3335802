"""The fake backend: lock and sensor boards in memory, first-class, for tests and demos.

It implements the same contract as the hardware backends (:mod:`drivers.base`), so the
controller is tested against it without patching anything, and it adds what a test
needs:

* a **time-stamped history** of every hook call (:attr:`FakeLockBoard.history`), with
  its outcome; time comes from the injected ``clock`` (a :class:`ManualClock` or
  ``time.monotonic``);
* **fault injection**: :meth:`FakeLockBoard.inject` makes the next call(s), or every
  call until :meth:`~FakeLockBoard.clear_faults`, of one operation or of all, raise the
  error a real line would: ``"timeout"`` -> :class:`~drivers.errors.BoardTimeout`,
  ``"frame"`` -> :class:`~drivers.errors.FrameError`, ``"rejected"`` ->
  :class:`~drivers.errors.BoardRejected`, ``"bus"`` -> :class:`~drivers.errors.BusError`,
  and ``"bug"`` -> a plain :class:`RuntimeError` (a backend defect: outside the driver
  contract, what the daemon's task supervision must survive);
  a faulted call is recorded and has no effect (the board did not get the command).
  Two more faults model a lost acknowledgement *after* the board acted:
  ``"ack_lost"`` (the command is carried out, then
  :class:`~drivers.errors.BoardTimeout`) and ``"ack_garbled"`` (carried out, then
  :class:`~drivers.errors.FrameError`). A pulse whose ack was lost without acting is
  ``"timeout"`` on ``"pulse"`` (or ``"set_output"``); the read-back of the pulse policy
  is the operation ``"read_output"``;
* **assertion helpers**: :meth:`~FakeLockBoard.pulses`,
  :meth:`~FakeLockBoard.assert_pulsed`, :meth:`~FakeLockBoard.assert_not_pulsed`;
* a **connected door** (:class:`FakeDoor`, in the spirit of gpiozero's
  ``MockConnectedPin``): the lock output is wired to a latch; while the output is
  energised the latch is released and the door can be pulled open (by the test with
  :meth:`FakeDoor.pull`, or by a scripted person with ``opens_when_released=True``);
  the door, latch and occupancy inputs of the board reflect the door's state with the
  configured polarity.

Operation names used by history and faults: ``"pulse"`` (board-timed pulse),
``"set_output"``, ``"read_output"``, ``"all_off"``, ``"read_inputs"``, ``"describe"``,
``"read_values"``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from drivers.base import HARD_PULSE_CAP_S, BoardInfo, LockBoard, SensorBoard
from drivers.config import BoardParams, BusParams
from drivers.errors import (
    BoardRejected,
    BoardTimeout,
    BusError,
    DriverConfigError,
    DriverError,
    FrameError,
)
from drivers.modbus.maps import GenericIOMap

__all__ = [
    "FAULTS",
    "Call",
    "FakeBus",
    "FakeDoor",
    "FakeLockBoard",
    "FakeSensorBoard",
    "ManualClock",
    "PulseRecord",
    "create_board",
    "open_bus",
]

Clock = Callable[[], float]
FAULTS = ("timeout", "frame", "rejected", "bus", "bug", "ack_lost", "ack_garbled")
#: Faults that let the command act and then lose (or garble) its acknowledgement.
_AFTER_ACTING = ("ack_lost", "ack_garbled")


class ManualClock:
    """A clock that moves only when told: ``clock()`` reads it, ``advance(dt)`` moves it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, dt: float) -> None:
        if dt < 0:
            raise ValueError("time does not go back")
        self.now += dt


@dataclass(frozen=True, slots=True)
class Call:
    """One hook call: when, which operation, its arguments, and ``"ok"`` or the fault."""

    at: float
    op: str
    args: tuple[Any, ...]
    outcome: str


@dataclass(frozen=True, slots=True)
class PulseRecord:
    """A pulse the board accepted: channel, duration, start, and who timed it."""

    channel: int
    duration_s: float
    at: float
    timed_by: str

    @property
    def ends_at(self) -> float:
        return self.at + self.duration_s


@dataclass(slots=True)
class _Fault:
    kind: str
    op: str | None
    remaining: int | None  # None = persistent
    exception_code: int


class _FakeCore:
    """History and fault injection shared by the fake boards."""

    bus: str
    address: int
    _clock: Clock

    def _init_core(self) -> None:
        self.history: list[Call] = []
        self._faults: list[_Fault] = []

    def inject(
        self,
        fault: str,
        *,
        op: str | None = None,
        times: int = 1,
        persistent: bool = False,
        exception_code: int = 4,
    ) -> None:
        """Make the next ``times`` calls of ``op`` (any operation when None) fail with
        ``fault``, or every call until :meth:`clear_faults` when ``persistent``."""
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}, got {fault!r}")
        if times < 1:
            raise ValueError("times must be >= 1")
        self._faults.append(_Fault(fault, op, None if persistent else times, exception_code))

    def clear_faults(self) -> None:
        self._faults.clear()

    def calls(self, op: str | None = None) -> list[Call]:
        return [c for c in self.history if op is None or c.op == op]

    def _enter(self, op: str, *args: Any) -> DriverError | None:
        """Record the call; raise the injected fault if one applies, or return it when
        it strikes after the command acted (the hook raises it once it has acted)."""
        now = self._clock()
        for fault in self._faults:
            if fault.op is not None and fault.op != op:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
            self.history.append(Call(now, op, args, fault.kind))
            if fault.kind in _AFTER_ACTING:
                return self._error(fault, op)
            if fault.kind == "bug":
                raise RuntimeError(f"injected bug on {op}")
            raise self._error(fault, op)
        self.history.append(Call(now, op, args, "ok"))
        return None

    def _error(self, fault: _Fault, op: str) -> DriverError:
        text = f"injected {fault.kind} on {op}"
        if fault.kind in ("timeout", "ack_lost"):
            return BoardTimeout(text, bus=self.bus, address=self.address)
        if fault.kind in ("frame", "ack_garbled"):
            return FrameError(text, bus=self.bus, address=self.address)
        if fault.kind == "rejected":
            return BoardRejected(
                text, bus=self.bus, address=self.address, exception_code=fault.exception_code
            )
        return BusError(text, bus=self.bus)


class FakeLockBoard(_FakeCore, LockBoard):
    """An in-memory lock board. ``board_times_pulse`` chooses which pulse path of
    :meth:`~drivers.base.LockBoard.pulse` is exercised (board-timed by default)."""

    def __init__(
        self,
        *,
        bus: str = "fake",
        address: int = 1,
        outputs: int = 8,
        inputs: int = 8,
        board_times_pulse: bool = True,
        pulse_resolution_s: float = 0.1,
        max_pulse_s: float = HARD_PULSE_CAP_S,
        profile: str = "fake",
        firmware: str | None = "fake-1.0",
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(
            bus=bus,
            address=address,
            outputs=outputs,
            inputs=inputs,
            profile=profile,
            max_pulse_s=max_pulse_s,
            clock=clock,
        )
        self._init_core()
        self.board_times_pulse = board_times_pulse
        self.pulse_resolution_s = pulse_resolution_s
        self.firmware = firmware
        self._levels = [False] * inputs
        self._held_on = [False] * outputs  # switched by set_output
        self._timed_until = [float("-inf")] * outputs  # board-timed pulse end
        self._pulses: list[PulseRecord] = []
        self._on_since: dict[int, float] = {}
        self._doors: list[FakeDoor] = []

    # -- test-side API -------------------------------------------------------------------

    def set_input(self, channel: int, level: bool) -> None:
        """Set the raw level of an input not driven by a connected door."""
        self._levels[channel] = level

    def energised(self, channel: int) -> bool:
        """Whether output ``channel`` is energised now (by the injected clock)."""
        return self._held_on[channel] or self._clock() < self._timed_until[channel]

    def pulses(self, channel: int | None = None) -> list[PulseRecord]:
        """Pulses accepted so far (daemon-timed ones once switched off)."""
        return [p for p in self._pulses if channel is None or p.channel == channel]

    def assert_pulsed(
        self, channel: int, *, times: int | None = None, duration_s: float | None = None
    ) -> None:
        found = self.pulses(channel)
        if not found:
            raise AssertionError(f"{self.name}: channel {channel} was never pulsed; "
                                 f"pulses: {self._pulses}")
        if times is not None and len(found) != times:
            raise AssertionError(f"{self.name}: channel {channel} pulsed {len(found)} times, "
                                 f"expected {times}")
        if duration_s is not None and abs(found[-1].duration_s - duration_s) > 1e-9:
            raise AssertionError(f"{self.name}: last pulse of channel {channel} lasted "
                                 f"{found[-1].duration_s}s, expected {duration_s}s")

    def assert_not_pulsed(self, channel: int | None = None) -> None:
        found = self.pulses(channel)
        if found:
            raise AssertionError(f"{self.name}: unexpected pulses {found}")

    def connect_door(
        self,
        lock_channel: int,
        *,
        door_input: int | None = None,
        latch_input: int | None = None,
        occupancy_input: int | None = None,
        door_active_high: bool = True,
        latch_active_high: bool = True,
        occupancy_active_high: bool = True,
        opens_when_released: bool = False,
    ) -> FakeDoor:
        """Wire a door to output ``lock_channel`` and (optionally) to three inputs."""
        self._check_output(lock_channel)
        for ch in (door_input, latch_input, occupancy_input):
            if ch is not None and not 0 <= ch < self.inputs:
                raise DriverConfigError(f"{self.name}: input {ch} outside 0..{self.inputs - 1}")
        door = FakeDoor(
            self, lock_channel, door_input, latch_input, occupancy_input,
            door_active_high, latch_active_high, occupancy_active_high, opens_when_released,
        )
        self._doors.append(door)
        return door

    # -- hooks ---------------------------------------------------------------------------

    async def _pulse_timed(self, channel: int, duration_s: float) -> None:
        after = self._enter("pulse", channel, duration_s)
        now = self._clock()
        self._timed_until[channel] = now + duration_s
        self._pulses.append(PulseRecord(channel, duration_s, now, "board"))
        self._notify()
        if after is not None:
            raise after

    async def _set_output(self, channel: int, on: bool) -> None:
        after = self._enter("set_output", channel, on)
        now = self._clock()
        if on and not self._held_on[channel]:
            self._on_since[channel] = now
        elif not on and self._held_on[channel]:
            start = self._on_since.pop(channel, now)
            self._pulses.append(PulseRecord(channel, now - start, start, "driver"))
        self._held_on[channel] = on
        self._notify()
        if after is not None:
            raise after

    async def _read_output(self, channel: int) -> bool:
        after = self._enter("read_output", channel)
        if after is not None:
            raise after
        return self.energised(channel)

    async def _all_off(self) -> None:
        after = self._enter("all_off")
        now = self._clock()
        for ch in range(self.outputs):
            if self._held_on[ch]:
                start = self._on_since.pop(ch, now)
                self._pulses.append(PulseRecord(ch, now - start, start, "driver"))
            self._held_on[ch] = False
            self._timed_until[ch] = float("-inf")
        if after is not None:
            raise after

    async def _read_inputs(self) -> tuple[bool, ...]:
        after = self._enter("read_inputs")
        self._notify()
        levels = list(self._levels)
        for door in self._doors:
            door._drive(levels)
        if after is not None:
            raise after
        return tuple(levels)

    async def _describe(self) -> BoardInfo:
        after = self._enter("describe")
        if after is not None:
            raise after
        return BoardInfo(
            self.bus, self.address, self.profile, self.outputs, self.inputs,
            self.board_times_pulse, firmware=self.firmware,
        )

    def _notify(self) -> None:
        for door in self._doors:
            door._update()


@dataclass
class FakeDoor:
    """A door wired to a :class:`FakeLockBoard`: see the module docstring.

    ``is_open``, ``occupied`` and ``released`` are the physical truth; the board's inputs
    show them through the polarity settings. A door can be pulled open only while its
    latch is released (the lock output energised); once open it stays open until
    :meth:`close`.
    """

    board: FakeLockBoard
    lock_channel: int
    door_input: int | None = None
    latch_input: int | None = None
    occupancy_input: int | None = None
    door_active_high: bool = True
    latch_active_high: bool = True
    occupancy_active_high: bool = True
    opens_when_released: bool = False
    is_open: bool = False
    occupied: bool = False
    opened_at: list[float] = field(default_factory=list)

    @property
    def released(self) -> bool:
        return self.board.energised(self.lock_channel)

    def pull(self) -> bool:
        """A person pulls the handle: the door opens if the latch is released now."""
        if self.released and not self.is_open:
            self.is_open = True
            self.opened_at.append(self.board._clock())
        return self.is_open

    def force_open(self) -> None:
        """The door opens without an unlock (forced, or a latch that did not hold)."""
        if not self.is_open:
            self.is_open = True
            self.opened_at.append(self.board._clock())

    def close(self) -> None:
        self.is_open = False

    def _update(self) -> None:
        if self.opens_when_released:
            self.pull()

    def _drive(self, levels: list[bool]) -> None:
        if self.door_input is not None:
            levels[self.door_input] = self.is_open == self.door_active_high
        if self.latch_input is not None:
            levels[self.latch_input] = self.released == self.latch_active_high
        if self.occupancy_input is not None:
            levels[self.occupancy_input] = self.occupied == self.occupancy_active_high


class FakeSensorBoard(_FakeCore, SensorBoard):
    """An in-memory sensor board; set values with :meth:`set_value` (``None`` = invalid)."""

    def __init__(
        self,
        *,
        bus: str = "fake",
        address: int = 10,
        channels: int = 1,
        values: tuple[float | None, ...] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(
            bus=bus, address=address, channels=channels, profile="fake_sensor", clock=clock
        )
        self._init_core()
        self._values: list[float | None] = list(values) if values else [20.0] * channels
        if len(self._values) != channels:
            raise DriverConfigError(
                f"{self.name}: {len(self._values)} values for {channels} channels"
            )

    def set_value(self, channel: int, value: float | None) -> None:
        self._values[channel] = value

    async def _read_values(self) -> tuple[float | None, ...]:
        after = self._enter("read_values")
        if after is not None:
            raise after
        return tuple(self._values)


# -- backend interface (drivers.registry) ---------------------------------------------


class FakeBus:
    """A named bus holding fake boards by address (``bus.boards[address]``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.boards: dict[int, FakeLockBoard | FakeSensorBoard] = {}
        self.connected = False
        self.closed = False

    async def connect(self) -> None:
        self.connected = True

    async def close(self) -> None:
        self.connected = False
        self.closed = True


def open_bus(cfg: BusParams | Mapping[str, Any]) -> FakeBus:
    """A :class:`FakeBus` named after the bus."""
    p = cfg if isinstance(cfg, BusParams) else BusParams.from_table(cfg)
    return FakeBus(p.name)


def create_board(
    bus: FakeBus, cfg: BoardParams | Mapping[str, Any], *, clock: Clock = time.monotonic
) -> FakeLockBoard | FakeSensorBoard:
    """A fake board for a board's settings: a sensor board for the ``temperature_probe``
    profile, a lock board otherwise (board-timed pulse unless the profile is
    ``generic_io`` with a daemon-timed pulse)."""
    p = cfg if isinstance(cfg, BoardParams) else BoardParams.from_table(cfg)
    board: FakeLockBoard | FakeSensorBoard
    if p.profile == "temperature_probe":
        board = FakeSensorBoard(
            bus=bus.name, address=p.address, channels=p.channels or 1, clock=clock
        )
    else:
        pulse_kind = (p.register_map.pulse.kind if isinstance(p.register_map, GenericIOMap)
                      else "daemon")
        board = FakeLockBoard(
            bus=bus.name,
            address=p.address,
            outputs=8 if p.outputs is None else p.outputs,
            inputs=(0 if p.profile == "waveshare_relay" else 8) if p.inputs is None else p.inputs,
            board_times_pulse=p.profile != "generic_io" or pulse_kind != "daemon",
            max_pulse_s=p.max_pulse_s,
            profile=p.profile,
            clock=clock,
        )
    bus.boards[p.address] = board
    return board
