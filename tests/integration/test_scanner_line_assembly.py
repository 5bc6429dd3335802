"""The scanner's line assembly, pure: however the bytes are split across reads, the same
lines come out, and the buffer stays bounded (no pty needed; these sit beside the pty tests
because they specify the same component)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from drivers.scanner import LineAssembler, Overlong

chunks = st.lists(st.binary(max_size=40), max_size=30)


def feed_all(assembler: LineAssembler, parts: list[bytes]) -> list[bytes | Overlong]:
    out: list[bytes | Overlong] = []
    for part in parts:
        out += assembler.feed(part)
    return out


@given(chunks, st.integers(min_value=0, max_value=200))
def test_split_points_do_not_matter_for_lines(parts: list[bytes], cut: int) -> None:
    data = b"".join(parts)
    whole = LineAssembler(8).feed(data)
    split = feed_all(LineAssembler(8), [data[:cut], data[cut:]])

    # Overlong lengths depend on where detection happened; the sequence of kinds does not.
    def shape(items: list[bytes | Overlong]) -> list[bytes | str]:
        return ["overlong" if isinstance(i, Overlong) else i for i in items]

    assert shape(whole) == shape(split)


@given(chunks, st.sampled_from([None, b"\r\n", b"\t"]))
def test_buffer_bounded_and_lines_within_limit(
    parts: list[bytes], terminator: bytes | None
) -> None:
    assembler = LineAssembler(8, terminator)
    for part in parts:
        for item in assembler.feed(part):
            assert isinstance(item, Overlong) or 0 < len(item) <= 8
        assert len(assembler._buf) <= 8 + (len(terminator) - 1 if terminator else 0)


def test_auto_terminator_accepts_cr_crlf_lf_and_drops_empty_lines() -> None:
    assert LineAssembler(16).feed(b"A\rB\r\nC\n\r\n\rD") == [b"A", b"B", b"C"]


def test_crlf_split_between_reads() -> None:
    assembler = LineAssembler(16, b"\r\n")
    assert assembler.feed(b"CODE\r") == []
    assert assembler.feed(b"\nNEXT\r\n") == [b"CODE", b"NEXT"]


def test_overlong_reported_once_then_resynchronised() -> None:
    assembler = LineAssembler(4)
    out = assembler.feed(b"123456789") + assembler.feed(b"abcdef\rOK\r")
    assert out == [Overlong(9), b"OK"]
