"""A small cabinet and a hand-driven clock for the simulator's unit tests."""

from __future__ import annotations

import tomllib

import pytest

from simulator.config import CabinetConfig, parse_config
from simulator.world import World

SMALL_CABINET = """
[cabinet]
site = "test"
id = "cab-t"

[mqtt]          # daemon-only tables are ignored
host = "ignored"

[[buses]]
name = "rs485-0"
port = "/tmp/unused"
baudrate = 19200

[[boards]]
name = "locks"
bus = "rs485-0"
address = 1
profile = "waveshare_relay"
outputs = 4
inputs = 8

[[boards]]
name = "io"
bus = "rs485-0"
address = 3
profile = "generic_io"
outputs = 4
inputs = 20
[boards.register_map]
outputs = { table = "holding_register_bits", address = 16 }
inputs = { table = "input_register_bits", address = 32 }
pulse = { kind = "register", address = 256, unit_ms = 50 }

[[boards]]
name = "probes"
bus = "rs485-0"
address = 10
profile = "temperature_probe"
channels = 2
[boards.register_map]
table = "input_registers"
scale = 0.1
signed = true
invalid = -32768

[[zones]]
name = "ambient"
kind = "ambient"
probe = { board = "probes", channel = 0 }

[[zones]]
name = "chilled"
kind = "chilled"
min_c = 2.0
max_c = 4.0
probe = { board = "probes", channel = 1 }

[[compartments]]
id = "A01"
zone = "chilled"
pool = "grocery"
lock = { board = "locks", channel = 0 }
door = { board = "locks", channel = 0, active = "high" }
latch = { board = "locks", channel = 1, active = "high" }
occupancy = { board = "io", channel = 0, active = "high" }

[[compartments]]
id = "B01"
zone = "ambient"
pool = "parcel"
lock = { board = "io", channel = 1 }
door = { board = "locks", channel = 2, active = "low" }
occupancy = { board = "io", channel = 17, active = "low" }

[simulator]
initial_parcels = { B01 = 1 }
[simulator.thermal]
ambient_c = 20.0
tau_cooling_s = 100.0
tau_leak_s = 1000.0
tau_door_open_s = 50.0
"""


class ManualClock:
    """A clock that moves only when told."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def config() -> CabinetConfig:
    return parse_config(tomllib.loads(SMALL_CABINET), source="small.toml")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def world(config: CabinetConfig, clock: ManualClock) -> World:
    return World(config, clock=clock)
