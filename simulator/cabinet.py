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

The drive lane is served too when asked (``lane_port``, or ``[lane] backend =
"simulator"`` with ``options.port`` in the config): its lines (:class:`~simulator.lane.LaneWorld`)
over ``lane-io/1`` (:class:`~simulator.lane.LaneIOServer`) and, with ``scanner_link`` (or
``[lane.scanner] port``), a serial code scanner on a pty linked there
(:class:`~simulator.scanner.SimScanner`)::

    cab.lane.vehicle_arrives(); cab.lane.press_button()
    cab.scan("481516")                     # the customer shows the QR code

Resources open in order on :meth:`start` and close in reverse on :meth:`close`, which is
safe twice; a failure half-way closes what was opened.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from simulator.boards import make_board
from simulator.bus import BusStats, SimBus
from simulator.config import CabinetConfig, load_config
from simulator.errors import SimError, UnknownTarget
from simulator.lane import LaneIOServer, LaneWorld
from simulator.rtu import RtuPtyServer
from simulator.scanner import SimScanner
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
    :param lane_port: serve the lane I/O on this loopback port (0: any); ``None``: no lane.
    :param scanner_link: serve a code scanner on a pty, symlinked at this path (under
        ``link_dir`` if given); ``None``: no scanner.
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
        lane_port: int | None = None,
        scanner_link: str | Path | None = None,
    ) -> None:
        self.config = config
        self.emulate_timing = emulate_timing
        self.link_dir = Path(link_dir) if link_dir is not None else None
        self.make_links = make_links
        self.world = World(config, clock=clock)
        self.buses: dict[str, SimBus] = {}
        for bus_config in config.buses:
            boards = [
                make_board(b, self.world, baudrate=bus_config.baudrate)
                for b in config.boards
                if b.bus == bus_config.name
            ]
            self.buses[bus_config.name] = SimBus(bus_config, boards, self.world.fault_book)
        self._rtu: dict[str, RtuPtyServer] = {}
        self._tcp: dict[str, ModbusTcpGateway] = {}
        self._links: dict[str, Path] = {}
        self._requested_control_port = control_port
        self._control: Any = None
        self.lane = LaneWorld(clock=clock)
        self._lane_port = lane_port
        self._lane_server: LaneIOServer | None = None
        self._scanner_link = Path(scanner_link) if scanner_link is not None else None
        self.scanner: SimScanner | None = None
        self._started = False
        self._closed = False

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> SimCabinet:
        """Read the cabinet config (hardware parts, ``[simulator]`` and the lane of
        ``[lane]``) and build the cabinet; keyword arguments as for the constructor (and
        they win over the file)."""
        config = load_config(path)
        for key, value in lane_from_config(path).items():
            if kwargs.get(key) is None:
                kwargs[key] = value
        return cls(config, **kwargs)

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
            if self._lane_port is not None:
                self._lane_server = LaneIOServer(self.lane, port=self._lane_port)
                try:
                    await self._lane_server.start()
                except OSError as exc:
                    raise SimError(
                        f"lane I/O: cannot listen on 127.0.0.1:{self._lane_port}: "
                        f"{exc.strerror or exc}", field="lane.options.port",
                    ) from exc
            if self._scanner_link is not None:
                self.scanner = self._make_scanner(self._scanner_link)
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
        if self.scanner is not None:
            self.scanner.close()
        if self._lane_server is not None:
            await self._lane_server.close()
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

    def _make_scanner(self, link: Path) -> SimScanner:
        path = self.link_dir / link.name if self.link_dir is not None else link
        try:
            if path.is_symlink():
                path.unlink()  # a stale link from an earlier run
            elif path.exists():
                raise SimError(f"scanner: {path} exists and is not a symlink",
                               field="lane.scanner.port")
            path.parent.mkdir(parents=True, exist_ok=True)
            return SimScanner(link=path)
        except OSError as exc:
            raise SimError(f"scanner: cannot link {path}: {exc.strerror or exc}",
                           field="lane.scanner.port") from exc

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
    def lane_port(self) -> int | None:
        """The loopback port of the lane I/O server, if served."""
        return self._lane_server.port if self._lane_server is not None else None

    @property
    def scanner_path(self) -> str | None:
        """Where the simulated scanner is (its link), if served."""
        return self.scanner.serial_path if self.scanner is not None else None

    def scan(self, code: str) -> None:
        """The customer shows a code to the lane's scanner."""
        if self.scanner is None:
            raise SimError("this simulator serves no scanner (lane.scanner.port)",
                           field="code")
        try:
            self.scanner.scan(code)
        except OSError as exc:
            raise SimError(f"scanner: {exc}", field="code") from exc

    def lane_state(self) -> dict[str, Any]:
        """The lane's facts and outputs as the daemon drives them."""
        return {
            "inputs": {n: self.lane.input_active(n) for n in self.lane.input_wiring},
            "outputs": {n: self.lane.output_active(n) for n in self.lane.output_wiring},
            "light": self.lane.lane_light(),
            "buzzer": self.lane.buzzer_on,
            "buzzes": sum(1 for c in self.lane.changes(kind="output", line="buzzer")
                          if c.active),
            "scans": self.scanner.scans if self.scanner is not None else 0,
        }

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


def lane_from_config(path: str | Path) -> dict[str, Any]:
    """``lane_port`` and ``scanner_link`` from the ``[lane]`` table of a cabinet config:
    the port of ``options`` when the daemon's lane backend is ``simulator``, and the
    scanner's serial port. Missing or of another backend: nothing."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}  # load_config has reported it already
    lane = raw.get("lane")
    out: dict[str, Any] = {}
    if not isinstance(lane, dict):
        return out
    port = (lane.get("options") or {}).get("port")
    if lane.get("backend") == "simulator" and isinstance(port, int) and 0 <= port < 65536:
        out["lane_port"] = port
    scanner = lane.get("scanner")
    if isinstance(scanner, dict) and isinstance(scanner.get("port"), str):
        out["scanner_link"] = scanner["port"]
    return out
