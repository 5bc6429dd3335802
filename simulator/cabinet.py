"""The simulated cabinet as one object: world, boards, buses, transports, control channel.

::

    async with SimCabinet.from_file("deploy/sim-cabinet.toml", emulate_timing=True) as cab:
        port = cab.serial_path("rs485-0")      # pty slave: open it like a serial port
        cab.tcp_port("rs485-0")                # the same bus as Modbus TCP on 127.0.0.1
        cab.world.door("A01").pull()           # act as a person
        cab.faults.set("silent", board="locks-a")
        cab.ground_truth.events("door_opened", compartment="A01")

Every bus is served as Modbus RTU on its own pty (a thread per line, for timing; see
:mod:`simulator.rtu`) and as Modbus TCP on a loopback port (:mod:`simulator.tcp`). A bus
of kind ``rtu`` gets a symlink at its configured ``port`` path pointing at the pty slave
(or, with ``link_dir``, at ``link_dir/<basename of port>``), so the daemon opens the path
its config names; a bus of kind ``tcp`` is served on its configured ``tcp_port``.
Symlinks are removed on close if they still point at our pty.

Resources open in order on :meth:`start` and close in reverse on :meth:`close`, which is
safe twice; a failure half-way closes what was opened.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from simulator.boards import make_board
from simulator.bus import BusStats, SimBus
from simulator.config import CabinetConfig, load_config
from simulator.errors import SimError, UnknownTarget
from simulator.rtu import RtuPtyServer
from simulator.tcp import ModbusTcpGateway
from simulator.world import Faults, GroundTruth, World

__all__ = ["SimCabinet"]

log = logging.getLogger(__name__)


class SimCabinet:
    """A running simulated cabinet. See the module docstring.

    :param emulate_timing: replies leave when they would on a real line at the bus's
        baud rate (``False``: as fast as possible).
    :param link_dir: put the serial symlinks in this directory instead of at the
        configured paths. With ``make_links=False`` no symlink is made at all.
    :param control_port: serve the JSON-lines control channel on this loopback port
        (0: any free port); ``None``: no control channel.
    :param clock: the world's clock (``time.monotonic``, the daemon's clock).
    """

    def __init__(
        self,
        config: CabinetConfig,
        *,
        emulate_timing: bool = True,
        link_dir: str | Path | None = None,
        make_links: bool = True,
        control_port: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.emulate_timing = emulate_timing
        self.link_dir = Path(link_dir) if link_dir is not None else None
        self.make_links = make_links
        self.world = World(config, clock=clock)
        self.buses: dict[str, SimBus] = {}
        for bus_config in config.buses:
            boards = [make_board(b, self.world) for b in config.boards if b.bus == bus_config.name]
            self.buses[bus_config.name] = SimBus(bus_config, boards, self.world.fault_book)
        self._rtu: dict[str, RtuPtyServer] = {}
        self._tcp: dict[str, ModbusTcpGateway] = {}
        self._links: dict[str, Path] = {}
        self._requested_control_port = control_port
        self._control: Any = None
        self._started = False
        self._closed = False

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> SimCabinet:
        """Read the cabinet config (hardware parts and ``[simulator]``) and build the
        cabinet; keyword arguments as for the constructor."""
        return cls(load_config(path), **kwargs)

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> SimCabinet:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> SimCabinet:
        """Open every pty, symlink, TCP port and the control channel."""
        if self._started:
            return self
        self._started = True
        try:
            for name, bus in self.buses.items():
                rtu = RtuPtyServer(bus, emulate_timing=self.emulate_timing)
                self._rtu[name] = rtu
                rtu.start()
                self._link(name, rtu.slave_path)
                tcp_port = bus.config.tcp_port if bus.config.kind == "tcp" else 0
                gateway = ModbusTcpGateway(
                    bus, port=tcp_port or 0, emulate_timing=self.emulate_timing
                )
                self._tcp[name] = gateway
                try:
                    await gateway.start()
                except OSError as exc:
                    raise SimError(
                        f"bus {name!r}: cannot listen on 127.0.0.1:{tcp_port}: "
                        f"{exc.strerror or exc}",
                        field=f"buses.{name}.tcp_port",
                    ) from exc
            if self._requested_control_port is not None:
                from simulator.control import ControlServer

                self._control = ControlServer(self, port=self._requested_control_port)
                await self._control.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        """Stop everything, join the line threads, remove our symlinks. Safe twice."""
        if self._closed:
            return
        self._closed = True
        if self._control is not None:
            await self._control.close()
        for gateway in self._tcp.values():
            await gateway.close()
        for rtu in self._rtu.values():
            rtu.close()
        for name in list(self._links):
            self._unlink(name)

    def _link(self, bus: str, target: str) -> None:
        port = self.buses[bus].config.port
        if not self.make_links or port is None:
            return
        path = self.link_dir / Path(port).name if self.link_dir is not None else Path(port)
        try:
            if path.is_symlink():
                path.unlink()  # a stale link from an earlier run
            elif path.exists():
                raise SimError(
                    f"bus {bus!r}: {path} exists and is not a symlink", field=f"buses.{bus}.port"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(target)
        except OSError as exc:
            if self.link_dir is not None:
                raise SimError(f"bus {bus!r}: cannot link {path}: {exc.strerror or exc}") from exc
            log.warning(
                "bus %s: cannot link %s -> %s (%s); use --link-dir", bus, path, target, exc.strerror
            )
            return
        self._links[bus] = path

    def _unlink(self, bus: str) -> None:
        path = self._links.pop(bus)
        with contextlib.suppress(OSError):
            if path.is_symlink() and os.readlink(path) == self._rtu[bus].slave_path:
                path.unlink()

    # -- where things are --------------------------------------------------------------

    def _bus(self, name: str) -> SimBus:
        if name not in self.buses:
            raise UnknownTarget("bus", name)
        return self.buses[name]

    def serial_path(self, bus: str) -> str:
        """The pty slave path serving ``bus`` as Modbus RTU."""
        self._bus(bus)
        if bus not in self._rtu:
            raise SimError("the cabinet is not started")
        return self._rtu[bus].slave_path

    def link_path(self, bus: str) -> str | None:
        """The symlink to :meth:`serial_path` (the configured port path), if made."""
        self._bus(bus)
        path = self._links.get(bus)
        return str(path) if path is not None else None

    def tcp_port(self, bus: str) -> int:
        """The loopback TCP port serving ``bus`` as Modbus TCP."""
        self._bus(bus)
        if bus not in self._tcp:
            raise SimError("the cabinet is not started")
        return self._tcp[bus].port

    @property
    def control_port(self) -> int | None:
        """The loopback port of the JSON-lines control channel, if served."""
        return self._control.port if self._control is not None else None

    def stats(self, bus: str) -> BusStats:
        return self._bus(bus).stats

    def endpoints(self) -> list[dict[str, Any]]:
        """Where each bus is served, as plain data."""
        out = []
        for name, bus in self.buses.items():
            out.append(
                {
                    "bus": name,
                    "kind": bus.config.kind,
                    "baudrate": bus.baudrate,
                    "serial_path": self._rtu[name].slave_path if name in self._rtu else None,
                    "link": self.link_path(name),
                    "tcp_port": self._tcp[name].port if name in self._tcp else None,
                    "boards": [
                        {"name": b.name, "address": b.unit, "profile": b.config.profile}
                        for b in bus.boards
                    ],
                }
            )
        return out

    # -- the world ---------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self.world.faults

    @property
    def ground_truth(self) -> GroundTruth:
        return self.world.truth
