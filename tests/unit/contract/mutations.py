"""Documents of the contract and their mutations, for the tests that pin its behaviour:
each field removed, each set to each wrong value, an unknown field added to each object."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

__all__ = ["WRONG", "mutations"]

Path = tuple[str | int, ...]

#: The values each field is set to in turn (wrong for most, right for some).
WRONG: list[Any] = [None, 1, -1, 1.5, "x", "", True, [], {}, "A01", "2026-11-22T10:15:28Z",
                    10**20]


def _paths(doc: Any, prefix: Path = ()) -> Iterator[Path]:
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield (*prefix, index)
            yield from _paths(value, (*prefix, index))


def _objects(doc: Any, prefix: Path = ()) -> Iterator[Path]:
    if isinstance(doc, dict):
        yield prefix
        for key, value in doc.items():
            yield from _objects(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield from _objects(value, (*prefix, index))


def _node(doc: Any, path: Path) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def mutations(doc: Any) -> Iterator[tuple[str, Any]]:
    """``(label, document)``: ``doc`` as is, then each mutation of it."""
    yield "as is", doc
    for path in _paths(doc):
        label = "/".join(map(str, path))
        removed = copy.deepcopy(doc)
        del _node(removed, path[:-1])[path[-1]]
        yield f"remove {label}", removed
        for value in WRONG:
            changed = copy.deepcopy(doc)
            _node(changed, path[:-1])[path[-1]] = value
            yield f"set {label}={json.dumps(value)}", changed
    for path in _objects(doc):
        added = copy.deepcopy(doc)
        _node(added, path)["surprise"] = 1
        yield f"unknown field in /{'/'.join(map(str, path))}", added
