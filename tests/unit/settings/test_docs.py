"""docs/configuration.md is the reference of every key: each one the models know is in it."""

from __future__ import annotations

from pathlib import Path

from controller.settings import describe_keys

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


def test_every_key_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = [doc.key for doc in describe_keys() if f"`{doc.key}`" not in text]
    assert not missing, f"keys missing from {DOC.name}: {missing}"


def test_every_key_has_a_description() -> None:
    assert [d.key for d in describe_keys() if not d.description] == []
