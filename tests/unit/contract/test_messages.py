"""Payload models: examples round-trip, invariants hold, unknown fields are refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

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
)

MODELS: dict[str, Any] = {
    "status": Status, "state": State, "event": Event, "telemetry": Telemetry,
    "command": Command, "signed_command": SignedCommand, "reply": Reply,
    "clock_query": GetClockCommand,
}
CASES = [(name, i) for name, items in EXAMPLES.items() for i in range(len(items))]


@pytest.mark.parametrize(("name", "index"), CASES)
def test_every_example_round_trips(name: str, index: int) -> None:
    example = EXAMPLES[name][index]
    adapter: TypeAdapter[Any] = TypeAdapter(MODELS[name])
    model = adapter.validate_json(json.dumps(example), strict=True)
    wire = encode(model)
    again = adapter.validate_json(wire, strict=True)
    assert again == model
    # what goes on the wire is the example, minus explicit nulls of optional top-level fields
    assert json.loads(wire) == {k: v for k, v in example.items() if v is not None}


@pytest.mark.parametrize(("name", "index"), CASES)
def test_every_example_refuses_an_unknown_field(name: str, index: int) -> None:
    example = dict(EXAMPLES[name][index], surprise=1)
    with pytest.raises(ValidationError, match="surprise"):
        TypeAdapter(MODELS[name]).validate_python(example)


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
    with pytest.raises(ValidationError):
        Reply(id="c1", ok=True, cabinet_clock=clock)
    with pytest.raises(ValidationError):
        Reply(id="c1", ok=False, result={}, cabinet_clock=clock)
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
    with pytest.raises(ValidationError, match="timezone"):
        Status(state="online", cabinet="c", boot_id=BOOT_ID, version="1",
               cabinet_clock=ClockReading(boot_id=BOOT_ID, uptime_ms=0),
               at=datetime(2026, 1, 1))
    Status(state="online", cabinet="c", boot_id=BOOT_ID, version="1",
           cabinet_clock=ClockReading(boot_id=BOOT_ID, uptime_ms=0), at=datetime.now(UTC))


def test_event_seq_starts_at_one_and_kind_is_a_name() -> None:
    base = dict(EXAMPLES["event"][0])
    with pytest.raises(ValidationError):
        Event.model_validate(dict(base, seq=0))
    with pytest.raises(ValidationError):
        Event.model_validate(dict(base, kind="Door Opened"))
    replayed = Event.model_validate(base)
    assert replayed.at == datetime(2026, 11, 22, 10, 15, 28, tzinfo=UTC)


def test_models_are_frozen() -> None:
    status = Status.model_validate(EXAMPLES["status"][0])
    with pytest.raises(ValidationError):
        status.state = "offline"  # type: ignore[misc]


def test_models_are_pydantic() -> None:
    for model in (Status, State, Event, Telemetry, Reply, SignedCommand):
        assert issubclass(model, BaseModel)
