"""A tiny TOML writer for tests: every top-level key as one inline value.

Enough for the configs the tests build (tables, arrays of tables, scalars); the project has
no TOML writer dependency and needs none at run time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


def string(value: str) -> str:
    """A TOML basic string. JSON's escapes are TOML's, except that TOML wants no surrogate
    pairs (so no ASCII-only output) and no raw DEL."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def inline(value: Any) -> str:
    """``value`` as a TOML inline value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        assert math.isfinite(value)
        return repr(value)
    if isinstance(value, str):
        return string(value)
    if isinstance(value, Mapping):
        body = ", ".join(f"{string(str(k))} = {inline(v)}" for k, v in value.items())
        return "{ " + body + " }" if body else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(inline(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def dumps(data: Mapping[str, Any]) -> str:
    """A TOML document whose top-level keys are ``data``'s, one per line."""
    return "".join(f"{string(k)} = {inline(v)}\n" for k, v in data.items())
