"""Board backends chosen by name, imported lazily.

The composition root (daemon wiring, the CLI) names a backend from the config and gets
a module that provides two factories:

``open_bus(bus_params) -> bus``
    A bus object for a bus's typed settings (:class:`drivers.config.BusParams`; a plain
    ``[[buses]]`` table is read by ``BusParams.from_table``), not yet open; it has ``name``,
    ``async connect()`` and ``async close()`` (idempotent) and is an async context
    manager where the backend allows. For ``"modbus"`` it is a
    :class:`drivers.modbus.line.ModbusLine`.
``create_board(bus, board_params, *, clock=time.monotonic) -> LockBoard | SensorBoard``
    A board for a board's typed settings (:class:`drivers.config.BoardParams`) on that
    bus.

Nothing here imports a backend until it is asked for, so a missing hardware library is
a clear :class:`~drivers.errors.BackendUnavailable` naming the backend, not an import
crash at start-up::

    backend = load_backend("modbus")
    line = backend.open_bus({"name": "rs485-0", "kind": "rtu", "port": "/dev/ttyLOCKER0"})
    board = backend.create_board(line, {"name": "locks-a", "address": 1,
                                        "profile": "waveshare_relay", "outputs": 16,
                                        "inputs": 16})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

from drivers.base import LockBoard, SensorBoard
from drivers.errors import BackendUnavailable

if TYPE_CHECKING:  # the registry imports no backend, nor its maps, until asked
    from drivers.config import BoardParams, BusParams

__all__ = ["BACKENDS", "Backend", "load_backend"]

#: Backend name -> module implementing ``open_bus`` and ``create_board``.
BACKENDS: dict[str, str] = {
    "modbus": "drivers.modbus.boards",
    "fake": "drivers.fake",
}


class Backend(Protocol):
    """What :func:`load_backend` returns (a module, seen through this protocol)."""

    def open_bus(self, cfg: BusParams | Mapping[str, Any]) -> Any: ...

    def create_board(
        self, bus: Any, cfg: BoardParams | Mapping[str, Any], *, clock: Callable[[], float] = ...
    ) -> LockBoard | SensorBoard: ...


def load_backend(name: str) -> Backend:
    """Import the backend called ``name``. Raises BackendUnavailable for an unknown name
    or when the backend's library cannot be imported (the cause is chained)."""
    try:
        module_name = BACKENDS[name]
    except KeyError:
        raise BackendUnavailable(
            f"unknown board backend {name!r}; known: {', '.join(sorted(BACKENDS))}"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if isinstance(exc, BackendUnavailable):
            raise
        raise BackendUnavailable(f"board backend {name!r} cannot be loaded: {exc}") from exc
    for attr in ("open_bus", "create_board"):
        if not callable(getattr(module, attr, None)):
            raise BackendUnavailable(f"board backend {name!r} ({module_name}) lacks {attr}()")
    return cast(Backend, module)
