"""The key reference: every key with its type, default and description, as printed in
``docs/configuration.md``."""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from controller.settings.fields import Rule, _Section, _TableDefault, parse_duration
from controller.settings.loader import _unwrap
from controller.settings.models import Settings
from controller.settings.validate import FieldSpec, split_annotation, struct_fields

# =============================================================================================
# Reference
# =============================================================================================


@dataclass(frozen=True, slots=True)
class KeyDoc:
    """One key of the reference (``docs/configuration.md``)."""

    key: str
    type: str
    default: str
    description: str


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _type_name(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "array of tables"
    if origin in (dict, Mapping):
        return "table"
    if tp is type(None):
        return "unset"
    if isinstance(tp, type) and issubclass(tp, _Section):
        return "table"
    return {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}.get(
        tp, "any"
    )


def _default_text(field: FieldSpec) -> str:
    if field.required:
        return "required"
    if isinstance(field.factory, _TableDefault):
        return "—"
    value = field.default
    if value is None:
        return "unset"
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def _walk(model: type[_Section], prefix: str) -> Iterator[KeyDoc]:
    for name, field in struct_fields(model).items():
        key = f"{prefix}.{name}" if prefix else name
        tp = _unwrap(field.annotation)
        if typing.get_origin(tp) is tuple:
            tp = _unwrap(typing.get_args(tp)[0])
        seconds = parse_duration in _metadata(field)
        type_text = ("seconds" if seconds else _type_name(field.annotation)) + _bounds(field)
        yield KeyDoc(key, type_text, _default_text(field), field.description)
        if typing.get_origin(tp) in (dict, Mapping):
            tp = _unwrap(typing.get_args(tp)[1])
        if isinstance(tp, type) and issubclass(tp, _Section):
            yield from _walk(tp, key)
        elif typing.get_origin(tp) in (typing.Union, types.UnionType):
            for member in typing.get_args(tp):
                if isinstance(member, type) and issubclass(member, _Section):
                    yield from _walk(member, key)


def _bounds(field: FieldSpec) -> str:
    marks = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    parts = [
        f"{sign} {getattr(m, name)}"
        for m in field.metadata
        if isinstance(m, msgspec.Meta)
        for name, sign in marks.items()
        if getattr(m, name, None) is not None
    ]
    return f" ({', '.join(parts)})" if parts else ""


def _metadata(field: FieldSpec) -> list[Any]:
    """The rules of the field and of the members of its union (``Seconds | None``)."""
    base, own = split_annotation(field.annotation)
    out = [m.fn for m in own if isinstance(m, Rule)]
    for arg in typing.get_args(base):
        out.extend(m.fn for m in split_annotation(arg)[1] if isinstance(m, Rule))
    return out


def describe_model(model: type[_Section], prefix: str) -> list[KeyDoc]:
    """The keys of one model (e.g. one board profile) under ``prefix``, for the reference."""
    return list(_walk(model, prefix))


def describe_keys() -> list[KeyDoc]:
    """Every key of the config with its type, default and meaning, in model order. Array
    items are written ``boards[]``; the board profiles each list their own keys. Used to
    write and check ``docs/configuration.md`` and by ``lockerctl config keys``."""
    docs: list[KeyDoc] = []
    seen: set[str] = set()
    for doc in _walk(Settings, ""):
        key = doc.key
        for section in ("buses", "boards", "zones", "compartments"):
            if key == section or key.startswith(section + "."):
                key = section + "[]" + key[len(section) :]
        if key.startswith("tenants."):
            key = "tenants.<pool>" + key[len("tenants") :]
        if key in seen:
            continue
        seen.add(key)
        docs.append(KeyDoc(key, doc.type, doc.default, doc.description))
    return docs
