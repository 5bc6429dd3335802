"""Configuration errors: :class:`ConfigIssue`, :class:`ConfigError` and key paths."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

ENV_PREFIX = "LOCKER_"
#: ``LOCKER_`` variables that are not config keys, so not typos: ``LOCKER_CONFIG`` is the
#: path of the file when no ``--config`` flag is given.
NON_CONFIG_ENV_VARS: frozenset[str] = frozenset({"LOCKER_CONFIG"})

_REDACTED = "***"
Loc: TypeAlias = tuple[str | int, ...]


# =============================================================================================
# Errors
# =============================================================================================


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One thing wrong with the configuration.

    ``source`` is where the value came from: the file path as given, ``"environment"`` or
    ``"$LOCKER_..."`` for an environment variable, ``"flags"`` for a command-line override,
    ``"apply_config"`` for a key changed remotely by dispatch.
    ``key`` is the key path (``"compartments[2].door.active"``; empty for a syntax error),
    ``line``/``column`` the position in the file when known (1-based).
    """

    source: str
    key: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        text = (
            f"{self.source}: {self.key}: {self.message}"
            if self.key
            else (f"{self.source}: {self.message}")
        )
        if self.line is not None:
            where = f"line {self.line}"
            if self.column is not None:
                where += f", column {self.column}"
            text += f" ({where})"
        return text


class ConfigError(ValueError):
    """The configuration cannot be used. ``issues`` lists every problem found, in file
    order; ``str()`` prints them one per line."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))

    @property
    def keys(self) -> tuple[str, ...]:
        """The key paths named by the issues, in order."""
        return tuple(issue.key for issue in self.issues)



def _format_loc(loc: Loc) -> str:
    text = ""
    for item in loc:
        if isinstance(item, int):
            text += f"[{item}]"
        else:
            text += f".{item}" if text else item
    return text
