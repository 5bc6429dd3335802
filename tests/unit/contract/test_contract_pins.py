"""The contract's behaviour, pinned: the bytes on the wire, the refusals of decode_command
and the documents each outbound message accepts.

The pins in ``data/`` were taken from the pydantic models the contract had before its
structs were msgspec's (decision 0022), so these tests prove the move changed nothing a
peer can see:

- ``wire_pins.json``: the exact bytes :func:`encode` writes for every example of
  ``controller.contract.examples``, an ok result of every command, and messages built
  from Python values (times with offsets and microseconds, big and small floats, ``None``
  inside ``data``, an ``int`` where a ``float`` goes);
- ``refusal_pins.json``: for every command example (plain, signed, the signed text, the
  clock query) and each of its mutations (:mod:`tests.unit.contract.mutations`), what
  :func:`decode_command` (and ``inner()``) made of it: the command's wire form (hashed),
  or the refusal's code, field, command id and message. A message is pinned when it is the
  contract's own (``missing field ...``, ``unknown field ...``, the JSON and size refusals);
  the wording of a type or constraint error is msgspec's now, after the same
  ``<field>: `` prefix;
- ``outbound_pins.json``: for every example of the outbound messages and each of its
  mutations, whether it is accepted and then what it encodes to (hashed).

A change of the examples changes the corpus: regenerate the pins with
``LOCKER_UPDATE_CONTRACT_PINS=1`` only when the change of behaviour is meant, and say so.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from controller.contract import messages as m
from controller.contract.errors import CommandRejected
from controller.contract.examples import EXAMPLES
from controller.contract.results import RESULTS
from tests.unit.contract.mutations import mutations

DATA = Path(__file__).resolve().parent / "data"
UPDATE = os.environ.get("LOCKER_UPDATE_CONTRACT_PINS") == "1"
OUTBOUND: dict[str, Any] = {"status": m.Status, "state": m.State, "event": m.Event,
                            "telemetry": m.Telemetry, "reply": m.Reply}
MODELS: dict[str, Any] = {**OUTBOUND, "signed_command": m.SignedCommand,
                          "clock_query": m.GetClockCommand}
BASES: dict[str, list[dict[str, Any]]] = {
    "command": EXAMPLES["command"],
    "clock_query": EXAMPLES["clock_query"],
    "signed_command": EXAMPLES["signed_command"],
    # the signed text's own mutations, each wrapped in its signed example
    "signed_inner": [json.loads(s["signed"]) for s in EXAMPLES["signed_command"]],
}


def _hash(wire: str) -> str:
    return "sha256:" + hashlib.sha256(wire.encode()).hexdigest()[:16]


def _load(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def _save(name: str, pins: dict[str, list[Any]]) -> None:
    body = ",\n".join(
        f"{json.dumps(key)}: [\n" + ",\n".join(json.dumps(v, ensure_ascii=False) for v in vs)
        + "\n]" for key, vs in pins.items())
    (DATA / name).write_text("{\n" + body + "\n}\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# bytes on the wire


def _built(pin: dict[str, Any]) -> msgspec.Struct:
    name, doc = pin["message"], pin["input"]
    if name == "command":
        decoded = m.decode_command(json.dumps(doc))
        assert not isinstance(decoded, m.SignedCommand)
        return decoded
    if name.startswith("results/"):
        return m.from_builtins(RESULTS[name.removeprefix("results/")], doc)
    model = MODELS[name]
    if not pin.get("python"):
        return m.from_json(model, json.dumps(doc))
    # Built the way the daemon builds its messages: from Python values, unchecked.
    return _python(model, doc)


def _python(model: Any, doc: dict[str, Any]) -> Any:
    """``model`` built with keywords from ``doc``, whose times are Python datetimes (as
    ``str()`` wrote them) and whose nested structs are built the same way."""
    fields = {f.name: f for f in msgspec.structs.fields(model)}
    values = {}
    for key, value in doc.items():
        if key in ("at", "since") and isinstance(value, str):
            value = datetime.fromisoformat(value)
        elif key == "cabinet_clock" and value is not None:
            value = m.ClockReading(**value)
        elif key in fields and isinstance(value, (dict, list)) and key not in (
                "data", "temperatures", "task_restarts"):
            value = m.from_builtins(fields[key].type, value)
        values[key] = value
    return model(**values)


WIRE_PINS: list[dict[str, Any]] = _load("wire_pins.json")


@pytest.mark.parametrize("pin", WIRE_PINS,
                         ids=[f"{p['message']}-{i}" for i, p in enumerate(WIRE_PINS)])
def test_the_bytes_on_the_wire_are_the_pinned_ones(pin: dict[str, Any]) -> None:
    assert m.encode(_built(pin)).decode() == pin["wire"]


def test_the_wire_pins_cover_every_message_and_every_result() -> None:
    pinned = {p["message"] for p in WIRE_PINS}
    assert set(EXAMPLES) <= pinned
    assert {f"results/{c}" for c in RESULTS} <= pinned
    assert any(p.get("python") for p in WIRE_PINS)


# ---------------------------------------------------------------------------------------------
# refusals


def _refusal(exc: CommandRejected, base_id: Any) -> list[Any]:
    cid = "=" if exc.command_id is not None and exc.command_id == base_id else exc.command_id
    message: str | None = exc.message
    if message in (f"unknown field {exc.field}", f"missing field {exc.field}"):
        message = message.split(" ")[0]
    elif exc.code.value == "invalid_field":
        assert message.startswith(f"{exc.field or 'command'}: "), message
        message = None  # the wording is the decoder's
    return [exc.code.value, exc.field, cid, message]


def _verdict(payload: bytes, base_id: Any) -> list[Any]:
    try:
        decoded = m.decode_command(payload)
    except CommandRejected as exc:
        return _refusal(exc, base_id)
    if isinstance(decoded, m.SignedCommand):
        try:
            inner = decoded.inner()
        except CommandRejected as exc:
            return ["signed", *_refusal(exc, base_id)]
        return ["signed", _hash(m.encode(inner).decode())]
    return ["ok", _hash(m.encode(decoded).decode())]


def _refusal_verdicts(name: str, index: int) -> list[list[Any]]:
    base = BASES[name][index]
    verdicts = []
    for _, doc in mutations(base):
        if name == "signed_inner":
            outer = dict(EXAMPLES["signed_command"][index], signed=json.dumps(doc))
            payload = json.dumps(outer).encode()
        else:
            payload = json.dumps(doc).encode()
        verdicts.append(_verdict(payload, base.get("id")))
    return verdicts


REFUSAL_CASES = [(name, i) for name, items in BASES.items() for i in range(len(items))]


@pytest.mark.parametrize(("name", "index"), REFUSAL_CASES)
def test_decode_command_refuses_as_pinned(name: str, index: int) -> None:
    _as_pinned("refusal_pins.json", f"{name}/{index}", _refusal_verdicts(name, index),
               BASES[name][index])


def _as_pinned(file: str, key: str, got: list[Any], base: Any) -> None:
    """``got`` (one verdict per mutation of ``base``) against the pins of ``key``; with
    ``LOCKER_UPDATE_CONTRACT_PINS=1`` the pins are rewritten instead."""
    pins = _load(file)
    if UPDATE:
        pins[key] = got
        _save(file, pins)
        return
    labels = [label for label, _ in mutations(base)]
    expected = pins[key]
    assert len(got) == len(expected)
    differ = [(label, g, e) for label, g, e in zip(labels, got, expected, strict=True) if g != e]
    assert differ == []


# ---------------------------------------------------------------------------------------------
# what each outbound message accepts


def _outbound_verdicts(name: str, index: int) -> list[str | None]:
    verdicts: list[str | None] = []
    for _, doc in mutations(EXAMPLES[name][index]):
        try:
            message = m.from_json(OUTBOUND[name], json.dumps(doc))
        except msgspec.ValidationError:
            verdicts.append(None)
        else:
            verdicts.append(_hash(m.encode(message).decode()))
    return verdicts


OUTBOUND_CASES = [(name, i) for name in OUTBOUND for i in range(len(EXAMPLES[name]))]


@pytest.mark.parametrize(("name", "index"), OUTBOUND_CASES)
def test_outbound_messages_accept_as_pinned(name: str, index: int) -> None:
    _as_pinned("outbound_pins.json", f"{name}/{index}", _outbound_verdicts(name, index),
               EXAMPLES[name][index])
