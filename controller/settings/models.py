"""The section structs: one frozen ``msgspec.Struct`` per TOML table, documented (each
field's description is its line in ``docs/configuration.md``) and checked by
:mod:`controller.settings.validate` (the rules and bounds in each field's ``Annotated``
metadata, then the table's ``_check``)."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import re
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import msgspec
from msgspec import Meta
from nacl.bindings import crypto_core_ed25519_is_valid_point

from controller.settings.errors import _REDACTED, Loc
from controller.settings.fields import (
    After,
    AfterCtx,
    Before,
    CompartmentId,
    Count,
    Flag,
    Ident,
    KeyId,
    Name,
    Number,
    Seconds,
    Tagged,
    ValidationContext,
    _check_files,
    _ctx_path,
    _deep_freeze,
    _freeze_mapping,
    _FrozenDict,
    _KeyedError,
    _Section,
    _table,
)
from drivers.base import HARD_PULSE_CAP_S
from drivers.config import BoardParams, BusParams
from drivers.modbus.maps import GenericIOMap, ProbeMap, PulseSpec

# =============================================================================================
# [cabinet]
# =============================================================================================


class CabinetConfig(_Section, kw_only=True, frozen=True):
    """``[cabinet]``: who this cabinet is."""

    site: Annotated[Ident, Meta(description="Site id, `[a-z0-9-]{1,32}`, e.g. `fr-lyon-07`.")]
    id: Annotated[Ident, Meta(description="Cabinet id within the site, `[a-z0-9-]{1,32}`.")]
    name: Annotated[str, Meta(description="Human name shown by `lockerctl`.")] = ""
    timezone: Annotated[
        str,
        After(_known_zone),
        Meta(description="IANA time zone of the site (`Europe/Paris`): the time of text logs "
             "(`log.format = \"text\"`), with its UTC offset. JSON logs and MQTT messages are in "
             "UTC; expiry and command deadlines never use the wall clock."),
    ] = "UTC"



def _known_zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone (got {value!r})") from None
    return value


# =============================================================================================
# [mqtt]
# =============================================================================================


class MqttTlsConfig(_Section, kw_only=True, frozen=True):
    """``[mqtt.tls]``: TLS to the broker; a client certificate per cabinet."""

    ca_file: Annotated[
        Path | None,
        AfterCtx(_existing_file),
        Meta(description="PEM file of the CA that signed the broker; unset = system CAs."),
    ] = None
    cert_file: Annotated[
        Path | None,
        AfterCtx(_existing_file),
        Meta(description="PEM client certificate of this cabinet."),
    ] = None
    key_file: Annotated[
        Path | None, AfterCtx(_existing_file), Meta(description="PEM private key of `cert_file`.")
    ] = None

    def _check(self, ctx: ValidationContext) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both or neither")


def _existing_file(value: Path | None, ctx: ValidationContext) -> Path | None:
    if value is None:
        return None
    path = _ctx_path(ctx, value)
    if _check_files(ctx):
        # Opened, not only seen: the check runs as the daemon's user (the installer
        # does so), so a file only root can read fails here, not at the first start.
        try:
            if not path.is_file():
                raise ValueError(f"file not found: {str(path)!r}")
            with path.open("rb"):
                pass
        except OSError as exc:  # a name too long, a loop of links, a denied directory
            raise ValueError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    return path


class MqttConfig(_Section, kw_only=True, frozen=True):
    """``[mqtt]``: the broker link to dispatch."""

    host: Annotated[str, Meta(min_length=1, description="Broker host name or IP.")] = "127.0.0.1"
    port: Annotated[Count, Meta(ge=1, le=65535, description="Broker TCP port.")] = 1883
    topic_root: Annotated[
        str,
        After(_topic),
        Meta(description="Topic prefix; the cabinet's root is `{topic_root}/{site}/{id}`."),
    ] = "lockers/v1"
    protocol: Annotated[
        Literal[5, 311],
        Meta(description="MQTT protocol version: `5` or `311` (3.1.1)."),
    ] = 5
    keepalive_s: Annotated[Count, Meta(ge=5, le=3600, description="MQTT keep-alive, seconds.")] = 30
    client_id: Annotated[
        str | None,
        Meta(min_length=1, max_length=128, description="Client id; default `locker-{site}-{id}`."),
    ] = None
    username: Annotated[str | None, Meta(description="Broker user name, if any.")] = None
    password: Annotated[
        str | None,
        Meta(description="Broker password (never shown or logged)."),
    ] = None
    tls: Annotated[
        MqttTlsConfig | None,
        Meta(description="`[mqtt.tls]`: unset = plain TCP (lab only)."),
    ] = None
    reconnect_min_s: Annotated[
        Seconds,
        Meta(gt=0, le=5,
             description="First reconnect delay, seconds; doubles per failure, with jitter."),
    ] = 0.25
    reconnect_max_s: Annotated[
        Seconds,
        Meta(ge=0.1, le=10,
             description="Longest reconnect delay, seconds (kept low: the cabinet must be back "
             "within seconds of the broker)."),
    ] = 3.0

    def _check(self, ctx: ValidationContext) -> None:
        # Keyed, so that the issue names where the key came from (a flag, a variable).
        if self.reconnect_max_s < self.reconnect_min_s:
            raise _KeyedError("reconnect_min_s",
                              f"must be <= reconnect_max_s ({self.reconnect_max_s})")
        if self.password is not None and self.username is None:
            raise _KeyedError("password", "set, but username is not")

    def _dump(self, reveal: bool) -> dict[str, Any]:
        out = super()._dump(reveal)
        if "password" in out and not reveal:
            out["password"] = _REDACTED
        return out

    def __repr__(self) -> str:
        return _repr_without(self, "password")


def _topic(value: str) -> str:
    levels = value.split("/")
    if not value or any(not level for level in levels):
        raise ValueError(f"must be levels separated by single '/' (got {value!r})")
    if any(ch in value for ch in "+#\x00") or value.startswith("$"):
        raise ValueError(f"must not contain '+', '#' or start with '$' (got {value!r})")
    return value


# =============================================================================================
# [redis]
# =============================================================================================


class RedisConfig(_Section, kw_only=True, frozen=True):
    """``[redis]``: the local durable store."""

    url: Annotated[
        str,
        After(_redis_scheme),
        Meta(description="`redis://`, `rediss://`, `unix:///path?db=0`, or `memory://` for an "
             "in-process fakeredis (simulator and demo only: nothing survives a restart). "
             "Query items: `db`, `username`, `password`, `password_file`; with `rediss://` "
             "also `ssl_cert_reqs`, `ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`, "
             "`ssl_check_hostname`; any other is refused, naming it."),
    ] = "unix:///run/redis-locker/redis.sock?db=0"
    key_prefix: Annotated[
        str | None,
        Meta(min_length=1,
             description="Prefix of the store's keys; the cabinet id is always added after it "
             "(keys `{key_prefix}:{id}:...`; a trailing `:{id}` is not doubled); default "
             "`locker:{site}`."),
    ] = None

    def _dump(self, reveal: bool) -> dict[str, Any]:
        out = super()._dump(reveal)
        if not reveal:
            out["url"] = _redacted_url(self.url)
        return out

    def __repr__(self) -> str:
        return _repr_without(self, "url")

    @property
    def is_memory(self) -> bool:
        """True for ``memory://``: the in-process fakeredis of the simulator and demo."""
        return urlsplit(self.url).scheme == "memory"


