"""Fuzzing the configuration loader: whatever the file, the environment or the command line
says, ``load_settings``/``parse_settings`` return valid ``Settings`` or raise ``ConfigError``,
never another exception, and always return (bounded examples; pytest-timeout bounds a hang).

Inputs: random text edits of the shipped ``deploy/*.toml``, random structural mutations of
their parsed content (any value at any path replaced by any TOML value, keys added or
removed, tables turned into arrays), arbitrary TOML documents, and random environment and
``--set`` layers over a valid file.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from controller.settings import (
    ConfigError,
    Settings,
    describe_keys,
    load_settings,
    parse_settings,
)
from tests.unit.settings.toml_text import dumps

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = sorted((ROOT / "deploy").glob("*.toml"))
TEXTS = {p.name: p.read_text(encoding="utf-8") for p in DEPLOY}
PARSED = {name: tomllib.loads(text) for name, text in TEXTS.items()}

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

pytestmark = pytest.mark.timeout(240)


def outcome(call: Any) -> Settings | ConfigError:
    try:
        result = call()
    except ConfigError as exc:
        error = exc
    else:
        assert isinstance(result, Settings)
        return result
    assert error.issues, "a ConfigError names at least one issue"
    assert str(error)
    return error


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "cabinet.toml"


# -- text edits ---------------------------------------------------------------------------


@st.composite
def text_edits(draw: st.DrawFn) -> str:
    text = TEXTS[draw(st.sampled_from(sorted(TEXTS)))]
    lines = text.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["drop_line", "dup_line", "swap_lines", "char", "truncate",
                                     "insert_text"]))
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        if kind == "drop_line":
            del lines[i]
        elif kind == "dup_line":
            lines.insert(i, lines[i])
        elif kind == "swap_lines":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "truncate":
            lines = lines[:i]
        elif kind == "insert_text":
            lines.insert(i, draw(st.sampled_from([
                "[cabinet]\n", "[[boards]]\n", "[[compartments]]\n", "x = 1\n",
                'port = "/dev/null"\n', "timing = {}\n", "[security.dispatch_public_keys]\n",
                "a.b.c = [1, 2, {x = 3}]\n", "pulse_s = -1e400\n", "id = 1979-05-27\n",
                "outputs = 99999999999999999999\n", "\ufeff\n", "[\n", '"' * 3 + "\n",
            ])))
        else:
            line = lines[i]
            j = draw(st.integers(0, max(len(line) - 1, 0)))
            lines[i] = line[:j] + draw(st.characters()) + line[j + 1:]
    return "".join(lines)


@FUZZ
@given(text=text_edits(), check_files=st.booleans())
def test_edited_deploy_files_load_or_raise_config_error(
    config_file: Path, text: str, check_files: bool,
) -> None:
    config_file.write_text(text, encoding="utf-8", errors="surrogatepass")
    outcome(lambda: load_settings(config_file, env={}, check_files=check_files))


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_as_a_config_file_raise_config_error(
    config_file: Path, raw: bytes,
) -> None:
    config_file.write_bytes(raw)
    outcome(lambda: load_settings(config_file, env={}))


# -- structural mutations -----------------------------------------------------------------

SCALARS = (
    st.none() | st.booleans() | st.integers() | st.integers(-(2**70), 2**70)
    | st.floats() | st.sampled_from([math.inf, -math.inf, math.nan, -0.0, 1e-320])
    | st.text(max_size=30) | st.sampled_from(["", "0", "-1", "1e9", "1h30m", "5x", "rs485-0",
                                               "A01", "/dev/ttyS0", "true", "memory://"])
    | st.datetimes() | st.dates() | st.times()
    | st.datetimes(timezones=st.just(dt.UTC))
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


@st.composite
def mutated_configs(draw: st.DrawFn) -> dict[str, Any]:
    data = copy.deepcopy(PARSED[draw(st.sampled_from(sorted(PARSED)))])
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(data) if p]
        path = draw(st.sampled_from(paths))
        parent: Any = data
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        kind = draw(st.sampled_from(["replace", "delete", "add_key", "wrap_in_list",
                                     "duplicate"]))
        if kind == "replace":
            parent[last] = draw(VALUES)
        elif kind == "delete":
            del parent[last]
        elif kind == "add_key" and isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(VALUES)
        elif kind == "wrap_in_list":
            parent[last] = [parent[last]]
        elif kind == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
    return data


@FUZZ
@given(data=mutated_configs(), check_files=st.booleans())
def test_mutated_deploy_configs_validate_or_raise_config_error(
    data: dict[str, Any], check_files: bool,
) -> None:
    outcome(lambda: parse_settings(data, source="fuzz.toml", base_dir=ROOT / "deploy",
                                   check_files=check_files))


def _toml_safe(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if value is None or isinstance(value, dt.date | dt.time):
        return False
    if isinstance(value, dict):
        return all(_toml_safe(v) for v in value.values())
    if isinstance(value, list):
        return all(_toml_safe(v) for v in value)
    return True


@FUZZ
@given(data=mutated_configs())
def test_mutated_configs_through_a_file_load_or_raise_config_error(
    config_file: Path, data: dict[str, Any],
) -> None:
    if not _toml_safe(data):
        return
    try:
        text = dumps(data)
    except (TypeError, AssertionError):
        return
    config_file.write_text(text, encoding="utf-8", errors="surrogatepass")
    outcome(lambda: load_settings(config_file, env={}, check_files=False))


@FUZZ
@given(document=st.dictionaries(
    st.sampled_from(["cabinet", "mqtt", "redis", "timing", "security", "buses", "boards",
                     "compartments", "zones", "tenants", "lane", "log"]) | st.text(max_size=8),
    VALUES, max_size=6))
@example(document={"[key]": None})  # a top-level key named as pydantic names a table key
def test_arbitrary_documents_validate_or_raise_config_error(document: dict[str, Any]) -> None:
    outcome(lambda: parse_settings(document, check_files=False))


# -- environment and command-line layers --------------------------------------------------

LAYER_KEYS = st.sampled_from([
    "cabinet.id", "cabinet.site", "mqtt.port", "mqtt.host", "mqtt.protocol", "redis.url",
    "timing.pulse_s", "timing.poll_interval_s", "security.require_signed_commands",
    "security.dispatch_public_keys.x", "buses", "boards.0.address", "log.level", "nope",
    "cabinet", "security.dispatch_public_keys", "timing.pulse_s.x",
]) | st.text(max_size=20)
LAYER_VALUES = st.text(max_size=30) | st.sampled_from(
    ["", "0", "-1", "nan", "inf", "1e999", "true", "[1,2]", "{}", "1h", "\x00", "é"])


@FUZZ
@given(overrides=st.dictionaries(LAYER_KEYS, LAYER_VALUES, max_size=4),
       env=st.dictionaries(
           st.sampled_from(["LOCKER_MQTT__PORT", "LOCKER_TIMING__PULSE_S", "LOCKER_CABINET__ID",
                            "LOCKER_SECURITY__REQUIRE_SIGNED_COMMANDS", "LOCKER_", "LOCKER__X",
                            "LOCKER_SECURITY__DISPATCH_PUBLIC_KEYS__K", "LOCKER_BOARDS"])
           | st.text(max_size=12).map(lambda s: "LOCKER_" + s),
           LAYER_VALUES, max_size=4))
def test_environment_and_overrides_load_or_raise_config_error(
    overrides: dict[str, str], env: dict[str, str],
) -> None:
    path = ROOT / "deploy" / "sim-cabinet.toml"
    env = {k: v for k, v in env.items() if "\x00" not in k + v and "=" not in k}
    outcome(lambda: load_settings(path, env=env, overrides=overrides))


# -- every number out of its range, every boolean not a boolean: refused by key -------------

_BOUND = re.compile(r"(>=|>|<=|<) (-?[0-9.e+]+)")


def _scalar_keys() -> list[tuple[str, str]]:
    """(key, type) of the plain keys of the single sections (no arrays, no tenant pools)."""
    out = []
    for doc in describe_keys():
        parts = doc.key.split(".")
        if len(parts) != 2 or "[]" in doc.key or parts[0] in ("tenants", "simulator"):
            continue
        kind = doc.type.split(" (")[0]
        if kind in ("integer", "number", "seconds", "boolean"):
            out.append((doc.key, doc.type))
    return out


SCALARS = _scalar_keys()


@st.composite
def _absurd(draw: st.DrawFn) -> tuple[str, Any]:
    key, type_text = draw(st.sampled_from(SCALARS))
    kind = type_text.split(" (")[0]
    if kind == "boolean":
        value = draw(st.one_of(st.integers(), st.floats(allow_nan=False),
                               st.sampled_from(["yes", "no", "true", "false", "on", "1", ""])))
        return key, value
    bounds = dict((sign, float(n)) for sign, n in _BOUND.findall(type_text))
    upper = bounds.get("<=", bounds.get("<"))
    lower = bounds.get(">=", bounds.get(">"))
    sides: list[st.SearchStrategy[Any]] = []
    if kind == "integer":
        if upper is not None:
            top = math.floor(upper) + (0 if "<" in bounds else 1)
            sides.append(st.integers(min_value=top, max_value=10**30))
        if lower is not None:
            bottom = math.ceil(lower) - (0 if ">" in bounds else 1)
            sides.append(st.integers(min_value=-(10**30), max_value=bottom))
        sides.append(st.floats(allow_nan=False).map(lambda v: v))  # not a whole number
        sides.append(st.integers(-5, 100).map(str))  # text, not a number
        return key, draw(st.one_of(*sides))
    if upper is not None:
        sides.append(st.floats(min_value=upper, max_value=1e300).filter(
            lambda v: v > upper or ("<" in bounds and v >= upper)))
    if lower is not None:
        sides.append(st.floats(min_value=-1e300, max_value=lower).filter(
            lambda v: v < lower or (">" in bounds and v <= lower)))
    sides.append(st.sampled_from([math.inf, -math.inf, math.nan]))
    return key, draw(st.one_of(*sides))


@FUZZ
@given(case=_absurd())
def test_a_value_out_of_range_or_not_a_boolean_is_refused_by_key(case: tuple[str, Any]) -> None:
    key, value = case
    section, name = key.split(".")
    data = copy.deepcopy(PARSED["sim-cabinet.toml"])
    data.setdefault(section, {})[name] = value
    result = outcome(lambda: parse_settings(data, check_files=False))
    assert isinstance(result, ConfigError), f"{key} = {value!r} was accepted"
    assert key in result.keys, (key, value, str(result))
