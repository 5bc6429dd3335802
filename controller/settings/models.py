"""The section models: one pydantic model per TOML table, frozen, strict, documented
(each field's description is its line in ``docs/configuration.md``)."""

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

from nacl.bindings import crypto_core_ed25519_is_valid_point
from pydantic import (
    AfterValidator,
    Field,
    SerializationInfo,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from controller.settings.errors import _REDACTED, _format_loc
from controller.settings.fields import (
    CompartmentId,
    Count,
    Flag,
    Ident,
    KeyId,
    Name,
    Number,
    Seconds,
    _check_files,
    _ctx_path,
    _deep_freeze,
    _freeze_mapping,
    _FrozenDict,
    _Section,
    _table,
)
from drivers.base import HARD_PULSE_CAP_S
from drivers.config import BoardParams, BusParams
from drivers.modbus.maps import GenericIOMap, ProbeMap, PulseSpec

# =============================================================================================
# [cabinet]
# =============================================================================================


class CabinetConfig(_Section):
    """``[cabinet]``: who this cabinet is."""

    site: Ident = Field(description="Site id, `[a-z0-9-]{1,32}`, e.g. `fr-lyon-07`.")
    id: Ident = Field(description="Cabinet id within the site, `[a-z0-9-]{1,32}`.")
    name: str = Field(default="", description="Human name shown by `lockerctl`.")
    timezone: str = Field(
        default="UTC",
        description="IANA time zone of the site (`Europe/Paris`): the time of text logs "
        "(`log.format = \"text\"`), with its UTC offset. JSON logs and MQTT messages are in "
        "UTC; expiry and command deadlines never use the wall clock.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone (got {value!r})") from None
        return value


# =============================================================================================
# [mqtt]
# =============================================================================================


class MqttTlsConfig(_Section):
    """``[mqtt.tls]``: TLS to the broker; a client certificate per cabinet."""

    ca_file: Path | None = Field(
        default=None,
        description="PEM file of the CA that signed the broker; unset = system CAs.",
    )
    cert_file: Path | None = Field(
        default=None, description="PEM client certificate of this cabinet."
    )
    key_file: Path | None = Field(default=None, description="PEM private key of `cert_file`.")

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = _ctx_path(info, value)
        if _check_files(info):
            if not path.is_file():
                raise ValueError(f"file not found: {str(path)!r}")
            # Opened, not only seen: the check runs as the daemon's user (the installer
            # does so), so a file only root can read fails here, not at the first start.
            try:
                with path.open("rb"):
                    pass
            except OSError as exc:
                raise ValueError(f"cannot read {str(path)!r}: {exc.strerror}") from None
        return path

    @model_validator(mode="after")
    def _pair(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both or neither")
        return self


class MqttConfig(_Section):
    """``[mqtt]``: the broker link to dispatch."""

    host: str = Field(default="127.0.0.1", min_length=1, description="Broker host name or IP.")
    port: Count = Field(default=1883, ge=1, le=65535, description="Broker TCP port.")
    topic_root: str = Field(
        default="lockers/v1",
        description="Topic prefix; the cabinet's root is `{topic_root}/{site}/{id}`.",
    )
    protocol: Literal[5, 311] = Field(
        default=5, description="MQTT protocol version: `5` or `311` (3.1.1)."
    )
    keepalive_s: Count = Field(default=30, ge=5, le=3600, description="MQTT keep-alive, seconds.")
    client_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Client id; default `locker-{site}-{id}`.",
    )
    username: str | None = Field(default=None, description="Broker user name, if any.")
    password: str | None = Field(
        default=None, repr=False, description="Broker password (never shown or logged)."
    )
    tls: MqttTlsConfig | None = Field(
        default=None, description="`[mqtt.tls]`: unset = plain TCP (lab only)."
    )
    reconnect_min_s: Seconds = Field(
        default=0.25, gt=0, le=5,
        description="First reconnect delay, seconds; doubles per failure, with jitter.",
    )
    reconnect_max_s: Seconds = Field(
        default=3.0, ge=0.1, le=10,
        description="Longest reconnect delay, seconds (kept low: the cabinet must be back "
        "within seconds of the broker).",
    )

    @field_validator("topic_root")
    @classmethod
    def _topic(cls, value: str) -> str:
        levels = value.split("/")
        if not value or any(not level for level in levels):
            raise ValueError(f"must be levels separated by single '/' (got {value!r})")
        if any(ch in value for ch in "+#\x00") or value.startswith("$"):
            raise ValueError(f"must not contain '+', '#' or start with '$' (got {value!r})")
        return value

    @field_serializer("password")
    def _hide_password(self, value: str | None, info: SerializationInfo) -> str | None:
        if value is None or _reveal(info):
            return value
        return _REDACTED

    @model_validator(mode="after")
    def _backoff(self) -> MqttConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not")
        return self


def _reveal(info: SerializationInfo) -> bool:
    ctx = info.context
    return bool(ctx.get("reveal_secrets")) if isinstance(ctx, dict) else False


# =============================================================================================
# [redis]
# =============================================================================================


class RedisConfig(_Section):
    """``[redis]``: the local durable store."""

    url: str = Field(
        default="unix:///run/redis-locker/redis.sock?db=0",
        repr=False,
        description="`redis://`, `rediss://`, `unix:///path?db=0`, or `memory://` for an "
        "in-process fakeredis (simulator and demo only: nothing survives a restart).",
    )
    key_prefix: str | None = Field(
        default=None,
        min_length=1,
        description="Prefix of the store's keys; the cabinet id is always added after it "
        "(keys `{key_prefix}{id}:...`); default `locker:{site}:{id}:`.",
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in ("redis", "rediss", "unix", "memory"):
            raise ValueError(
                f"must start with redis://, rediss://, unix:// or memory:// (got {scheme!r})"
            )
        return value

    @field_serializer("url")
    def _hide_password(self, value: str, info: SerializationInfo) -> str:
        parts = urlsplit(value)
        if _reveal(info) or parts.password is None:
            return value
        host = parts.hostname or ""
        user = parts.username or ""
        netloc = f"{user}:{_REDACTED}@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def is_memory(self) -> bool:
        """True for ``memory://``: the in-process fakeredis of the simulator and demo."""
        return urlsplit(self.url).scheme == "memory"


# =============================================================================================
# [timing]
# =============================================================================================


class TimingConfig(_Section):
    """``[timing]``: the clocks of the daemon. Every value is in seconds (a number, or a
    text with units such as ``"500ms"``, ``"2m"``)."""

    poll_interval_s: Seconds = Field(
        default=0.1, ge=0.01, le=10, description="Period of the input poll of every board."
    )
    pulse_s: Seconds = Field(
        default=0.7, gt=0, le=HARD_PULSE_CAP_S, description="Unlock pulse length."
    )
    max_pulse_s: Seconds = Field(
        default=3.0,
        gt=0,
        le=HARD_PULSE_CAP_S,
        description=f"Longest pulse any command may ask for; at most {HARD_PULSE_CAP_S} "
        "(the drivers' hard cap).",
    )
    max_concurrent_pulses: Count = Field(
        default=1, ge=1, le=16, description="Solenoids energised at once (power budget)."
    )
    pulse_gap_s: Seconds = Field(
        default=0.3, ge=0, le=60,
        description="Pause between the end of a pulse and the next one.",
    )
    compartment_cooldown_s: Seconds = Field(
        default=2.0, ge=0, le=3600,
        description="Least time between two pulses of one compartment.",
    )
    compartment_max_pulses_per_minute: Count = Field(
        default=6, ge=1, le=60, description="Rate limit of pulses per compartment."
    )
    open_detect_timeout_s: Seconds = Field(
        default=5.0,
        gt=0,
        le=300,
        description="After a pulse, time for the door sensor to report open before "
        "'open not detected'.",
    )
    ajar_after_s: Seconds = Field(
        default=120.0,
        gt=0,
        le=86400,
        description="Door-ajar alarm after the door stays open this long; zones may set a "
        "shorter one.",
    )
    unknown_after_failed_polls: Count = Field(
        default=3, ge=1, le=100, description="Failed polls in a row before a sensor is unknown."
    )
    door_debounce_s: Seconds = Field(
        default=0.25,
        ge=0,
        le=5,
        description="A door sensor's new level counts once it has been read this long "
        "(0: every poll counts).",
    )
    latch_debounce_s: Seconds = Field(
        default=0.1,
        ge=0,
        le=5,
        description="The same for latch feedback; keep it below `pulse_s`, or a release is "
        "missed.",
    )
    occupancy_debounce_s: Seconds = Field(
        default=0.2,
        ge=0,
        le=5,
        description="The same for occupancy sensors; at most the door's, so a close is "
        "judged on a settled occupancy.",
    )
    flapping_changes: Count = Field(
        default=8,
        ge=0,
        le=1000,
        description="A signal that changes more often than this within `flapping_window_s` "
        "is flapping: it reads unknown and raises `sensor_flapping` (0: never).",
    )
    flapping_window_s: Seconds = Field(
        default=3.0, gt=0, le=600, description="Window in which `flapping_changes` are counted."
    )
    flapping_clear_s: Seconds = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="A flapping signal is trusted again (alarm cleared) after it has not "
        "changed for this long.",
    )
    state_coalesce_s: Seconds = Field(
        default=0.5, ge=0, le=60,
        description="Changes within this window make one `state` message.",
    )
    telemetry_interval_s: Seconds = Field(
        default=60.0, ge=1, le=86400, description="Period of the `telemetry` message."
    )
    command_max_ttl_s: Seconds = Field(
        default=30.0,
        gt=0,
        le=30.0,
        description="Commands whose deadline lies further ahead are refused (at most 30).",
    )

    @model_validator(mode="after")
    def _pulse_within_cap(self) -> TimingConfig:
        if self.pulse_s > self.max_pulse_s:
            raise _KeyedError("pulse_s", f"must be <= max_pulse_s ({self.max_pulse_s})")
        return self


class _KeyedError(ValueError):
    """A model-level check that knows which of the model's keys is wrong."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"@{key}@{message}")


# =============================================================================================
# [[buses]]
# =============================================================================================

_BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
_RTU_ONLY = ("port", "baudrate", "parity", "stopbits", "bytesize")
_TCP_ONLY = ("host", "tcp_port", "isolated_interface")


class BusConfig(_Section):
    """``[[buses]]``: one RS-485 line (``rtu``, a serial port) or one Modbus TCP gateway
    (``tcp``). One owner per line: one transaction at a time."""

    name: Name = Field(description="Bus name, referenced by `boards[].bus`.")
    kind: Literal["rtu", "tcp"] = Field(default="rtu", description="`rtu` or `tcp`.")
    port: str | None = Field(
        default=None, description="rtu: serial device, e.g. `/dev/ttyLOCKER0`."
    )
    baudrate: Count = Field(default=9600, description="rtu: line speed, a standard rate.")
    parity: Literal["N", "E", "O"] = Field(default="N", description="rtu: `N`, `E` or `O`.")
    stopbits: Literal[1, 2] = Field(default=1, description="rtu: 1 or 2.")
    bytesize: Literal[7, 8] = Field(default=8, description="rtu: 7 or 8.")
    host: str | None = Field(default=None, description="tcp: gateway host.")
    tcp_port: Count = Field(default=502, ge=1, le=65535, description="tcp: gateway port.")
    isolated_interface: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.:-]{1,15}$",
        description="tcp: the network interface of the dedicated, isolated link the gateway is "
        "on (e.g. `eth1`, a cable from the Pi to the gateway and nothing else). Modbus TCP "
        "has no authentication: a `host` that is not a loopback address is refused unless "
        "this declares such a link.",
    )
    timeout_s: Seconds = Field(
        default=0.3, gt=0, le=10, description="Reply timeout of one transaction."
    )
    retries: Count = Field(default=2, ge=0, le=10, description="Retries of a transaction.")
    frame_gap_s: Seconds | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Silence between frames; default the Modbus 3.5 characters "
        "(1.75 ms above 19200 baud).",
    )
    settle_s: Seconds | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Quiet time the line waits for after a failed attempt before the next "
        "request; default the smaller of `timeout_s` and 0.05 s.",
    )
    late_window_s: Seconds | None = Field(
        default=None,
        ge=0,
        le=10,
        description="After a timed-out attempt, how long its reply is still awaited as "
        "late (counted in telemetry `late_replies` and discarded, never taken for the next "
        "answer); default twice `timeout_s`.",
    )
    degraded_after: Count = Field(
        default=3,
        ge=1,
        le=50,
        description="A board with late replies in this many of its last transactions is "
        "degraded: its reads fail and its signals read unknown until it answers on time "
        "this many times in a row.",
    )

    @field_validator("baudrate")
    @classmethod
    def _standard_rate(cls, value: int) -> int:
        if value not in _BAUDRATES:
            rates = ", ".join(str(r) for r in _BAUDRATES)
            raise ValueError(f"must be one of {rates} (got {value})")
        return value

    def to_driver(self) -> BusParams:
        """The typed settings the bus backend receives (every key of this table)."""
        return BusParams(
            name=self.name, kind=self.kind, port=self.port, baudrate=self.baudrate,
            parity=self.parity, stopbits=self.stopbits, bytesize=self.bytesize,
            host=self.host, tcp_port=self.tcp_port, timeout_s=self.timeout_s,
            retries=self.retries, frame_gap_s=self.frame_gap_s, settle_s=self.settle_s,
            late_window_s=self.late_window_s, degraded_after=self.degraded_after,
        )

    @model_validator(mode="after")
    def _kind_fields(self) -> BusConfig:
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
        return self


_BUS_DEFAULTS = {k: BusConfig.model_fields[k].default for k in (*_RTU_ONLY, *_TCP_ONLY)}


# =============================================================================================
# [[boards]]
# =============================================================================================


class RegisterBits(_Section):
    """Where a generic IO board keeps a run of bits: a Modbus table and a start address."""

    table: Literal["coils", "discrete_inputs", "input_register_bits", "holding_register_bits"] = (
        Field(description="Modbus table.")
    )
    address: Count = Field(default=0, ge=0, le=0xFFFF, description="First address.")


class PulseMode(_Section):
    """How a generic IO board times an unlock pulse."""

    kind: Literal["daemon", "register"] = Field(
        default="daemon",
        description="`daemon`: the driver switches off itself (hard-capped); `register`: "
        "writing a duration to a holding register makes the board time it.",
    )
    address: Count | None = Field(
        default=None, ge=0, le=0xFFFF, description="register: first pulse register."
    )
    unit_ms: Count | None = Field(
        default=None, ge=1, le=10000, description="register: milliseconds per count."
    )

    @model_validator(mode="after")
    def _register_fields(self) -> PulseMode:
        if self.kind == "register":
            for key in ("address", "unit_ms"):
                if getattr(self, key) is None:
                    raise _KeyedError(key, "missing (required for kind = 'register')")
        else:
            for key in ("address", "unit_ms"):
                if getattr(self, key) is not None:
                    raise _KeyedError(key, "not used by kind = 'daemon'")
        return self


class GenericIoRegisterMap(_Section):
    """``register_map`` of a ``generic_io`` board."""

    outputs: RegisterBits = Field(
        default_factory=_table(table="coils"),
        description="Output bits: table `coils` or `holding_register_bits`.",
    )
    inputs: RegisterBits = Field(
        default_factory=_table(table="discrete_inputs"),
        description="Input bits: `discrete_inputs`, `input_register_bits` or "
        "`holding_register_bits`.",
    )
    pulse: PulseMode = Field(default_factory=_table(), description="Pulse timing.")

    def to_driver(self) -> GenericIOMap:
        pulse = self.pulse
        return GenericIOMap(
            outputs_table=self.outputs.table, outputs_address=self.outputs.address,
            inputs_table=self.inputs.table, inputs_address=self.inputs.address,
            pulse=PulseSpec() if pulse.kind == "daemon" else PulseSpec(
                kind=pulse.kind, address=pulse.address or 0, unit_ms=pulse.unit_ms or 100),
        )

    @model_validator(mode="after")
    def _tables(self) -> GenericIoRegisterMap:
        if self.outputs.table not in ("coils", "holding_register_bits"):
            raise _KeyedError(
                "outputs",
                f"table must be 'coils' or 'holding_register_bits' (got {self.outputs.table!r})",
            )
        if self.inputs.table == "coils":
            raise _KeyedError("inputs", "table must not be 'coils' (outputs are coils)")
        return self


class ProbeRegisterMap(_Section):
    """``register_map`` of a ``temperature_probe`` board: one register per channel,
    ``value = raw * scale + offset``."""

    table: Literal["input_registers", "holding_registers"] = Field(
        default="input_registers", description="Modbus table of the readings."
    )
    address: Count = Field(default=0, ge=0, le=0xFFFF, description="Register of channel 0.")
    scale: Number = Field(default=0.1, ge=-100, le=100, description="°C per count.")
    offset: Number = Field(default=0.0, ge=-1000, le=1000, description="°C added after scaling.")
    signed: Flag = Field(default=True, description="Registers are two's complement.")
    invalid: Count | None = Field(
        default=-32768, ge=-32768, le=0xFFFF,
        description="Raw value meaning 'no sensor'; unset = none.",
    )

    def to_driver(self) -> ProbeMap:
        return ProbeMap(table=self.table, address=self.address, scale=self.scale,
                        offset=self.offset, signed=self.signed, invalid=self.invalid)

    @field_validator("scale")
    @classmethod
    def _nonzero(cls, value: float) -> float:
        if value == 0:
            raise ValueError("must not be 0")
        return value


class _BoardBase(_Section):
    name: Name = Field(description="Board name, referenced by channels.")
    bus: Name = Field(description="Name of the bus the board is on.")
    address: Count = Field(
        ge=1, le=255,
        description="Modbus unit address, 1..255 (248..255 are reserved by the Modbus "
        "specification but used by the relay boards).")

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


class _LockBoardBase(_BoardBase):
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


class WaveshareRelayBoard(_LockBoardBase):
    """A Waveshare-style Modbus RTU relay board: relays are coils, the board times the
    pulse itself ("flash on"), inputs are discrete inputs. Its register map is fixed
    (:data:`drivers.modbus.registers.WAVESHARE`)."""

    profile: Literal["waveshare_relay"] = Field(description="Board profile.")
    outputs: Count = Field(ge=1, le=64, description="Relay channels (8, 16, 32).")
    inputs: Count = Field(default=0, ge=0, le=64, description="Digital inputs.")
    max_pulse_s: Seconds | None = Field(
        default=None,
        gt=0,
        le=HARD_PULSE_CAP_S,
        description="Pulse cap of this board; default `timing.max_pulse_s`.",
    )

    def to_driver(self, max_pulse_s: float) -> BoardParams:
        return BoardParams(
            name=self.name, address=self.address, profile=self.profile,
            outputs=self.outputs, inputs=self.inputs, max_pulse_s=self.max_pulse_s or max_pulse_s,
        )


class GenericIoBoard(_LockBoardBase):
    """A generic Modbus IO board described by its ``register_map``."""

    profile: Literal["generic_io"] = Field(description="Board profile.")
    outputs: Count = Field(default=0, ge=0, le=256, description="Output channels.")
    inputs: Count = Field(default=0, ge=0, le=256, description="Input channels.")
    register_map: GenericIoRegisterMap = Field(
        default_factory=_table(), description="Where the bits are."
    )
    max_pulse_s: Seconds | None = Field(
        default=None,
        gt=0,
        le=HARD_PULSE_CAP_S,
        description="Pulse cap of this board; default `timing.max_pulse_s`.",
    )

    def to_driver(self, max_pulse_s: float) -> BoardParams:
        return BoardParams(
            name=self.name, address=self.address, profile=self.profile,
            outputs=self.outputs, inputs=self.inputs, register_map=self.register_map.to_driver(),
            max_pulse_s=self.max_pulse_s or max_pulse_s,
        )

    @model_validator(mode="after")
    def _some_io(self) -> GenericIoBoard:
        if self.outputs == 0 and self.inputs == 0:
            raise _KeyedError("outputs", "a generic_io board needs outputs or inputs")
        return self



class TemperatureProbeBoard(_BoardBase):
    """A Modbus temperature probe board: ``channels`` readings in one transaction."""

    profile: Literal["temperature_probe"] = Field(description="Board profile.")
    channels: Count = Field(ge=1, le=64, description="Probe channels.")
    register_map: ProbeRegisterMap = Field(
        default_factory=_table(), description="Where and how readings are stored."
    )

    def to_driver(self, max_pulse_s: float) -> BoardParams:
        return BoardParams(
            name=self.name, address=self.address, profile=self.profile,
            channels=self.channels, register_map=self.register_map.to_driver(),
            max_pulse_s=max_pulse_s,
        )


#: One ``[[boards]]`` entry; ``profile`` says which.
BoardConfig: TypeAlias = Annotated[
    WaveshareRelayBoard | GenericIoBoard | TemperatureProbeBoard,
    Field(discriminator="profile"),
]
_BOARD_CLASSES: dict[str, type[_BoardBase]] = {
    "waveshare_relay": WaveshareRelayBoard,
    "generic_io": GenericIoBoard,
    "temperature_probe": TemperatureProbeBoard,
}


# =============================================================================================
# [[zones]] and [[compartments]]
# =============================================================================================


class ChannelRef(_Section):
    """A board channel: ``{ board = "locks-a", channel = 0 }`` (channels count from 0)."""

    board: Name = Field(description="Board name.")
    channel: Count = Field(ge=0, le=255, description="Channel, from 0.")


class SignalRef(ChannelRef):
    """A board input with its polarity: ``active`` is the raw level that means the
    signal's active state (door open, latch released, compartment occupied)."""

    active: Literal["high", "low"] = Field(
        description="`high` (input reads 1 when active) or `low`."
    )


class ZoneConfig(_Section):
    """``[[zones]]``: a temperature zone of the cabinet."""

    name: Name = Field(description="Zone name, referenced by `compartments[].zone`.")
    kind: Literal["ambient", "chilled", "frozen"] = Field(
        description="`ambient`, `chilled` or `frozen`."
    )
    min_c: Number | None = Field(default=None, ge=-60, le=60, description="Lowest °C in range.")
    max_c: Number | None = Field(default=None, ge=-60, le=60, description="Highest °C in range.")
    excursion_delay_s: Seconds = Field(
        default=600.0,
        ge=0,
        le=86400,
        description="Out of range this long before the excursion alarm.",
    )
    ajar_after_s: Seconds | None = Field(
        default=None,
        gt=0,
        le=86400,
        description="Door-ajar delay in this zone, at most `timing.ajar_after_s`.",
    )
    probe: ChannelRef | None = Field(
        default=None, description="`{ board, channel }` of a temperature_probe board."
    )

    @model_validator(mode="after")
    def _range(self) -> ZoneConfig:
        if self.kind != "ambient":
            for key in ("min_c", "max_c", "probe"):
                if getattr(self, key) is None:
                    raise _KeyedError(key, f"missing (required for a {self.kind} zone)")
        if self.min_c is not None and self.max_c is not None and self.min_c >= self.max_c:
            raise _KeyedError("max_c", f"must be > min_c ({self.min_c})")
        return self


class CompartmentConfig(_Section):
    """``[[compartments]]``: one door, its lock output and its optional sensors."""

    id: CompartmentId = Field(description="Compartment id, `[A-Z0-9-]{1,8}`, e.g. `A01`.")
    size: Literal["S", "M", "L", "XL"] = Field(description="`S`, `M`, `L` or `XL`.")
    zone: Name = Field(description="Zone name.")
    pool: Name = Field(description="Tenant pool, a key of `[tenants]`.")
    lock: ChannelRef = Field(description="Lock output `{ board, channel }`.")
    door: SignalRef | None = Field(
        default=None, description="Door sensor `{ board, channel, active }`; active = open."
    )
    latch: SignalRef | None = Field(
        default=None, description="Latch feedback; active = latch released."
    )
    occupancy: SignalRef | None = Field(
        default=None, description="Occupancy sensor; active = occupied."
    )


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


def _check_key_ref(ref: str, info: ValidationInfo) -> str:
    """An inline key stays as written; a path is resolved and, unless file checks are off,
    must hold a PEM Ed25519 public key."""
    inline = _inline_key(ref)
    if inline is not None:
        _usable_key(inline)
        return ref
    path = _ctx_path(info, ref)
    if _check_files(info):
        try:
            _usable_key(_key_from_pem(path.read_text(encoding="ascii")))
        except OSError as exc:
            raise ValueError(f"cannot read {str(path)!r}: {exc.strerror}") from None
        except (ValueError, binascii.Error) as exc:
            raise ValueError(f"{str(path)!r} is not a PEM Ed25519 public key ({exc})") from None
    return str(path)


class SecurityConfig(_Section):
    """``[security]``: who may open doors."""

    require_signed_commands: Flag = Field(
        default=True,
        description="Door, code and config commands must be signed by dispatch. "
        "Only a lab may turn this off.",
    )
    dispatch_public_keys: Annotated[
        Mapping[KeyId, Annotated[str, AfterValidator(_check_key_ref)]],
        AfterValidator(_freeze_mapping),
    ] = Field(
        default_factory=_table(),
        description="`key_id = ` path of a PEM Ed25519 public key, or the key inline in "
        "base64 (raw 32 bytes or DER). A key off the curve or of small order is refused.",
    )
    code_max_attempts: Count = Field(
        default=5, ge=1, le=100,
        description="Wrong pickup codes an input of the lane (keypad, scanner) may make in "
        "a row before it is slowed down (its budget).",
    )
    code_lockout_s: Seconds = Field(
        default=60.0, gt=0, le=86400,
        description="Time in which a slowed input earns back one wrong code.",
    )
    code_key_file: Path | None = Field(
        default=None,
        description="The cabinet's code key (X25519 key pair and verifier secret), created "
        "at the first start with mode 0600; relative to the config file. Default: "
        "`code.key` in the service's state directory under systemd (`STATE_DIRECTORY`), "
        "else beside the config file.",
    )

    @field_validator("code_key_file")
    @classmethod
    def _code_key_path(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _ctx_path(info, value)

    @field_serializer("dispatch_public_keys")
    def _fingerprints(self, value: Mapping[str, str], info: SerializationInfo) -> dict[str, str]:
        if _reveal(info):
            return dict(value)
        return {
            k: v
            if _inline_key(v) is None
            else "inline sha256:" + hashlib.sha256(v.encode()).hexdigest()[:16]
            for k, v in value.items()
        }

    @model_validator(mode="after")
    def _need_keys(self) -> SecurityConfig:
        if self.require_signed_commands and not self.dispatch_public_keys:
            raise _KeyedError(
                "dispatch_public_keys",
                "missing: require_signed_commands = true needs at least one key",
            )
        return self

    def public_key(self, key_id: str) -> bytes:
        """The raw 32-byte Ed25519 public key ``key_id`` (read from its file when it is a
        path). Raises ``KeyError`` for an unknown id, ``ValueError``/``OSError`` for a key
        file that changed since start-up."""
        ref = self.dispatch_public_keys[key_id]
        inline = _inline_key(ref)
        if inline is not None:
            return inline
        return _key_from_pem(Path(ref).read_text(encoding="ascii"))


class GpioInput(_Section):
    """A lane input line."""

    pin: Count = Field(ge=0, le=127, description="GPIO line offset (BCM number on a Pi).")
    active_low: Flag = Field(default=False, description="Active when the line reads 0.")
    debounce_ms: Count = Field(default=20, ge=0, le=5000, description="Debounce, ms.")


class GpioOutput(_Section):
    """A lane output line."""

    pin: Count = Field(ge=0, le=127, description="GPIO line offset (BCM number on a Pi).")
    active_low: Flag = Field(default=False, description="On = drive the line to 0.")


class LaneInputs(_Section):
    """``[lane.inputs]``: each line optional."""

    vehicle: GpioInput | None = Field(default=None, description="Vehicle presence loop.")
    help: GpioInput | None = Field(default=None, description="Help button.")
    tamper: GpioInput | None = Field(default=None, description="Cabinet tamper switch.")
    mains_fail: GpioInput | None = Field(default=None, description="UPS mains-fail signal.")


class LaneOutputs(_Section):
    """``[lane.outputs]``: each line optional."""

    light_red: GpioOutput | None = Field(default=None, description="Red lane light.")
    light_green: GpioOutput | None = Field(default=None, description="Green lane light.")
    light_amber: GpioOutput | None = Field(
        default=None, description="Amber lane light (busy); without it busy lights red and green."
    )
    buzzer: GpioOutput | None = Field(default=None, description="Buzzer.")


class ScannerConfig(_Section):
    """``[lane.scanner]``: serial code/QR scanner."""

    port: str = Field(min_length=1, description="Serial device, e.g. `/dev/ttyACM0`.")
    baudrate: Count = Field(default=9600, ge=1200, le=921600, description="Line speed.")


class LaneConfig(_Section):
    """``[lane]``: the drive lane's GPIO and scanner."""

    backend: Literal["mock", "simulator", "rpigpio", "gpiod"] = Field(
        default="mock",
        description="GPIO backend: `gpiod` (Pi 5 and later kernels), `rpigpio` (Pi 1-4), "
        "`simulator`, `mock`.",
    )
    chip: str = Field(default="/dev/gpiochip0", description="gpiod: the GPIO chip.")
    options: Annotated[Mapping[str, Any], AfterValidator(_deep_freeze)] = Field(
        default_factory=_table(), description="Backend-specific options, passed through."
    )
    inputs: LaneInputs = Field(default_factory=_table(), description="Input lines.")
    outputs: LaneOutputs = Field(default_factory=_table(), description="Output lines.")
    scanner: ScannerConfig | None = Field(default=None, description="Code scanner.")

    @model_validator(mode="after")
    def _pins_once(self) -> LaneConfig:
        seen: dict[int, str] = {}
        for group in ("inputs", "outputs"):
            lines = getattr(self, group)
            for key in type(lines).model_fields:
                line = getattr(lines, key)
                if line is None:
                    continue
                if line.pin in seen:
                    raise _KeyedError(
                        f"{group}.{key}", f"pin {line.pin} already used by {seen[line.pin]}"
                    )
                seen[line.pin] = f"lane.{group}.{key}"
        return self


class TenantPolicy(_Section):
    """``[tenants.<pool>]``: the rules of one tenant pool. Durations accept units:
    ``"1h30m"``, ``"3d"``."""

    expiry_s: Seconds = Field(
        default=259200.0,
        gt=0,
        le=90 * 86400,
        description="The pickup window: this long after assignment (unless dispatch sends "
        "`expires_at`) the order expires, is reported (`order_expired`), its code is refused "
        "and the compartment opens only for staff retrieval.",
    )
    reopen_grace_s: Seconds = Field(
        default=120.0,
        ge=0,
        le=86400,
        description="After collection, the same code may reopen the door this long.",
    )


class LogConfig(_Section):
    """``[log]``."""

    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="`debug`, `info`, `warning` or `error`."
    )
    format: Literal["json", "text"] = Field(
        default="json", description="`json` (journald, one object per line) or `text`."
    )

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


# =============================================================================================
# Settings
# =============================================================================================


class Settings(_Section):
    """The whole, validated, frozen cabinet configuration. Build it with
    :func:`load_settings` (file + environment + flags) or :func:`parse_settings` (a
    mapping); both run the cross-section checks and raise :class:`ConfigError`.

    Sections: ``cabinet``, ``mqtt``, ``redis``, ``timing``, ``buses``, ``boards``, ``zones``,
    ``compartments``, ``security``, ``lane``, ``tenants``, ``simulator``, ``log``.
    """

    cabinet: CabinetConfig = Field(description="`[cabinet]`.")
    mqtt: MqttConfig = Field(default_factory=_table(), description="`[mqtt]`.")
    redis: RedisConfig = Field(default_factory=_table(), description="`[redis]`.")
    timing: TimingConfig = Field(default_factory=_table(), description="`[timing]`.")
    buses: tuple[BusConfig, ...] = Field(default=(), description="`[[buses]]`.")
    boards: tuple[BoardConfig, ...] = Field(default=(), description="`[[boards]]`.")
    zones: tuple[ZoneConfig, ...] = Field(default=(), description="`[[zones]]`.")
    compartments: tuple[CompartmentConfig, ...] = Field(
        default=(), description="`[[compartments]]`."
    )
    security: SecurityConfig = Field(default_factory=_table(), description="`[security]`.")
    lane: LaneConfig = Field(default_factory=_table(), description="`[lane]`.")
    tenants: Annotated[Mapping[Name, TenantPolicy], AfterValidator(_freeze_mapping)] = Field(
        default_factory=_table(), description="`[tenants.<pool>]`: one table per pool."
    )
    simulator: Annotated[Mapping[str, Any], AfterValidator(_deep_freeze)] = Field(
        default_factory=_table(),
        description="`[simulator]`: free-form, read by `locker-sim`, ignored by the daemon.",
    )
    log: LogConfig = Field(default_factory=_table(), description="`[log]`.")

    @model_validator(mode="before")
    @classmethod
    def _derived_defaults(cls, data: object) -> object:
        # client_id and key_prefix default to names derived from the cabinet identity.
        if not isinstance(data, dict):
            return data
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

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> Settings:
        from controller.settings.checks import _cross_check  # the checks read these models

        problems = _cross_check(self)
        collect = (info.context or {}).get("cross_check_issues")
        if isinstance(collect, list):
            collect.extend(problems)
        elif problems:
            raise ValueError("; ".join(f"{_format_loc(loc)}: {msg}" for loc, msg in problems))
        return self

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
        return self.model_dump(
            mode="json", exclude_none=True, context={"reveal_secrets": reveal_secrets}
        )

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
