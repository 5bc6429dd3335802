"""The one strict JSON reader of untrusted input, and both its users refusing alike."""

from __future__ import annotations

import pytest

from controller import strictjson
from controller.contract.errors import CommandRejected, ErrorCode
from controller.contract.messages import decode_command


@pytest.mark.parametrize(
    "text",
    ['{"a": 1, "a": 2}', '{"x": NaN}', '[Infinity]', '{"x": -Infinity}', "[" * 100_000,
     b'{"id": "\\xff"', b"\xff\xfe"],
)
def test_what_json_loads_lets_through_is_a_value_error(text: str | bytes) -> None:
    with pytest.raises(ValueError):
        strictjson.loads(text)


def test_plain_json_reads_as_json() -> None:
    assert strictjson.loads('{"a": [1, 2.5, "x", null, true]}') == {
        "a": [1, 2.5, "x", None, True]}


@pytest.mark.parametrize("payload", [b'{"id": "c1", "id": "c2", "type": "get_state"}',
                                     b'{"id": "c1", "type": "get_state", "n": NaN}'])
def test_a_command_with_duplicate_keys_or_nan_is_bad_json(payload: bytes) -> None:
    with pytest.raises(CommandRejected) as caught:
        decode_command(payload)
    assert caught.value.code is ErrorCode.BAD_JSON


def test_an_integer_of_too_many_digits_is_named_as_such() -> None:
    assert strictjson.loads('{"a": -' + "9" * 4300 + "}")["a"] < 0
    with pytest.raises(ValueError, match="integer") as caught:
        strictjson.loads('{"a": 1' + "0" * 5000 + "}")
    assert strictjson.describe(caught.value) == "integer too long (5001 digits, at most 4300)"
    with pytest.raises(CommandRejected) as refused:
        decode_command(b'{"id": "c1", "type": "get_state", "n": 1' + b"0" * 5000 + b"}")
    assert refused.value.code is ErrorCode.BAD_JSON
    assert "integer too long" in str(refused.value)
