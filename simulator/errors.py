"""Errors of the simulator, one tree.

::

    SimError
     ├── SimConfigError (also ValueError)      the config file: names the file and the key
     ├── UnknownTarget (also LookupError)      no such compartment, board, zone or bus
     └── InvalidRequest (also ValueError)      a request that cannot be carried out

Each carries a machine-readable ``code`` and the ``field`` it is about, which the
control channel returns as a structured error.
"""

from __future__ import annotations

__all__ = ["InvalidRequest", "SimError", "UnknownTarget"]


class SimError(Exception):
    """Base of every simulator error."""

    code = "sim_error"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        if code is not None:
            self.code = code

    def as_dict(self) -> dict[str, str]:
        out = {"code": self.code, "message": str(self)}
        if self.field is not None:
            out["field"] = self.field
        return out


class UnknownTarget(SimError, LookupError):
    """No compartment, board, zone or bus by that name. ``code`` is ``unknown_<what>``."""

    def __init__(self, what: str, name: object, *, field: str | None = None) -> None:
        super().__init__(f"unknown {what} {name!r}", field=field or what, code=f"unknown_{what}")
        self.what = what
        self.name = name

    def __str__(self) -> str:  # LookupError would quote the message otherwise
        return str(self.args[0])


class InvalidRequest(SimError, ValueError):
    """A request that cannot be carried out (bad argument, impossible action)."""

    code = "invalid_request"
