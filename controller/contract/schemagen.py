"""Generate the JSON Schemas of the MQTT contract from the msgspec structs.

``python -m controller.contract.schemagen`` rewrites ``controller/schemas/*.json``: one
schema per message, one per event kind (``events/<kind>.json``) and one per command's
result (``results/<type>.json``);
``python -m controller.contract.schemagen --check`` exits 1 if a committed file differs
from what the models generate (a test runs the same comparison). The AsyncAPI document
(``docs/mqtt/asyncapi.yaml``) references these files.

msgspec writes the schemas (:func:`msgspec.json.schema_components`); :func:`_house_style`
then gives them the form the contract has always had (it was first generated with
pydantic): keys sorted, a title per property, a single literal as ``const``, a dict with
constrained keys as ``patternProperties``, patterns ending in ``$``.
"""

from __future__ import annotations

import argparse
import json
import sys
from enum import Enum
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import msgspec

from controller.contract import events, messages, results
from controller.contract.events import EVENT_KINDS
from controller.contract.examples import EXAMPLES
from controller.contract.messages import (
    Command,
    Event,
    GetClockCommand,
    OpenResult,
    Reply,
    SignedCommand,
    State,
    Status,
    Telemetry,
)
from controller.contract.results import RESULTS

__all__ = ["SCHEMA_DIR", "SCHEMA_IDS", "check", "generate", "main", "write"]

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
_ID_BASE = "https://schemas.locker-controller.example/mqtt/v1/"

_TARGETS: dict[str, tuple[Any, str, str]] = {
    "status": (Status, "Status", "Retained on {root}/status; also the Last Will (offline)."),
    "state": (State, "State", "Retained full snapshot on {root}/state."),
    "event": (Event, "Event", "One event on {root}/events (QoS 1, at least once)."),
    "telemetry": (Telemetry, "Telemetry", "Health on {root}/telemetry (QoS 0)."),
    "command": (Command, "Command", "A plain command on {root}/cmd."),
    "clock_query": (GetClockCommand, "ClockQuery",
                    "get_clock on {root}/cmd: the cabinet's clock now, no deadline needed."),
    "signed_command": (SignedCommand, "SignedCommand",
                       "A signed command on {root}/cmd (Ed25519 over the exact text)."),
    "reply": (Reply, "Reply", "The answer to one command."),
}
SCHEMA_IDS: dict[str, str] = {
    **{name: f"{_ID_BASE}{name}.json" for name in _TARGETS},
    **{f"events/{kind}": f"{_ID_BASE}events/{kind}.json" for kind in EVENT_KINDS},
    **{f"results/{kind}": f"{_ID_BASE}results/{kind}.json" for kind in RESULTS},
}


_REF = "#/$defs/{name}"
#: Keywords whose value is a document, not a schema: left as msgspec wrote it.
_VALUES = frozenset({"default", "const", "enum", "examples"})
_JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number"}


def _schema(target: Any) -> dict[str, Any]:
    """The schema of a struct or a union of structs: the target's own schema, with the
    structs it uses under ``$defs``."""
    union = get_args(target) if get_origin(target) in (Union, UnionType) else ()
    tops, defs = msgspec.json.schema_components(union or [target], ref_template=_REF)
    defs = {name: _house_style(schema) for name, schema in defs.items()}
    if union:
        # A union of structs, each with its own ``type`` literal (the commands): exactly
        # one branch matches.
        schema: dict[str, Any] = {"oneOf": list(tops)}
    else:
        schema = dict(defs.pop(tops[0]["$ref"].rsplit("/", 1)[1]))
    if defs:
        schema["$defs"] = dict(sorted(defs.items()))
    ordered: dict[str, Any] = _sorted(schema)
    return ordered


def _refers(schema: dict[str, Any]) -> bool:
    """Whether a property is a struct, optional or not (it then has no title of its own)."""
    return "$ref" in schema or any("$ref" in b for b in schema.get("anyOf", ()))


def _title(name: str) -> str:
    return name.title().replace("_", " ")


