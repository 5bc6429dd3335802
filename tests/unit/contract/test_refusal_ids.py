"""A refusal names its command whenever the id can be read without doubt, so a client that
matches replies by id alone (MQTT 3.1.1) can match it; get_clock decodes without a
deadline; the cooldown's wait travels in a field."""

from __future__ import annotations

import json

import pytest

from controller import strictjson
from controller.contract.errors import CommandRejected, ErrorCode
from controller.contract.examples import EXAMPLES
from controller.contract.messages import (
    ClockReading,
    GetClockCommand,
    Reply,
    SignedCommand,
    decode_command,
    encode,
    from_builtins,
)

OPEN = EXAMPLES["command"][0]


def _refusal(payload: bytes, max_bytes: int = 16 * 1024) -> CommandRejected:
    with pytest.raises(CommandRejected) as info:
        decode_command(payload, max_bytes=max_bytes)
    return info.value


@pytest.mark.parametrize(("payload", "code"), [
    (b'{"id":"c-1","type":"open","type":"open"}', ErrorCode.BAD_JSON),
    (b'{"id":"c-1","type":"get_state","cabinet":"cab-01","n":NaN}', ErrorCode.BAD_JSON),
    (b'{"id":"c-1","type":"teleport","cabinet":"cab-01"}', ErrorCode.UNKNOWN_COMMAND),
])
def test_the_id_is_recovered_from_a_refused_command(payload: bytes, code: ErrorCode) -> None:
    refused = _refusal(payload)
    assert (refused.code, refused.command_id) == (code, "c-1")


def test_the_id_of_a_command_too_large_or_cut_short_is_recovered() -> None:
    big = json.dumps(dict(OPEN, pad="x" * 200)).encode()
    refused = _refusal(big, max_bytes=100)
    assert (refused.code, refused.command_id) == (ErrorCode.TOO_LARGE, OPEN["id"])
    # As the MQTT link keeps an oversized payload: cut to the limit plus one byte.
    assert strictjson.recover_id(big[:101]) == OPEN["id"]


def test_the_id_of_a_refused_signed_command_is_the_signed_ones() -> None:
    signed = dict(EXAMPLES["signed_command"][0], sig="not base64")
    refused = _refusal(json.dumps(signed).encode())
    assert refused.code is ErrorCode.INVALID_FIELD
    assert refused.command_id == json.loads(signed["signed"])["id"]


@pytest.mark.parametrize("payload", [
    b'{"id":"a","id":"b","type":"open"}',          # two ids: which one?
    b'{"args":{"id":"nested"},"type":"open"}',     # an id inside args is not the command's
    b'{"id":"has space"}',                         # not an id's shape
    b'[{"id":"c-1"}]',
    b"\xff\xfe",
    b'{"id":"' + b"x" * 65 + b'"}',
])
def test_no_id_is_made_up(payload: bytes) -> None:
    assert strictjson.recover_id(payload) is None


def test_recover_id_reads_nothing_huge() -> None:
    payload = b'{"id":"c-1","pad":"' + b"x" * strictjson.MAX_RECOVER_BYTES + b'"}'
    assert strictjson.recover_id(payload) is None


def test_get_clock_needs_no_deadline_and_is_never_signed() -> None:
    query = EXAMPLES["clock_query"][0]
    decoded = decode_command(json.dumps(query).encode())
    assert isinstance(decoded, GetClockCommand)
    assert decode_command(b'{"id":"k","type":"get_clock","cabinet":"cab-01"}').id == "k"
    with_deadline = dict(query, expires=OPEN["expires"])
    assert _refusal(json.dumps(with_deadline).encode()).field == "expires"
    signed = from_builtins(SignedCommand, dict(EXAMPLES["signed_command"][0],
                                               signed=json.dumps(query)))
    with pytest.raises(CommandRejected) as info:
        signed.inner()
    assert (info.value.code, info.value.command_id) == (ErrorCode.INVALID_FIELD, query["id"])


def test_a_rate_limited_refusal_carries_retry_after_s() -> None:
    clock = ClockReading(boot_id="4b7c9e2a-1f0d", uptime_ms=1)
    rejected = CommandRejected(ErrorCode.RATE_LIMITED, "cooldown; retry in 2.4 s",
                               "args.compartment", command_id="c-1", retry_after_s=2.412)
    wire = json.loads(encode(Reply.refusal(rejected, clock)))
    assert wire["error"]["retry_after_s"] == 2.412
    plain = CommandRejected(ErrorCode.UNKNOWN_ORDER, "no order", command_id="c-2")
    assert "retry_after_s" not in json.loads(
        encode(Reply.refusal(plain, clock)))["error"]
