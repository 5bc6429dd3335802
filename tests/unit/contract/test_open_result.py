"""The result of an open reply: its schema (in reply.json) and its model agree, and an
outcome cannot claim more than is known."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from msgspec import ValidationError

from controller.contract import schemagen
from controller.contract.examples import EXAMPLES
from controller.contract.messages import OpenResult, from_builtins, to_builtins

_REPLY = schemagen.generate()["reply"]
OPEN_RESULT = jsonschema.Draft202012Validator(
    {"$ref": "#/$defs/OpenResult", "$defs": _REPLY["$defs"]})
OPEN_REPLIES = [e for e in EXAMPLES["reply"] if e.get("result", {}).get("pulse")]


def test_both_outcomes_have_an_example() -> None:
    assert {e["result"]["pulse"]["outcome"] for e in OPEN_REPLIES} == {"pulsed", "unconfirmed"}


@pytest.mark.parametrize("example", OPEN_REPLIES, ids=lambda e: e["result"]["pulse"]["outcome"])
def test_each_open_example_fits_the_schema_and_the_model(example: dict[str, Any]) -> None:
    OPEN_RESULT.validate(example["result"])
    assert to_builtins(from_builtins(OpenResult, example["result"])) == example["result"]


@pytest.mark.parametrize("pulse", [
    {"outcome": "unconfirmed", "duration_s": 0.7, "accepted": True},
    {"outcome": "unconfirmed", "duration_s": 0.7, "confirmed_by": "ack"},
    {"outcome": "pulsed", "duration_s": 0.7},
    {"outcome": "maybe", "duration_s": 0.7},
])
def test_an_outcome_that_claims_more_than_is_known_is_refused(pulse: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        from_builtins(OpenResult, {"compartment": "A01", "pulse": pulse})