def _house_style(node: Any) -> Any:
    """A schema of msgspec's in the contract's form (see the module's docstring)."""
    if isinstance(node, list):
        return [_house_style(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            props = {}
            for name, prop in value.items():
                prop = _house_style(prop)
                if not _refers(prop):
                    prop["title"] = _title(name)
                props[name] = prop
            out[key] = props
        elif key in _VALUES:
            out[key] = value
        else:
            out[key] = _house_style(value)
    if out.get("default") in ([], {}):
        del out["default"]  # a default made by a factory: not written (the empty value)
    if out.get("required") == []:
        del out["required"]
    if isinstance(out.get("pattern"), str):
        out["pattern"] = _portable(out["pattern"])
    if "enum" in out:
        out["enum"] = list(_ORDERS.get(tuple(sorted(out["enum"], key=repr)), out["enum"]))
        kinds = {_JSON_TYPES.get(type(v)) for v in out["enum"]}
        if len(kinds) == 1 and None not in kinds:
            out["type"] = kinds.pop()
        if len(out["enum"]) == 1:
            out["const"] = out.pop("enum")[0]
    if out.get("type") == "object" and "properties" not in out:
        keys = out.pop("propertyNames", None)
        values = out.pop("additionalProperties", True)
        if keys is not None and set(keys) == {"pattern"}:
            out["patternProperties"] = {keys["pattern"]: values}
        else:
            if keys is not None:
                out["propertyNames"] = keys
            out["additionalProperties"] = values
    return out


def _choices(annotation: Any) -> list[tuple[Any, ...]]:
    """The value lists of the literals and enums in an annotation, in declared order."""
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return [tuple(member.value for member in annotation)]
    if get_origin(annotation) is Literal:
        return [get_args(annotation)]
    return [found for arg in get_args(annotation) for found in _choices(arg)]


def _declared_orders() -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """msgspec lists the values of a literal or an enum sorted; the schemas keep the order
    of the declaration (``S, M, L, XL``), found here from every struct of the contract."""
    orders: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for module in (messages, events, results):
        for value in vars(module).values():
            if not (isinstance(value, type) and issubclass(value, msgspec.Struct)):
                continue
            for info in msgspec.structs.fields(value):
                for choices in _choices(info.type):
                    key = tuple(sorted(choices, key=repr))
                    if orders.setdefault(key, choices) != choices:
                        raise ValueError(f"{value.__name__}.{info.name}: the values "
                                         f"{choices} are declared in two orders")
    return orders


def _portable(pattern: str) -> str:
    """A whole-string pattern as JSON Schema writes it: ``$`` at the end, not ``\\Z``
    (:func:`controller.contract.constraints.pattern`)."""
    return pattern[:-2] + "$" if pattern.endswith("\\Z") else pattern


def _sorted(node: Any, key: str | None = None) -> Any:
    """Keys sorted at every level, but a struct's properties in field order."""
    if isinstance(node, list):
        return [_sorted(item) for item in node]
    if not isinstance(node, dict) or key in _VALUES:
        return node
    items = node.items() if key == "properties" else sorted(node.items())
    return {k: _sorted(v, None if key == "properties" else k) for k, v in items}


def _header(name: str, title: str, description: str) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_IDS[name],
        "title": title,
        "description": description,
    }


def _event_kind(kind: str) -> dict[str, Any]:
    """The whole event of one kind: the envelope, ``kind`` fixed, ``data`` its model."""
    doc = EVENT_KINDS[kind]
    envelope = _schema(Event)
    defs: dict[str, Any] = envelope.pop("$defs", {})
    branches = []
    for model in doc.data:
        schema = _schema(model)
        defs.update(schema.pop("$defs", {}))
        defs[model.__name__] = schema
        branches.append({"$ref": f"#/$defs/{model.__name__}"})
    props = envelope["properties"]
    props["kind"] = {"const": kind}
    props["data"] = (branches[0] if len(branches) == 1 else {"oneOf": branches})
    required = [r for r in envelope.get("required", []) if r != "data"] + ["data"]
    if doc.compartment == "always":
        required.append("compartment")
    elif doc.compartment == "never":
        props["compartment"] = False
    envelope["required"] = required
    document = _header(f"events/{kind}", f"Event {kind}", f"{doc.summary}.")
    document.update({k: v for k, v in envelope.items() if k not in ("title", "description")})
    document["$defs"] = dict(sorted(defs.items()))
    return document


def _result(command: str) -> dict[str, Any]:
    model = RESULTS[command]
    schema = _schema(model)
    document = _header(f"results/{command}", f"Result of {command}",
                       f"The result of an ok reply to {command}: {model.__name__}.")
    document.update({k: v for k, v in schema.items() if k not in ("title", "description")})
    return document


_ORDERS = _declared_orders()


def generate() -> dict[str, dict[str, Any]]:
    """Every schema, keyed by its path under the schema folder without ``.json``
    (``status`` → ``status.json``, ``events/door_opened`` → ``events/door_opened.json``)."""
    out: dict[str, dict[str, Any]] = {}
    for name, (target, title, description) in _TARGETS.items():
        schema = _schema(target)
        document: dict[str, Any] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": SCHEMA_IDS[name],
            "title": title,
            "description": description,
        }
        document.update({k: v for k, v in schema.items() if k not in ("title", "description")})
        document["examples"] = EXAMPLES[name]
        if name == "reply":
            _document_open_result(document)
        out[name] = document
    for kind in EVENT_KINDS:
        out[f"events/{kind}"] = _event_kind(kind)
    for command in RESULTS:
        out[f"results/{command}"] = _result(command)
    return out


def _document_open_result(document: dict[str, Any]) -> None:
    """A reply's ``result`` is any object; an ``open``'s is an :class:`OpenResult`, which the
    schema names (``$defs``) so integrators can validate it."""
    schema = _schema(OpenResult)
    defs = document.setdefault("$defs", {})
    defs.update(schema.pop("$defs", {}))
    defs["OpenResult"] = schema
    result = document["properties"]["result"]
    result["anyOf"] = [{"$ref": "#/$defs/OpenResult"}, *result["anyOf"]]
    result["description"] = ("The command's result; for an open, an OpenResult (what is "
                             "known of the pulse).")


def _render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file; returns the paths written."""
    written = []
    for name, schema in generate().items():
        path = directory / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_render(schema), encoding="utf-8")
        written.append(path)
    return written


def check(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing or differ from the generated ones."""
    stale = []
    generated = generate()
    for name, schema in generated.items():
        path = directory / f"{name}.json"
        if not path.exists() or path.read_text(encoding="utf-8") != _render(schema):
            stale.append(f"{name}.json")
    for path in sorted(directory.rglob("*.json")):
        name = path.relative_to(directory).with_suffix("").as_posix()
        if name not in generated:
            stale.append(f"{name}.json (no longer generated: delete it)")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR)
    args = parser.parse_args(argv)
    if args.check:
        stale = check(args.dir)
        for name in stale:
            print(f"stale: {name} (run python -m controller.contract.schemagen)", file=sys.stderr)
        return 1 if stale else 0
    for path in write(args.dir):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
