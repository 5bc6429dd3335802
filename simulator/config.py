"""The cabinet config as the simulator reads it: the hardware parts and ``[simulator]``.

The daemon and the simulator read the *same* TOML file (see ``docs/design-notes.md``).
The simulator reads ``[cabinet]`` (site and id, for display), ``[[buses]]``,
``[[boards]]``, ``[[zones]]`` and ``[[compartments]]``, plus its own optional
``[simulator]`` table, and ignores every other table (``mqtt``, ``redis``, ``timing``,
...), which are the daemon's business.

``[simulator]`` (every key optional)::

    [simulator]
    seed = 7                          # randomness (probe noise) is reproducible
    probe_noise_c = 0.0               # +- uniform noise added to each probe reading
    initial_parcels = { A01 = 1 }     # parcels in a compartment at start
    processing_s = { locks-a = 0.004 }
        # per board: how long it takes to answer a request, added to every reply's
        # delay (after the request has been received; default 0)
    cut_wire_level = { high = false, low = false }
        # raw level a cut input wire reads, by the polarity of the signal it carries:
        # no current flows, so an optocoupled input reads 0 whatever the polarity; a
        # normally-closed door switch (active = "low") therefore reads "open".
    [simulator.thermal]
    ambient_c = 20.0                  # the room, and where a failed zone drifts to
    tau_cooling_s = 900.0             # compressor pull-down time constant
    tau_leak_s = 14400.0              # insulation leak toward ambient, always on
    tau_door_open_s = 240.0           # extra leak toward ambient per open door
    setpoint_c = { chilled = 3.0 }    # default: the middle of min_c..max_c
    initial_c = { frozen = -18.0 }    # default: the setpoint

Errors are :class:`SimConfigError` (a :class:`ValueError`) naming the file and the key,
e.g. ``cabinet.toml: compartments[2].lock.channel: 16 outside 0..15 of board 'locks-a'``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from simulator.errors import SimError

__all__ = [
    "BitsLocation",
    "BoardConfig",
    "BusConfig",
    "CabinetConfig",
    "ChannelRef",
    "CompartmentConfig",
    "IoRegisterMap",
    "ProbeRegisterMap",
    "PulseSpec",
    "SignalRef",
    "SimConfigError",
    "SimulatorSettings",
    "ThermalSettings",
    "ZoneConfig",
    "load_config",
    "parse_config",
]

Profile = Literal["waveshare_relay", "generic_io", "temperature_probe"]
PROFILES: tuple[str, ...] = ("waveshare_relay", "generic_io", "temperature_probe")
BIT_TABLES_OUT = ("coils", "holding_register_bits")
BIT_TABLES_IN = ("discrete_inputs", "input_register_bits", "holding_register_bits")
ZONE_KINDS = ("ambient", "chilled", "frozen")
#: Waveshare relay boards take addresses 1..255 (register 0x4000); so do the simulated ones.
MAX_ADDRESS = 255
SIZES = ("S", "M", "L", "XL")


class SimConfigError(SimError, ValueError):
    """The config file is not what the simulator can run. Names the file and the key."""

    def __init__(self, file: str, key: str, message: str) -> None:
        super().__init__(f"{file}: {key}: {message}", field=key, code="bad_config")
        self.file = file
        self.key = key


@dataclass(frozen=True, slots=True)
class BusConfig:
    name: str
    kind: Literal["rtu", "tcp"]
    baudrate: int
    port: str | None = None
    host: str | None = None
    tcp_port: int | None = None


@dataclass(frozen=True, slots=True)
class BitsLocation:
    """Where a generic IO board keeps a bank of bits: a bit table, or bits packed 16 per
    register (bit ``i`` of the bank is bit ``i % 16`` of register ``address + i // 16``)."""

    table: str
    address: int


@dataclass(frozen=True, slots=True)
class PulseSpec:
    """How a generic IO board pulses: ``daemon`` (the daemon switches on and off) or
    ``register`` (writing ``n`` to holding register ``address + channel`` energises the
    channel for ``n * unit_ms`` and the board ends the pulse itself)."""

    kind: Literal["daemon", "register"]
    address: int = 0
    unit_ms: int = 100


@dataclass(frozen=True, slots=True)
class IoRegisterMap:
    outputs: BitsLocation = BitsLocation("coils", 0)
    inputs: BitsLocation = BitsLocation("discrete_inputs", 0)
    pulse: PulseSpec = PulseSpec("daemon")


@dataclass(frozen=True, slots=True)
class ProbeRegisterMap:
    """value_c = raw * scale + offset; ``raw == invalid`` means "no sensor"."""

    table: Literal["input_registers", "holding_registers"] = "input_registers"
    address: int = 0
    scale: float = 0.1
    offset: float = 0.0
    signed: bool = True
    invalid: int = -32768


@dataclass(frozen=True, slots=True)
class BoardConfig:
    name: str
    bus: str
    address: int
    profile: Profile
    outputs: int = 0
    inputs: int = 0
    channels: int = 0
    io_map: IoRegisterMap | None = None
    probe_map: ProbeRegisterMap | None = None
    #: ``[simulator] processing_s``: the board's time to answer, added to each reply.
    processing_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ChannelRef:
    board: str
    channel: int


@dataclass(frozen=True, slots=True)
class SignalRef:
    """An input channel and the raw level that means the signal is *active* (door open,
    latch released, compartment occupied)."""

    board: str
    channel: int
    active: Literal["high", "low"] = "high"

    def level_for(self, active: bool) -> bool:
        """The raw input level the board reports when the signal is ``active``."""
        return active if self.active == "high" else not active


@dataclass(frozen=True, slots=True)
class ZoneConfig:
    name: str
    kind: Literal["ambient", "chilled", "frozen"]
    min_c: float | None = None
    max_c: float | None = None
    probe: ChannelRef | None = None


@dataclass(frozen=True, slots=True)
class CompartmentConfig:
    id: str
    size: str
    zone: str | None
    pool: str | None
    lock: ChannelRef
    door: SignalRef | None = None
    latch: SignalRef | None = None
    occupancy: SignalRef | None = None


@dataclass(frozen=True, slots=True)
class ThermalSettings:
    ambient_c: float = 20.0
    tau_cooling_s: float = 900.0
    tau_leak_s: float = 14400.0
    tau_door_open_s: float = 240.0
    setpoint_c: Mapping[str, float] = field(default_factory=dict)
    initial_c: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SimulatorSettings:
    seed: int = 0
    probe_noise_c: float = 0.0
    initial_parcels: Mapping[str, int] = field(default_factory=dict)
    cut_wire_level: Mapping[str, bool] = field(
        default_factory=lambda: {"high": False, "low": False}
    )
    thermal: ThermalSettings = field(default_factory=ThermalSettings)


@dataclass(frozen=True, slots=True)
class CabinetConfig:
    """The hardware of one cabinet, as the simulator needs it."""

    source: str
    site: str
    cabinet_id: str
    buses: tuple[BusConfig, ...]
    boards: tuple[BoardConfig, ...]
    zones: tuple[ZoneConfig, ...]
    compartments: tuple[CompartmentConfig, ...]
    simulator: SimulatorSettings = field(default_factory=SimulatorSettings)

    def bus(self, name: str) -> BusConfig:
        for bus in self.buses:
            if bus.name == name:
                return bus
        raise KeyError(name)

    def board(self, name: str) -> BoardConfig:
        for board in self.boards:
            if board.name == name:
                return board
        raise KeyError(name)

    def compartment(self, compartment_id: str) -> CompartmentConfig:
        for compartment in self.compartments:
            if compartment.id == compartment_id:
                return compartment
        raise KeyError(compartment_id)


# -- parsing ------------------------------------------------------------------------


class _Table:
    """A TOML table with its key path, so every error names the key and the file."""

    def __init__(self, file: str, key: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise SimConfigError(file, key or "<root>", f"expected a table, got {_kind(data)}")
        self.file = file
        self.key = key
        self.data: dict[str, Any] = data

    def path(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def error(self, name: str, message: str) -> SimConfigError:
        return SimConfigError(self.file, self.path(name), message)

    def has(self, name: str) -> bool:
        return name in self.data

    def str_(self, name: str, default: str | None = None, choices: tuple[str, ...] = ()) -> str:
        value = self.data.get(name, default)
        if value is None:
            raise self.error(name, "missing")
        if not isinstance(value, str) or not value:
            raise self.error(name, f"expected a non-empty string, got {value!r}")
        if choices and value not in choices:
            raise self.error(name, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def opt_str(self, name: str) -> str | None:
        return self.str_(name) if name in self.data else None

    def int_(self, name: str, default: int | None = None, lo: int = 0, hi: int = 1 << 31) -> int:
        value = self.data.get(name, default)
        if value is None:
            raise self.error(name, "missing")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"expected an integer, got {value!r}")
        if not lo <= value <= hi:
            raise self.error(name, f"{value} outside {lo}..{hi}")
        return value

    def float_(self, name: str, default: float | None = None) -> float:
        value = self.data.get(name, default)
        if value is None:
            raise self.error(name, "missing")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"expected a number, got {value!r}")
        return float(value)

    def opt_float(self, name: str) -> float | None:
        return self.float_(name) if name in self.data else None

    def bool_(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {value!r}")
        return value

    def table(self, name: str) -> _Table:
        return _Table(self.file, self.path(name), self.data.get(name, {}))

    def opt_table(self, name: str) -> _Table | None:
        return _Table(self.file, self.path(name), self.data[name]) if name in self.data else None

    def array(self, name: str) -> list[_Table]:
        value = self.data.get(name, [])
        if not isinstance(value, list):
            raise self.error(name, f"expected an array of tables, got {_kind(value)}")
        return [_Table(self.file, f"{self.path(name)}[{i}]", item) for i, item in enumerate(value)]


def _kind(value: Any) -> str:
    return type(value).__name__


def load_config(path: str | Path) -> CabinetConfig:
    """Read and check a cabinet config file. Raises :class:`SimConfigError`."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SimConfigError(file, "<file>", f"cannot read: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SimConfigError(file, "<toml>", str(exc)) from exc
    return parse_config(data, source=file)


def parse_config(data: Mapping[str, Any], *, source: str = "<config>") -> CabinetConfig:
    """Check an already-parsed TOML document. Raises :class:`SimConfigError`."""
    root = _Table(source, "", dict(data))
    cabinet = root.table("cabinet")
    site = cabinet.str_("site", default="sim")
    cabinet_id = cabinet.str_("id", default="sim-01")

    buses = tuple(_parse_bus(t) for t in root.array("buses"))
    _unique(root, "buses", [b.name for b in buses])
    bus_names = {b.name for b in buses}

    boards = tuple(_parse_board(t, bus_names) for t in root.array("boards"))
    _unique(root, "boards", [b.name for b in boards])
    by_name = {b.name: b for b in boards}
    seen: dict[tuple[str, int], str] = {}
    for i, board in enumerate(boards):
        other = seen.setdefault((board.bus, board.address), board.name)
        if other != board.name:
            raise SimConfigError(
                source,
                f"boards[{i}].address",
                f"address {board.address} on bus {board.bus!r} is already board {other!r}",
            )

    zones = tuple(_parse_zone(t, by_name) for t in root.array("zones"))
    _unique(root, "zones", [z.name for z in zones])
    zone_names = {z.name for z in zones}

    compartments = tuple(
        _parse_compartment(t, by_name, zone_names) for t in root.array("compartments")
    )
    _unique(root, "compartments", [c.id for c in compartments], key="id")

    sim_t = root.table("simulator")
    simulator = _parse_simulator(sim_t, {c.id for c in compartments}, zone_names)
    processing = _processing(sim_t, set(by_name))
    boards = tuple(replace(b, processing_s=processing.get(b.name, 0.0)) for b in boards)
    return CabinetConfig(source, site, cabinet_id, buses, boards, zones, compartments, simulator)


def _processing(t: _Table, boards: set[str]) -> dict[str, float]:
    sub = t.table("processing_s")
    out: dict[str, float] = {}
    for key in sub.data:
        if key not in boards:
            raise sub.error(key, f"no board named {key!r}")
        value = sub.float_(key)
        if not 0 <= value <= 10:
            raise sub.error(key, f"{value} outside 0..10 s")
        out[key] = value
    return out


def _unique(root: _Table, array: str, names: list[str], key: str = "name") -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise SimConfigError(root.file, f"{array}[{i}].{key}", f"duplicate {name!r}")
        seen.add(name)


def _parse_bus(t: _Table) -> BusConfig:
    name = t.str_("name")
    kind = t.str_("kind", default="rtu", choices=("rtu", "tcp"))
    baudrate = t.int_("baudrate", default=19200, lo=300, hi=1_000_000)
    if kind == "rtu":
        return BusConfig(name, "rtu", baudrate, port=t.str_("port"))
    return BusConfig(
        name,
        "tcp",
        baudrate,
        port=t.opt_str("port"),
        host=t.str_("host", default="127.0.0.1"),
        tcp_port=t.int_("tcp_port", default=502, lo=1, hi=65535),
    )


def _parse_board(t: _Table, bus_names: set[str]) -> BoardConfig:
    name = t.str_("name")
    bus = t.str_("bus")
    if bus not in bus_names:
        raise t.error("bus", f"no bus named {bus!r}")
    address = t.int_("address", lo=1, hi=MAX_ADDRESS)
    profile = t.str_("profile", choices=PROFILES)
    if profile == "waveshare_relay":
        return BoardConfig(
            name,
            bus,
            address,
            "waveshare_relay",
            outputs=t.int_("outputs", lo=1, hi=254),
            inputs=t.int_("inputs", default=0, lo=0, hi=2000),
        )
    if profile == "generic_io":
        rm = t.table("register_map")
        outputs = t.int_("outputs", default=0, lo=0, hi=2000)
        inputs = t.int_("inputs", default=0, lo=0, hi=2000)
        io_map = IoRegisterMap(
            outputs=_bits(rm, "outputs", BIT_TABLES_OUT, "coils"),
            inputs=_bits(rm, "inputs", BIT_TABLES_IN, "discrete_inputs"),
            pulse=_pulse(rm),
        )
        return BoardConfig(name, bus, address, "generic_io", outputs, inputs, io_map=io_map)
    rm = t.table("register_map")
    probe_map = ProbeRegisterMap(
        table=rm.str_(
            "table", default="input_registers", choices=("input_registers", "holding_registers")
        ),  # type: ignore[arg-type]
        address=rm.int_("address", default=0, hi=0xFFFF),
        scale=rm.float_("scale", default=0.1),
        offset=rm.float_("offset", default=0.0),
        signed=rm.bool_("signed", default=True),
        invalid=rm.int_("invalid", default=-32768, lo=-32768, hi=65535),
    )
    if probe_map.scale == 0:
        raise rm.error("scale", "must not be 0")
    channels = t.int_("channels", lo=1, hi=125)
    return BoardConfig(
        name, bus, address, "temperature_probe", channels=channels, probe_map=probe_map
    )


def _bits(rm: _Table, name: str, tables: tuple[str, ...], default_table: str) -> BitsLocation:
    t = rm.table(name)
    return BitsLocation(
        t.str_("table", default=default_table, choices=tables),
        t.int_("address", default=0, hi=0xFFFF),
    )


def _pulse(rm: _Table) -> PulseSpec:
    t = rm.table("pulse")
    kind = t.str_("kind", default="daemon", choices=("daemon", "register"))
    if kind == "daemon":
        return PulseSpec("daemon")
    return PulseSpec(
        "register", t.int_("address", hi=0xFFFF), t.int_("unit_ms", default=100, lo=1, hi=60_000)
    )


def _board_ref(t: _Table, boards: Mapping[str, BoardConfig], want: str) -> tuple[str, int]:
    name = t.str_("board")
    board = boards.get(name)
    if board is None:
        raise t.error("board", f"no board named {name!r}")
    if want == "output":
        if board.profile == "temperature_probe":
            raise t.error("board", f"board {name!r} is a temperature probe, it has no outputs")
        count = board.outputs
    elif want == "input":
        if board.profile == "temperature_probe":
            raise t.error("board", f"board {name!r} is a temperature probe, it has no inputs")
        count = board.inputs
    else:
        if board.profile != "temperature_probe":
            raise t.error("board", f"board {name!r} is not a temperature_probe")
        count = board.channels
    channel = t.int_("channel")
    if channel >= count:
        raise t.error("channel", f"{channel} outside 0..{count - 1} of board {name!r}")
    return name, channel


def _parse_zone(t: _Table, boards: Mapping[str, BoardConfig]) -> ZoneConfig:
    probe_t = t.opt_table("probe")
    probe = ChannelRef(*_board_ref(probe_t, boards, "probe")) if probe_t else None
    return ZoneConfig(
        t.str_("name"),
        t.str_("kind", default="ambient", choices=ZONE_KINDS),  # type: ignore[arg-type]
        t.opt_float("min_c"),
        t.opt_float("max_c"),
        probe,
    )


def _signal(t: _Table, name: str, boards: Mapping[str, BoardConfig]) -> SignalRef | None:
    s = t.opt_table(name)
    if s is None:
        return None
    board, channel = _board_ref(s, boards, "input")
    return SignalRef(board, channel, s.str_("active", default="high", choices=("high", "low")))  # type: ignore[arg-type]


def _parse_compartment(
    t: _Table, boards: Mapping[str, BoardConfig], zones: set[str]
) -> CompartmentConfig:
    zone = t.opt_str("zone")
    if zone is not None and zone not in zones:
        raise t.error("zone", f"no zone named {zone!r}")
    return CompartmentConfig(
        id=t.str_("id"),
        size=t.str_("size", default="M", choices=SIZES),
        zone=zone,
        pool=t.opt_str("pool"),
        lock=ChannelRef(*_board_ref(t.table("lock"), boards, "output")),
        door=_signal(t, "door", boards),
        latch=_signal(t, "latch", boards),
        occupancy=_signal(t, "occupancy", boards),
    )


def _float_map(t: _Table, name: str, allowed: set[str]) -> dict[str, float]:
    sub = t.table(name)
    out: dict[str, float] = {}
    for key in sub.data:
        if key not in allowed:
            raise sub.error(key, f"no zone named {key!r}")
        out[key] = sub.float_(key)
    return out


def _parse_simulator(t: _Table, compartments: set[str], zones: set[str]) -> SimulatorSettings:
    th = t.table("thermal")
    thermal = ThermalSettings(
        ambient_c=th.float_("ambient_c", 20.0),
        tau_cooling_s=th.float_("tau_cooling_s", 900.0),
        tau_leak_s=th.float_("tau_leak_s", 14400.0),
        tau_door_open_s=th.float_("tau_door_open_s", 240.0),
        setpoint_c=_float_map(th, "setpoint_c", zones),
        initial_c=_float_map(th, "initial_c", zones),
    )
    for name in ("tau_cooling_s", "tau_leak_s", "tau_door_open_s"):
        if getattr(thermal, name) <= 0:
            raise th.error(name, "must be > 0")
    parcels_t = t.table("initial_parcels")
    parcels: dict[str, int] = {}
    for key in parcels_t.data:
        if key not in compartments:
            raise parcels_t.error(key, f"no compartment {key!r}")
        parcels[key] = parcels_t.int_(key, hi=100)
    cut_t = t.table("cut_wire_level")
    cut = {"high": cut_t.bool_("high", False), "low": cut_t.bool_("low", False)}
    return SimulatorSettings(
        seed=t.int_("seed", default=0),
        probe_noise_c=t.float_("probe_noise_c", 0.0),
        initial_parcels=parcels,
        cut_wire_level=cut,
        thermal=thermal,
    )
