"""Structured logs: one JSON object per line on stderr, which journald stores as is.

Fields beyond the message go in ``extra={"ctx": {...}}``; the formatter flattens them
(the text format appends them as ``key=value``, so a text line also says which board,
which bus). Secrets (pickup codes, keys) are never passed to a logger in the first place.

Under systemd (stderr connected to the journal, ``$JOURNAL_STREAM``) each line starts
with its syslog priority, ``<3>`` for an error, ``<4>`` for a warning (sd-daemon(3)):
journald strips the prefix and files the line at that priority, so
``journalctl -u locker-controller -p warning`` shows every warning, every alarm raised
and every failure, and ``-p err`` every failure.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import zoneinfo
from datetime import UTC, datetime, tzinfo
from typing import Any, TextIO

__all__ = ["JsonFormatter", "TextFormatter", "journal_priority", "setup_logging",
           "stderr_is_journal", "to_stderr"]

_RESERVED = set(vars(logging.makeLogRecord({})))

# Python level -> syslog priority (sd-daemon(3), syslog(3)).
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
             logging.DEBUG: 7}


def journal_priority(levelno: int) -> int:
    """The syslog priority of a Python level (levels between the named ones round up)."""
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return _PRIORITY[level]
    return _PRIORITY[logging.DEBUG]


def _context(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ctx = getattr(record, "ctx", None)
    if isinstance(ctx, dict):
        out.update(ctx)
    for key, value in vars(record).items():
        if key not in _RESERVED and key not in ("ctx", "message", "asctime") and key not in out:
            out[key] = value
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _context(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``2026-11-29 11:00:00,123+0100 WARNING controller.x: alarm raised board=locks-a ...``:
    the time is the site's local time (``cabinet.timezone``) with its UTC offset, for the
    technician reading the journal on site; JSON logs stay in UTC, for machines."""

    def __init__(self, tz: tzinfo = UTC) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._tz = tz

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        at = datetime.fromtimestamp(record.created, self._tz)
        return at.strftime("%Y-%m-%d %H:%M:%S") + f",{int(record.msecs):03d}" + at.strftime("%z")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = _context(record)
        if not context:
            return text
        head, sep, rest = text.partition("\n")  # a traceback stays below the line
        fields = " ".join(f"{k}={v}" for k, v in context.items())
        return f"{head} {fields}{sep}{rest}"


class _JournalPrefix(logging.Formatter):
    """Prefix every line of a record with its priority (a traceback is one record over
    several lines: each line is filed at the record's priority)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{journal_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self._inner.format(record).split("\n"))


def stderr_is_journal(stream: TextIO | None = None,
                      environ: dict[str, str] | None = None) -> bool:
    """True when ``stream`` (stderr) is the journal stream systemd connected
    (``$JOURNAL_STREAM`` is its ``device:inode``)."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    device, sep, inode = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, AttributeError):
        return False


def to_stderr(text: str, level: int = logging.ERROR) -> None:
    """Write ``text`` to stderr before logging is set up (a configuration error), at
    ``level``'s priority when stderr is the journal, so ``journalctl -p err`` shows it."""
    if stderr_is_journal(sys.stderr):
        prefix = f"<{journal_priority(level)}>"
        text = "\n".join(prefix + line for line in text.split("\n"))
    print(text, file=sys.stderr)


def setup_logging(level: str = "info", fmt: str = "json", *, timezone: str = "UTC",
                  journal: bool | None = None, stream: TextIO | None = None) -> None:
    """Log to ``stream`` (stderr) at ``level``; ``journal`` (default: detected) adds the
    priority prefix journald reads; text logs show times in ``timezone`` (IANA name)."""
    out = stream or sys.stderr
    handler = logging.StreamHandler(out)
    formatter: logging.Formatter = (
        JsonFormatter() if fmt == "json" else TextFormatter(zoneinfo.ZoneInfo(timezone)))
    if journal is None:
        journal = stderr_is_journal(out)
    if journal:
        formatter = _JournalPrefix(formatter)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