def _redis_scheme(value: str) -> str:
    scheme = urlsplit(value).scheme
    if scheme not in ("redis", "rediss", "unix", "memory"):
        raise ValueError(
            f"must start with redis://, rediss://, unix:// or memory:// (got {scheme!r})"
        )
    if value.startswith("memory://") and not re.fullmatch(r"[A-Za-z0-9_.-]{0,64}",
                                                         value[len("memory://"):]):
        raise ValueError("memory://NAME: the name is [A-Za-z0-9_.-]{0,64}, with no query "
                         f"items (got {value!r})")
    return value


def _redacted_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.password is None:
        return value
    host = parts.hostname or ""
    user = parts.username or ""
    netloc = f"{user}:{_REDACTED}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _repr_without(table: _Section, secret: str) -> str:
    """The struct's repr with ``secret`` left out: a secret never reaches a log line."""
    shown = ", ".join(f"{name}={getattr(table, name)!r}"
                      for name in table.__struct_fields__ if name != secret)
    return f"{type(table).__name__}({shown})"


# =============================================================================================
# [timing]
# =============================================================================================


class TimingConfig(_Section, kw_only=True, frozen=True):
    """``[timing]``: the clocks of the daemon. Every value is in seconds (a number, or a
    text with units such as ``"500ms"``, ``"2m"``)."""

    poll_interval_s: Annotated[
        Seconds,
        Meta(ge=0.01, le=10, description="Period of the input poll of every board."),
    ] = 0.1
    pulse_s: Annotated[
        Seconds,
        Meta(gt=0, le=HARD_PULSE_CAP_S, description="Unlock pulse length."),
    ] = 0.7
    max_pulse_s: Annotated[
        Seconds,
        Meta(gt=0, le=HARD_PULSE_CAP_S,
             description=f"Longest pulse any command may ask for; at most {HARD_PULSE_CAP_S} "
             "(the drivers' hard cap)."),
    ] = 3.0
    max_concurrent_pulses: Annotated[
        Count,
        Meta(ge=1, le=16, description="Solenoids energised at once (power budget)."),
    ] = 1
    pulse_gap_s: Annotated[
        Seconds,
        Meta(ge=0, le=60, description="Pause between the end of a pulse and the next one."),
    ] = 0.3
    compartment_cooldown_s: Annotated[
        Seconds,
        Meta(ge=0, le=3600, description="Least time between two pulses of one compartment."),
    ] = 2.0
    compartment_max_pulses_per_minute: Annotated[
        Count,
        Meta(ge=1, le=60, description="Rate limit of pulses per compartment."),
    ] = 6
    open_detect_timeout_s: Annotated[
        Seconds,
        Meta(gt=0, le=300,
             description="After a pulse, time for the door sensor to report open before "
             "'open not detected'."),
    ] = 5.0
    ajar_after_s: Annotated[
        Seconds,
        Meta(gt=0, le=86400,
             description="Door-ajar alarm after the door stays open this long; zones may set a "
             "shorter one."),
    ] = 120.0
    unknown_after_failed_polls: Annotated[
        Count,
        Meta(ge=1, le=100, description="Failed polls in a row before a sensor is unknown."),
    ] = 3
    door_debounce_s: Annotated[
        Seconds,
        Meta(ge=0, le=5,
             description="A door sensor's new level counts once it has been read this long "
             "(0: every poll counts)."),
    ] = 0.25
    latch_debounce_s: Annotated[
        Seconds,
        Meta(ge=0, le=5,
             description="The same for latch feedback; keep it below `pulse_s`, or a release is "
             "missed."),
    ] = 0.1
    occupancy_debounce_s: Annotated[
        Seconds,
        Meta(ge=0, le=5,
             description="The same for occupancy sensors; at most the door's, so a close is "
             "judged on a settled occupancy."),
    ] = 0.2
    flapping_changes: Annotated[
        Count,
        Meta(ge=0, le=1000,
             description="A signal that changes more often than this within `flapping_window_s` "
             "is flapping: it reads unknown and raises `sensor_flapping` (0: never)."),
    ] = 8
    flapping_window_s: Annotated[
        Seconds,
        Meta(gt=0, le=600, description="Window in which `flapping_changes` are counted."),
    ] = 3.0
    flapping_clear_s: Annotated[
        Seconds,
        Meta(gt=0, le=3600,
             description="A flapping signal is trusted again (alarm cleared) after it has not "
             "changed for this long."),
    ] = 5.0
    state_coalesce_s: Annotated[
        Seconds,
        Meta(ge=0, le=60, description="Changes within this window make one `state` message."),
    ] = 0.5
    telemetry_interval_s: Annotated[
        Seconds,
        Meta(ge=1, le=86400, description="Period of the `telemetry` message."),
    ] = 60.0
    command_max_ttl_s: Annotated[
        Seconds,
        Meta(gt=0, le=30.0,
             description="Commands whose deadline lies further ahead are refused (at most 30)."),
    ] = 30.0

    def _check(self, ctx: ValidationContext) -> None:
        if self.pulse_s > self.max_pulse_s:
            raise _KeyedError("pulse_s", f"must be <= max_pulse_s ({self.max_pulse_s})")


