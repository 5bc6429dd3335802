"""Errors raised by the store.

No Redis client's exception (the store's own client's, or redis-py's under ``memory://``)
crosses out of :mod:`controller.store`: every call translates at
the edge, with ``raise ... from exc``. Leaves also inherit a builtin so that callers that
only know the standard library still catch them sensibly::

    StoreError
     ├── StoreConfigError (ValueError)      bad URL, key prefix or cabinet id; fakeredis
     │                                      missing for "memory://"
     ├── StoreDataError (ValueError)        a value that cannot be stored (not JSON, bad id)
     │                                      or a stored value that cannot be read back
     ├── UnknownCommand (KeyError)          a command id with no record (never begun, or
     │                                      its record expired)
     ├── StoreConflict (RuntimeError)       an optimistic transaction lost the race to other
     │                                      writers more times than the attempt budget
     ├── StoreRejected                      Redis answered with an error
     │    └── StoreFull                     nothing was written: maxmemory reached under
     │                                      noeviction (OOM) or the append-only file cannot
     │                                      be written (MISCONF: disk full, dead SD card)
     └── StoreUnavailable (ConnectionError) Redis cannot be reached: refused, reset, loading
          ├── StoreTimeout (TimeoutError)   no answer within the socket timeout
          └── StoreClosed                   the Store was used after close()

``StoreUnavailable`` (and so ``StoreTimeout``) from a *write* means the outcome is unknown:
the request may have reached Redis and been committed before the connection failed. Every
write in the store is shaped so that this is safe for the caller: a repeated ``append``
can only add a second event (never lose one), a failed ``begin_command`` or
``record_pulse_intent`` means "do not act".

Every error carries ``op``, the store operation that failed (``"append"``, ``"ack"``...),
so a log line names it without the caller adding it.
"""

from __future__ import annotations

__all__ = [
    "StoreClosed",
    "StoreConfigError",
    "StoreConflict",
    "StoreDataError",
    "StoreError",
    "StoreFull",
    "StoreRejected",
    "StoreTimeout",
    "StoreUnavailable",
    "UnknownCommand",
]


class StoreError(Exception):
    """Base of every error the store raises."""

    def __init__(self, message: str, *, op: str = "") -> None:
        super().__init__(message)
        self.op = op

    def __str__(self) -> str:
        message = super().__str__()
        return f"{self.op}: {message}" if self.op else message


class StoreConfigError(StoreError, ValueError):
    """The store cannot be set up as asked: bad URL scheme, prefix, cabinet id, options."""


class StoreDataError(StoreError, ValueError):
    """A value that cannot be stored, or a stored value that cannot be decoded."""


class UnknownCommand(StoreError, KeyError):
    """No record for this command id: never begun here, or expired after the retention."""

    def __init__(self, message: str, *, op: str = "", command_id: str = "") -> None:
        super().__init__(message, op=op)
        self.command_id = command_id

    def __str__(self) -> str:  # KeyError would quote the message
        return StoreError.__str__(self)


class StoreConflict(StoreError, RuntimeError):
    """Other writers kept changing the watched keys; the attempt budget is spent."""


class StoreRejected(StoreError):
    """Redis answered the request with an error (wrong type, READONLY, NOSCRIPT...)."""


class StoreFull(StoreRejected):
    """Redis refused a write: maxmemory under noeviction (OOM) or the AOF cannot be written
    (MISCONF). Nothing of the request was written; reads still work."""


class StoreUnavailable(StoreError, ConnectionError):
    """Redis cannot be reached. The next operation tries to connect again."""


class StoreTimeout(StoreUnavailable, TimeoutError):
    """Redis did not answer within the socket timeout; a write may or may not have landed."""


class StoreClosed(StoreUnavailable):
    """The Store was used after ``close()``."""
