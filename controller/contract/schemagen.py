"""Generate the JSON Schemas of the MQTT contract from the pydantic models.

``python -m controller.contract.schemagen`` rewrites ``controller/schemas/*.json``;
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

from controller.contract.examples import EXAMPLES
from controller.contract.messages import (
    Command,
    Event,
    OpenResult,
    Reply,
    SignedCommand,
    State,
    Status,
    Telemetry,
)

__all__ = ["SCHEMA_DIR", "SCHEMA_IDS", "check", "generate", "main", "write"]

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
_ID_BASE = "https://schemas.locker-controller.example/mqtt/v1/"

_TARGETS: dict[str, tuple[Any, str, str]] = {
    "status": (Status, "Status", "Retained on {root}/status; also the Last Will (offline)."),
    "state": (State, "State", "Retained full snapshot on {root}/state."),
    "event": (Event, "Event", "One event on {root}/events (QoS 1, at least once)."),
    "telemetry": (Telemetry, "Telemetry", "Health on {root}/telemetry (QoS 0)."),
    "command": (Command, "Command", "A plain command on {root}/cmd."),
    "signed_command": (SignedCommand, "SignedCommand",
                       "A signed command on {root}/cmd (Ed25519 over the exact text)."),
    "reply": (Reply, "Reply", "The answer to one command."),
}
SCHEMA_IDS: dict[str, str] = {name: f"{_ID_BASE}{name}.json" for name in _TARGETS}


def generate() -> dict[str, dict[str, Any]]:
    """Every schema, keyed by file stem (``status`` → ``status.json``)."""
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
        out[name] = document
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
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in generate().items():
        path = directory / f"{name}.json"
        path.write_text(_render(schema), encoding="utf-8")
        written.append(path)
    return written


def check(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing or differ from the generated ones."""
    stale = []
    for name, schema in generate().items():
        path = directory / f"{name}.json"
        if not path.exists() or path.read_text(encoding="utf-8") != _render(schema):
            stale.append(path.name)
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