# =============================================================================================
# [[buses]]
# =============================================================================================

_BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
_RTU_ONLY = ("port", "baudrate", "parity", "stopbits", "bytesize")
_TCP_ONLY = ("host", "tcp_port", "isolated_interface")


class BusConfig(_Section, kw_only=True, frozen=True):
    """``[[buses]]``: one RS-485 line (``rtu``, a serial port) or one Modbus TCP gateway
    (``tcp``). One owner per line: one transaction at a time."""

    name: Annotated[Name, Meta(description="Bus name, referenced by `boards[].bus`.")]
    kind: Annotated[Literal["rtu", "tcp"], Meta(description="`rtu` or `tcp`.")] = "rtu"
    port: Annotated[
        str | None,
        Meta(description="rtu: serial device, e.g. `/dev/ttyLOCKER0`."),
    ] = None
    baudrate: Annotated[
        Count, After(_standard_rate), Meta(description="rtu: line speed, a standard rate.")
    ] = 9600
    parity: Annotated[Literal["N", "E", "O"], Meta(description="rtu: `N`, `E` or `O`.")] = "N"
    stopbits: Annotated[Literal[1, 2], Meta(description="rtu: 1 or 2.")] = 1
    bytesize: Annotated[Literal[7, 8], Meta(description="rtu: 7 or 8.")] = 8
    host: Annotated[str | None, Meta(description="tcp: gateway host.")] = None
    tcp_port: Annotated[Count, Meta(ge=1, le=65535, description="tcp: gateway port.")] = 502
    isolated_interface: Annotated[
        str | None,
        Meta(pattern=r"^[A-Za-z0-9_.:-]{1,15}$",
             description="tcp: the network interface of the dedicated, isolated link the gateway "
             "is on (e.g. `eth1`, a cable from the Pi to the gateway and nothing else). Modbus TCP "
             "has no authentication: a `host` that is not a loopback address is refused unless "
             "this declares such a link."),
    ] = None
    timeout_s: Annotated[
        Seconds,
        Meta(gt=0, le=10, description="Reply timeout of one transaction."),
    ] = 0.3
    retries: Annotated[Count, Meta(ge=0, le=10, description="Retries of a transaction.")] = 2
    frame_gap_s: Annotated[
        Seconds | None,
        Meta(ge=0, le=1,
             description="Silence between frames; default the Modbus 3.5 characters "
             "(1.75 ms above 19200 baud)."),
    ] = None
    settle_s: Annotated[
        Seconds | None,
        Meta(ge=0, le=1,
             description="Quiet time the line waits for after a failed attempt before the next "
             "request; default the smaller of `timeout_s` and 0.05 s."),
    ] = None
    late_window_s: Annotated[
        Seconds | None,
        Meta(ge=0, le=10,
             description="After a timed-out attempt, how long its reply is still awaited as "
             "late (counted in telemetry `late_replies` and discarded, never taken for the next "
             "answer); default twice `timeout_s`."),
    ] = None
    degraded_after: Annotated[
        Count,
        Meta(ge=1, le=50,
             description="A board with late replies in this many of its last transactions is "
             "degraded: its reads fail and its signals read unknown until it answers on time "
             "this many times in a row."),
    ] = 3


    def to_driver(self) -> BusParams:
        """The typed settings the bus backend receives (every key of this table)."""
        return BusParams(
            name=self.name, kind=self.kind, port=self.port, baudrate=self.baudrate,
            parity=self.parity, stopbits=self.stopbits, bytesize=self.bytesize,
            host=self.host, tcp_port=self.tcp_port, timeout_s=self.timeout_s,
            retries=self.retries, frame_gap_s=self.frame_gap_s, settle_s=self.settle_s,
            late_window_s=self.late_window_s, degraded_after=self.degraded_after,
        )

    def _check(self, ctx: ValidationContext) -> None:
        # A key of the other kind, set away from its default, is a mistake worth naming
        # (a tcp gateway with a baudrate). Defaults are fine: to_dict() writes them all.
        if self.kind == "rtu":
            if self.port is None:
                raise _KeyedError("port", "missing (required for kind = 'rtu')")
            wrong = [k for k in _TCP_ONLY if getattr(self, k) != _BUS_DEFAULTS[k]]
        else:
            if self.host is None:
                raise _KeyedError("host", "missing (required for kind = 'tcp')")
            wrong = [k for k in _RTU_ONLY if getattr(self, k) != _BUS_DEFAULTS[k]]
        if wrong:
            raise _KeyedError(wrong[0], f"not used by kind = {self.kind!r}")


def _standard_rate(value: int) -> int:
    if value not in _BAUDRATES:
        rates = ", ".join(str(r) for r in _BAUDRATES)
        raise ValueError(f"must be one of {rates} (got {value})")
    return value


_BUS_DEFAULTS = {f.name: f.default for f in msgspec.structs.fields(BusConfig)
                 if f.name in (*_RTU_ONLY, *_TCP_ONLY)}


# =============================================================================================
# [[boards]]
# =============================================================================================


