"""Generate the JSON Schemas of the MQTT contract from the pydantic models.

``python -m controller.contract.schemagen`` rewrites ``controller/schemas/*.json``: one
schema per message, one per event kind (``events/<kind>.json``) and one per command's
result (``results/<type>.json``);
``python -m controller.contract.schemagen --check`` exits 1 if a committed file differs
from what the models generate (a test runs the same comparison). The AsyncAPI document
(``docs/mqtt/asyncapi.yaml``) references these files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

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


def _without_discriminator(node: Any) -> Any:
    """pydantic writes OpenAPI's ``discriminator`` object beside a tagged ``oneOf``; JSON
    Schema has no such keyword and AsyncAPI's Schema Object wants a string there. The
    ``const`` of each branch's tag already selects the branch."""
    if isinstance(node, dict):
        return {k: _without_discriminator(v) for k, v in node.items()
                if not (k == "discriminator" and isinstance(v, dict))}
    if isinstance(node, list):
        return [_without_discriminator(v) for v in node]
    return node


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
    envelope = TypeAdapter(Event).json_schema(mode="validation", ref_template="#/$defs/{model}")
    defs: dict[str, Any] = envelope.pop("$defs", {})
    branches = []
    for model in doc.data:
        schema = TypeAdapter(model).json_schema(mode="validation",
                                                ref_template="#/$defs/{model}")
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
    schema = TypeAdapter(model).json_schema(mode="validation", ref_template="#/$defs/{model}")
    document = _header(f"results/{command}", f"Result of {command}",
                       f"The result of an ok reply to {command}: {model.__name__}.")
    document.update({k: v for k, v in schema.items() if k not in ("title", "description")})
    return document


def generate() -> dict[str, dict[str, Any]]:
    """Every schema, keyed by its path under the schema folder without ``.json``
    (``status`` → ``status.json``, ``events/door_opened`` → ``events/door_opened.json``)."""
    out: dict[str, dict[str, Any]] = {}
    for name, (target, title, description) in _TARGETS.items():
        schema = TypeAdapter(target).json_schema(mode="validation")
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
        out[name] = _without_discriminator(document)
    for kind in EVENT_KINDS:
        out[f"events/{kind}"] = _without_discriminator(_event_kind(kind))
    for command in RESULTS:
        out[f"results/{command}"] = _without_discriminator(_result(command))
    return out


def _document_open_result(document: dict[str, Any]) -> None:
    """A reply's ``result`` is any object; an ``open``'s is an :class:`OpenResult`, which the
    schema names (``$defs``) so integrators can validate it."""
    schema = TypeAdapter(OpenResult).json_schema(mode="validation",
                                                 ref_template="#/$defs/{model}")
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
