"""Loading: layers (defaults < file < environment < flags < apply_config), TOML
positions, and the validator's issues as :class:`ConfigIssue` that name the key, the
layer and the line."""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from controller.settings.errors import (
    ENV_PREFIX,
    NON_CONFIG_ENV_VARS,
    ConfigError,
    ConfigIssue,
    Loc,
    _format_loc,
)
from controller.settings.fields import ValidationContext, _Section
from controller.settings.models import Settings
from controller.settings.validate import Validator, struct_fields

# =============================================================================================
# Loading
# =============================================================================================




class _LineMap:
    """Where keys are in a TOML text: a light scan of table headers and ``key =`` lines,
    enough to point a technician at the right line (tomllib keeps no positions)."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?$")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")

    def __init__(self, text: str) -> None:
        self.lines: dict[str, int] = {}
        arrays: dict[str, int] = {}
        table = ""
        for number, line in enumerate(text.splitlines(), start=1):
            header = self._HEADER.match(line)
            if header:
                parts = self._split(header.group(2))
                resolved = ""
                for k, part in enumerate(parts):
                    prefix = f"{resolved}.{part}" if resolved else part
                    if header.group(1) == "[[" and k == len(parts) - 1:
                        index = arrays.get(prefix, 0)
                        arrays[prefix] = index + 1
                        resolved = f"{prefix}[{index}]"
                    elif prefix in arrays:
                        resolved = f"{prefix}[{arrays[prefix] - 1}]"
                    else:
                        resolved = prefix
                table = resolved
                self.lines.setdefault(table, number)
                continue
            key = self._KEY.match(line)
            if key:
                path = ".".join(self._split(key.group(1)))
                self.lines.setdefault(f"{table}.{path}" if table else path, number)

    @staticmethod
    def _split(dotted: str) -> list[str]:
        return [p.strip().strip("\"'") for p in dotted.split(".")]

    def line_of(self, loc: Loc) -> int | None:
        for end in range(len(loc), 0, -1):
            found = self.lines.get(_format_loc(loc[:end]))
            if found is not None:
                return found
        return None


@dataclass(slots=True)
class _Origins:
    """Which layer set which key, to name the right source in a message."""

    file: str
    lines: _LineMap | None
    overrides: dict[tuple[str, ...], str]

    def issue(self, loc: Loc, message: str) -> ConfigIssue:
        key = _format_loc(loc)
        for end in range(len(loc), 0, -1):
            prefix = loc[:end]
            if all(isinstance(p, str) for p in prefix):
                source = self.overrides.get(typing.cast(tuple[str, ...], prefix))
                if source is not None:
                    return ConfigIssue(source, key, message)
        line = self.lines.line_of(loc) if self.lines is not None else None
        return ConfigIssue(self.file, key, message, line)


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _accepts_text(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _accepts_text(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_accepts_text(a) for a in typing.get_args(tp))
    if origin is Literal:
        return any(isinstance(a, str) for a in typing.get_args(tp))
    return tp in (str, Path)


class _UnknownKey(Exception):
    def __init__(self, message: str, suggestion: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.suggestion = suggestion


def _resolve(parts: Sequence[str]) -> Any:
    """The annotation of the key at ``parts``; :class:`_UnknownKey` if no such key (or a key
    inside an array, which a layer cannot address: it replaces the array whole)."""
    tp: Any = Settings
    for depth, part in enumerate(parts):
        tp = _unwrap(tp)
        where = ".".join(parts[:depth]) or "the top level"
        if isinstance(tp, type) and issubclass(tp, _Section):
            fields = struct_fields(tp)
            field = fields.get(part)
            base = part.split("[", 1)[0]
            if field is None and base != part and base in fields:
                # "buses[0]": an item of an array is not a key of its own.
                named = ".".join([*parts[:depth], base])
                if typing.get_origin(_unwrap(fields[base].annotation)) is tuple:
                    raise _UnknownKey(f"{named} is an array: set it whole (in the file, or "
                                      "with its whole TOML value), not item by item")
                raise _UnknownKey(f"{named} takes no index")
            if field is None:
                close = difflib.get_close_matches(part, list(fields), n=1)
                raise _UnknownKey(
                    f"no key {part!r} in {where}",
                    [*parts[:depth], close[0], *parts[depth + 1 :]] if close else None,
                )
            tp = field.annotation
        elif typing.get_origin(tp) in (dict, Mapping):
            tp = typing.get_args(tp)[1]
        elif tp is Any:
            return Any
        elif typing.get_origin(tp) is tuple:
            raise _UnknownKey(f"{where} is an array of tables: set it whole, not item by item")
        else:
            raise _UnknownKey(f"{where} is not a table")
    return tp


def _coerce_text(tp: Any, raw: str) -> Any:
    """A value from the environment or ``--set``, read as TOML first: ``5``, ``true``,
    ``"2m"``. A key that takes text also takes it bare (``log.level=debug``), and a TOML
    string (``log.level="debug"``) is its text, without the quotes."""
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except (tomllib.TOMLDecodeError, ValueError):  # ValueError: an integer of 4300+ digits
        return raw
    if _accepts_text(tp) and not isinstance(value, str):
        return raw  # text that reads as a number or a date: the text is meant
    return value


def _merge(base: dict[str, Any], parts: Sequence[str], value: Any) -> None:
    node = base
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
        node[part] = child = dict(child)
        node = child
    last = parts[-1]
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        merged = dict(node[last])
        for k, v in value.items():
            _merge(merged, [k], v)
        node[last] = merged
    else:
        node[last] = value


@dataclass(frozen=True, slots=True)
class _Entry:
    label: str  # the variable or flag as the user wrote it
    parts: list[str]
    value: Any
    source: str  # where a bad value is reported from
    layer: str  # "environment", "flags" or "apply_config"


def _apply_layer(
    data: dict[str, Any], entries: Sequence[_Entry], origins: dict[tuple[str, ...], str]
) -> list[ConfigIssue]:
    """Merge ``entries`` into ``data`` (recording who set what); names of no key are
    issues."""
    issues: list[ConfigIssue] = []
    for entry in entries:
        try:
            if not entry.parts or any(not p for p in entry.parts):
                raise _UnknownKey("empty key name")
            tp = _resolve(entry.parts)
        except _UnknownKey as exc:
            message = f"names no key: {exc.message}"
            if exc.suggestion is not None:
                guess = (
                    ENV_PREFIX + "__".join(exc.suggestion).upper()
                    if entry.layer == "environment"
                    else ".".join(exc.suggestion)
                )
                message += f" (did you mean {guess}?)"
            issues.append(ConfigIssue(entry.layer, entry.label, message))
            continue
        value = _coerce_text(tp, entry.value) if isinstance(entry.value, str) else entry.value
        _merge(data, entry.parts, value)
        origins[tuple(entry.parts)] = entry.source
    return issues


def _env_entries(env: Mapping[str, str]) -> list[_Entry]:
    entries = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in NON_CONFIG_ENV_VARS:
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        entries.append(_Entry(name, parts, env[name], f"${name}", "environment"))
    return entries


def _validate(
    data: Mapping[str, Any],
    origins: _Origins,
    *,
    base_dir: Path | None,
    check_files: bool,
) -> Settings:
    run = Validator(ValidationContext(base_dir, check_files))
    settings = run.struct(Settings, data)
    if run.failed(settings):
        raise ConfigError(_sorted([origins.issue(loc, msg) for loc, msg in run.issues]))
    return typing.cast(Settings, settings)


def _sorted(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    return sorted(issues, key=lambda i: (i.source, i.line if i.line is not None else 1 << 30))


def parse_settings(
    data: Mapping[str, Any],
    *,
    source: str = "<config>",
    base_dir: str | os.PathLike[str] | None = None,
    check_files: bool = True,
) -> Settings:
    """Validate an already-parsed config mapping (the content of a TOML file) and run the
    cross-section checks. ``source`` names it in messages; relative file paths are read
    from ``base_dir`` (default: the current directory). ``check_files=False`` skips the
    existence checks of TLS and key files (to lint a config away from the cabinet).

    Raises :class:`ConfigError` with every issue found."""
    origins = _Origins(source, None, {})
    return _validate(
        data,
        origins,
        base_dir=Path(base_dir) if base_dir is not None else None,
        check_files=check_files,
    )


def load_settings(
    path: str | os.PathLike[str] | None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    check_files: bool = True,
    overlay: Mapping[str, Any] | None = None,
) -> Settings:
    """Load the cabinet settings: defaults < the TOML file at ``path`` < ``env`` <
    ``overrides`` < ``overlay``, validated once, frozen.

    ``path``: the TOML file (``None``: no file, defaults and the other layers only).
    ``env``: the environment (default ``os.environ``); ``LOCKER_SECTION__KEY=value``.
    ``overrides``: flags from the command line, dotted keys to values
    (``{"mqtt.host": "broker", "timing.poll_interval_s": "0.2"}``); text values are read
    like environment values. ``check_files``: see :func:`parse_settings`. ``overlay``:
    the keys changed remotely by dispatch's ``apply_config``, dotted keys to values; its
    issues name ``apply_config`` as their source.

    Relative paths in the file (TLS and key files) are relative to the file's directory.
    Raises :class:`ConfigError` listing every issue: unreadable file, TOML syntax (with
    line and column), unknown or badly typed keys in any layer, cross-section conflicts.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    source = "<defaults>"
    lines: _LineMap | None = None
    base_dir: Path | None = None
    if path is not None:
        source = os.fspath(path)
        file = Path(path)
        base_dir = file.parent
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise ConfigError([ConfigIssue(source, "", f"cannot read: {exc.strerror}")]) from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
            raise ConfigError([ConfigIssue(
                source, "", f"not UTF-8 text: {exc.reason} (byte 0x{raw[exc.start]:02x}); save "
                "the file as UTF-8", line, column)]) from None
        if text.startswith("\ufeff"):
            raise ConfigError([ConfigIssue(
                source, "", "the file starts with a byte order mark (BOM), which TOML does not "
                "allow: save it as UTF-8 without BOM", 1, 1)])
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([_syntax_issue(source, exc)]) from None
        except ValueError as exc:  # Python's limit on the digits of an integer
            raise ConfigError([ConfigIssue(source, "", f"invalid TOML: {exc}")]) from None
        lines = _LineMap(text)

    overrides_by_key: dict[tuple[str, ...], str] = {}
    issues = _apply_layer(data, _env_entries(env), overrides_by_key)
    for layer, values in (("flags", overrides), ("apply_config", overlay)):
        entries = [_Entry(key, key.split("."), value, layer, layer)
                   for key, value in (values or {}).items()]
        issues += _apply_layer(data, entries, overrides_by_key)
    try:
        settings = _validate(
            data,
            _Origins(source, lines, overrides_by_key),
            base_dir=base_dir,
            check_files=check_files,
        )
    except ConfigError as exc:
        raise ConfigError([*issues, *exc.issues]) from None
    if issues:
        raise ConfigError(issues)
    return settings


def _syntax_issue(source: str, exc: tomllib.TOMLDecodeError) -> ConfigIssue:
    text = str(exc)
    match = re.search(r"\(at line (\d+), column (\d+)\)$", text)
    if match:
        message = text[: match.start()].strip()
        return ConfigIssue(
            source, "", f"invalid TOML: {message}", int(match.group(1)), int(match.group(2))
        )
    match = re.search(r"\(at end of document\)$", text)
    if match:
        return ConfigIssue(
            source, "", f"invalid TOML: {text[: match.start()].strip()} at end of document"
        )
    return ConfigIssue(source, "", f"invalid TOML: {text}")
