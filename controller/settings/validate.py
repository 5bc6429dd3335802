"""The validator of the settings structs: it reads a parsed TOML table against a struct's
annotations and reports *every* problem, each at its key path, in the words of a TOML
author (decision 0023).

msgspec's own conversion stops at the first error; a technician fixing a cabinet on site
wants them all at once. So the structs are plain frozen ``msgspec.Struct`` classes, and this
module walks them: for each field, its ``Annotated`` metadata gives the rules to run before
the type check (:class:`~controller.settings.fields.Rule`), the bounds
(``msgspec.Meta(ge=..., pattern=...)``) and the rules after it. Nested tables, arrays of
tables, tables of tables and tagged unions (:class:`~controller.settings.fields.Tagged`) are
walked in field order, unknown keys are named with the closest known one, and a table's own
``_check(ctx)`` runs once all its fields are valid. The types it knows are the ones the
settings use: struct, ``tuple[X, ...]``, ``Mapping[K, V]``, ``X | None``, a tagged union of
structs, ``Literal``, ``str``, ``int``, ``float``, ``bool``, ``Path`` and ``Any``.
"""

from __future__ import annotations

import difflib
import functools
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from controller.settings.errors import ConfigError, ConfigIssue, Loc, _format_loc
from controller.settings.fields import (
    Rule,
    Tagged,
    ValidationContext,
    _KeyedError,
    _Section,
    _show,
    _TableDefault,
)

__all__ = ["FieldSpec", "Validator", "convert", "split_annotation", "struct_fields"]

