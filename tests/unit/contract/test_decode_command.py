"""decode_command: any input gives a command or a structured CommandRejected, never a crash."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.contract.errors import CommandRejected, ErrorCode
from controller.contract.examples import EXAMPLES
from controller.contract.messages import (
    COMMAND_TYPES,
    AssignCommand,
    GetStateCommand,
    OpenCommand,
    ReleaseCommand,
    SignedCommand,
    decode_command,
)

OPEN = EXAMPLES["command"][0]


def rejected(payload: bytes | str, max_bytes: int = 16 * 1024) -> CommandRejected:
    with pytest.raises(CommandRejected) as info:
        decode_command(payload, max_bytes=max_bytes)
    return info.value


def with_change(path: str, value: Any, base: dict[str, Any] = OPEN) -> bytes:
    doc = copy.deepcopy(base)
    *parents, leaf = path.split(".")
    node = doc
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return json.dumps(doc).encode()


_DELETE = object()


def test_decodes_each_type() -> None:
    assert isinstance(decode_command(json.dumps(OPEN).encode()), OpenCommand)
    kinds = {type(decode_command(json.dumps(e))).__name__ for e in EXAMPLES["command"]}
    assert len(kinds) == len(COMMAND_TYPES)


def test_get_state_args_may_be_omitted() -> None:
    doc = dict(EXAMPLES["command"][5])
    del doc["args"]
    assert isinstance(decode_command(json.dumps(doc).encode()), GetStateCommand)


def test_assign_keeps_code_hashes_and_window() -> None:
    cmd = decode_command(json.dumps(EXAMPLES["command"][1]).encode())
    assert isinstance(cmd, AssignCommand)
    assert cmd.args.codes[0].purpose == "collect"
    assert cmd.args.expires_at is not None
    assert cmd.args.expires_at.tzinfo is not None


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"", ErrorCode.BAD_JSON),
        (b"\xff\xfe{}", ErrorCode.BAD_JSON),
        (b"{", ErrorCode.BAD_JSON),
        (b"[]", ErrorCode.BAD_JSON),
        (b'"open"', ErrorCode.BAD_JSON),
        (b"null", ErrorCode.BAD_JSON),
        (b'{"id": "a", "id": "b"}', ErrorCode.BAD_JSON),
        (b'{"x": NaN}', ErrorCode.BAD_JSON),
        (b'{"x": ' + b"[" * 40 + b"]" * 40 + b"}", ErrorCode.BAD_JSON),
        (b"[" * 100_000, ErrorCode.TOO_LARGE),
        (b'{"id": "c1"}', ErrorCode.INVALID_FIELD),
        (b'{"id": "c1", "type": "explode"}', ErrorCode.UNKNOWN_COMMAND),
        (b'{"id": "c1", "type": 3}', ErrorCode.UNKNOWN_COMMAND),
        (b'{"id": "c1", "type": "__class__"}', ErrorCode.UNKNOWN_COMMAND),
    ],
)
def test_bad_input_gives_its_code(payload: bytes, code: ErrorCode) -> None:
    assert rejected(payload).code is code


def test_size_limit_is_in_bytes() -> None:
    payload = json.dumps(OPEN).encode()
    assert rejected(payload, max_bytes=len(payload) - 1).code is ErrorCode.TOO_LARGE
    assert isinstance(decode_command(payload, max_bytes=len(payload)), OpenCommand)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("id", "has space", "id"),
        ("id", "x" * 65, "id"),
        ("id", 12, "id"),
        ("cabinet", "CAB", "cabinet"),
        ("expires.uptime_ms", "8822345", "expires.uptime_ms"),
        ("expires.uptime_ms", -1, "expires.uptime_ms"),
        ("expires.uptime_ms", True, "expires.uptime_ms"),
        ("expires.uptime_ms", 1.5, "expires.uptime_ms"),
        ("expires", _DELETE, "expires"),
        ("args.compartment", "a01", "args.compartment"),
        ("args.reason", "because", "args.reason"),
        ("args.extra", 1, "args.extra"),
        ("extra", 1, "extra"),
        ("args", None, "args"),
    ],
)
def test_field_errors_name_the_field(path: str, value: Any, field: str) -> None:
    err = rejected(with_change(path, value))
    assert err.code is ErrorCode.INVALID_FIELD
    assert err.field == field
    assert err.message


def test_rejection_carries_the_command_id_when_readable() -> None:
    assert rejected(with_change("args.reason", "nope")).command_id == OPEN["id"]
    assert rejected(with_change("id", "bad id")).command_id is None


def test_release_needs_exactly_one_selector() -> None:
    release = EXAMPLES["command"][2]
    assert isinstance(decode_command(json.dumps(release)), ReleaseCommand)
    both = with_change("args.compartment", "A01", release)
    assert rejected(both).field == "args"
    assert rejected(with_change("args.order_id", _DELETE, release)).field == "args"


def test_signed_form_is_checked() -> None:
    signed = EXAMPLES["signed_command"][0]
    assert isinstance(decode_command(json.dumps(signed)), SignedCommand)
    assert rejected(with_change("sig", "abc", signed)).field == "sig"
    assert rejected(with_change("key_id", "", signed)).field == "key_id"
    assert rejected(with_change("type", "open", signed)).field == "type"


def test_a_str_payload_is_accepted_too() -> None:
    assert isinstance(decode_command(json.dumps(OPEN)), OpenCommand)


# ---------------------------------------------------------------------------------------------
# properties: nothing but CommandRejected, never INTERNAL, and always quickly

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=30,
)


def _decode_or_reject(payload: bytes | str) -> None:
    err: CommandRejected | None = None
    try:
        decode_command(payload, max_bytes=4096)
    except CommandRejected as caught:
        err = caught
    if err is not None:
        assert err.code is not ErrorCode.INTERNAL, err.__cause__
        assert err.message


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=5000))
def test_arbitrary_bytes_never_crash(payload: bytes) -> None:
    _decode_or_reject(payload)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_arbitrary_json_never_crashes(value: Any) -> None:
    _decode_or_reject(json.dumps(value).encode())


command_keys = st.sampled_from(["id", "type", "cabinet", "expires", "args", "signed", "key_id",
                                "sig", "extra"])


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(command_keys, json_values | st.sampled_from(COMMAND_TYPES), max_size=6))
def test_arbitrary_command_shaped_objects_never_crash(value: dict[str, Any]) -> None:
    _decode_or_reject(json.dumps(value).encode())


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(EXAMPLES["command"]),
    st.sampled_from(["id", "cabinet", "expires", "args", "type"]),
    json_values,
)
def test_one_field_replaced_by_anything_never_crashes(
    example: dict[str, Any], key: str, value: Any,
) -> None:
    doc = dict(example)
    doc[key] = value
    _decode_or_reject(json.dumps(doc).encode())


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_including_surrogates_never_crashes(text: str) -> None:
    _decode_or_reject(text)
    _decode_or_reject(json.dumps({"id": text, "type": "open", "signed": text}))


@pytest.mark.parametrize(
    ("sent", "read"),
    [
        ("2026-11-22T10:00:00Z", "2026-11-22T10:00:00+00:00"),
        ("2026-11-22 10:00:00+01:00", "2026-11-22T10:00:00+01:00"),
        # forms msgspec refuses and dispatch has always been allowed to send
        ("2026-11-22_10:00:00Z", "2026-11-22T10:00:00+00:00"),
        ("2026-11-22T10:00Z", "2026-11-22T10:00:00+00:00"),
        ("2026-11-22_10:00:00.1234567-05:30", "2026-11-22T10:00:00.123456-05:30"),
        ("2026-11-22T23:59:59.9999999Z", "2026-11-22T23:59:59.999999+00:00"),
        ("+.5", "1970-01-01T00:00:00.500000+00:00"),
        ("1.5e3", "1970-01-01T00:25:00+00:00"),
        ("1764000000", "2025-11-24T16:00:00+00:00"),
        ("1764000000000", "2025-11-24T16:00:00+00:00"),
        ("1764000000.5", "2025-11-24T16:00:00.500000+00:00"),
        ("-5", "1969-12-31T23:59:55+00:00"),
    ],
)
def test_assign_window_times_are_read_as_they_always_were(sent: str, read: str) -> None:
    assign = copy.deepcopy(EXAMPLES["command"][1])
    assign["args"]["pickup_from"] = sent
    decoded = decode_command(json.dumps(assign))
    assert isinstance(decoded, AssignCommand)
    assert decoded.args.pickup_from is not None
    assert decoded.args.pickup_from.isoformat() == read


@pytest.mark.parametrize("sent", ["2026-11-22T10:00:00", "2026-11-22", "2026-11-22T10Z", "1e3",
                                  "2026-11-22T10:00:00+01", "99999999999999999999", "x",
                                  ".1E310", "2026-02-30T10:00:00Z", "\u0665",
                                  "1_000", " 5"])
def test_assign_window_times_without_a_zone_or_malformed_are_refused(sent: str) -> None:
    assign = copy.deepcopy(EXAMPLES["command"][1])
    assign["args"]["expires_at"] = sent
    err = rejected(json.dumps(assign))
    assert (err.code, err.field) == (ErrorCode.INVALID_FIELD, "args.expires_at")
