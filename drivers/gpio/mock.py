"""The mock GPIO backend: a first-class fake with a history, fault injection and assertions.

In the spirit of gpiozero's ``MockPin``/``MockConnectedPin``. Each pin number has a
:class:`MockPin` that exists before any line is opened on it, so a test can prepare the
electrical world, open lines through the ordinary :class:`~drivers.gpio.base.GpioBackend`
API, and then act on the pins::

    gpio = MockGpio(clock=fake_clock)
    button = gpio.pin(17)                       # the wire, seen from the test
    line = await gpio.open_input(InputSpec("help_button", 17, pull="up", active_low=True))
    button.bounce(False)                        # press, with contact bounce
    edge = await anext(stream)                  # one settled edge: value True

- ``pin.drive(level)`` / ``drive_high()`` / ``drive_low()`` act as the outside world on an
  input; ``pin.bounce(level, transitions=5)`` toggles it ``transitions`` times ending at
  ``level``, all at the same instant (as a bouncing contact looks to a slow loop).
- An input never driven floats to its pull: ``pull="up"`` reads high, ``"down"`` low.
- ``gpio.connect(out_pin, in_pin)`` wires an output to an input: driving the output
  drives the input ("the lane light relay feeds back on a sense input").
- ``pin.history`` is the time-stamped list of level changes (injected clock), with
  ``assert_levels`` and ``clear_history``; ``pin.fail = BusError(...)`` makes every read
  and write of that pin raise (a dead GPIO expander).
- Edges are reported through the same ``notify`` callable as real backends, so the
  debounce and loop hand-off under test are the production ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from drivers.errors import ChannelError, DriverConfigError
from drivers.gpio.base import GpioBackend, InputSpec, Notify, OutputSpec

__all__ = ["MockGpio", "MockPin", "PinChange"]

PinMode = Literal["unused", "input", "output"]


@dataclass(frozen=True, slots=True)
class PinChange:
    """The raw level of a pin changed at ``at`` (the backend's clock)."""

    at: float
    level: bool


class MockPin:
    """One simulated pin. Obtain with :meth:`MockGpio.pin`."""

    def __init__(self, gpio: MockGpio, number: int) -> None:
        self._gpio = gpio
        self.number = number
        self.mode: PinMode = "unused"
        self.pull = "none"
        self.level = False
        self._driven = False
        self._notify: Notify | None = None
        self.connected_to: MockPin | None = None
        #: Set to an exception to make reads and writes of this pin raise it.
        self.fail: Exception | None = None
        self.history: list[PinChange] = [PinChange(gpio.clock(), False)]

    # -- the outside world --------------------------------------------------------------

    def drive(self, level: bool) -> None:
        """Force the level of an input from outside (a contact closing, a sensor)."""
        if self.mode == "output":
            raise DriverConfigError(f"mock pin {self.number} is an output; cannot drive it")
        self._driven = True
        self._change(bool(level))

    def drive_high(self) -> None:
        self.drive(True)

    def drive_low(self) -> None:
        self.drive(False)

    def release(self) -> None:
        """Stop driving: the pin floats back to its pull."""
        self._driven = False
        self._float()

    def bounce(self, level: bool, transitions: int = 5) -> None:
        """Toggle ``transitions`` times (odd counts are rounded up) and end at ``level``."""
        if transitions < 1 or transitions > 1000:
            raise ValueError("transitions must be in 1..1000")
        steps = transitions if transitions % 2 == 1 else transitions + 1
        current = not level
        for _ in range(steps):
            current = not current
            self.drive(current)
        if self.level != level:
            self.drive(level)

    # -- assertions ---------------------------------------------------------------------

    @property
    def levels(self) -> list[bool]:
        """The levels in ``history``, oldest first."""
        return [change.level for change in self.history]

    def assert_levels(self, expected: Sequence[bool]) -> None:
        """Assert that the pin went through exactly ``expected`` levels since the last
        :meth:`clear_history` (the first entry is the level at that moment)."""
        actual = self.levels
        if actual != [bool(x) for x in expected]:
            raise AssertionError(f"mock pin {self.number}: levels {actual} != {list(expected)}")

    def clear_history(self) -> None:
        self.history = [PinChange(self._gpio.clock(), self.level)]

    # -- backend side -------------------------------------------------------------------

    def _change(self, level: bool) -> None:
        if level == self.level:
            return
        self.level = level
        self.history.append(PinChange(self._gpio.clock(), level))
        if self.mode == "input" and self._notify is not None:
            self._notify(level)
        if self.mode == "output" and self.connected_to is not None:
            self.connected_to.drive(level)

    def _float(self) -> None:
        if self.mode == "input" and not self._driven and self.pull != "none":
            self._change(self.pull == "up")

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail


class MockGpio(GpioBackend):
    """GPIO backend with :class:`MockPin` pins ``0..pins-1``. See the module docstring."""

    name = "mock"

    def __init__(self, *, pins: int = 28, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock=clock)
        if not 1 <= pins <= 1024:
            raise DriverConfigError("mock gpio: pins must be in 1..1024")
        self.pin_count = pins
        self._pins_by_number: dict[int, MockPin] = {}

    def pin(self, number: int) -> MockPin:
        """The pin ``number``, created on first use."""
        if not 0 <= number < self.pin_count:
            raise ChannelError(
                f"mock gpio has pins 0..{self.pin_count - 1}, not {number}",
                board="mock",
                channel=number,
            )
        if number not in self._pins_by_number:
            self._pins_by_number[number] = MockPin(self, number)
        return self._pins_by_number[number]

    def connect(self, output_pin: int, input_pin: int) -> None:
        """Wire ``output_pin`` to ``input_pin``: the input follows the output from now on."""
        out, inp = self.pin(output_pin), self.pin(input_pin)
        out.connected_to = inp
        if out.mode == "output":
            inp.drive(out.level)

    # -- hooks --------------------------------------------------------------------------

    async def _open_input(self, spec: InputSpec, notify: Notify) -> MockPin:
        pin = self.pin(spec.pin)
        pin._check()
        pin.mode = "input"
        pin.pull = spec.pull
        pin._notify = notify
        pin._float()
        return pin

    async def _read(self, handle: MockPin) -> bool:
        handle._check()
        return handle.level

    async def _open_output(self, spec: OutputSpec, raw_initial: bool) -> MockPin:
        pin = self.pin(spec.pin)
        pin._check()
        pin.mode = "output"
        pin._driven = False
        pin._change(raw_initial)
        if pin.connected_to is not None:
            pin.connected_to.drive(raw_initial)
        return pin

    async def _write(self, handle: MockPin, raw_level: bool) -> None:
        handle._check()
        handle._change(raw_level)

    async def _release(self, handle: MockPin) -> None:
        handle._notify = None
        handle.mode = "unused"