_BAD: Any = object()  # a value that failed; its issues are recorded
_SECRETS = ("password", "url")  # keys whose value is never echoed in a message


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a settings struct: its annotation (with its metadata), and its default
    (``msgspec.NODEFAULT`` if it has none) or default factory."""

    name: str
    annotation: Any
    default: Any
    factory: Any

    @property
    def required(self) -> bool:
        return self.default is msgspec.NODEFAULT and self.factory is None

    @property
    def metadata(self) -> tuple[Any, ...]:
        """The field's own metadata (description, bounds, rules), not its type's."""
        return split_annotation(self.annotation)[1]

    @property
    def description(self) -> str:
        return next((m.description for m in self.metadata
                     if isinstance(m, msgspec.Meta) and m.description), "")


@functools.cache
def struct_fields(cls: type[_Section]) -> dict[str, FieldSpec]:
    """The fields of a settings struct, in declaration order (a base's fields first)."""
    out: dict[str, FieldSpec] = {}
    for info in msgspec.structs.fields(cls):  # its types keep their Annotated metadata
        factory = None if info.default_factory is msgspec.NODEFAULT else info.default_factory
        out[info.name] = FieldSpec(info.name, info.type, info.default, factory)
    return out


def split_annotation(tp: Any) -> tuple[Any, tuple[Any, ...]]:
    """``Annotated[T, m1, m2]`` -> ``(T, (m1, m2))``; another type -> ``(tp, ())``."""
    if typing.get_origin(tp) is Annotated:
        args = typing.get_args(tp)
        return args[0], tuple(args[1:])
    return tp, ()


@dataclass(frozen=True, slots=True)
class _Plan:
    """What :meth:`Validator.value` does for one annotation, worked out once."""

    base: Any
    befores: tuple[Rule, ...]
    afters: tuple[Rule, ...]
    bounds: tuple[msgspec.Meta, ...]  # those with a bound, a length or a pattern
    members: tuple[Any, ...]  # a union's members other than None; () for another type
    nullable: bool
    tag: Tagged | None


_BOUNDED = ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern")


@functools.cache
def _plan(tp: Any) -> _Plan:
    base, metas = split_annotation(tp)
    rules = [m for m in metas if isinstance(m, Rule)]
    members: tuple[Any, ...] = ()
    nullable = False
    if typing.get_origin(base) in (typing.Union, types.UnionType):
        members = tuple(a for a in typing.get_args(base) if a is not type(None))
        nullable = len(members) < len(typing.get_args(base))
    return _Plan(
        base=base,
        befores=tuple(r for r in rules if r.before),
        afters=tuple(r for r in rules if not r.before),
        bounds=tuple(m for m in metas if isinstance(m, msgspec.Meta)
                     and any(getattr(m, name) is not None for name in _BOUNDED)),
        members=members,
        nullable=nullable,
        tag=next((m for m in metas if isinstance(m, Tagged)), None),
    )


def _number_text(value: float) -> str:
    # As the bounds read in the reference: 10 for 10.0, 0.01 for 0.01.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _choices(values: tuple[Any, ...]) -> str:
    shown = [repr(v) for v in values]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


class Validator:
    """One validation run: :meth:`value` returns the typed value, or a sentinel after
    recording every issue in :attr:`issues` as ``(key path, message)``."""

    def __init__(self, ctx: ValidationContext | None = None) -> None:
        self.ctx = ctx or ValidationContext()
        self.issues: list[tuple[Loc, str]] = []

    @staticmethod
    def failed(value: Any) -> bool:
        return value is _BAD

    def _fail(self, loc: Loc, message: str) -> Any:
        self.issues.append((loc, message))
        return _BAD

    def _got(self, loc: Loc, message: str, value: Any) -> Any:
        if loc and loc[-1] in _SECRETS:
            return self._fail(loc, message)
        return self._fail(loc, f"{message} (got {_show(value)})")

    # -- one value ------------------------------------------------------------------------

    def value(self, tp: Any, value: Any, loc: Loc = (), outer: tuple[Any, ...] = (),
              shown: Any = _BAD) -> Any:
        """``value`` read as ``tp`` at key path ``loc``; ``outer`` is metadata of an
        enclosing ``X | None`` that applies to ``X``, and ``shown`` the value as written
        there (what a bound's message quotes)."""
        plan = _plan(tp)
        for rule in plan.befores:
            try:
                value = rule(value, self.ctx)
            except ValueError as exc:
                return self._fail(loc, str(exc))
        bounds = (*outer, *plan.bounds)
        if plan.members:
            if value is None and plan.nullable:
                out = None
            elif len(plan.members) == 1:
                out = self.value(plan.members[0], value, loc, bounds, value)
            else:
                out = self._tagged(list(plan.members), plan.tag, value, loc)
        else:
            out = self._typed(plan.base, value, loc)
            if out is not _BAD:
                for meta in bounds:
                    if not self._within(meta, out, value if shown is _BAD else shown, loc):
                        return _BAD
        if out is _BAD:
            return _BAD
        for rule in plan.afters:
            try:
                out = rule(out, self.ctx)
            except ValueError as exc:
                return self._fail(loc, str(exc))
        return out

    def _typed(self, tp: Any, value: Any, loc: Loc) -> Any:
        origin = typing.get_origin(tp)
        if tp is Any:
            return value
        if isinstance(tp, type) and issubclass(tp, _Section):
            return self.struct(tp, value, loc)
        if origin is tuple:
            if not isinstance(value, list | tuple):
                return self._fail(loc, f"must be an array of tables (got {_show(value)})")
            item_tp = typing.get_args(tp)[0]
            items = [self.value(item_tp, item, (*loc, i)) for i, item in enumerate(value)]
            return _BAD if any(item is _BAD for item in items) else tuple(items)
        if origin in (dict, Mapping):
            return self._mapping(tp, value, loc)
        if origin is Literal:
            allowed = typing.get_args(tp)
            for choice in allowed:
                # Exactly: a choice of numbers takes the whole number written as one
                # (not 5.0, not true), as every integer key does.
                if type(value) is type(choice) and value == choice:
                    return value
            return self._got(loc, f"must be {_choices(allowed)}", value)
        if tp is str:
            return value if isinstance(value, str) else self._got(
                loc, "must be a valid string", value)
        if tp is bool:
            return value if isinstance(value, bool) else self._got(
                loc, "must be a valid boolean", value)
        if tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            return self._got(loc, "must be a valid integer", value)
        if tp is float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            return self._got(loc, "must be a valid number", value)
        if tp is Path:
            if isinstance(value, str):
                return Path(value)
            return self._got(loc, "must be a path", value)
        raise TypeError(f"{_format_loc(loc)}: the validator does not know the type {tp!r}")

    def _within(self, meta: msgspec.Meta, typed: Any, shown: Any, loc: Loc) -> bool:
        if isinstance(typed, int | float) and not isinstance(typed, bool):
            for name, words in (("ge", "greater than or equal to"), ("gt", "greater than"),
                                ("le", "less than or equal to"), ("lt", "less than")):
                bound = getattr(meta, name)
                if bound is None:
                    continue
                ok = {"ge": typed >= bound, "gt": typed > bound,
                      "le": typed <= bound, "lt": typed < bound}[name]
                if not ok:
                    self._got(loc, f"must be {words} {_number_text(bound)}", shown)
                    return False
        if isinstance(typed, str):
            if meta.min_length is not None and len(typed) < meta.min_length:
                plural = "" if meta.min_length == 1 else "s"
                self._got(loc, f"must have at least {meta.min_length} character{plural}", typed)
                return False
            if meta.max_length is not None and len(typed) > meta.max_length:
                plural = "" if meta.max_length == 1 else "s"
                self._got(loc, f"must have at most {meta.max_length} character{plural}", typed)
                return False
            if meta.pattern is not None and not _search(meta.pattern, typed):
                self._fail(loc, f"must match {meta.pattern} (got {_show(typed)})")
                return False
        return True

    def _mapping(self, tp: Any, value: Any, loc: Loc) -> Any:
        if not isinstance(value, dict):
            return self._fail(loc, f"must be a table (got {_show(value)})")
        key_tp, item_tp = typing.get_args(tp)
        key_base, key_metas = split_annotation(key_tp)
        out: dict[Any, Any] = {}
        ok = True
        for key, item in value.items():
            where = (*loc, key)
            if key_base is str and not isinstance(key, str):
                self._fail(where, f"key name must be text (got {_show(key)})")
                ok = False
                continue
            for meta in key_metas:
                if (isinstance(meta, msgspec.Meta) and meta.pattern is not None
                        and not _search(meta.pattern, key)):
                    self._fail(where, f"key name must match {meta.pattern} (got {_show(key)})")
                    ok = False
            typed = self.value(item_tp, item, where)
            if typed is _BAD:
                ok = False
            else:
                out[key] = typed
        return out if ok else _BAD

    def _tagged(self, members: list[Any], tag: Tagged | None, value: Any, loc: Loc) -> Any:
        if tag is None:
            raise TypeError(f"{_format_loc(loc)}: a union of tables needs Tagged(key)")
        by_tag: dict[Any, Any] = {}
        for member in members:
            literal = split_annotation(struct_fields(member)[tag.key].annotation)[0]
            for name in typing.get_args(literal):
                by_tag[name] = member
        if not isinstance(value, dict):
            return self._fail(loc, f"must be a table (got {_show(value)})")
        name = value.get(tag.key)
        member = by_tag.get(name) if isinstance(name, str) else None
        if member is not None:
            return self.struct(member, value, loc)
        if tag.key not in value:
            self._fail((*loc, tag.key), "missing (required)")
        else:
            tags = " or ".join(repr(t) for t in by_tag)
            self._fail((*loc, tag.key), f"must be {tags} (got {_show(name)})")
        # Which table it is cannot be told, but a key no kind of table has is wrong
        # whatever it is meant to be (a misspelt tag among them): said now, not after
        # the tag is fixed.
        known = sorted({key for member in members for key in struct_fields(member)})
        for key in value:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self._fail((*loc, key), f"unknown key{hint}")
        return _BAD

    # -- one table --------------------------------------------------------------------------

    def struct(self, cls: type[_Section], value: Any, loc: Loc = ()) -> Any:
        """``value`` read as the table ``cls``: every field, unknown keys, then its check."""
        if not isinstance(value, dict):
            return self._fail(loc, f"must be a table (got {_show(value)})")
        prepare = getattr(cls, "_prepare", None)
        if prepare is not None:
            value = prepare(value)
        fields = struct_fields(cls)
        out: dict[str, Any] = {}
        ok = True
        for name, spec in fields.items():
            where = (*loc, name)
            if name in value:
                typed = self.value(spec.annotation, value[name], where)
            elif isinstance(spec.factory, _TableDefault):
                typed = self.value(spec.annotation, dict(spec.factory.data), where)
            elif spec.required:
                typed = self._fail(where, "missing (required)")
            else:
                default = spec.default if spec.factory is None else spec.factory()
                typed = self.value(spec.annotation, default, where)
            if typed is _BAD:
                ok = False
            else:
                out[name] = typed
        for key in value:
            if key not in fields:
                close = (difflib.get_close_matches(key, list(fields), n=1)
                         if isinstance(key, str) else [])
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self._fail((*loc, key), f"unknown key{hint}")
                ok = False
        if not ok:
            return _BAD
        table = cls(**out)
        check = getattr(table, "_check", None)
        if check is not None:
            try:
                problems = check(self.ctx)
            except _KeyedError as exc:
                return self._fail((*loc, *exc.key.split(".")), exc.message)
            except ValueError as exc:
                return self._fail(loc, str(exc))
            if problems:
                for where, message in problems:
                    self._fail((*loc, *where), message)
                return _BAD
        return table


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _search(pattern: str, text: str) -> bool:
    return _compiled(pattern).search(text) is not None


def convert(tp: Any, data: Any, ctx: ValidationContext | None = None,
            source: str = "<config>") -> Any:
    """``data`` read as ``tp`` (a settings struct, or any type the validator knows);
    :class:`ConfigError` with every issue otherwise."""
    run = Validator(ctx)
    out = run.value(tp, data)
    if out is _BAD:
        raise ConfigError([ConfigIssue(source, _format_loc(loc), msg) for loc, msg in run.issues])
    return out
