"""Cabinet settings: one TOML file, layered defaults < file < environment < flags, validated
once at start-up and frozen after load.

The entry point is :func:`load_settings`, a plain function in the spirit of uvicorn's
``Config.load()``: everything that can be wrong with the configuration is found *there*, at
start-up, and reported all at once; what comes out is a :class:`Settings` that nothing can
change afterwards (every table is a frozen ``msgspec.Struct``, arrays are tuples, free-form
tables are read-only mappings).

Layers, lowest first:

1. **defaults**: the field defaults of the models below;
2. **file**: the cabinet TOML file (see ``docs/configuration.md`` and
   ``deploy/cabinet.example.toml``);
3. **environment**: ``LOCKER_<SECTION>__<KEY>`` variables, a double underscore per level
   (``LOCKER_MQTT__HOST=broker.lan``, ``LOCKER_TIMING__POLL_INTERVAL_S=0.2``,
   ``LOCKER_MQTT__TLS__CA_FILE=/etc/locker/ca.pem``). A value is kept as text where the key
   takes text, and otherwise read as a TOML value (``0.2``, ``true``, ``[1, 2]``,
   ``{ grocery = ... }``). A ``LOCKER_`` variable that names no key is an error (a typo must
   not be silently ignored), except those in :data:`NON_CONFIG_ENV_VARS`;
4. **flags**: a mapping of dotted keys from the command line (``{"mqtt.host": "x"}``),
   read like environment values when given as text.

Arrays of tables (``buses``, ``boards``, ``zones``, ``compartments``) are replaced whole by a
layer, never merged item by item; tables are merged key by key.

Errors
======
Every problem is a :class:`ConfigIssue` (where: file or layer, key path, line; what), and
:func:`load_settings` raises one :class:`ConfigError` carrying all of them::

    ConfigError (ValueError)
        .issues: tuple[ConfigIssue, ...]
    str(error) ==
        "cabinet.toml: compartments[2].door.active: must be 'high' or 'low' (got 'hi') (line 88)"

A TOML syntax error names the file, line and column. Checks that span sections (a board on
an unknown bus, a lock channel used twice, ...) run after the per-field checks and name the
key that is wrong, e.g. ``compartments[3].lock: locks-a channel 0 already used by
compartments[1] (A01)``.

Dependencies: the standard library, msgspec (the structs) and PyNaCl (the check of a
dispatch key), no pydantic, redis, paho or hardware library; the hard pulse cap comes from
the driver contract, :data:`drivers.base.HARD_PULSE_CAP_S`.

Modules
=======
``errors`` (:class:`ConfigIssue`, :class:`ConfigError`), ``fields`` (value types and
rules), ``models`` (one struct per table, and :class:`Settings`), ``validate`` (the
validator that reports every issue), ``checks`` (cross-section checks), ``loader``
(:func:`load_settings`, :func:`parse_settings`) and ``keydocs`` (the reference).
Import from ``controller.settings``; the modules are its layout, not its interface.
"""

from controller.settings.errors import ENV_PREFIX, NON_CONFIG_ENV_VARS, ConfigError, ConfigIssue
from controller.settings.fields import parse_duration
from controller.settings.keydocs import KeyDoc, describe_keys, describe_model
from controller.settings.loader import load_settings, parse_settings
from controller.settings.models import (
    BoardConfig,
    BusConfig,
    CabinetConfig,
    ChannelRef,
    CompartmentConfig,
    GenericIoBoard,
    GenericIoRegisterMap,
    GpioInput,
    GpioOutput,
    LaneConfig,
    LaneInputs,
    LaneOutputs,
    LogConfig,
    MqttConfig,
    MqttTlsConfig,
    ProbeRegisterMap,
    PulseMode,
    RedisConfig,
    RegisterBits,
    ScannerConfig,
    SecurityConfig,
    Settings,
    SignalRef,
    TemperatureProbeBoard,
    TenantPolicy,
    TimingConfig,
    WaveshareRelayBoard,
    ZoneConfig,
)

__all__ = [
    "ENV_PREFIX",
    "NON_CONFIG_ENV_VARS",
    "BoardConfig",
    "BusConfig",
    "CabinetConfig",
    "ChannelRef",
    "CompartmentConfig",
    "ConfigError",
    "ConfigIssue",
    "GenericIoBoard",
    "GenericIoRegisterMap",
    "GpioInput",
    "GpioOutput",
    "KeyDoc",
    "LaneConfig",
    "LaneInputs",
    "LaneOutputs",
    "LogConfig",
    "MqttConfig",
    "MqttTlsConfig",
    "ProbeRegisterMap",
    "PulseMode",
    "RedisConfig",
    "RegisterBits",
    "ScannerConfig",
    "SecurityConfig",
    "Settings",
    "SignalRef",
    "TemperatureProbeBoard",
    "TenantPolicy",
    "TimingConfig",
    "WaveshareRelayBoard",
    "ZoneConfig",
    "describe_keys",
    "describe_model",
    "load_settings",
    "parse_duration",
    "parse_settings",
]
