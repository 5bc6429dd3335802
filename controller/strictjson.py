"""Strict JSON for untrusted input (commands from dispatch, signed command envelopes).

:func:`loads` refuses what :func:`json.loads` lets through: a key given twice (two
parsers, say the verifier and the model, could keep different copies of it: the ambiguity
is refused) and ``NaN``/``Infinity`` (not JSON). Every failure is a ``ValueError``,
``RecursionError`` on absurd nesting included, so a caller maps one exception to its own
refusal.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["loads"]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(text: str | bytes) -> Any:
    """``text`` as JSON, strictly; raises ``ValueError`` (a ``json.JSONDecodeError``, a
    ``UnicodeDecodeError``, or a plain ``ValueError`` naming the problem)."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError as exc:
        raise ValueError("nested too deep") from exc
