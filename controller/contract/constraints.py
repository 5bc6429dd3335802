"""Constraints shared by the contract's structs."""

from __future__ import annotations

from msgspec import Meta

__all__ = ["pattern"]


def pattern(regex: str) -> Meta:
    """A string matching ``regex`` (``^...$``) as a whole.

    msgspec checks with :func:`re.search`, whose ``$`` also matches before a final newline
    (``"A01\\n"`` would pass ``^[A-Z0-9-]{1,8}$``): the check ends in ``\\Z`` instead. The JSON
    Schemas keep the portable ``$`` form (:mod:`controller.contract.schemagen` writes it back).
    """
    if not regex.endswith("$"):
        raise ValueError(f"a whole-string pattern ends in $: {regex!r}")
    return Meta(pattern=regex[:-1] + r"\Z")
