"""Payload models: examples round-trip, invariants hold, unknown fields are refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from msgspec import ValidationError

from controller.contract.errors import ERROR_DESCRIPTIONS, CommandRejected, ErrorCode
from controller.contract.examples import BOOT_ID, EXAMPLES
from controller.contract.messages import (
    ClockReading,
    Command,
    Event,
    GetClockCommand,
    OpenCommand,
    Reply,
    SignedCommand,
    State,
    Status,
    Telemetry,
    decode_command,
    encode,
    from_builtins,
    from_json,
    to_builtins,
)

MODELS: dict[str, Any] = {
    "status": Status, "state": State, "event": Event, "telemetry": Telemetry,
    "command": Command, "signed_command": SignedCommand, "reply": Reply,
    "clock_query": GetClockCommand,
}
CASES = [(name, i) for name, items in EXAMPLES.items() for i in range(len(items))]


def read(name: str, text: bytes | str) -> Any:
    """A message of the contract from its JSON text, strictly (a plain command through
    decode_command: msgspec reads a union of structs by their tag only)."""
    if name == "command":
        return decode_command(text)
    return from_json(MODELS[name], text)


@pytest.mark.parametrize(("name", "index"), CASES)
def test_every_example_round_trips(name: str, index: int) -> None:
    example = EXAMPLES[name][index]
    model = read(name, json.dumps(example))
    wire = encode(model)
    again = read(name, wire)
    assert again == model
    # what goes on the wire is the example, minus explicit nulls of optional top-level fields
    assert json.loads(wire) == {k: v for k, v in example.items() if v is not None}


@pytest.mark.parametrize(("name", "index"), CASES)
def test_every_example_refuses_an_unknown_field(name: str, index: int) -> None:
    example = dict(EXAMPLES[name][index], surprise=1)
    if name == "command":
        with pytest.raises(CommandRejected, match="surprise"):
            decode_command(json.dumps(example))
        return
    with pytest.raises(ValidationError, match="surprise"):
        from_builtins(MODELS[name], example)


def test_every_command_example_decodes() -> None:
    for example in EXAMPLES["command"]:
        decoded = decode_command(json.dumps(example).encode())
        assert not isinstance(decoded, SignedCommand)
        assert decoded.type == example["type"]
        assert decoded.id == example["id"]


def test_signed_example_decodes_and_its_inner_command_too() -> None:
    signed = decode_command(json.dumps(EXAMPLES["signed_command"][0]).encode())
    assert isinstance(signed, SignedCommand)
    inner = signed.inner()
    assert isinstance(inner, OpenCommand)
    assert inner.args.compartment == "A01"
    assert signed.signed_bytes() == EXAMPLES["signed_command"][0]["signed"].encode()


def test_signed_inside_signed_is_refused() -> None:
    outer = dict(EXAMPLES["signed_command"][0])
    outer["signed"] = json.dumps(EXAMPLES["signed_command"][0])
    decoded = decode_command(json.dumps(outer).encode())
    assert isinstance(decoded, SignedCommand)
    with pytest.raises(CommandRejected) as info:
        decoded.inner()
    assert info.value.field == "signed"


def test_reply_invariants() -> None:
    clock = ClockReading(boot_id=BOOT_ID, uptime_ms=1)
    with pytest.raises(ValueError, match="ok replies"):
        Reply(id="c1", ok=True, cabinet_clock=clock)
    with pytest.raises(ValueError, match="refusals"):
        Reply(id="c1", ok=False, result={}, cabinet_clock=clock)
    with pytest.raises(ValidationError, match="ok replies"):
        from_builtins(Reply, {"id": "c1", "ok": True, "cabinet_clock": to_builtins(clock)})
    ok = Reply.success("c1", {"x": 1}, clock)
    assert json.loads(encode(ok)) == {"id": "c1", "ok": True, "result": {"x": 1},
                                      "cabinet_clock": {"boot_id": BOOT_ID, "uptime_ms": 1}}
    refusal = Reply.refusal(
        CommandRejected(ErrorCode.EXPIRED, "deadline passed", "expires", command_id="c2"), clock,
    )
    assert json.loads(encode(refusal))["error"] == {
        "code": "expired", "message": "deadline passed", "field": "expires"}
    assert refusal.id == "c2"


def test_every_error_code_is_described() -> None:
    assert set(ERROR_DESCRIPTIONS) == set(ErrorCode)


def test_status_needs_an_aware_time() -> None:
    naive = dict(EXAMPLES["status"][1], at="2026-11-22T07:02:11")
    with pytest.raises(ValidationError, match="timezone"):
        from_json(Status, json.dumps(naive))
    with pytest.raises(ValidationError, match="timezone"):
        from_builtins(Status, dict(naive, at=datetime(2026, 1, 1)))
    from_builtins(Status, dict(naive, at=datetime.now(UTC)))


def test_event_seq_starts_at_one_and_kind_is_a_name() -> None:
    base = dict(EXAMPLES["event"][0])
    with pytest.raises(ValidationError):
        from_builtins(Event, dict(base, seq=0))
    with pytest.raises(ValidationError):
        from_builtins(Event, dict(base, kind="Door Opened"))
    replayed = from_builtins(Event, base)
    assert replayed.at == datetime(2026, 11, 22, 10, 15, 28, tzinfo=UTC)


def test_models_are_frozen() -> None:
    status = from_builtins(Status, EXAMPLES["status"][0])
    with pytest.raises(AttributeError):
        status.state = "offline"  # type: ignore[misc]


def test_models_are_msgspec_structs() -> None:
    for model in (Status, State, Event, Telemetry, Reply, SignedCommand):
        assert issubclass(model, msgspec.Struct)
