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


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        (b'{"id":"c1","type":"get_state","cabinet":"\\ud800"}', "line 1 column 42"),
        (b'{"id":"c1","type":"get_state",\n "cabinet":"a \\\\ud800 \\ud83d\\ude00 \\udc00"}',
         "line 2 column 36"),
        (b'{"id":"c1","type":"get_clock","cabinet":"\\udbff\\u0041"}', "line 1 column 42"),
    ],
)
def test_a_lone_surrogate_escape_is_named_where_it_is(payload: bytes, where: str) -> None:
    """The contract's bad_json form, ``not JSON at line L column C: ...``; an escaped
    backslash before ``ud800`` and a whole pair are not faults."""
    with pytest.raises(CommandRejected) as refused:
        decode_command(payload)
    assert refused.value.code is ErrorCode.BAD_JSON
    assert f"not JSON at {where}: lone surrogate" in str(refused.value)
    assert refused.value.command_id == "c1"


def test_a_pair_of_surrogates_is_one_character() -> None:
    assert strictjson.lone_surrogate('{"a": "\\ud83d\\ude00", "b": "\\\\udc00"}') is None
