"""Errors raised by every driver backend.

No vendor exception (pymodbus, serial, RPi.GPIO, gpiod) crosses out of ``drivers``:
each backend translates at its edge, with ``raise ... from exc``. Leaves also inherit
a builtin so callers that only know the standard library still catch them sensibly::

    DriverError
     ├── BackendUnavailable (ImportError)   hardware library or backend name not available
     ├── DriverConfigError (ValueError)     a board profile or register map that cannot work
     ├── ChannelError (ValueError)          channel outside what the board has
     ├── BusError (OSError)                 the line itself: port missing, write failed
     │    └── BusClosed                     used after close()
     └── BoardError                         one board on a line misbehaved
          ├── BoardTimeout (TimeoutError)   no complete answer within the timeout, retries spent
          │    └── BoardLate                the board answers, but late: degraded, its replies
          │                                 cannot be trusted to answer the request just sent
          ├── FrameError (ValueError)       garbled or mismatched reply: CRC, length, function,
          │                                 address or count not those of the request
          ├── BoardRejected                 the board answered with a Modbus exception code
          └── PulseUnconfirmed (TimeoutError) a pulse frame went out, its outcome is unknown:
                                            the acknowledgement was lost, late or garbled and
                                            reading back could not settle it (never re-sent)

Every :class:`BoardError` carries ``bus`` and ``address`` so that a log line or an alarm
names the board without the caller having to add it. A :class:`BusError` says with
``frame_sent`` whether the failed request may have reached the wire (False: the port
could not be opened, nothing was sent).
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "BoardError",
    "BoardLate",
    "BoardRejected",
    "BoardTimeout",
    "BusClosed",
    "BusError",
    "ChannelError",
    "DriverConfigError",
    "DriverError",
    "FrameError",
    "PulseUnconfirmed",
]


class DriverError(Exception):
    """Base of every error a driver raises."""


class BackendUnavailable(DriverError, ImportError):
    """A backend was asked for by name but cannot be loaded (missing library, unknown name)."""


class DriverConfigError(DriverError, ValueError):
    """A board profile or register map is inconsistent; names the offending field."""


class ChannelError(DriverError, ValueError):
    """A channel number outside the range the board has."""

    def __init__(self, message: str, *, board: str = "", channel: int | None = None) -> None:
        super().__init__(message)
        self.board = board
        self.channel = channel


class BusError(DriverError, OSError):
    """The line itself failed: the port cannot be opened, a write failed, the gateway is gone.

    ``frame_sent`` is True when the request may have reached the wire before the line
    failed (a write that failed half-way, a line lost while waiting for the reply)."""

    def __init__(self, message: str, *, bus: str = "", frame_sent: bool = False) -> None:
        super().__init__(message)
        self.bus = bus
        self.frame_sent = frame_sent


class BusClosed(BusError):
    """The line was used after ``close()``."""


class BoardError(DriverError):
    """One board on a line did not give a usable answer."""

    def __init__(self, message: str, *, bus: str = "", address: int | None = None) -> None:
        super().__init__(message)
        self.bus = bus
        self.address = address

    def __str__(self) -> str:
        where = f"{self.bus}@{self.address}" if self.address is not None else self.bus
        base = super().__str__()
        return f"{where}: {base}" if where else base


class BoardTimeout(BoardError, TimeoutError):
    """No complete reply within the timeout, after the retry budget was spent."""


class BoardLate(BoardTimeout):
    """The board is degraded: its replies keep coming after the timeout, so a reply can
    not be trusted to answer the request just sent. Raised for every read of it until
    it answers on time again; its signals are unknown, as for a silent board."""


class FrameError(BoardError, ValueError):
    """A reply that does not belong to the request: bad CRC, wrong length, wrong function,
    address or count, or a reply from another unit."""


class BoardRejected(BoardError):
    """The board answered with a Modbus exception response."""

    def __init__(
        self, message: str, *, bus: str = "", address: int | None = None, exception_code: int = 0
    ) -> None:
        super().__init__(message, bus=bus, address=address)
        self.exception_code = exception_code


class PulseUnconfirmed(BoardError, TimeoutError):
    """A pulse frame was sent but whether the solenoid was energised is unknown.

    The acknowledgement was lost, late or garbled, and what could be read back (the
    output's own state) did not settle it. The driver never sends the pulse again after
    this: a second frame could energise the solenoid twice, beyond the cap. The caller
    reports the outcome as unconfirmed and treats a door that opens next as an authorised
    opening. ``sent_at`` is the driver clock's time the frame was sent, ``duration_s`` the
    (capped) duration asked for, ``evidence`` what the driver tried and saw.
    """

    def __init__(
        self,
        message: str,
        *,
        bus: str = "",
        address: int | None = None,
        channel: int = 0,
        duration_s: float = 0.0,
        sent_at: float = 0.0,
        evidence: str = "",
    ) -> None:
        super().__init__(message, bus=bus, address=address)
        self.channel = channel
        self.duration_s = duration_s
        self.sent_at = sent_at
        self.evidence = evidence
