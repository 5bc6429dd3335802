"""Modbus board profiles: the :class:`~drivers.base.LockBoard` and
:class:`~drivers.base.SensorBoard` hooks over a :class:`~drivers.modbus.line.ModbusLine`.

Profiles (the ``profile`` key of a ``[[boards]]`` table):

``waveshare_relay`` -> :class:`WaveshareRelayBoard`
    Relays are coils; the unlock pulse is the board's own "flash on" (function 05 on
    ``0x0200 + channel``, value = duration in 100 ms, rounded up), so a daemon crash
    mid-pulse cannot leave a solenoid energised. All off is coil ``0x00FF`` = 0 (one
    transaction). Inputs are discrete inputs, all read in one transaction.
    :meth:`~drivers.base.LockBoard.describe` reads the version register ``0x8000``
    (100 = V1.00).
``generic_io`` -> :class:`GenericIOBoard`
    Any IO board described by a register map *as data* (:class:`GenericIOMap`):
    outputs as coils or holding-register bits, inputs as discrete inputs or
    input/holding-register bitmasks, pulse timed by the daemon or by the board through
    a register (or coil) that takes the duration.
``temperature_probe`` -> :class:`TemperatureProbe`
    A :class:`~drivers.base.SensorBoard` reading ``channels`` input or holding
    registers in one transaction, with scale, offset, sign and an "invalid" sentinel
    (:class:`ProbeMap`).

Wire quirks, written down:

* Register bitmasks: bit ``i % 16`` of register ``address + i // 16`` (bit 0 = LSB).
  Setting one output held in a register bit is a read-modify-write (03 then 06); the
  board object serialises its own read-modify-writes, and the line guarantees nothing
  else is on the wire between them only if no *other* program writes that register.
* Waveshare flash durations are 16-bit in 100 ms units; the driver caps pulses at
  ``max_pulse_s`` long before that matters. A flash written while a flash runs
  restarts the board's timer, which is one more reason never to repeat a pulse frame.
* A pulse frame (flash, pulse register, output on) goes on the wire once, with
  ``retries=0``; when its echo is lost the policy of :meth:`~drivers.base.LockBoard.pulse`
  reads the output back (coil or output register, sent inside the line's late window:
  its function code differs from the write's, so the late echo cannot be taken for it)
  and asks the line whether the echo came late (:meth:`ModbusLine.late_reply_at`). An
  output switched *off* is retried and also sent inside the late window, so a lost
  "on" echo cannot delay the "off" beyond the pulse.
* Writes go to the line with priority (a door pulse overtakes queued polls); reads do
  not.

Build from config::

    line = ModbusLine.from_config(bus_table)
    board = build_board(line, board_table)   # LockBoard or SensorBoard
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from drivers.base import HARD_PULSE_CAP_S, BoardInfo, LockBoard, SensorBoard
from drivers.config import BoardParams, BusParams
from drivers.errors import DriverConfigError
from drivers.modbus import codec
from drivers.modbus.codec import Request
from drivers.modbus.line import ModbusLine
from drivers.modbus.maps import GenericIOMap, ProbeMap, PulseSpec
from drivers.modbus.registers import MAX_UNIT, WAVESHARE, WaveshareMap

__all__ = [
    "PROFILES",
    "GenericIOBoard",
    "GenericIOMap",
    "ProbeMap",
    "PulseSpec",
    "TemperatureProbe",
    "WaveshareRelayBoard",
    "build_board",
    "create_board",
    "duration_units",
    "open_bus",
]

Clock = Callable[[], float]


def duration_units(duration_s: float, unit_s: float, max_units: int = 0xFFFF) -> int:
    """``duration_s`` in whole ``unit_s``, rounded up, at least 1, at most ``max_units``.

    Rounded to 1e-6 first so that 0.7 s in 100 ms units is 7, not 8 (float error)."""
    units = math.ceil(round(duration_s / unit_s, 6))
    return max(1, min(units, max_units))


def _check_address(address: int, where: str) -> None:
    if not isinstance(address, int) or not 1 <= address <= MAX_UNIT:
        raise DriverConfigError(f"{where}: address must be in 1..{MAX_UNIT}, got {address!r}")


def _bits_from_registers(regs: tuple[int, ...], count: int) -> tuple[bool, ...]:
    return tuple(bool(regs[i >> 4] >> (i & 15) & 1) for i in range(count))


class _PulseFrames:
    """What the Modbus lock boards share: a pulse frame sent once, and a record of it
    so that a late echo can confirm it."""

    line: ModbusLine
    address: int

    def _init_pulse_frames(self) -> None:
        self._pulse_frames: dict[int, tuple[Request, float]] = {}

    async def _send_pulse_frame(self, channel: int, req: Request) -> None:
        self._pulse_frames[channel] = (req, time.monotonic())
        await self.line.execute(req, priority=True, retries=0)

    async def _send_off_frame(self, req: Request) -> None:
        await self.line.execute(req, priority=True, early=True)

    async def _acked_late(self, channel: int) -> bool:
        sent = self._pulse_frames.get(channel)
        if sent is None:
            return False
        at = await self.line.wait_late_reply(sent[0])
        return at is not None and at >= sent[1]


class WaveshareRelayBoard(_PulseFrames, LockBoard):
    """A Waveshare-style Modbus RTU relay board at ``address`` on ``line``."""

    board_times_pulse = True
    pulse_resolution_s = WAVESHARE.flash_unit_s

    def __init__(
        self,
        line: ModbusLine,
        address: int,
        *,
        outputs: int = 8,
        inputs: int = 8,
        max_pulse_s: float = HARD_PULSE_CAP_S,
        clock: Clock = time.monotonic,
        register_map: WaveshareMap = WAVESHARE,
    ) -> None:
        _check_address(address, f"waveshare_relay on {line.name}")
        super().__init__(
            bus=line.name,
            address=address,
            outputs=outputs,
            inputs=inputs,
            profile="waveshare_relay",
            max_pulse_s=max_pulse_s,
            clock=clock,
        )
        self.line = line
        self.map = register_map
        self._init_pulse_frames()

    async def _pulse_timed(self, channel: int, duration_s: float) -> None:
        units = duration_units(duration_s, self.map.flash_unit_s, self.map.flash_max_units)
        req = codec.write_coil_request(self.address, self.map.flash_on_base + channel, units)
        await self._send_pulse_frame(channel, req)

    async def _set_output(self, channel: int, on: bool) -> None:
        req = codec.write_coil_request(self.address, self.map.relay_coil_base + channel, on)
        if on:
            await self._send_pulse_frame(channel, req)
        else:
            await self._send_off_frame(req)

    async def _read_output(self, channel: int) -> bool:
        req = codec.read_request(
            self.address, codec.Function.READ_COILS, self.map.relay_coil_base + channel, 1
        )
        (on,) = await self.line.execute(req, priority=True, early=True)
        return bool(on)

    async def _all_off(self) -> None:
        await self.line.write_coil(self.address, self.map.all_relays_coil, False)

    async def _read_inputs(self) -> tuple[bool, ...]:
        if not self.inputs:
            return ()
        return await self.line.read_discrete_inputs(self.address, self.map.input_base, self.inputs)

    async def _describe(self) -> BoardInfo:
        (version,) = await self.line.read_holding_registers(
            self.address, self.map.version_register, 1
        )
        return BoardInfo(
            self.bus,
            self.address,
            self.profile,
            self.outputs,
            self.inputs,
            self.board_times_pulse,
            firmware=f"V{version // 100}.{version % 100:02d}",
            extra={"version_register": str(version)},
        )


# -- generic IO board ---------------------------------------------------------------
class GenericIOBoard(_PulseFrames, LockBoard):
    """A Modbus IO board described by a :class:`GenericIOMap`."""

    def __init__(
        self,
        line: ModbusLine,
        address: int,
        register_map: GenericIOMap | Mapping[str, Any],
        *,
        outputs: int,
        inputs: int,
        max_pulse_s: float = HARD_PULSE_CAP_S,
        clock: Clock = time.monotonic,
    ) -> None:
        where = f"generic_io {line.name}@{address}"
        _check_address(address, where)
        super().__init__(
            bus=line.name,
            address=address,
            outputs=outputs,
            inputs=inputs,
            profile="generic_io",
            max_pulse_s=max_pulse_s,
            clock=clock,
        )
        self.line = line
        self.map = (
            register_map
            if isinstance(register_map, GenericIOMap)
            else GenericIOMap.from_dict(register_map, where=f"{where}: register_map")
        )
        m = self.map
        out_span = outputs if m.outputs_table == "coils" else (outputs + 15) // 16
        in_span = inputs if m.inputs_table == "discrete_inputs" else (inputs + 15) // 16
        if m.outputs_address + out_span > 0x10000:
            raise DriverConfigError(f"{where}: register_map.outputs runs past address 65535")
        if m.inputs_address + in_span > 0x10000:
            raise DriverConfigError(f"{where}: register_map.inputs runs past address 65535")
        if m.pulse.kind != "daemon" and m.pulse.address + outputs > 0x10000:
            raise DriverConfigError(f"{where}: register_map.pulse runs past address 65535")
        self.board_times_pulse = m.pulse.kind != "daemon"
        if self.board_times_pulse:
            self.pulse_resolution_s = m.pulse.unit_ms / 1000
        self._rmw = asyncio.Lock()
        self._init_pulse_frames()

    async def _pulse_timed(self, channel: int, duration_s: float) -> None:
        p = self.map.pulse
        units = duration_units(duration_s, p.unit_ms / 1000)
        if p.kind == "register":
            req = codec.write_register_request(self.address, p.address + channel, units)
        else:
            req = codec.write_coil_request(self.address, p.address + channel, units)
        await self._send_pulse_frame(channel, req)

    async def _set_output(self, channel: int, on: bool) -> None:
        m = self.map
        if m.outputs_table == "coils":
            req = codec.write_coil_request(self.address, m.outputs_address + channel, on)
            if on:
                await self._send_pulse_frame(channel, req)
            else:
                await self._send_off_frame(req)
            return
        reg = m.outputs_address + channel // 16
        mask = 1 << (channel % 16)
        async with self._rmw:
            read = codec.read_request(
                self.address, codec.Function.READ_HOLDING_REGISTERS, reg, 1
            )
            (value,) = await self.line.execute(read, priority=True, early=not on)
            new = value | mask if on else value & ~mask
            if new == value:
                return
            write = codec.write_register_request(self.address, reg, new)
            if on:
                await self._send_pulse_frame(channel, write)
            else:
                await self._send_off_frame(write)

    async def _read_output(self, channel: int) -> bool:
        m = self.map
        if m.outputs_table == "coils":
            req = codec.read_request(
                self.address, codec.Function.READ_COILS, m.outputs_address + channel, 1
            )
            (on,) = await self.line.execute(req, priority=True, early=True)
            return bool(on)
        req = codec.read_request(
            self.address, codec.Function.READ_HOLDING_REGISTERS,
            m.outputs_address + channel // 16, 1,
        )
        (value,) = await self.line.execute(req, priority=True, early=True)
        return bool(int(value) >> (channel % 16) & 1)

    async def _all_off(self) -> None:
        m = self.map
        if not self.outputs:
            return
        if m.outputs_table == "coils":
            await self.line.write_coils(self.address, m.outputs_address, [False] * self.outputs)
            return
        async with self._rmw:
            n = (self.outputs + 15) // 16
            await self.line.write_registers(self.address, m.outputs_address, [0] * n)

    async def _read_inputs(self) -> tuple[bool, ...]:
        m = self.map
        if not self.inputs:
            return ()
        if m.inputs_table == "discrete_inputs":
            return await self.line.read_discrete_inputs(self.address, m.inputs_address, self.inputs)
        n = (self.inputs + 15) // 16
        if m.inputs_table == "input_register_bits":
            regs = await self.line.read_input_registers(self.address, m.inputs_address, n)
        else:
            regs = await self.line.read_holding_registers(self.address, m.inputs_address, n)
        return _bits_from_registers(regs, self.inputs)


# -- temperature probe --------------------------------------------------------------


class TemperatureProbe(SensorBoard):
    """A Modbus temperature probe board: ``channels`` registers, one transaction."""

    def __init__(
        self,
        line: ModbusLine,
        address: int,
        register_map: ProbeMap | Mapping[str, Any] | None = None,
        *,
        channels: int,
        clock: Clock = time.monotonic,
    ) -> None:
        where = f"temperature_probe {line.name}@{address}"
        _check_address(address, where)
        if not 1 <= channels <= 125:
            raise DriverConfigError(f"{where}: channels must be in 1..125, got {channels}")
        super().__init__(
            bus=line.name, address=address, channels=channels,
            profile="temperature_probe", clock=clock,
        )
        self.line = line
        if register_map is None:
            self.map = ProbeMap()
        elif isinstance(register_map, ProbeMap):
            self.map = register_map
        else:
            self.map = ProbeMap.from_dict(register_map, where=f"{where}: register_map")
        if self.map.address + channels > 0x10000:
            raise DriverConfigError(f"{where}: register_map runs past address 65535")

    async def _read_values(self) -> tuple[float | None, ...]:
        if self.map.table == "input_registers":
            raw = await self.line.read_input_registers(
                self.address, self.map.address, self.channels
            )
        else:
            raw = await self.line.read_holding_registers(
                self.address, self.map.address, self.channels
            )
        return tuple(self.map.convert(r) for r in raw)


# -- factory ------------------------------------------------------------------------

PROFILES = ("waveshare_relay", "generic_io", "temperature_probe")


def build_board(
    line: ModbusLine, cfg: BoardParams | Mapping[str, Any], *, clock: Clock = time.monotonic
) -> LockBoard | SensorBoard:
    """A board on ``line`` from its typed settings (:class:`~drivers.config.BoardParams`),
    or from a plain ``[[boards]]`` table read by :meth:`BoardParams.from_table`."""
    p = cfg if isinstance(cfg, BoardParams) else BoardParams.from_table(cfg)
    where = f"boards[{p.name}]"
    _check_address(_count(p.address, None, f"{where}.address"), f"{where}.address")
    if isinstance(p.max_pulse_s, bool) or not isinstance(p.max_pulse_s, int | float):
        raise DriverConfigError(f"{where}.max_pulse_s: must be a number, got {p.max_pulse_s!r}")
    if p.profile == "waveshare_relay":
        return WaveshareRelayBoard(
            line, p.address,
            outputs=_count(p.outputs, 8, f"{where}.outputs"),
            inputs=_count(p.inputs, 0, f"{where}.inputs"),
            max_pulse_s=p.max_pulse_s, clock=clock,
        )
    if p.profile == "generic_io":
        return GenericIOBoard(
            line, p.address,
            p.register_map if isinstance(p.register_map, GenericIOMap) else GenericIOMap(),
            outputs=_count(p.outputs, None, f"{where}.outputs"),
            inputs=_count(p.inputs, None, f"{where}.inputs"),
            max_pulse_s=p.max_pulse_s, clock=clock,
        )
    if p.profile == "temperature_probe":
        return TemperatureProbe(
            line, p.address,
            p.register_map if isinstance(p.register_map, ProbeMap) else ProbeMap(),
            channels=_count(p.channels, None, f"{where}.channels"),
            clock=clock,
        )
    raise DriverConfigError(f"{where}.profile: must be one of {PROFILES}, got {p.profile!r}")


def _count(value: int | None, default: int | None, where: str) -> int:
    if value is None:
        if default is None:
            raise DriverConfigError(f"{where}: required")
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DriverConfigError(f"{where}: must be an integer >= 0, got {value!r}")
    return value


# -- backend interface (drivers.registry) ---------------------------------------------


def open_bus(cfg: BusParams | Mapping[str, Any]) -> ModbusLine:
    """The backend's bus factory: a :class:`ModbusLine` from a ``[[buses]]`` table, not
    yet open (use ``async with`` or ``await line.connect()``)."""
    return ModbusLine.from_config(cfg)


def create_board(
    bus: ModbusLine, cfg: BoardParams | Mapping[str, Any], *, clock: Clock = time.monotonic
) -> LockBoard | SensorBoard:
    """The backend's board factory: :func:`build_board`."""
    return build_board(bus, cfg, clock=clock)
