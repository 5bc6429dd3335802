"""GPIO backend on RPi.GPIO (Raspberry Pi 1 to 4; it does not work on a Pi 5).

Field notes:

- Numbering is BCM (``GPIO17``), never BOARD (physical header pins). If some other code in
  the process already chose BOARD, opening fails with a config error instead of silently
  driving the wrong pins.
- ``add_event_detect(pin, BOTH, callback, bouncetime)`` runs ``callback(pin)`` in a thread
  of RPi.GPIO. The callback reads the level there (``GPIO.input`` is a memory read) and
  hands it to the loop through ``notify``; nothing else runs in that thread.
- RPi.GPIO's ``bouncetime`` ignores edges for that many milliseconds after an accepted
  one, so the *last* edge of a bounce can be swallowed. We pass the line's debounce as
  ``bouncetime`` to spare the loop the edge storm, and the base class re-reads the level
  when the input settles, so a swallowed edge never leaves a stale value.
- ``GPIO.cleanup(pin)`` returns a pin to input: on close an output lamp goes dark,
  which is what we want.
- Importing RPi.GPIO on something that is not a Pi raises ``RuntimeError``; that becomes
  :class:`~drivers.errors.BackendUnavailable` like a missing package.

The library is imported in the constructor through ``importer`` (default
:func:`importlib.import_module`), so tests inject a fake module without patching.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from drivers.errors import BackendUnavailable, BusError, ChannelError, DriverConfigError
from drivers.gpio.base import GpioBackend, InputSpec, Notify, OutputSpec

__all__ = ["RPiGpio"]

#: BCM GPIO numbers present on the 40-pin header.
BCM_PINS = range(28)


@dataclass(slots=True)
class _Pin:
    number: int
    is_input: bool


class RPiGpio(GpioBackend):
    """GPIO through RPi.GPIO, BCM numbering."""

    name = "rpigpio"

    def __init__(
        self,
        *,
        importer: Callable[[str], ModuleType] = importlib.import_module,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock=clock)
        try:
            self._gpio: Any = importer("RPi.GPIO")
        except (ImportError, RuntimeError) as exc:
            raise BackendUnavailable(
                "gpio backend 'rpigpio' needs the RPi.GPIO package on a Raspberry Pi 1-4 "
                "(pip install 'locker-controller[rpi]'); on a Pi 5 use backend 'gpiod'. "
                f"Import failed: {exc}"
            ) from exc

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (RuntimeError, OSError) as exc:
            raise BusError(f"RPi.GPIO {what} failed: {exc}", bus="gpio") from exc
        except ValueError as exc:
            raise ChannelError(f"RPi.GPIO {what}: {exc}", board="gpio") from exc

    async def _start(self) -> None:
        gpio = self._gpio
        mode = self._call("getmode", gpio.getmode)
        if mode is not None and mode != gpio.BCM:
            raise DriverConfigError("RPi.GPIO is already in BOARD numbering; lane I/O uses BCM")
        self._call("setwarnings", gpio.setwarnings, False)
        if mode is None:
            self._call("setmode", gpio.setmode, gpio.BCM)

    def _check_pin(self, pin: int) -> None:
        if pin not in BCM_PINS:
            raise ChannelError(
                f"BCM GPIO {pin} is not on the header (0..{BCM_PINS[-1]})",
                board="gpio",
                channel=pin,
            )

    async def _open_input(self, spec: InputSpec, notify: Notify) -> _Pin:
        gpio = self._gpio
        self._check_pin(spec.pin)
        pull = {"up": gpio.PUD_UP, "down": gpio.PUD_DOWN, "none": gpio.PUD_OFF}[spec.pull]
        self._call("setup", gpio.setup, spec.pin, gpio.IN, pull_up_down=pull)

        def on_edge(channel: int) -> None:  # runs in RPi.GPIO's thread
            notify(bool(gpio.input(channel)))

        kwargs: dict[str, Any] = {"callback": on_edge}
        bounce_ms = round(spec.debounce_s * 1000)
        if bounce_ms > 0:
            kwargs["bouncetime"] = bounce_ms
        try:
            self._call("add_event_detect", gpio.add_event_detect, spec.pin, gpio.BOTH, **kwargs)
        except BusError:
            self._call("cleanup", gpio.cleanup, spec.pin)
            raise
        return _Pin(spec.pin, True)

    async def _read(self, handle: _Pin) -> bool:
        return bool(self._call("input", self._gpio.input, handle.number))

    async def _open_output(self, spec: OutputSpec, raw_initial: bool) -> _Pin:
        gpio = self._gpio
        self._check_pin(spec.pin)
        initial = gpio.HIGH if raw_initial else gpio.LOW
        self._call("setup", gpio.setup, spec.pin, gpio.OUT, initial=initial)
        return _Pin(spec.pin, False)

    async def _write(self, handle: _Pin, raw_level: bool) -> None:
        gpio = self._gpio
        self._call("output", gpio.output, handle.number, gpio.HIGH if raw_level else gpio.LOW)

    async def _release(self, handle: _Pin) -> None:
        gpio = self._gpio
        if handle.is_input:
            self._call("remove_event_detect", gpio.remove_event_detect, handle.number)
        self._call("cleanup", gpio.cleanup, handle.number)
