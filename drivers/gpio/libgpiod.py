"""GPIO backend on libgpiod v2 (the ``gpiod`` 2.x Python bindings): any Pi, including
the Pi 5 (whose GPIO sits behind the RP1 chip, where RPi.GPIO does not work).

Field notes:

- One line request per line (``gpiod.request_lines(chip, consumer=..., config={offset:
  LineSettings(...)})``), so each line is released on its own and a busy line (EBUSY:
  another process holds it) names the line that failed.
- The pin is the *line offset* on ``chip``. On a Pi 1-4 ``/dev/gpiochip0`` offsets are the
  BCM numbers; on a Pi 5 the header is ``/dev/gpiochip4`` on older kernels and
  ``/dev/gpiochip0`` on newer ones (check with ``gpioinfo``). The chip is configuration.
- Inputs use ``Edge.BOTH`` with ``debounce_period`` set to the line's debounce: the kernel
  debounces (in hardware where the chip can, in software in gpiolib-cdev otherwise), so
  the backend is ``hardware_debounce`` and each edge event's type is the settled level.
- Polarity is applied by the base class, never by the kernel: settings use
  ``active_low=False`` so ``RISING_EDGE`` always means the raw level went high.
- Events are read on the loop: each request's file descriptor is registered with
  ``loop.add_reader``; when it is readable ``read_edge_events()`` returns without blocking.
  No thread to join.

The library is imported in the constructor through ``importer`` (default
:func:`importlib.import_module`), so tests inject a fake module without patching.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from types import ModuleType
from typing import Any

from drivers.errors import BackendUnavailable, BusError, ChannelError, DriverConfigError
from drivers.gpio.base import GpioBackend, InputSpec, Notify, OutputSpec

__all__ = ["GpiodGpio"]

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Request:
    offset: int
    request: Any
    fd: int | None = None
    notify: Notify | None = None


class GpiodGpio(GpioBackend):
    """GPIO through libgpiod v2 line requests on one chip."""

    name = "gpiod"
    hardware_debounce = True

    def __init__(
        self,
        *,
        chip: str = "/dev/gpiochip0",
        consumer: str = "locker-controller",
        importer: Callable[[str], ModuleType] = importlib.import_module,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock=clock)
        if not chip:
            raise DriverConfigError("gpio backend 'gpiod': chip must be a device path")
        self.chip = chip
        self.consumer = consumer
        try:
            self._gpiod: Any = importer("gpiod")
        except ImportError as exc:
            raise BackendUnavailable(
                "gpio backend 'gpiod' needs the libgpiod v2 Python bindings "
                "(pip install 'locker-controller[gpiod]', or apt install python3-libgpiod "
                f"from a release with libgpiod >= 2). Import failed: {exc}"
            ) from exc
        version = str(getattr(self._gpiod, "__version__", "2"))
        if not hasattr(self._gpiod, "request_lines"):
            raise BackendUnavailable(
                f"gpio backend 'gpiod' needs gpiod >= 2 (request_lines); found {version}, "
                "the 1.x API is not supported"
            )
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()

    def _request(self, spec_name: str, offset: int, settings: Any, **kwargs: Any) -> Any:
        try:
            return self._gpiod.request_lines(
                self.chip, consumer=self.consumer, config={offset: settings}, **kwargs
            )
        except FileNotFoundError as exc:
            raise BusError(f"gpio chip {self.chip} does not exist", bus=self.chip) from exc
        except PermissionError as exc:
            raise BusError(
                f"no permission on {self.chip} (is the user in group 'gpio'?)", bus=self.chip
            ) from exc
        except ValueError as exc:
            raise ChannelError(
                f"{self.chip}: line {offset} for {spec_name!r}: {exc}",
                board=self.chip,
                channel=offset,
            ) from exc
        except OSError as exc:
            raise BusError(
                f"{self.chip}: cannot request line {offset} for {spec_name!r}: {exc}", bus=self.chip
            ) from exc

    def _value(self, level: bool) -> Any:
        value = self._gpiod.line.Value
        return value.ACTIVE if level else value.INACTIVE

    async def _open_input(self, spec: InputSpec, notify: Notify) -> _Request:
        line = self._gpiod.line
        bias = {"up": line.Bias.PULL_UP, "down": line.Bias.PULL_DOWN, "none": line.Bias.DISABLED}
        settings = self._gpiod.LineSettings(
            direction=line.Direction.INPUT,
            edge_detection=line.Edge.BOTH,
            bias=bias[spec.pull],
            active_low=False,
            debounce_period=timedelta(seconds=spec.debounce_s),
        )
        req = _Request(spec.pin, self._request(spec.name, spec.pin, settings), notify=notify)
        try:
            req.fd = int(req.request.fd)
            loop = self._loop or asyncio.get_running_loop()
            loop.add_reader(req.fd, self._drain, req)
        except Exception:
            req.request.release()
            raise
        return req

    def _drain(self, req: _Request) -> None:
        """Readable request fd: read every pending edge event and report its level."""
        rising = self._gpiod.EdgeEvent.Type.RISING_EDGE
        try:
            events = req.request.read_edge_events()
        except OSError:
            _log.exception("gpiod: reading edge events of line %d failed", req.offset)
            if self._loop is not None and req.fd is not None:
                self._loop.remove_reader(req.fd)
            return
        for event in events:
            if req.notify is not None:
                req.notify(event.event_type == rising)

    async def _read(self, handle: _Request) -> bool:
        try:
            value = handle.request.get_value(handle.offset)
        except OSError as exc:
            raise BusError(
                f"{self.chip}: read of line {handle.offset} failed", bus=self.chip
            ) from exc
        return bool(value == self._gpiod.line.Value.ACTIVE)

    async def _open_output(self, spec: OutputSpec, raw_initial: bool) -> _Request:
        line = self._gpiod.line
        settings = self._gpiod.LineSettings(
            direction=line.Direction.OUTPUT, active_low=False, output_value=self._value(raw_initial)
        )
        return _Request(spec.pin, self._request(spec.name, spec.pin, settings))

    async def _write(self, handle: _Request, raw_level: bool) -> None:
        try:
            handle.request.set_value(handle.offset, self._value(raw_level))
        except OSError as exc:
            raise BusError(
                f"{self.chip}: write of line {handle.offset} failed", bus=self.chip
            ) from exc

    async def _release(self, handle: _Request) -> None:
        handle.notify = None
        if handle.fd is not None and self._loop is not None:
            self._loop.remove_reader(handle.fd)
        try:
            handle.request.release()
        except Exception as exc:  # an already released request raises its own error type
            _log.debug("gpiod: release of line %d: %s", handle.offset, exc)
