"""GPIO lines for lane I/O: one small abstraction, backends chosen by name.

The composition root opens a backend by the name in the config and passes its options
as a mapping (the TOML table, as read)::

    from drivers.gpio import InputSpec, OutputSpec, open_backend

    gpio = open_backend("gpiod", {"chip": "/dev/gpiochip0"})
    async with gpio:
        button = await gpio.open_input(
            InputSpec("help_button", pin=17, pull="up", active_low=True, debounce_s=0.03))
        light = await gpio.open_output(OutputSpec("light_green", pin=22))

========== ============================== ===========================================
name       class                          options
========== ============================== ===========================================
mock       drivers.gpio.mock.MockGpio     ``pins``
simulator  drivers.gpio.simulator.        ``host``, ``port``, ``timeout_s``
           SimulatorGpio                  (a ``locker-sim`` lane I/O server)
rpigpio    drivers.gpio.rpigpio.RPiGpio   (none) Pi 1-4, BCM numbering
gpiod      drivers.gpio.libgpiod.         ``chip``, ``consumer``; libgpiod v2, any Pi
           GpiodGpio                      including the Pi 5
========== ============================== ===========================================

Backends are imported only when asked for, so a Pi without ``gpiod`` installed runs
``rpigpio`` and a laptop runs ``mock`` and ``simulator``. A missing library or an unknown
name is :class:`~drivers.errors.BackendUnavailable`; an unknown option is
:class:`~drivers.errors.DriverConfigError` naming the option.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from drivers.errors import BackendUnavailable, DriverConfigError
from drivers.gpio.base import (
    Edge,
    EdgeStream,
    GpioBackend,
    InputLine,
    InputSpec,
    OutputLine,
    OutputSpec,
    Pull,
)

__all__ = [
    "BACKENDS",
    "Edge",
    "EdgeStream",
    "GpioBackend",
    "InputLine",
    "InputSpec",
    "OutputLine",
    "OutputSpec",
    "Pull",
    "backend_class",
    "open_backend",
]

#: Backend name -> (module, class). Modules are imported lazily by :func:`backend_class`.
BACKENDS: dict[str, tuple[str, str]] = {
    "mock": ("drivers.gpio.mock", "MockGpio"),
    "simulator": ("drivers.gpio.simulator", "SimulatorGpio"),
    "rpigpio": ("drivers.gpio.rpigpio", "RPiGpio"),
    "gpiod": ("drivers.gpio.libgpiod", "GpiodGpio"),
}


def backend_class(name: str) -> type[GpioBackend]:
    """The backend class registered as ``name``, imported now."""
    try:
        module_name, class_name = BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise BackendUnavailable(f"unknown gpio backend {name!r} (known: {known})") from None
    module = importlib.import_module(module_name)
    cls: type[GpioBackend] = getattr(module, class_name)
    return cls


def open_backend(name: str, options: Mapping[str, Any] | None = None, **extra: Any) -> GpioBackend:
    """Build the backend ``name`` with ``options`` (config) and ``extra`` (injected
    collaborators such as ``clock`` or ``importer``). Nothing is touched until ``start()``
    or the first ``open_*``, except that a vendor library is imported here so that a
    missing one fails at start-up with :class:`~drivers.errors.BackendUnavailable`."""
    cls = backend_class(name)
    kwargs = {**dict(options or {}), **extra}
    params = inspect.signature(cls.__init__).parameters
    accepted = {p for p in params if p != "self"}
    for key in kwargs:
        if key not in accepted:
            known = ", ".join(sorted(accepted)) or "none"
            raise DriverConfigError(f"gpio backend {name!r} has no option {key!r} (known: {known})")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise DriverConfigError(f"gpio backend {name!r}: {exc}") from exc
