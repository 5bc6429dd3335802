"""The AsyncAPI document and the JSON Schemas: in step with the code and with each other."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from controller.contract import schemagen
from controller.contract.examples import EXAMPLES
from controller.contract.messages import (
    Command,
    Event,
    GetClockCommand,
    Reply,
    SignedCommand,
    State,
    Status,
    Telemetry,
    decode_command,
    from_json,
)
from controller.contract.topics import CHANNEL_QOS, CHANNEL_RETAINED, Channel

REPO = Path(__file__).resolve().parents[3]
ASYNCAPI = REPO / "docs" / "mqtt" / "asyncapi.yaml"
DOC: dict[str, Any] = yaml.safe_load(ASYNCAPI.read_text(encoding="utf-8"))
MESSAGES: dict[str, Any] = DOC["components"]["messages"]
MODELS: dict[str, Any] = {"Status": Status, "State": State, "Event": Event,
                          "Telemetry": Telemetry, "Command": Command,
                          "SignedCommand": SignedCommand, "Reply": Reply,
                          "ClockQuery": GetClockCommand}
SCHEMAS: dict[str, Any] = DOC["components"]["schemas"]


def schema_of(message: dict[str, Any]) -> dict[str, Any]:
    path = (ASYNCAPI.parent / message["payload"]["$ref"]).resolve()
    return json.loads(path.read_text(encoding="utf-8"))


EXAMPLE_CASES = [(name, ex["name"]) for name, msg in MESSAGES.items() for ex in msg["examples"]]


def test_committed_schemas_equal_the_generated_ones() -> None:
    assert schemagen.check() == [], "run: python -m controller.contract.schemagen"


def test_schemagen_writes_what_check_accepts(tmp_path: Path) -> None:
    schemagen.write(tmp_path)
    assert schemagen.check(tmp_path) == []
    (tmp_path / "event.json").write_text("{}")
    assert schemagen.check(tmp_path) == ["event.json"]
    assert schemagen.main(["--check", "--dir", str(tmp_path)]) == 1


@pytest.mark.parametrize("name", sorted(schemagen.generate()))
def test_each_schema_is_valid_draft_2020_12_and_validates_its_examples(name: str) -> None:
    schema = schemagen.generate()[name]
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for example in schema.get("examples", []):
        validator.validate(example)


def test_every_schema_file_is_referenced_by_the_asyncapi_document() -> None:
    referenced = {(ASYNCAPI.parent / m["payload"]["$ref"]).resolve() for m in MESSAGES.values()}
    referenced |= {(ASYNCAPI.parent / s["$ref"]).resolve() for s in SCHEMAS.values()}
    on_disk = {p.resolve() for p in schemagen.SCHEMA_DIR.rglob("*.json")}
    assert referenced == on_disk
    assert set(MESSAGES) == set(MODELS)


def test_every_event_kind_and_every_result_has_its_named_schema() -> None:
    from controller.contract.events import EVENT_KINDS
    from controller.contract.results import RESULTS

    expected = {f"event.{kind}": f"events/{kind}.json" for kind in EVENT_KINDS}
    expected |= {f"result.{command}": f"results/{command}.json" for command in RESULTS}
    assert {name: s["$ref"].split("schemas/", 1)[1] for name, s in SCHEMAS.items()} == expected


@pytest.mark.parametrize(("message", "example"), EXAMPLE_CASES)
def test_every_asyncapi_example_validates_against_its_schema(message: str, example: str) -> None:
    msg = MESSAGES[message]
    payload = next(e["payload"] for e in msg["examples"] if e["name"] == example)
    jsonschema.Draft202012Validator(schema_of(msg)).validate(payload)


@pytest.mark.parametrize(("message", "example"), EXAMPLE_CASES)
def test_every_asyncapi_example_is_accepted_by_its_model(message: str, example: str) -> None:
    msg = MESSAGES[message]
    payload = next(e["payload"] for e in msg["examples"] if e["name"] == example)
    if message == "Command":
        decode_command(json.dumps(payload))
    else:
        from_json(MODELS[message], json.dumps(payload))


def test_asyncapi_examples_are_the_code_examples() -> None:
    by_schema = {Path(m["payload"]["$ref"]).stem: [e["payload"] for e in m["examples"]]
                 for m in MESSAGES.values()}
    assert by_schema == EXAMPLES


def test_a_schema_refuses_what_the_model_refuses() -> None:
    schema = schemagen.generate()["command"]
    bad = dict(EXAMPLES["command"][0], surprise=True)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(bad)
    typed = json.loads(json.dumps(EXAMPLES["command"][0]))
    typed["expires"]["uptime_ms"] = "8822345"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(typed)


def test_channels_match_the_topic_table() -> None:
    channels = DOC["channels"]
    assert {address.rsplit("/", 1)[1] for address in channels} == {c.value for c in Channel}
    for address, channel in channels.items():
        kind = Channel(address.rsplit("/", 1)[1])
        operation = channel.get("subscribe") or channel["publish"]
        binding = operation["bindings"]["mqtt"]
        assert binding["qos"] == CHANNEL_QOS[kind], address
        assert binding["retain"] == CHANNEL_RETAINED[kind], address
        assert ("publish" in channel) == (kind is Channel.CMD), address
        assert address.startswith("lockers/v1/{site}/{cabinet}/")


def test_every_error_code_is_documented() -> None:
    from controller.contract.errors import ErrorCode

    text = MESSAGES["Reply"]["description"]
    readme = (REPO / "docs" / "mqtt" / "README.md").read_text(encoding="utf-8")
    for code in ErrorCode:
        assert f"`{code.value}`" in text
        assert f"`{code.value}`" in readme


def test_every_event_kind_and_alarm_is_in_the_integrators_guide() -> None:
    from controller.contract.events import ALARMS, EVENT_KINDS

    readme = (REPO / "docs" / "mqtt" / "README.md").read_text(encoding="utf-8")
    for name in [*EVENT_KINDS, *ALARMS]:
        if name not in ("alarm_raised", "alarm_cleared"):
            assert f"| `{name}` |" in readme, name
    assert "`alarm_raised` / `alarm_cleared`" in readme
    for gone in ("deposit_confirmed", "`collected`,"):
        assert gone not in readme


def test_an_event_kinds_schema_refuses_what_its_kind_does_not_send() -> None:
    schemas = schemagen.generate()
    opened = dict(EXAMPLES["event"][0])
    door = jsonschema.Draft202012Validator(schemas["events/door_opened"])
    door.validate(opened)
    for bad in (dict(opened, data={**opened["data"], "surprise": 1}),
                dict(opened, data={"pulse_acked": True}),            # authorised missing
                {k: v for k, v in opened.items() if k != "compartment"},
                dict(opened, kind="door_closed")):
        with pytest.raises(jsonschema.ValidationError):
            door.validate(bad)
    raised = jsonschema.Draft202012Validator(schemas["events/alarm_raised"])
    raised.validate(EXAMPLES["event"][1])
    with pytest.raises(jsonschema.ValidationError):
        raised.validate(EXAMPLES["event"][1] | {"data": {"alarm": "no_such_alarm"}})
    coalesced = jsonschema.Draft202012Validator(schemas["events/code_rejections_coalesced"])
    with pytest.raises(jsonschema.ValidationError):  # never about one compartment
        coalesced.validate(EXAMPLES["event"][1] | {
            "kind": "code_rejections_coalesced", "compartment": "A01",
            "data": {"lane": "lane-1", "source": "scanner", "count": 1,
                     "reasons": {"wrong_code": 1}, "since": 1.0}})


def test_a_results_schema_refuses_another_commands_result() -> None:
    schemas = schemagen.generate()
    release = jsonschema.Draft202012Validator(schemas["results/release"])
    release.validate({"compartment": "A01", "released": True})
    with pytest.raises(jsonschema.ValidationError):
        release.validate({"compartment": "A01", "blocked": True})
    opened = jsonschema.Draft202012Validator(schemas["results/open"])
    opened.validate(EXAMPLES["reply"][0]["result"])
    with pytest.raises(jsonschema.ValidationError):
        opened.validate({"compartment": "A01", "pulsed": True})


@pytest.mark.parametrize("index", range(len(EXAMPLES["event"])))
def test_every_event_example_is_what_its_kind_sends(index: int) -> None:
    event = EXAMPLES["event"][index]
    schema = schemagen.generate()[f"events/{event['kind']}"]
    jsonschema.Draft202012Validator(schema).validate(event)