class RegisterBits(_Section, kw_only=True, frozen=True):
    """Where a generic IO board keeps a run of bits: a Modbus table and a start address."""

    table: Annotated[
        Literal["coils", "discrete_inputs", "input_register_bits", "holding_register_bits"],
        Meta(description="Modbus table."),
    ]
    address: Annotated[Count, Meta(ge=0, le=0xFFFF, description="First address.")] = 0


class PulseMode(_Section, kw_only=True, frozen=True):
    """How a generic IO board times an unlock pulse."""

    kind: Annotated[
        Literal["daemon", "register"],
        Meta(description="`daemon`: the driver switches off itself (hard-capped); `register`: "
             "writing a duration to a holding register makes the board time it."),
    ] = "daemon"
    address: Annotated[
        Count | None,
        Meta(ge=0, le=0xFFFF, description="register: first pulse register."),
    ] = None
    unit_ms: Annotated[
        Count | None,
        Meta(ge=1, le=10000, description="register: milliseconds per count."),
    ] = None

    def _check(self, ctx: ValidationContext) -> None:
        if self.kind == "register":
            for key in ("address", "unit_ms"):
                if getattr(self, key) is None:
                    raise _KeyedError(key, "missing (required for kind = 'register')")
        else:
            for key in ("address", "unit_ms"):
                if getattr(self, key) is not None:
                    raise _KeyedError(key, "not used by kind = 'daemon'")


class GenericIoRegisterMap(_Section, kw_only=True, frozen=True):
    """``register_map`` of a ``generic_io`` board."""

    outputs: Annotated[
        RegisterBits,
        Meta(description="Output bits: table `coils` or `holding_register_bits`."),
    ] = _table(RegisterBits, table="coils")
    inputs: Annotated[
        RegisterBits,
        Meta(description="Input bits: `discrete_inputs`, `input_register_bits` or "
             "`holding_register_bits`."),
    ] = _table(RegisterBits, table="discrete_inputs")
    pulse: Annotated[PulseMode, Meta(description="Pulse timing.")] = _table(PulseMode)

    def to_driver(self) -> GenericIOMap:
        pulse = self.pulse
        return GenericIOMap(
            outputs_table=self.outputs.table, outputs_address=self.outputs.address,
            inputs_table=self.inputs.table, inputs_address=self.inputs.address,
            pulse=PulseSpec() if pulse.kind == "daemon" else PulseSpec(
                kind=pulse.kind, address=pulse.address or 0, unit_ms=pulse.unit_ms or 100),
        )

    def _check(self, ctx: ValidationContext) -> None:
        if self.outputs.table not in ("coils", "holding_register_bits"):
            raise _KeyedError(
                "outputs",
                f"table must be 'coils' or 'holding_register_bits' (got {self.outputs.table!r})",
            )
        if self.inputs.table == "coils":
            raise _KeyedError("inputs", "table must not be 'coils' (outputs are coils)")


class ProbeRegisterMap(_Section, kw_only=True, frozen=True):
    """``register_map`` of a ``temperature_probe`` board: one register per channel,
    ``value = raw * scale + offset``."""

    table: Annotated[
        Literal["input_registers", "holding_registers"],
        Meta(description="Modbus table of the readings."),
    ] = "input_registers"
    address: Annotated[Count, Meta(ge=0, le=0xFFFF, description="Register of channel 0.")] = 0
    scale: Annotated[
        Number, After(_nonzero), Meta(ge=-100, le=100, description="°C per count.")
    ] = 0.1
    offset: Annotated[Number, Meta(ge=-1000, le=1000, description="°C added after scaling.")] = 0.0
    signed: Annotated[Flag, Meta(description="Registers are two's complement.")] = True
    invalid: Annotated[
        Count | None,
        Meta(ge=-32768, le=0xFFFF, description="Raw value meaning 'no sensor'; unset = none."),
    ] = -32768

    def to_driver(self) -> ProbeMap:
        return ProbeMap(table=self.table, address=self.address, scale=self.scale,
                        offset=self.offset, signed=self.signed, invalid=self.invalid)



def _nonzero(value: float) -> float:
    if value == 0:
        raise ValueError("must not be 0")
    return value


class _BoardBase(_Section, kw_only=True, frozen=True):
    name: Annotated[Name, Meta(description="Board name, referenced by channels.")]
    bus: Annotated[Name, Meta(description="Name of the bus the board is on.")]
    address: Annotated[
        Count,
        Meta(ge=1, le=255,
             description="Modbus unit address, 1..255 (248..255 are reserved by the Modbus "
             "specification but used by the relay boards)."),
    ]

    @property
    def output_count(self) -> int:
        """Number of lock outputs (0 for a probe board)."""
        return 0

    @property
    def input_count(self) -> int:
        """Number of contact inputs (0 for a probe board)."""
        return 0

    @property
    def is_lock_board(self) -> bool:
        """True if the board drives solenoids (waveshare_relay, generic_io)."""
        return False

    def to_driver(self, max_pulse_s: float) -> BoardParams:
        """The typed settings the board backend receives; ``max_pulse_s`` is the
        cabinet's pulse cap (``timing.max_pulse_s``), used unless the board sets its own."""
        raise NotImplementedError


class _LockBoardBase(_BoardBase, kw_only=True, frozen=True):
    """A board with lock outputs and contact inputs (the subclasses declare both)."""

    outputs: int
    inputs: int

    @property
    def output_count(self) -> int:
        return self.outputs

    @property
    def input_count(self) -> int:
        return self.inputs

    @property
    def is_lock_board(self) -> bool:
        return True


