"""Simulated Modbus boards: the register maps, backed by the world model.

Each board is a *device context* in pymodbus' sense: it implements the two coroutines a
request PDU's ``datastore_update(context, device_id)`` calls (``async_getValues`` and
``async_setValues``), so pymodbus decodes the request, validates it and builds the
response, and the board only answers "what is at this address" from the world. There is
no datastore in between that could go stale: every read asks the world, every write acts
on it.

Function 05 is the exception: pymodbus reduces its value to a bool, and a Waveshare flash
command carries the pulse length *in the value* (``0x0007`` = 700 ms), so
:class:`RawWriteSingleCoil` keeps the 16-bit value and the board answers it itself,
echoing address and value as the hardware does.

Profiles
--------
:class:`WaveshareRelayBoard`
    coils ``0x0000 + ch`` (read 01, write 05/15; value ``0x5500`` toggles), all relays
    ``0x00FF``, flash on ``0x0200 + ch`` and flash off ``0x0400 + ch`` (value in 100 ms
    units, ended by the board), discrete inputs ``0x0000 + ch``, holding ``0x4000`` =
    device address (03 reads, 06 writes 1..255, also by broadcast; the broadcast *read*
    ``00 03 40 00 00 01`` is answered by every board on the line, each from its own
    address, see :mod:`simulator.bus`), ``0x2000`` = serial settings (high byte parity
    0 none / 1 even / 2 odd, low byte the baud code 0..7 for 4800, 9600, 19200, 38400,
    57600, 115200, 128000, 256000; a write is kept and read back, and like the real
    board it takes effect only after a power cycle, which the simulator never does),
    ``0x8000`` = firmware version 100. Function 04 is not supported (exception 01).
:class:`GenericIoBoard`
    the config's ``register_map``: outputs in coils or packed in holding-register bits,
    inputs in discrete inputs or packed in input/holding-register bits, and optionally a
    pulse register per channel (``n`` written = ``n * unit_ms``, board-timed).
:class:`TemperatureProbeBoard`
    one register per channel in input or holding registers,
    ``raw = round((value_c - offset) / scale)``, two's complement when ``signed``, the
    ``invalid`` sentinel when the probe is missing or its wire is cut.

Anything outside the map is exception 02 (illegal data address); a function the board
does not know is exception 01.
"""

from __future__ import annotations

import struct
from collections.abc import Coroutine, Sequence
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import WriteSingleCoilRequest
from pymodbus.pdu.register_message import WriteSingleRegisterRequest, WriteSingleRegisterResponse

from drivers.modbus.registers import WAVESHARE
from simulator.config import MAX_ADDRESS, BitsLocation, BoardConfig, ProbeRegisterMap
from simulator.world import World

__all__ = [
    "BAUD_CODES",
    "FIRMWARE_VERSION",
    "SERIAL_REGISTER",
    "GenericIoBoard",
    "RawWriteSingleCoil",
    "SimBoard",
    "TemperatureProbeBoard",
    "WaveshareRelayBoard",
    "make_board",
    "make_decoder",
]

FIRMWARE_VERSION = 100
#: Register 0x2000, low byte: the Waveshare baud codes.
BAUD_CODES = {4800: 0, 9600: 1, 19200: 2, 38400: 3, 57600: 4, 115200: 5, 128000: 6, 256000: 7}
SERIAL_REGISTER = 0x2000
#: Register 0x2000 of a board on a line whose speed has no Waveshare code.
SERIAL_UNKNOWN = 0x00FF
COIL_ON = 0xFF00
COIL_OFF = 0x0000
COIL_TOGGLE = 0x5500
SUPPORTED_FUNCTIONS = frozenset({1, 2, 3, 4, 5, 6, 15, 16})
_TABLE_BY_FUNCTION = {
    1: "coils",
    5: "coils",
    15: "coils",
    2: "discrete_inputs",
    4: "input_registers",
}
_TABLE_BY_FUNCTION.update({fc: "holding_registers" for fc in (3, 6, 16, 22, 23)})

Values = list[int] | list[bool]


class RawWriteSingleCoil(WriteSingleCoilRequest):
    """Function 05 keeping the raw 16-bit value (pymodbus keeps only a bool)."""

    value: int = COIL_OFF

    def decode(self, data: bytes) -> None:
        self.address, self.value = struct.unpack(">HH", data[:4])
        self.bits = [self.value == COIL_ON]

    def encode(self) -> bytes:
        return struct.pack(">HH", self.address, self.value)


