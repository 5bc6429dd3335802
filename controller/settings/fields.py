"""Value types shared by the section models: durations, counts, flags, names, and the
read-only tables a loaded :class:`~controller.settings.Settings` is made of."""

from __future__ import annotations

import json
import math
import re
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    ValidationInfo,
)

# =============================================================================================
# Value types
# =============================================================================================

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|d|h|m|s)")
_DURATION_FULL = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*(?:ms|d|h|m|s)\s*)+$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> object:
    """Read a duration in seconds: a number (``0.7``, ``90``) or a text with units
    (``"500ms"``, ``"90s"``, ``"1h30m"``, ``"3d"``); other text raises ``ValueError``.
    Non-text values are returned unchanged for the float validator to judge."""
    if isinstance(value, str):
        if _DURATION_FULL.match(value):
            return sum(float(n) * _UNIT_S[u] for n, u in _DURATION_PART.findall(value))
        try:
            return float(value)
        except ValueError:
            raise ValueError(
                f"must be seconds or a duration such as '90s', '1h30m' (got {value!r})"
            ) from None
    return value


def _not_bool(value: object) -> object:
    # TOML `true` is not a number of seconds, even though Python's bool is an int.
    if isinstance(value, bool):
        raise ValueError(f"must be a number (got {_show(value)})")
    return value


def _whole_number(value: object) -> object:
    # A count written as text ("5") or with a fraction (5.0) is a mistake, not a guess to
    # make; environment and --set values are read as TOML before they get here.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a whole number (got {_show(value)})")
    return value


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number (got {_show(value)})")
    return value


def _number(value: object) -> object:
    if isinstance(value, str):
        raise ValueError(f"must be a number, not text (got {_show(value)})")
    return _finite(value)


def _strict_bool(value: object) -> object:
    # Never guessed: "yes", "on", 1 are refused, so a security switch means what it says.
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false (got {_show(value)})")
    return value


# Validators run last-listed first: the bool check, then the duration text, then finiteness.
Seconds = Annotated[float, AfterValidator(_finite), BeforeValidator(_finite),
                    BeforeValidator(parse_duration), BeforeValidator(_not_bool)]
Count = Annotated[int, BeforeValidator(_whole_number)]
Number = Annotated[float, BeforeValidator(_number), BeforeValidator(_not_bool)]
Flag = Annotated[bool, BeforeValidator(_strict_bool)]
Ident = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,32}$")]
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
CompartmentId = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9-]{1,8}$")]
KeyId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]


class _FrozenDict(dict[Any, Any]):
    """A dict that refuses to change: tables inside :class:`Settings` are read-only."""

    def _readonly(self, *args: object, **kwargs: object) -> typing.NoReturn:
        raise TypeError("settings are read-only after load")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly
    __ior__ = _readonly

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(json.dumps(self, sort_keys=True, default=str))


def _deep_freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return _FrozenDict({k: _deep_freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_deep_freeze(v) for v in value)
    return value


def _freeze_mapping(value: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return _FrozenDict(value)


def _show(value: object) -> str:
    """A value as the TOML author wrote it, for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    return repr(value)


def _ctx_path(info: ValidationInfo, value: str | Path) -> Path:
    try:
        path = Path(value).expanduser()
    except RuntimeError as exc:  # "~user" for a user that does not exist, or no $HOME
        raise ValueError(f"cannot expand {str(value)!r}: {exc}") from exc
    ctx = info.context or {}
    base = ctx.get("base_dir")
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return path


def _check_files(info: ValidationInfo) -> bool:
    return bool((info.context or {}).get("check_files", True))


def _table(**values: Any) -> Callable[[], Any]:
    """Default of a sub-table: the *data* of an empty (or given) table, validated like a
    table from the file, so that an issue in a default is named at its full key path."""
    return lambda: dict(values)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)
