"""Fixtures for the settings tests: a small valid cabinet, as TOML text and as data."""

from __future__ import annotations

import base64
import copy
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

#: A raw Ed25519 public key, base64: the public key of the seed 00 01 .. 1f (the loader
#: refuses 32 bytes that are not a point of the curve of large order).
INLINE_KEY = base64.b64encode(bytes(SigningKey(bytes(range(32))).verify_key)).decode()

VALID_TOML = f"""\
[cabinet]
site = "fr-lyon-07"
id = "cab-01"

[mqtt]
host = "broker.lan"
username = "cab-01"
password = "s3cret-pw"

[redis]
url = "redis://:redispw@127.0.0.1:6379/0"

[timing]
poll_interval_s = 0.1

[[buses]]
name = "rs485-0"
port = "/dev/ttyLOCKER0"
baudrate = 19200

[[boards]]
name = "locks-a"
bus = "rs485-0"
address = 1
profile = "waveshare_relay"
outputs = 16
inputs = 16

[[boards]]
name = "io-b"
bus = "rs485-0"
address = 3
profile = "generic_io"
outputs = 8
inputs = 8
[boards.register_map]
outputs = {{ table = "coils", address = 0 }}
inputs = {{ table = "discrete_inputs", address = 0 }}
pulse = {{ kind = "register", address = 256, unit_ms = 100 }}

[[boards]]
name = "probes"
bus = "rs485-0"
address = 10
profile = "temperature_probe"
channels = 3

[[zones]]
name = "ambient"
kind = "ambient"

[[zones]]
name = "chilled"
kind = "chilled"
min_c = 2.0
max_c = 4.0
ajar_after_s = 60
probe = {{ board = "probes", channel = 0 }}

[[compartments]]
id = "A01"
size = "M"
zone = "chilled"
pool = "grocery"
lock = {{ board = "locks-a", channel = 0 }}
door = {{ board = "locks-a", channel = 0, active = "high" }}
latch = {{ board = "locks-a", channel = 1, active = "high" }}
occupancy = {{ board = "io-b", channel = 0, active = "high" }}

[[compartments]]
id = "A02"
size = "L"
zone = "ambient"
pool = "parcel"
lock = {{ board = "locks-a", channel = 1 }}
door = {{ board = "locks-a", channel = 2, active = "low" }}

[[compartments]]
id = "A03"
size = "S"
zone = "ambient"
pool = "parcel"
lock = {{ board = "io-b", channel = 0 }}

[security]
dispatch_public_keys = {{ dispatch-1 = "{INLINE_KEY}" }}

[tenants.grocery]
expiry_s = "6h"

[tenants.parcel]
expiry_s = "5d"

[simulator]
seed = 7
doors = {{ stuck = ["A02"] }}
"""


@pytest.fixture
def valid_data() -> dict[str, Any]:
    """The valid cabinet as parsed TOML data (a fresh copy per test)."""
    return copy.deepcopy(tomllib.loads(VALID_TOML))


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write TOML text to ``cabinet.toml`` in a temporary directory; return its path."""

    def write(text: str, name: str = "cabinet.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def valid_path(write_config: Callable[[str], Path]) -> Path:
    return write_config(VALID_TOML)
