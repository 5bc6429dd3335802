"""Register maps of the generic boards: where a generic IO board keeps its outputs, inputs
and pulse registers (:class:`GenericIOMap`, :class:`PulseSpec`), and how a temperature
probe's registers become degrees (:class:`ProbeMap`). Pure data, no I/O; shared by the
Modbus backend, the fake backend and the simulator."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from drivers.errors import DriverConfigError

__all__ = ["GenericIOMap", "ProbeMap", "PulseSpec"]


_OUTPUT_TABLES = ("coils", "holding_register_bits")
_INPUT_TABLES = ("discrete_inputs", "input_register_bits", "holding_register_bits")
_PULSE_KINDS = ("daemon", "register", "coil")


@dataclass(frozen=True, slots=True)
class PulseSpec:
    """Who times the pulse. ``daemon``: output on, sleep, off (capped). ``register``:
    function 06 on ``address + channel`` with the duration in ``unit_ms``; ``coil``:
    function 05 on ``address + channel`` with the duration in ``unit_ms`` as the raw
    value (the Waveshare "flash" shape). In both board-timed kinds the board ends the
    pulse itself."""

    kind: str = "daemon"
    address: int = 0
    unit_ms: int = 100


@dataclass(frozen=True, slots=True)
class GenericIOMap:
    """Where a generic IO board keeps its outputs and inputs (see the module docstring)."""

    outputs_table: str = "coils"
    outputs_address: int = 0
    inputs_table: str = "discrete_inputs"
    inputs_address: int = 0
    pulse: PulseSpec = PulseSpec()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, where: str = "register_map") -> GenericIOMap:
        """Parse ``[boards.register_map]``; every error names the offending field."""
        if not isinstance(raw, Mapping):
            raise DriverConfigError(f"{where}: must be a table")
        unknown = set(raw) - {"outputs", "inputs", "pulse"}
        if unknown:
            raise DriverConfigError(f"{where}.{sorted(unknown)[0]}: unknown key")
        out_t, out_a = _table_ref(raw.get("outputs", {}), f"{where}.outputs", _OUTPUT_TABLES)
        in_t, in_a = _table_ref(raw.get("inputs", {}), f"{where}.inputs", _INPUT_TABLES)
        pulse_raw = raw.get("pulse", {"kind": "daemon"})
        pwhere = f"{where}.pulse"
        if not isinstance(pulse_raw, Mapping):
            raise DriverConfigError(f"{pwhere}: must be a table")
        kind = pulse_raw.get("kind", "daemon")
        if kind not in _PULSE_KINDS:
            raise DriverConfigError(f"{pwhere}.kind: must be one of {_PULSE_KINDS}, got {kind!r}")
        unknown = set(pulse_raw) - {"kind", "address", "unit_ms"}
        if unknown:
            raise DriverConfigError(f"{pwhere}.{sorted(unknown)[0]}: unknown key")
        if kind == "daemon":
            pulse = PulseSpec()
        else:
            if "address" not in pulse_raw:
                raise DriverConfigError(f"{pwhere}.address: required for kind {kind!r}")
            address = _u16(pulse_raw["address"], f"{pwhere}.address")
            unit_ms = pulse_raw.get("unit_ms", 100)
            if not isinstance(unit_ms, int) or isinstance(unit_ms, bool) or unit_ms < 1:
                raise DriverConfigError(
                    f"{pwhere}.unit_ms: must be an integer >= 1, got {unit_ms!r}"
                )
            pulse = PulseSpec(kind, address, unit_ms)
        return cls(out_t, out_a, in_t, in_a, pulse)


def _u16(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFF:
        raise DriverConfigError(f"{where}: must be an integer in 0..65535, got {value!r}")
    return value


def _table_ref(raw: Any, where: str, tables: tuple[str, ...]) -> tuple[str, int]:
    if not isinstance(raw, Mapping):
        raise DriverConfigError(f"{where}: must be a table like {{ table = ..., address = ... }}")
    unknown = set(raw) - {"table", "address"}
    if unknown:
        raise DriverConfigError(f"{where}.{sorted(unknown)[0]}: unknown key")
    table = raw.get("table", tables[0])
    if table not in tables:
        raise DriverConfigError(f"{where}.table: must be one of {tables}, got {table!r}")
    return table, _u16(raw.get("address", 0), f"{where}.address")


@dataclass(frozen=True, slots=True)
class ProbeMap:
    """``value = raw * scale + offset``; ``raw`` read as signed 16-bit when ``signed``;
    a raw value equal to ``invalid`` (compared after the sign conversion) is ``None``."""

    table: str = "input_registers"
    address: int = 0
    scale: float = 0.1
    offset: float = 0.0
    signed: bool = True
    invalid: int | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, where: str = "register_map") -> ProbeMap:
        if not isinstance(raw, Mapping):
            raise DriverConfigError(f"{where}: must be a table")
        unknown = set(raw) - {"table", "address", "scale", "offset", "signed", "invalid"}
        if unknown:
            raise DriverConfigError(f"{where}.{sorted(unknown)[0]}: unknown key")
        table = raw.get("table", "input_registers")
        if table not in ("input_registers", "holding_registers"):
            raise DriverConfigError(
                f"{where}.table: must be input_registers or holding_registers, got {table!r}"
            )
        address = _u16(raw.get("address", 0), f"{where}.address")
        numbers: dict[str, float] = {}
        for key, default in (("scale", 0.1), ("offset", 0.0)):
            v = raw.get(key, default)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise DriverConfigError(f"{where}.{key}: must be a finite number, got {v!r}")
            numbers[key] = float(v)
        if numbers["scale"] == 0:
            raise DriverConfigError(f"{where}.scale: must not be 0")
        signed = raw.get("signed", True)
        if not isinstance(signed, bool):
            raise DriverConfigError(f"{where}.signed: must be true or false, got {signed!r}")
        invalid = raw.get("invalid")
        if invalid is not None:
            lo, hi = (-0x8000, 0x7FFF) if signed else (0, 0xFFFF)
            if not isinstance(invalid, int) or isinstance(invalid, bool) or not lo <= invalid <= hi:
                raise DriverConfigError(
                    f"{where}.invalid: must be an integer in {lo}..{hi}, got {invalid!r}"
                )
        return cls(table, address, numbers["scale"], numbers["offset"], signed, invalid)

    def convert(self, raw: int) -> float | None:
        value = raw - 0x10000 if self.signed and raw & 0x8000 else raw
        if self.invalid is not None and value == self.invalid:
            return None
        return value * self.scale + self.offset