class WaveshareRelayBoard(_LockBoardBase, kw_only=True, frozen=True):
    """A Waveshare-style Modbus RTU relay board: relays are coils, the board times the
    pulse itself ("flash on"), inputs are discrete inputs. Its register map is fixed
    (:data:`drivers.modbus.registers.WAVESHARE`)."""

    profile: Annotated[Literal["waveshare_relay"], Meta(description="Board profile.")]
    outputs: Annotated[Count, Meta(ge=1, le=64, description="Relay channels (8, 16, 32).")]
    inputs: Annotated[Count, Meta(ge=0, le=64, description="Digital inputs.")] = 0
    max_pulse_s: Annotated[
        Seconds | None,
        Meta(gt=0, le=HARD_PULSE_CAP_S,
             description="Pulse cap of this board; default `timing.max_pulse_s`."),
    ] = None

    def to_driver(self, max_pulse_s: float) -> BoardParams:
        return BoardParams(
            name=self.name, address=self.address, profile=self.profile,
            outputs=self.outputs, inputs=self.inputs, max_pulse_s=self.max_pulse_s or max_pulse_s,
        )


class GenericIoBoard(_LockBoardBase, kw_only=True, frozen=True):
    """A generic Modbus IO board described by its ``register_map``."""

    profile: Annotated[Literal["generic_io"], Meta(description="Board profile.")]
    outputs: Annotated[Count, Meta(ge=0, le=256, description="Output channels.")] = 0
    inputs: Annotated[Count, Meta(ge=0, le=256, description="Input channels.")] = 0
    register_map: Annotated[
        GenericIoRegisterMap,
        Meta(description="Where the bits are."),
    ] = _table(GenericIoRegisterMap)
    max_pulse_s: Annotated[
        Seconds | None,
        Meta(gt=0, le=HARD_PULSE_CAP_S,
             description="Pulse cap of this board; default `timing.max_pulse_s`."),
    ] = None

    def to_driver(self, max_pulse_s: float) -> BoardParams:
        return BoardParams(
            name=self.name, address=self.address, profile=self.profile,
            outputs=self.outputs, inputs=self.inputs, register_map=self.register_map.to_driver(),
            max_pulse_s=self.max_pulse_s or max_pulse_s,
        )

    def _check(self, ctx: ValidationContext) -> None:
        if self.outputs == 0 and self.inputs == 0:
            raise _KeyedError("outputs", "a generic_io board needs outputs or inputs")



class TemperatureProbeBoard(_BoardBase, kw_only=True, frozen=True):
    """A Modbus temperature probe board: ``channels`` readings in one transaction."""

    profile: Annotated[Literal["temperature_probe"], Meta(description="Board profile.")]
    channels: Annotated[Count, Meta(ge=1, le=64, description="Probe channels.")]
    register_map: Annotated[
        ProbeRegisterMap,
        Meta(description="Where and how readings are stored."),
    ] = _table(ProbeRegisterMap)

    def to_driver(self, max_pulse_s: float) -> BoardParams:
        return BoardParams(
            name=self.name, address=self.address, profile=self.profile,
            channels=self.channels, register_map=self.register_map.to_driver(),
            max_pulse_s=max_pulse_s,
        )


#: One ``[[boards]]`` entry; ``profile`` says which.
BoardConfig: TypeAlias = Annotated[
    WaveshareRelayBoard | GenericIoBoard | TemperatureProbeBoard,
    Tagged("profile"),
]
_BOARD_CLASSES: dict[str, type[_BoardBase]] = {
    "waveshare_relay": WaveshareRelayBoard,
    "generic_io": GenericIoBoard,
    "temperature_probe": TemperatureProbeBoard,
}


# =============================================================================================
# [[zones]] and [[compartments]]
# =============================================================================================


class ChannelRef(_Section, kw_only=True, frozen=True):
    """A board channel: ``{ board = "locks-a", channel = 0 }`` (channels count from 0)."""

    board: Annotated[Name, Meta(description="Board name.")]
    channel: Annotated[Count, Meta(ge=0, le=255, description="Channel, from 0.")]


class SignalRef(ChannelRef, kw_only=True, frozen=True):
    """A board input with its polarity: ``active`` is the raw level that means the
    signal's active state (door open, latch released, compartment occupied)."""

    active: Annotated[
        Literal["high", "low"],
        Meta(description="`high` (input reads 1 when active) or `low`."),
    ]


class ZoneConfig(_Section, kw_only=True, frozen=True):
    """``[[zones]]``: a temperature zone of the cabinet."""

    name: Annotated[Name, Meta(description="Zone name, referenced by `compartments[].zone`.")]
    kind: Annotated[
        Literal["ambient", "chilled", "frozen"],
        Meta(description="`ambient`, `chilled` or `frozen`."),
    ]
    min_c: Annotated[Number | None, Meta(ge=-60, le=60, description="Lowest °C in range.")] = None
    max_c: Annotated[Number | None, Meta(ge=-60, le=60, description="Highest °C in range.")] = None
    excursion_delay_s: Annotated[
        Seconds,
        Meta(ge=0, le=86400, description="Out of range this long before the excursion alarm."),
    ] = 600.0
    ajar_after_s: Annotated[
        Seconds | None,
        Meta(gt=0, le=86400,
             description="Door-ajar delay in this zone, at most `timing.ajar_after_s`."),
    ] = None
    probe: Annotated[
        ChannelRef | None,
        Meta(description="`{ board, channel }` of a temperature_probe board."),
    ] = None

    def _check(self, ctx: ValidationContext) -> None:
        if self.kind != "ambient":
            for key in ("min_c", "max_c", "probe"):
                if getattr(self, key) is None:
                    raise _KeyedError(key, f"missing (required for a {self.kind} zone)")
        if self.min_c is not None and self.max_c is not None and self.min_c >= self.max_c:
            raise _KeyedError("max_c", f"must be > min_c ({self.min_c})")


