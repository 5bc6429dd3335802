"""Value types and rules shared by the section structs: durations, counts, flags, names, and the
read-only tables a loaded :class:`~controller.settings.Settings` is made of."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec

# =============================================================================================
# Rules: what a field checks beyond its type
# =============================================================================================


class Rule:
    """A check of one field, placed in its ``Annotated`` type and run by the validator
    (:mod:`controller.settings.validate`): ``fn(value)`` (or ``fn(value, ctx)`` when
    ``with_ctx``) returns the value to keep or raises ``ValueError`` with the message a
    technician reads. ``before`` rules run on the value as written, before the type check;
    the others on the typed value. Rules run in the order written."""

    __slots__ = ("before", "fn", "with_ctx")

    def __init__(self, fn: Callable[..., Any], *, before: bool = False,
                 with_ctx: bool = False) -> None:
        self.fn = fn
        self.before = before
        self.with_ctx = with_ctx

    def __call__(self, value: Any, ctx: ValidationContext) -> Any:
        return self.fn(value, ctx) if self.with_ctx else self.fn(value)


def Before(fn: Callable[[Any], Any]) -> Rule:
    """A rule run on the raw value, before the type check."""
    return Rule(fn, before=True)


def After(fn: Callable[[Any], Any]) -> Rule:
    """A rule run on the typed, constrained value."""
    return Rule(fn)


def AfterCtx(fn: Callable[[Any, ValidationContext], Any]) -> Rule:
    """A rule run on the typed value that reads the :class:`ValidationContext`."""
    return Rule(fn, with_ctx=True)


class Tagged:
    """Marks a union of tables told apart by one key (``profile`` for boards)."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key


class ValidationContext:
    """What validation may read besides the data: where relative paths start, and whether
    files named by the config are checked."""

    __slots__ = ("base_dir", "check_files")

    def __init__(self, base_dir: Path | None = None, check_files: bool = True) -> None:
        self.base_dir = base_dir
        self.check_files = check_files


# =============================================================================================
# Value types
# =============================================================================================

# ASCII digits only: float() also reads Arabic-Indic and fullwidth digits as digits.
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|d|h|m|s)", re.ASCII)
_DURATION_FULL = re.compile(r"^\s*(?:[0-9]+(?:\.[0-9]+)?\s*(?:ms|d|h|m|s)\s*)+$", re.ASCII)
_NUMBER = re.compile(r"^\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*$", re.ASCII)
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> object:
    """Read a duration in seconds: a number (``0.7``, ``90``) or a text with units
    (``"500ms"``, ``"90s"``, ``"1h30m"``, ``"3d"``); other text raises ``ValueError``.
    Non-text values are returned unchanged for the float validator to judge."""
    if isinstance(value, str):
        if _DURATION_FULL.match(value):
            return sum(float(n) * _UNIT_S[u] for n, u in _DURATION_PART.findall(value))
        if _NUMBER.match(value):
            return float(value)
        raise ValueError(
            f"must be seconds or a duration such as '90s', '1h30m' (got {value!r})")
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


# Rules run in the order written: the bool check, the duration text, then finiteness.
Seconds = Annotated[float, Before(_not_bool), Before(parse_duration), Before(_finite),
                    After(_finite)]
Count = Annotated[int, Before(_whole_number)]
Number = Annotated[float, Before(_not_bool), Before(_number)]
Flag = Annotated[bool, Before(_strict_bool)]
Ident = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9-]{1,32}$")]
Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
CompartmentId = Annotated[str, msgspec.Meta(pattern=r"^[A-Z0-9-]{1,8}$")]
KeyId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]


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


def _ctx_path(ctx: ValidationContext, value: str | Path) -> Path:
    try:
        path = Path(value).expanduser()
    except RuntimeError as exc:  # "~user" for a user that does not exist, or no $HOME
        raise ValueError(f"cannot expand {str(value)!r}: {exc}") from exc
    if not path.is_absolute() and ctx.base_dir is not None:
        path = Path(ctx.base_dir) / path
    return path


def _check_files(ctx: ValidationContext) -> bool:
    return ctx.check_files


class _TableDefault:
    """Default of a sub-table: the *data* of an empty (or given) table, validated like a
    table from the file, so that an issue in a default is named at its full key path.
    Called (a struct built in code), it gives the validated table."""

    __slots__ = ("data", "tp")

    def __init__(self, tp: Any, data: dict[str, Any]) -> None:
        self.tp = tp
        self.data = data

    def __call__(self) -> Any:
        if self.tp is None:
            return _FrozenDict(self.data)
        from controller.settings.validate import convert  # the validator reads the structs

        return convert(self.tp, dict(self.data))


def _table(tp: Any = None, **values: Any) -> Any:
    """A field default: the table ``values`` of type ``tp`` (a struct, or ``None`` for a
    read-only mapping), validated as if the file had it."""
    return msgspec.field(default_factory=_TableDefault(tp, values))


class _Section(msgspec.Struct, frozen=True, kw_only=True, dict=True):
    """A table of the config: frozen, keyword-built. ``dict=True`` leaves room for cached
    views (:attr:`Settings.config_hash`). Unknown keys are refused by the validator.

    ``_check`` (optional) runs once every field of the table is valid: it raises
    ``ValueError`` (the table is wrong) or :class:`_KeyedError` (one of its keys is), or
    returns a list of (key path within the table, message) for several problems at once."""

    def _dump(self, reveal: bool) -> dict[str, Any]:
        """The table as plain data, unset keys left out; secrets shown only if ``reveal``
        (the tables that hold one override this)."""
        out: dict[str, Any] = {}
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if value is not None:
                out[name] = _plain(value, reveal)
        return out


class _KeyedError(ValueError):
    """A table-level check that knows which of the table's keys is wrong (``key`` may be
    dotted: ``outputs.buzzer``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def _plain(value: Any, reveal: bool) -> Any:
    """A loaded value as JSON/TOML-able data: tables as dicts, arrays as lists."""
    if isinstance(value, _Section):
        return value._dump(reveal)
    if isinstance(value, Mapping):
        return {k: _plain(v, reveal) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, reveal) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dt.date | dt.time):  # a TOML date in the free-form tables
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no inf or nan (only the free-form tables may hold them)
    return value