def make_decoder() -> DecodePDU:
    """A server-side PDU decoder with :class:`RawWriteSingleCoil` for function 05."""
    decoder = DecodePDU(is_server=True)
    decoder.register(RawWriteSingleCoil)
    return decoder


def run_to_completion(coro: Coroutine[Any, Any, ModbusPDU]) -> ModbusPDU:
    """Drive a ``datastore_update`` coroutine that never really suspends (our contexts
    answer at once), so boards can be served from a plain thread without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        result: ModbusPDU = done.value
        return result
    coro.close()
    raise RuntimeError("datastore_update suspended: board contexts must not await")


class SimBoard:
    """One board on a simulated bus. ``unit`` is its current address (it can change)."""

    def __init__(self, config: BoardConfig, world: World) -> None:
        self.config = config
        self.name = config.name
        self.unit = config.address
        self.world = world

    def execute(self, request: ModbusPDU) -> ModbusPDU:
        """Carry out a decoded request; return the response PDU (maybe an exception
        response). Never raises for anything the master sends."""
        fc = request.function_code
        if fc not in SUPPORTED_FUNCTIONS:
            return ExceptionResponse(fc, ExcCodes.ILLEGAL_FUNCTION)
        try:
            if isinstance(request, RawWriteSingleCoil):
                return self._write_coil_raw(request)
            if isinstance(request, WriteSingleRegisterRequest):
                # answered here: the reply echoes the request (a pulse register reads 0)
                rc = self.write_registers(request.address, list(request.registers))
                if rc:
                    return ExceptionResponse(fc, rc)
                return WriteSingleRegisterResponse(
                    address=request.address, registers=list(request.registers)
                )
            return run_to_completion(request.datastore_update(self, self.unit))  # type: ignore[arg-type]
        except (ValueError, IndexError, struct.error):
            return ExceptionResponse(fc, ExcCodes.ILLEGAL_VALUE)

    # -- the pymodbus context protocol ------------------------------------------------

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> Values | ExcCodes:
        table = _TABLE_BY_FUNCTION.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if table in ("coils", "discrete_inputs"):
            return self.read_bits(table, address, count)
        return self.read_registers(table, address, count)

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Sequence[int] | Sequence[bool]
    ) -> ExcCodes | None:
        table = _TABLE_BY_FUNCTION.get(func_code)
        if table == "coils":
            return self.write_bits(address, [bool(v) for v in values])
        if table == "holding_registers":
            return self.write_registers(address, [int(v) for v in values])
        return ExcCodes.ILLEGAL_FUNCTION

    def device_ids(self) -> list[int]:
        return [self.unit]

    # -- what each profile answers ------------------------------------------------------

    def read_bits(self, table: str, address: int, count: int) -> list[bool] | ExcCodes:
        return ExcCodes.ILLEGAL_ADDRESS

    def write_bits(self, address: int, values: list[bool]) -> ExcCodes | None:
        return ExcCodes.ILLEGAL_ADDRESS

    def read_registers(self, table: str, address: int, count: int) -> list[int] | ExcCodes:
        return ExcCodes.ILLEGAL_ADDRESS

    def write_registers(self, address: int, values: list[int]) -> ExcCodes | None:
        return ExcCodes.ILLEGAL_ADDRESS

    def _write_coil_raw(self, request: RawWriteSingleCoil) -> ModbusPDU:
        """Default function 05: 0xFF00 on, 0x0000 off, anything else is illegal."""
        if request.value not in (COIL_ON, COIL_OFF):
            return ExceptionResponse(5, ExcCodes.ILLEGAL_VALUE)
        rc = self.write_bits(request.address, [request.value == COIL_ON])
        return ExceptionResponse(5, rc) if rc else _echo(request)


def _echo(request: RawWriteSingleCoil) -> ModbusPDU:
    reply = RawWriteSingleCoil(address=request.address, dev_id=request.dev_id)
    reply.value = request.value
    return reply


def _in_range(address: int, count: int, size: int, base: int = 0) -> bool:
    return base <= address and address + count <= base + size and count >= 1


class WaveshareRelayBoard(SimBoard):
    """A Waveshare-style Modbus RTU relay board (see the module docstring)."""

    def __init__(self, config: BoardConfig, world: World, *, baudrate: int = 9600) -> None:
        super().__init__(config, world)
        code = BAUD_CODES.get(baudrate)
        #: Register 0x2000 as the board holds it (no parity: the simulated lines are 8N1).
        self.serial_settings = SERIAL_UNKNOWN if code is None else code

    def read_bits(self, table: str, address: int, count: int) -> list[bool] | ExcCodes:
        if table == "coils":
            if not _in_range(address, count, self.config.outputs, WAVESHARE.relay_coil_base):
                return ExcCodes.ILLEGAL_ADDRESS
            return [
                self.world.output_level(self.name, address - WAVESHARE.relay_coil_base + i)
                for i in range(count)
            ]
        if not _in_range(address, count, self.config.inputs, WAVESHARE.input_base):
            return ExcCodes.ILLEGAL_ADDRESS
        return [
            self.world.input_level(self.name, address - WAVESHARE.input_base + i)
            for i in range(count)
        ]

    def write_bits(self, address: int, values: list[bool]) -> ExcCodes | None:
        if not _in_range(address, len(values), self.config.outputs, WAVESHARE.relay_coil_base):
            return ExcCodes.ILLEGAL_ADDRESS
        for i, on in enumerate(values):
            self.world.set_output(self.name, address - WAVESHARE.relay_coil_base + i, on)
        return None

    def read_registers(self, table: str, address: int, count: int) -> list[int] | ExcCodes:
        if table == "input_registers":
            return ExcCodes.ILLEGAL_FUNCTION
        if count == 1 and address == WAVESHARE.address_register:
            return [self.unit]
        if count == 1 and address == WAVESHARE.version_register:
            return [FIRMWARE_VERSION]
        if count == 1 and address == SERIAL_REGISTER:
            return [self.serial_settings]
        return ExcCodes.ILLEGAL_ADDRESS

    def write_registers(self, address: int, values: list[int]) -> ExcCodes | None:
        if address == SERIAL_REGISTER and len(values) == 1:
            value = values[0]
            if value >> 8 > 2 or value & 0xFF not in BAUD_CODES.values():
                return ExcCodes.ILLEGAL_VALUE
            if value != self.serial_settings:
                self.serial_settings = value
                self.world.record_serial_settings(self.name, value)
            return None
        if address != WAVESHARE.address_register or len(values) != 1:
            return ExcCodes.ILLEGAL_ADDRESS
        new = values[0]
        if not 1 <= new <= MAX_ADDRESS:
            return ExcCodes.ILLEGAL_VALUE
        old, self.unit = self.unit, new
        if old != new:
            self.world.record_address_change(self.name, old, new)
        return None

    def _write_coil_raw(self, request: RawWriteSingleCoil) -> ModbusPDU:
        address, value = request.address, request.value
        outputs = self.config.outputs
        flash_on, flash_off = WAVESHARE.flash_on_base, WAVESHARE.flash_off_base
        if flash_on <= address < flash_on + outputs or flash_off <= address < flash_off + outputs:
            on = address < flash_off
            channel = address - (flash_on if on else flash_off)
            self.world.pulse_output(self.name, channel, value * WAVESHARE.flash_unit_s, level=on)
            return _echo(request)
        if address == WAVESHARE.all_relays_coil:
            channels = range(outputs)
        elif 0 <= address - WAVESHARE.relay_coil_base < outputs:
            channels = range(
                address - WAVESHARE.relay_coil_base, address - WAVESHARE.relay_coil_base + 1
            )
        else:
            return ExceptionResponse(5, ExcCodes.ILLEGAL_ADDRESS)
        if value not in (COIL_ON, COIL_OFF, COIL_TOGGLE):
            return ExceptionResponse(5, ExcCodes.ILLEGAL_VALUE)
        for ch in channels:
            on = (
                not self.world.output_level(self.name, ch)
                if value == COIL_TOGGLE
                else value == COIL_ON
            )
            self.world.set_output(self.name, ch, on)
        return _echo(request)


class _BitBank:
    """A bank of ``size`` bits at a :class:`BitsLocation`."""

    def __init__(self, location: BitsLocation, size: int) -> None:
        self.table = location.table
        self.base = location.address
        self.size = size

    @property
    def packed(self) -> bool:
        return self.table.endswith("register_bits")

    @property
    def register_table(self) -> str:
        return self.table.removesuffix("_bits") + "s"  # holding_registers / input_registers

    def register_count(self) -> int:
        return (self.size + 15) // 16

    def register_of(self, address: int) -> int | None:
        """Index of the register of this bank at ``address``, or None."""
        offset = address - self.base
        return offset if 0 <= offset < self.register_count() else None


class GenericIoBoard(SimBoard):
    """A Modbus IO board described by the config's register map."""

    def __init__(self, config: BoardConfig, world: World) -> None:
        super().__init__(config, world)
        assert config.io_map is not None
        self.io_map = config.io_map
        self.outputs = _BitBank(config.io_map.outputs, config.outputs)
        self.inputs = _BitBank(config.io_map.inputs, config.inputs)

    def read_bits(self, table: str, address: int, count: int) -> list[bool] | ExcCodes:
        bank, level = (
            (self.outputs, self.world.output_level)
            if table == "coils"
            else (self.inputs, self.world.input_level)
        )
        if bank.table != table or not _in_range(address, count, bank.size, bank.base):
            return ExcCodes.ILLEGAL_ADDRESS
        return [level(self.name, address - bank.base + i) for i in range(count)]

    def write_bits(self, address: int, values: list[bool]) -> ExcCodes | None:
        if self.outputs.table != "coils" or not _in_range(
            address, len(values), self.outputs.size, self.outputs.base
        ):
            return ExcCodes.ILLEGAL_ADDRESS
        for i, on in enumerate(values):
            self.world.set_output(self.name, address - self.outputs.base + i, on)
        return None

    def _packed(self, bank: _BitBank, index: int, level: Any) -> int:
        word = 0
        for bit in range(16):
            channel = index * 16 + bit
            if channel < bank.size and level(self.name, channel):
                word |= 1 << bit
        return word

    def _register(self, table: str, address: int) -> int | None:
        for bank, level in (
            (self.outputs, self.world.output_level),
            (self.inputs, self.world.input_level),
        ):
            if bank.packed and bank.register_table == table:
                index = bank.register_of(address)
                if index is not None:
                    return self._packed(bank, index, level)
        pulse = self.io_map.pulse
        if (
            table == "holding_registers"
            and pulse.kind == "register"
            and 0 <= address - pulse.address < self.config.outputs
        ):
            return 0
        return None

    def read_registers(self, table: str, address: int, count: int) -> list[int] | ExcCodes:
        words = [self._register(table, address + i) for i in range(count)]
        if any(w is None for w in words):
            return ExcCodes.ILLEGAL_ADDRESS
        return [w for w in words if w is not None]

    def write_registers(self, address: int, values: list[int]) -> ExcCodes | None:
        pulse = self.io_map.pulse
        actions: list[tuple[str, int, int]] = []
        for i, value in enumerate(values):
            reg = address + i
            if pulse.kind == "register" and 0 <= reg - pulse.address < self.config.outputs:
                actions.append(("pulse", reg - pulse.address, value))
                continue
            index = (
                self.outputs.register_of(reg)
                if self.outputs.table == "holding_register_bits"
                else None
            )
            if index is None:
                return ExcCodes.ILLEGAL_ADDRESS
            actions.append(("word", index, value))
        for kind, where, value in actions:
            if kind == "pulse":
                if value:
                    self.world.pulse_output(self.name, where, value * pulse.unit_ms / 1000.0)
                else:
                    self.world.set_output(self.name, where, False)
                continue
            for bit in range(16):
                channel = where * 16 + bit
                if channel < self.outputs.size:
                    self.world.set_output(self.name, channel, bool(value >> bit & 1))
        return None