class CompartmentConfig(_Section, kw_only=True, frozen=True):
    """``[[compartments]]``: one door, its lock output and its optional sensors."""

    id: Annotated[CompartmentId, Meta(description="Compartment id, `[A-Z0-9-]{1,8}`, e.g. `A01`.")]
    size: Annotated[Literal["S", "M", "L", "XL"], Meta(description="`S`, `M`, `L` or `XL`.")]
    zone: Annotated[Name, Meta(description="Zone name.")]
    pool: Annotated[Name, Meta(description="Tenant pool, a key of `[tenants]`.")]
    lock: Annotated[ChannelRef, Meta(description="Lock output `{ board, channel }`.")]
    door: Annotated[
        SignalRef | None,
        Meta(description="Door sensor `{ board, channel, active }`; active = open."),
    ] = None
    latch: Annotated[
        SignalRef | None,
        Meta(description="Latch feedback; active = latch released."),
    ] = None
    occupancy: Annotated[
        SignalRef | None,
        Meta(description="Occupancy sensor; active = occupied."),
    ] = None


# =============================================================================================
# [security], [lane], [tenants], [log]
# =============================================================================================

_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_PEM_BLOCK = re.compile(
    r"-----BEGIN PUBLIC KEY-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END PUBLIC KEY-----"
)


def _raw_ed25519(der_or_raw: bytes) -> bytes:
    if len(der_or_raw) == 32:
        return der_or_raw
    if len(der_or_raw) == 44 and der_or_raw.startswith(_ED25519_SPKI_PREFIX):
        return der_or_raw[len(_ED25519_SPKI_PREFIX) :]
    raise ValueError("not an Ed25519 public key")


def _key_from_pem(text: str) -> bytes:
    match = _PEM_BLOCK.search(text)
    if match is None:
        raise ValueError("no PEM 'PUBLIC KEY' block")
    return _raw_ed25519(base64.b64decode("".join(match.group(1).split()), validate=True))


def _usable_key(raw: bytes) -> bytes:
    """``raw`` if it is a point of large order on the Ed25519 curve, in canonical form.
    Any other 32 bytes can never check a signature: with libsodium every command would be
    refused, and a key of small order is the one under which a lax check accepts forgeries."""
    if not crypto_core_ed25519_is_valid_point(raw):
        raise ValueError("not a usable Ed25519 public key (off the curve, or of small order)")
    return raw


def _inline_key(value: str) -> bytes | None:
    """The raw key if ``value`` is an inline base64 Ed25519 public key, else None."""
    try:
        return _raw_ed25519(base64.b64decode(value, validate=True))
    except (ValueError, binascii.Error):
        return None


def _check_key_ref(ref: str, ctx: ValidationContext) -> str:
    """An inline key stays as written; a path is resolved and, unless file checks are off,
    must hold a PEM Ed25519 public key."""
    inline = _inline_key(ref)
    if inline is not None:
        _usable_key(inline)
        return ref
    path = _ctx_path(ctx, ref)
    if _check_files(ctx):
        try:
            _usable_key(_key_from_pem(path.read_text(encoding="ascii")))
        except OSError as exc:
            raise ValueError(f"cannot read {str(path)!r}: {exc.strerror}") from None
        except (ValueError, binascii.Error) as exc:
            raise ValueError(f"{str(path)!r} is not a PEM Ed25519 public key ({exc})") from None
    return str(path)


class SecurityConfig(_Section, kw_only=True, frozen=True):
    """``[security]``: who may open doors."""

    require_signed_commands: Annotated[
        Flag,
        Meta(description="Door, code and config commands must be signed by dispatch. "
             "Only a lab may turn this off."),
    ] = True
    dispatch_public_keys: Annotated[
        Mapping[KeyId, Annotated[str, AfterCtx(_check_key_ref)]],
        After(_freeze_mapping),
        Meta(description="`key_id = ` path of a PEM Ed25519 public key, or the key inline in "
             "base64 (raw 32 bytes or DER). A key off the curve or of small order is refused."),
    ] = _table(None)
    code_max_attempts: Annotated[
        Count,
        Meta(ge=1, le=100,
             description="Wrong pickup codes an input of the lane (keypad, scanner) may make in "
             "a row before it is slowed down (its budget)."),
    ] = 5
    code_lockout_s: Annotated[
        Seconds,
        Meta(gt=0, le=86400, description="Time in which a slowed input earns back one wrong code."),
    ] = 60.0
    code_key_file: Annotated[
        Path | None,
        AfterCtx(_code_key_path),
        Meta(description="The cabinet's code key (X25519 key pair and verifier secret), created "
             "at the first start with mode 0600; relative to the config file. Default: "
             "`code.key` in the service's state directory under systemd (`STATE_DIRECTORY`), "
             "else beside the config file."),
    ] = None

    def _dump(self, reveal: bool) -> dict[str, Any]:
        out = super()._dump(reveal)
        if not reveal:
            out["dispatch_public_keys"] = {
                k: v
                if _inline_key(v) is None
                else "inline sha256:" + hashlib.sha256(v.encode()).hexdigest()[:16]
                for k, v in self.dispatch_public_keys.items()
            }
        return out

    def _check(self, ctx: ValidationContext) -> None:
        if self.require_signed_commands and not self.dispatch_public_keys:
            raise _KeyedError(
                "dispatch_public_keys",
                "missing: require_signed_commands = true needs at least one key",
            )

    def public_key(self, key_id: str) -> bytes:
        """The raw 32-byte Ed25519 public key ``key_id`` (read from its file when it is a
        path). Raises ``KeyError`` for an unknown id, ``ValueError``/``OSError`` for a key
        file that changed since start-up."""
        ref = self.dispatch_public_keys[key_id]
        inline = _inline_key(ref)
        if inline is not None:
            return inline
        return _key_from_pem(Path(ref).read_text(encoding="ascii"))


def _code_key_path(value: Path | None, ctx: ValidationContext) -> Path | None:
    if value is None:
        return None
    if value.name in ("", ".", ".."):  # "" reads as "." (the config's own directory)
        raise ValueError(f"must name the key's file, not a directory (got {str(value)!r})")
    return _ctx_path(ctx, value)


