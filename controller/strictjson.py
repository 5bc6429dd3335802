"""Strict JSON for untrusted input (commands from dispatch, signed command envelopes).

:func:`loads` refuses what :func:`json.loads` lets through: a key given twice (two
parsers, say the verifier and the model, could keep different copies of it: the ambiguity
is refused) and ``NaN``/``Infinity`` (not JSON). Every failure is a ``ValueError``,
``RecursionError`` on absurd nesting included, so a caller maps one exception to its own
refusal.

:func:`recover_id` reads, leniently, the ``id`` of a command that :func:`loads` refused
(or that was too large to decode), so its refusal can still name it: a client that cannot
use MQTT 5 correlation data matches replies by id alone.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["MAX_RECOVER_BYTES", "describe", "loads", "recover_id"]

#: Payloads larger than this are not read at all to find an id (a flood of huge messages
#: must cost little).
MAX_RECOVER_BYTES = 256 * 1024


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {json.dumps(key[:64])}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} not allowed (NaN/Infinity are not JSON)")


def loads(text: str | bytes) -> Any:
    """``text`` as JSON, strictly; raises ``ValueError`` (a ``json.JSONDecodeError``, a
    ``UnicodeDecodeError``, or a plain ``ValueError`` naming the problem)."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant,
                          parse_int=_integer)
    except RecursionError as exc:
        raise ValueError("nested too deep") from exc


def _integer(text: str) -> int:
    # Python reads at most 4300 digits; its own refusal names a setting of the interpreter.
    digits = len(text) - text.startswith("-")
    if digits > _MAX_DIGITS:
        raise ValueError(f"integer too long ({digits} digits, at most {_MAX_DIGITS})")
    return int(text)


_MAX_DIGITS = 4300


def describe(exc: ValueError) -> str:
    """What :func:`loads` (or the UTF-8 decoding before it) refused, in a few words for a
    refusal: ``not UTF-8 (byte 12)``, ``duplicate key "x"``, ``NaN not allowed (...)``,
    ``not JSON at line 1 column 7: Expecting value``, ``nested too deep``, ``integer too
    long (5000 digits, at most 4300)``."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 (byte {exc.start})"
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
    return str(exc)[:200] or "not JSON"


def lone_surrogate(text: str) -> str | None:
    """``not JSON at line L column C: …`` for the first ``\\uD800``-``\\uDFFF`` escape of
    ``text`` that is not half of a pair (Python's JSON reader takes one as a character; it
    is none, and no strict reader takes it), else None."""
    line, column, index, inside = 1, 1, 0, False
    end = len(text)
    while index < end:
        char = text[index]
        if char == "\n":
            line, column = line + 1, 0
        elif char == '"':
            inside = not inside
        elif char == "\\" and inside:
            unit = _unit(text, index)
            if unit is not None and 0xD800 <= unit <= 0xDFFF:
                low = _unit(text, index + 6)
                if unit <= 0xDBFF and low is not None and 0xDC00 <= low <= 0xDFFF:
                    index, column = index + 12, column + 12
                    continue
                return (f"not JSON at line {line} column {column}: lone surrogate "
                        f"\\u{unit:04x} (half of a UTF-16 pair is not a character)")
            index, column = index + 2, column + 2  # the escape and the escaped character
            continue
        index, column = index + 1, column + 1
    return None


def _unit(text: str, index: int) -> int | None:
    """The code unit of a ``\\uXXXX`` escape at ``index``, else None."""
    if text[index:index + 2] != "\\u":
        return None
    digits = text[index + 2:index + 6]
    if len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
        return None
    return int(digits, 16)


class _Pairs(dict[str, Any]):
    """An object parsed leniently, remembering every value its ``id`` key was given."""

    ids: list[Any]


def _keep_pairs(pairs: list[tuple[str, Any]]) -> _Pairs:
    out = _Pairs(pairs)
    out.ids = [value for key, value in pairs if key == "id"]
    return out


def _id_pattern_ok(value: Any) -> bool:
    return (isinstance(value, str) and 0 < len(value) <= 64
            and all(c.isascii() and (c.isalnum() or c in "._:-") for c in value))


def recover_id(raw: bytes | str, *, _depth: int = 0) -> str | None:
    """The command id of ``raw`` when it can be read without doubt, else ``None``.

    Lenient where :func:`loads` is strict: ``NaN`` and duplicate keys elsewhere are
    tolerated, but an ``id`` given twice with different values is no id. The id is the
    top-level ``id`` of a plain command, or the one inside the ``signed`` text of a signed
    command; it must have the contract's shape (``[A-Za-z0-9._:-]{1,64}``). Reading it
    neither trusts nor executes anything: it only labels the refusal.
    """
    if len(raw) > MAX_RECOVER_BYTES or _depth > 1:
        return None
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    try:
        obj = json.loads(text, object_pairs_hook=_keep_pairs, parse_constant=lambda _: None)
    except (ValueError, RecursionError):
        # Cut short (an oversized payload is kept only up to the size limit) or broken
        # further on: the members read before the break may still name it.
        obj = _leading_members(text)
    if not isinstance(obj, _Pairs):
        return None
    if obj.ids:
        first = obj.ids[0]
        if all(value == first for value in obj.ids) and _id_pattern_ok(first):
            return str(first)
        return None
    signed = obj.get("signed")
    if isinstance(signed, str):
        return recover_id(signed, _depth=_depth + 1)
    return None


_DECODER = json.JSONDecoder(object_pairs_hook=_keep_pairs, parse_constant=lambda _: None)


def _leading_members(text: str) -> _Pairs | None:
    """The top-level members of a JSON object up to the first one that cannot be read."""
    pairs: list[tuple[str, Any]] = []
    index = _skip(text, 0)
    if not text.startswith("{", index):
        return None
    index += 1
    for _ in range(len(text)):  # bounded: every turn consumes at least one character
        index = _skip(text, index)
        key: Any = None
        start = index
        try:
            key, index = _DECODER.raw_decode(text, index)
            index = _skip(text, index)
            if not isinstance(key, str) or not text.startswith(":", index):
                break
            start = _skip(text, index + 1)
            value, index = _DECODER.raw_decode(text, start)
        except (ValueError, RecursionError):
            if key == "signed" and start > index:
                # A signed command cut at the size limit: its text begins with the id
                # (``{"id":"...",`` in the canonical form), which the part kept still names.
                partial = _cut_string(text, start)
                if partial is not None:
                    pairs.append((key, partial))
            break
        pairs.append((key, value))
        index = _skip(text, index)
        if not text.startswith(",", index):
            break
        index += 1
    return _keep_pairs(pairs)


_STRING_PART = re.compile(r'"((?:[^"\\]|\\(?:["\\/bfnrt]|u[0-9A-Fa-f]{4}))*)')


def _cut_string(text: str, index: int) -> str | None:
    """The part of a JSON string starting at ``index`` that the text holds, when the text
    ends inside it (an incomplete escape at the cut is dropped); ``None`` otherwise."""
    match = _STRING_PART.match(text, index)
    if match is None or match.end() < len(text) - 6:
        return None  # not a string, or it breaks off before the end: not a cut
    try:
        value = json.loads(f'"{match.group(1)}"')
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\r\n":
        index += 1
    return index
