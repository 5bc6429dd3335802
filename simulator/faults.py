"""Faults the simulated cabinet can be told to have, switchable at run time.

=====================  ========================  =============================================
kind                   target                    effect
=====================  ========================  =============================================
``silent``             board                     the board never answers (dead, unpowered)
``corrupt_crc``        board                     replies carry a wrong CRC
``slow``               board (``latency_s``)     replies come ``latency_s`` late
``late``               board (``delay_s``,       replies leave ``delay_s`` late, the request
                       ``writes_only``,          acted on at once (with ``writes_only``: only
                       ``count``)                the acknowledgements of writes are late)
``drop_reply``         board (``count``)         a write is carried out, its reply is lost
``garble_reply``       board (``count``)         a write is carried out, its reply has a bad
                                                 CRC
``short_reply``        board (``count``)         a write is carried out, its reply is cut
                                                 after 5 bytes
``duplicate_address``  board                     a second board answers the same frames: the
                                                 two replies collide, the master gets garbage
``busy``               board (``code``)          every request is answered with a Modbus
                                                 exception (default 06, server device busy)
``stuck_latch``        lock board + channel      the solenoid energises, the latch stays put
                       (or ``compartment``)
``flapping``           input board + channel     the input toggles every ``period_s``
                       (or ``compartment`` +     (a loose connector, a bouncing switch)
                       ``signal``)
``cut_wire``           input board + channel     the input reads the cut-wire level (``level``,
                       (or ``compartment`` +     default from ``[simulator] cut_wire_level``
                       ``signal``); a probe       by the signal's polarity); a probe channel
                       channel                   reads its "invalid" sentinel
``compressor_failure`` zone                      the zone drifts toward ambient
=====================  ========================  =============================================

Bus faults (the board ones) are applied by the bus and its transports, sensor and physics
faults by the world model. :class:`FaultBook` is the thread-safe store both consult.
``late``, ``slow`` and the per-board processing time (``[simulator] processing_s``) add
up to the delay of a reply. The reply faults on writes leave the write's effect in the
ground truth (``write_acted``, ``pulse_received``, ``output_on``): exactly what a
master that lost the acknowledgement cannot see.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

__all__ = [
    "BOARD_FAULTS",
    "CHANNEL_FAULTS",
    "COUNTED_FAULTS",
    "FAULT_KINDS",
    "WRITE_REPLY_FAULTS",
    "ZONE_FAULTS",
    "Fault",
    "FaultBook",
]

BOARD_FAULTS = (
    "silent", "corrupt_crc", "slow", "late", "drop_reply", "garble_reply", "short_reply",
    "duplicate_address", "busy",
)
#: Faults that spoil the reply to a write (functions 05, 06, 15, 16), not the write.
WRITE_REPLY_FAULTS = ("drop_reply", "garble_reply", "short_reply")
#: Faults that may be limited to a number of replies (``count``).
COUNTED_FAULTS = ("late", *WRITE_REPLY_FAULTS)
CHANNEL_FAULTS = ("stuck_latch", "flapping", "cut_wire")
ZONE_FAULTS = ("compressor_failure",)
FAULT_KINDS = BOARD_FAULTS + CHANNEL_FAULTS + ZONE_FAULTS


@dataclass(frozen=True, slots=True)
class Fault:
    """One active fault. ``since`` is the world time it was set (flapping phase)."""

    kind: str
    board: str | None = None
    channel: int | None = None
    zone: str | None = None
    latency_s: float = 0.0
    period_s: float = 0.5
    level: bool | None = None
    code: int = 6
    since: float = 0.0
    delay_s: float = 0.0
    writes_only: bool = False
    #: ``late`` and the reply faults: spoil this many replies, then clear (None: until
    #: cleared).
    count: int | None = None

    @property
    def target(self) -> tuple[str, str | None, int | None, str | None]:
        return (self.kind, self.board, self.channel, self.zone)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"kind": self.kind}
        for name in ("board", "channel", "zone"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.kind == "slow":
            out["latency_s"] = self.latency_s
        if self.kind == "late":
            out["delay_s"] = self.delay_s
            out["writes_only"] = self.writes_only
        if self.count is not None:
            out["count"] = self.count
        if self.kind == "flapping":
            out["period_s"] = self.period_s
        if self.kind == "cut_wire" and self.level is not None:
            out["level"] = self.level
        if self.kind == "busy":
            out["code"] = self.code
        return out


class FaultBook:
    """Active faults, at most one per (kind, target). Thread-safe; read on every frame."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[tuple[str, str | None, int | None, str | None], Fault] = {}

    def put(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults[fault.target] = fault
        return fault

    def remove(
        self,
        kind: str | None = None,
        *,
        board: str | None = None,
        channel: int | None = None,
        zone: str | None = None,
    ) -> list[Fault]:
        """Remove every fault matching all the given fields; return them."""
        with self._lock:
            gone = [
                f
                for f in self._faults.values()
                if (kind is None or f.kind == kind)
                and (board is None or f.board == board)
                and (channel is None or f.channel == channel)
                and (zone is None or f.zone == zone)
            ]
            for f in gone:
                del self._faults[f.target]
        return gone

    def active(self) -> tuple[Fault, ...]:
        with self._lock:
            return tuple(self._faults.values())

    def board(self, kind: str, board: str) -> Fault | None:
        with self._lock:
            return self._faults.get((kind, board, None, None))

    def take(self, kind: str, board: str) -> Fault | None:
        """The board fault, as :meth:`board`, used once: a fault with a ``count`` counts
        down and clears itself at zero."""
        with self._lock:
            fault = self._faults.get((kind, board, None, None))
            if fault is not None and fault.count is not None:
                if fault.count <= 1:
                    del self._faults[fault.target]
                else:
                    self._faults[fault.target] = replace(fault, count=fault.count - 1)
            return fault

    def channel(self, kind: str, board: str, channel: int) -> Fault | None:
        with self._lock:
            return self._faults.get((kind, board, channel, None))

    def zone(self, kind: str, zone: str) -> Fault | None:
        with self._lock:
            return self._faults.get((kind, None, None, zone))

    @staticmethod
    def restamp(fault: Fault, since: float) -> Fault:
        return replace(fault, since=since)