class GpioInput(_Section, kw_only=True, frozen=True):
    """A lane input line."""

    pin: Annotated[Count, Meta(ge=0, le=127, description="GPIO line offset (BCM number on a Pi).")]
    active_low: Annotated[Flag, Meta(description="Active when the line reads 0.")] = False
    debounce_ms: Annotated[Count, Meta(ge=0, le=5000, description="Debounce, ms.")] = 20


class GpioOutput(_Section, kw_only=True, frozen=True):
    """A lane output line."""

    pin: Annotated[Count, Meta(ge=0, le=127, description="GPIO line offset (BCM number on a Pi).")]
    active_low: Annotated[Flag, Meta(description="On = drive the line to 0.")] = False


class LaneInputs(_Section, kw_only=True, frozen=True):
    """``[lane.inputs]``: each line optional."""

    vehicle: Annotated[GpioInput | None, Meta(description="Vehicle presence loop.")] = None
    help: Annotated[GpioInput | None, Meta(description="Help button.")] = None
    tamper: Annotated[GpioInput | None, Meta(description="Cabinet tamper switch.")] = None
    mains_fail: Annotated[GpioInput | None, Meta(description="UPS mains-fail signal.")] = None


class LaneOutputs(_Section, kw_only=True, frozen=True):
    """``[lane.outputs]``: each line optional."""

    light_red: Annotated[GpioOutput | None, Meta(description="Red lane light.")] = None
    light_green: Annotated[GpioOutput | None, Meta(description="Green lane light.")] = None
    light_amber: Annotated[
        GpioOutput | None,
        Meta(description="Amber lane light (busy); without it busy lights red and green."),
    ] = None
    buzzer: Annotated[GpioOutput | None, Meta(description="Buzzer.")] = None


class ScannerConfig(_Section, kw_only=True, frozen=True):
    """``[lane.scanner]``: serial code/QR scanner."""

    port: Annotated[str, Meta(min_length=1, description="Serial device, e.g. `/dev/ttyACM0`.")]
    baudrate: Annotated[Count, Meta(ge=1200, le=921600, description="Line speed.")] = 9600


class LaneConfig(_Section, kw_only=True, frozen=True):
    """``[lane]``: the drive lane's GPIO and scanner."""

    backend: Annotated[
        Literal["mock", "simulator", "rpigpio", "gpiod"],
        Meta(description="GPIO backend: `gpiod` (Pi 5 and later kernels), `rpigpio` (Pi 1-4), "
             "`simulator`, `mock`."),
    ] = "mock"
    chip: Annotated[str, Meta(description="gpiod: the GPIO chip.")] = "/dev/gpiochip0"
    options: Annotated[
        Mapping[str, Any],
        After(_deep_freeze),
        Meta(description="Backend-specific options, passed through."),
    ] = _table(None)
    inputs: Annotated[LaneInputs, Meta(description="Input lines.")] = _table(LaneInputs)
    outputs: Annotated[LaneOutputs, Meta(description="Output lines.")] = _table(LaneOutputs)
    scanner: Annotated[ScannerConfig | None, Meta(description="Code scanner.")] = None

    def _check(self, ctx: ValidationContext) -> None:
        seen: dict[int, str] = {}
        for group in ("inputs", "outputs"):
            lines = getattr(self, group)
            for key in lines.__struct_fields__:
                line = getattr(lines, key)
                if line is None:
                    continue
                if line.pin in seen:
                    raise _KeyedError(
                        f"{group}.{key}", f"pin {line.pin} already used by {seen[line.pin]}"
                    )
                seen[line.pin] = f"lane.{group}.{key}"


class TenantPolicy(_Section, kw_only=True, frozen=True):
    """``[tenants.<pool>]``: the rules of one tenant pool. Durations accept units:
    ``"1h30m"``, ``"3d"``."""

    expiry_s: Annotated[
        Seconds,
        Meta(gt=0, le=90 * 86400,
             description="The pickup window: this long after assignment (unless dispatch sends "
             "`expires_at`) the order expires, is reported (`order_expired`), its code is refused "
             "and the compartment opens only for staff retrieval."),
    ] = 259200.0
    reopen_grace_s: Annotated[
        Seconds,
        Meta(ge=0, le=86400,
             description="After collection, the same code may reopen the door this long."),
    ] = 120.0


class LogConfig(_Section, kw_only=True, frozen=True):
    """``[log]``."""

    level: Annotated[
        Literal["debug", "info", "warning", "error"],
        Before(_lower),
        Meta(description="`debug`, `info`, `warning` or `error`."),
    ] = "info"
    format: Annotated[
        Literal["json", "text"],
        Meta(description="`json` (journald, one object per line) or `text`."),
    ] = "json"



def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


# =============================================================================================
# Settings
# =============================================================================================


