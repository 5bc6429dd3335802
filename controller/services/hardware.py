"""The cabinet's boards, opened from the settings through a backend chosen by name.

This is the only place in ``controller`` that names a board backend; the backend module
is imported lazily by :func:`drivers.registry.load_backend`, so a missing hardware
library is a clear error at start-up, not an import crash.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from controller.settings import Settings
from drivers.base import LockBoard, SensorBoard
from drivers.errors import DriverError
from drivers.registry import load_backend

__all__ = ["Hardware"]

log = logging.getLogger(__name__)

class Hardware:
    """Every bus and board of the cabinet. ``open()`` builds them (no I/O yet: lines open
    lazily), ``all_off()`` switches every output off board by board, ``close()`` releases
    them (idempotent)."""

    def __init__(
        self, settings: Settings, backend: str = "modbus",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.backend_name = backend
        self._clock = clock
        self.buses: dict[str, Any] = {}
        self.lock_boards: dict[str, LockBoard] = {}
        self.sensor_boards: dict[str, SensorBoard] = {}
        self.board_bus: dict[str, str] = {}
        self._closed = False

    def open(self) -> None:
        backend = load_backend(self.backend_name)
        for bus in self.settings.buses:
            self.buses[bus.name] = backend.open_bus(bus.to_driver())
        cap = self.settings.timing.max_pulse_s
        for board in self.settings.boards:
            built = backend.create_board(self.buses[board.bus], board.to_driver(cap),
                                         clock=self._clock)
            self.board_bus[board.name] = board.bus
            if isinstance(built, LockBoard):
                self.lock_boards[board.name] = built
            else:
                self.sensor_boards[board.name] = built

    def boards_on(self, bus: str) -> list[tuple[str, LockBoard]]:
        return [(n, b) for n, b in self.lock_boards.items() if self.board_bus[n] == bus]

    async def all_off(self) -> dict[str, str | None]:
        """Every output off, board by board: one dead board never stops the rest.
        Returns board name -> None (done) or the error text."""
        results: dict[str, str | None] = {}
        for name, board in self.lock_boards.items():
            if board.outputs == 0:
                continue
            try:
                await board.all_off()
                results[name] = None
            except DriverError as exc:
                results[name] = str(exc)
                log.error("outputs off failed", extra={"ctx": {"board": name, "error": str(exc)}})
        return results

    def bus_stats(self) -> list[dict[str, Any]]:
        """Counters of every bus, for telemetry."""
        out = []
        for name, bus in self.buses.items():
            stats = getattr(bus, "stats", None)
            if not callable(stats):
                continue
            snap = stats()
            transactions = int(getattr(snap, "transactions", 0))
            out.append({
                "name": name,
                "transactions": transactions,
                "errors": max(0, transactions - int(getattr(snap, "ok", transactions))),
                "timeouts": int(getattr(snap, "timeouts", 0)),
                "crc_errors": int(getattr(snap, "frame_errors", 0)),
                "retries": int(getattr(snap, "retries", 0)),
                "late_replies": int(getattr(snap, "late_replies", 0)),
                "degraded_units": [int(u) for u in getattr(snap, "degraded", ())],
                "last_error": (getattr(snap, "last_error", None) or None),
            })
        return out

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        boards: list[LockBoard | SensorBoard] = [*self.lock_boards.values(),
                                                  *self.sensor_boards.values()]
        for board in boards:
            try:
                await board.close()
            except DriverError:
                pass
        for bus in self.buses.values():
            try:
                await bus.close()
            except DriverError:
                pass