class TemperatureProbeBoard(SimBoard):
    """A multi-channel temperature probe."""

    def __init__(self, config: BoardConfig, world: World) -> None:
        super().__init__(config, world)
        assert config.probe_map is not None
        self.probe_map: ProbeRegisterMap = config.probe_map

    def raw_value(self, channel: int) -> int:
        """The 16-bit register value for a channel."""
        m = self.probe_map
        value = self.world.probe_value(self.name, channel)
        if value is None:
            return m.invalid & 0xFFFF
        raw = round((value - m.offset) / m.scale)
        lo, hi = (-32768, 32767) if m.signed else (0, 65535)
        raw = min(max(raw, lo), hi)
        if raw == m.invalid:  # a real reading must never look like "no sensor"
            raw += 1
        return raw & 0xFFFF

    def read_registers(self, table: str, address: int, count: int) -> list[int] | ExcCodes:
        if table != self.probe_map.table or not _in_range(
            address, count, self.config.channels, self.probe_map.address
        ):
            return ExcCodes.ILLEGAL_ADDRESS
        return [self.raw_value(address - self.probe_map.address + i) for i in range(count)]


def make_board(config: BoardConfig, world: World, *, baudrate: int = 9600) -> SimBoard:
    """The simulated board for a config entry, by profile, on a line of ``baudrate``."""
    if config.profile == "waveshare_relay":
        return WaveshareRelayBoard(config, world, baudrate=baudrate)
    if config.profile == "generic_io":
        return GenericIoBoard(config, world)
    return TemperatureProbeBoard(config, world)