class Settings(_Section, kw_only=True, frozen=True):
    """The whole, validated, frozen cabinet configuration. Build it with
    :func:`load_settings` (file + environment + flags) or :func:`parse_settings` (a
    mapping); both run the cross-section checks and raise :class:`ConfigError`.

    Sections: ``cabinet``, ``mqtt``, ``redis``, ``timing``, ``buses``, ``boards``, ``zones``,
    ``compartments``, ``security``, ``lane``, ``tenants``, ``simulator``, ``log``.
    """

    cabinet: Annotated[CabinetConfig, Meta(description="`[cabinet]`.")]
    mqtt: Annotated[MqttConfig, Meta(description="`[mqtt]`.")] = _table(MqttConfig)
    redis: Annotated[RedisConfig, Meta(description="`[redis]`.")] = _table(RedisConfig)
    timing: Annotated[TimingConfig, Meta(description="`[timing]`.")] = _table(TimingConfig)
    buses: Annotated[tuple[BusConfig, ...], Meta(description="`[[buses]]`.")] = ()
    boards: Annotated[tuple[BoardConfig, ...], Meta(description="`[[boards]]`.")] = ()
    zones: Annotated[tuple[ZoneConfig, ...], Meta(description="`[[zones]]`.")] = ()
    compartments: Annotated[
        tuple[CompartmentConfig, ...],
        Meta(description="`[[compartments]]`."),
    ] = ()
    security: Annotated[SecurityConfig, Meta(description="`[security]`.")] = _table(SecurityConfig)
    lane: Annotated[LaneConfig, Meta(description="`[lane]`.")] = _table(LaneConfig)
    tenants: Annotated[
        Mapping[Name, TenantPolicy],
        After(_freeze_mapping),
        Meta(description="`[tenants.<pool>]`: one table per pool."),
    ] = _table(None)
    simulator: Annotated[
        Mapping[str, Any],
        After(_deep_freeze),
        Meta(description="`[simulator]`: free-form, read by `locker-sim`, ignored by the daemon."),
    ] = _table(None)
    log: Annotated[LogConfig, Meta(description="`[log]`.")] = _table(LogConfig)

    @staticmethod
    def _prepare(data: dict[str, Any]) -> dict[str, Any]:
        # client_id and key_prefix default to names derived from the cabinet identity.
        cabinet = data.get("cabinet")
        if not isinstance(cabinet, dict):
            return data
        site, cab = cabinet.get("site"), cabinet.get("id")
        if not (isinstance(site, str) and isinstance(cab, str)):
            return data
        data = dict(data)
        for section, key, value in (
            ("mqtt", "client_id", f"locker-{site}-{cab}"),
            ("redis", "key_prefix", f"locker:{site}:{cab}:"),
        ):
            table = data.get(section, {})
            if isinstance(table, dict) and table.get(key) is None:
                data[section] = {**table, key: value}
        return data

    def _check(self, ctx: ValidationContext) -> list[tuple[Loc, str]]:
        from controller.settings.checks import _cross_check  # the checks read these structs

        return _cross_check(self)

    # -- views -----------------------------------------------------------------------------

    @property
    def topic_root(self) -> str:
        """This cabinet's MQTT root: ``{mqtt.topic_root}/{site}/{id}``."""
        return f"{self.mqtt.topic_root}/{self.cabinet.site}/{self.cabinet.id}"

    def compartment(self, compartment_id: str) -> CompartmentConfig:
        """The compartment ``compartment_id``; ``KeyError`` if there is none."""
        for compartment in self.compartments:
            if compartment.id == compartment_id:
                return compartment
        raise KeyError(f"unknown compartment {compartment_id!r}")

    def board(self, name: str) -> BoardConfig:
        """The board called ``name``; ``KeyError`` if there is none."""
        for board in self.boards:
            if board.name == name:
                return board
        raise KeyError(f"unknown board {name!r}")

    def bus(self, name: str) -> BusConfig:
        """The bus called ``name``; ``KeyError`` if there is none."""
        for bus in self.buses:
            if bus.name == name:
                return bus
        raise KeyError(f"unknown bus {name!r}")

    def zone(self, name: str) -> ZoneConfig:
        """The zone called ``name``; ``KeyError`` if there is none."""
        for zone in self.zones:
            if zone.name == name:
                return zone
        raise KeyError(f"unknown zone {name!r}")

    def boards_on(self, bus: str) -> tuple[BoardConfig, ...]:
        """The boards on bus ``bus``, in file order (empty for an unknown bus)."""
        return tuple(b for b in self.boards if b.bus == bus)

    def boards_by_bus(self) -> Mapping[str, tuple[BoardConfig, ...]]:
        """Every bus name, in file order, with its boards in file order."""
        return _FrozenDict({bus.name: self.boards_on(bus.name) for bus in self.buses})

    def zone_of(self, compartment_id: str) -> ZoneConfig:
        """The zone of compartment ``compartment_id``."""
        return self.zone(self.compartment(compartment_id).zone)

    def ajar_after_s(self, compartment_id: str) -> float:
        """The effective door-ajar delay of a compartment: its zone's ``ajar_after_s`` if
        set, else ``timing.ajar_after_s``."""
        zone = self.zone_of(compartment_id)
        return zone.ajar_after_s if zone.ajar_after_s is not None else self.timing.ajar_after_s

    def tenant(self, pool: str) -> TenantPolicy:
        """The policy of tenant pool ``pool``; ``KeyError`` if there is none."""
        return self.tenants[pool]

    def max_pulse_s(self, board: str) -> float:
        """The pulse cap of a lock board: its own ``max_pulse_s`` or ``timing.max_pulse_s``,
        never above :data:`drivers.base.HARD_PULSE_CAP_S`."""
        spec = self.board(board)
        own = getattr(spec, "max_pulse_s", None)
        cap = self.timing.max_pulse_s if own is None else own
        return min(cap, HARD_PULSE_CAP_S)

    def to_dict(self, *, reveal_secrets: bool = False) -> dict[str, Any]:
        """The effective configuration as plain JSON/TOML-able data (unset keys left out).
        Secrets (MQTT password, Redis URL password) are ``"***"`` unless
        ``reveal_secrets``; with it, ``parse_settings(s.to_dict(reveal_secrets=True))``
        gives back an equal :class:`Settings`."""
        return self._dump(reveal_secrets)

    def to_public_dict(self) -> dict[str, Any]:
        """What ``lockerctl config show`` prints: the effective configuration with
        passwords redacted and inline keys replaced by fingerprints."""
        return self.to_dict(reveal_secrets=False)

    @functools.cached_property
    def config_hash(self) -> str:
        """A stable SHA-256 (hex) of the effective public configuration: equal configs
        give equal hashes whatever their layout, order of keys or layer. Secrets are not
        part of it (changing only a password does not change the hash). Computed once:
        the settings are frozen, and every status message carries it."""
        text = json.dumps(self.to_public_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()
