"""Typed, frozen settings a backend receives: :class:`BusParams` for a bus (one RS-485
line or one Modbus TCP gateway) and :class:`BoardParams` for a board on it.

The composition root builds them from its own validated configuration (the daemon's
settings models convert to these types), the way python-can hands a bus its typed
configuration: a backend reads attributes, it never re-parses a table or supplies a
default of its own. :meth:`BusParams.from_table` and :meth:`BoardParams.from_table` read a
plain ``[[buses]]``/``[[boards]]`` table for tools and tests that have no settings object;
the defaults are those of the fields below, defined once.

Errors: :class:`~drivers.errors.DriverConfigError` naming the key.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from drivers.base import HARD_PULSE_CAP_S
from drivers.errors import DriverConfigError
from drivers.modbus.maps import GenericIOMap, ProbeMap

__all__ = ["BoardParams", "BusParams"]

Framing = Literal["rtu", "socket"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BusParams:
    """One bus. ``kind="rtu"``: ``port`` and the serial parameters; ``kind="tcp"``:
    ``host``, ``tcp_port`` and ``framing`` (``socket``: Modbus TCP/MBAP, ``rtu``: a
    transparent RTU-over-TCP gateway). ``timeout_s`` is per attempt, ``retries`` the
    re-sends after a timeout or a garbled reply; ``frame_gap_s`` (None: the Modbus 3.5
    characters on a serial line, none behind a gateway), ``settle_s`` (None: the smaller
    of ``timeout_s`` and 0.05 s), ``late_window_s`` (None: twice ``timeout_s``) and
    ``degraded_after`` are the line's late-reply policy (see :mod:`drivers.modbus.line`)."""

    name: str
    kind: Literal["rtu", "tcp"] = "rtu"
    port: str | None = None
    baudrate: int = 19200
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8
    host: str | None = None
    tcp_port: int = 502
    framing: Framing | None = None
    timeout_s: float = 0.1
    retries: int = 2
    frame_gap_s: float | None = None
    settle_s: float | None = None
    late_window_s: float | None = None
    degraded_after: int = 3

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> BusParams:
        """From a ``[[buses]]`` table; an unknown key or a missing name is an error."""
        params: BusParams = _from_table(cls, table, "bus")
        return params


@dataclass(frozen=True, slots=True, kw_only=True)
class BoardParams:
    """One board: its Modbus ``address``, its ``profile`` (``waveshare_relay``,
    ``generic_io``, ``temperature_probe``), its channel counts (None: the profile's), its
    ``register_map`` (a :class:`GenericIOMap` for ``generic_io``, a :class:`ProbeMap` for
    ``temperature_probe``, None otherwise) and the longest pulse it may be asked for."""

    name: str
    address: int
    profile: str
    outputs: int | None = None
    inputs: int | None = None
    channels: int | None = None
    register_map: GenericIOMap | ProbeMap | None = None
    max_pulse_s: float = HARD_PULSE_CAP_S

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> BoardParams:
        """From a ``[[boards]]`` table (``bus`` is ignored: the bus is given apart); the
        register map is read by the map of the board's profile."""
        table = dict(table)
        table.pop("bus", None)
        where = f"boards[{table.get('name', '?')}].register_map"
        raw_map = table.pop("register_map", None)
        params = _from_table(cls, table, "board")
        register_map: GenericIOMap | ProbeMap | None = None
        if params.profile == "generic_io":
            register_map = GenericIOMap.from_dict(raw_map or {}, where=where)
        elif params.profile == "temperature_probe":
            register_map = ProbeMap.from_dict(raw_map or {}, where=where)
        return cls(**{**{f.name: getattr(params, f.name) for f in fields(cls)},
                      "register_map": register_map})


def _from_table(cls: Any, table: Mapping[str, Any], what: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(table) - known)
    name = table.get("name", "?")
    if unknown:
        raise DriverConfigError(f"{what} {name!r}: unknown key {unknown[0]!r}")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in table.items():
        if value is None:
            continue
        values[key] = _typed(value, hints[key], f"{what} {name!r}: {key}")
    try:
        return cls(**values)
    except TypeError as exc:
        raise DriverConfigError(f"{what} {name!r}: {exc}") from exc


def _typed(value: Any, hint: Any, where: str) -> Any:
    """``value`` as the field's type, or a DriverConfigError naming the key."""
    union = typing.get_origin(hint) in (types.UnionType, typing.Union)
    for option in typing.get_args(hint) if union else (hint,):
        if _fits(value, option):
            return float(value) if option is float else value
    raise DriverConfigError(f"{where}: {value!r} is not a valid value")


def _fits(value: Any, option: Any) -> bool:
    if typing.get_origin(option) is Literal:
        return value in typing.get_args(option)
    if isinstance(value, bool):
        return option is bool
    if option is float:
        return isinstance(value, int | float)
    if option in (int, str):
        return isinstance(value, option)
    return isinstance(option, type) and option is not type(None) and isinstance(value, option)
