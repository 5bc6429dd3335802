"""Signals: raw board levels turned into door, latch and occupancy readings.

A board reports raw levels; the cabinet config says, per signal, which raw level means
the signal's *active* state (door OPEN, latch RELEASED, compartment OCCUPIED). Every
reading is tri-state: a signal the controller cannot vouch for is ``UNKNOWN``, never
"closed" or "empty", because a cut wire or a dead board must not look like a safe door.

Poll health, per board (:class:`BoardInputs`)::

    NEVER_POLLED --good poll--> ONLINE --failed poll--> DEGRADED --N-th failure--> OFFLINE
                                  ^  <------good poll------'                         |
                                  '-------------------good poll----------------------'

While DEGRADED (fewer than ``offline_after`` consecutive failures, default 3) the last good
levels still stand; when OFFLINE every signal of the board is ``UNKNOWN`` and the
``board_offline`` alarm is raised (once); one good poll restores the board and clears it.

Debounce (optional, ``debounce_samples`` = k > 1): a channel's reported level changes only
after k consecutive equal samples. The first good poll after NEVER_POLLED or OFFLINE is
taken as it is, so one good poll is enough to restore readings.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from controller.domain.errors import DomainError, ErrorCode
from controller.domain.events import AlarmKind, AlarmSet, DomainEvent

__all__ = [
    "DEFAULT_OFFLINE_AFTER",
    "BoardHealth",
    "BoardInputs",
    "CabinetSignals",
    "CompartmentReadings",
    "CompartmentWiring",
    "DoorReading",
    "LatchReading",
    "OccupancyReading",
    "Polarity",
    "SignalWiring",
    "TriState",
]

#: Consecutive failed polls after which a board is offline and its signals unknown.
DEFAULT_OFFLINE_AFTER = 3


class TriState(StrEnum):
    """A signal's meaning: its active state, its inactive state, or unknown."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    UNKNOWN = "unknown"


class Polarity(StrEnum):
    """Which raw level means *active*: ``"high"`` (input reads 1) or ``"low"``."""

    HIGH = "high"
    LOW = "low"

    def interpret(self, level: bool | None) -> TriState:
        """The meaning of a raw ``level``; ``None`` (no trustworthy level) is UNKNOWN."""
        if level is None:
            return TriState.UNKNOWN
        return TriState.ACTIVE if level == (self is Polarity.HIGH) else TriState.INACTIVE


class DoorReading(StrEnum):
    """What the door sensor says."""

    OPEN = "open"
    CLOSED = "closed"
    UNKNOWN = "unknown"

    @classmethod
    def from_tristate(cls, value: TriState) -> DoorReading:
        """ACTIVE is OPEN."""
        return _pick(value, cls.OPEN, cls.CLOSED, cls.UNKNOWN)


class LatchReading(StrEnum):
    """What the latch feedback says."""

    RELEASED = "released"
    ENGAGED = "engaged"
    UNKNOWN = "unknown"

    @classmethod
    def from_tristate(cls, value: TriState) -> LatchReading:
        """ACTIVE is RELEASED."""
        return _pick(value, cls.RELEASED, cls.ENGAGED, cls.UNKNOWN)


class OccupancyReading(StrEnum):
    """What the occupancy sensor says."""

    OCCUPIED = "occupied"
    EMPTY = "empty"
    UNKNOWN = "unknown"

    @classmethod
    def from_tristate(cls, value: TriState) -> OccupancyReading:
        """ACTIVE is OCCUPIED."""
        return _pick(value, cls.OCCUPIED, cls.EMPTY, cls.UNKNOWN)


_T = TypeVar("_T")


def _pick(value: TriState, active: _T, inactive: _T, unknown: _T) -> _T:
    if value is TriState.ACTIVE:
        return active
    if value is TriState.INACTIVE:
        return inactive
    return unknown


@dataclass(frozen=True, slots=True)
class SignalWiring:
    """Where one signal is read: board name, input channel, and the active raw level."""

    board: str
    channel: int
    active: Polarity = Polarity.HIGH

    def __post_init__(self) -> None:
        if self.channel < 0:
            raise DomainError(
                ErrorCode.INVALID_ARGUMENT,
                f"channel must be >= 0, got {self.channel}",
                field="channel",
            )


@dataclass(frozen=True, slots=True)
class CompartmentWiring:
    """The optional sensors of one compartment; ``None`` where the sensor is not fitted."""

    compartment: str
    door: SignalWiring | None = None
    latch: SignalWiring | None = None
    occupancy: SignalWiring | None = None

    def signals(self) -> tuple[SignalWiring, ...]:
        """The fitted signals."""
        return tuple(s for s in (self.door, self.latch, self.occupancy) if s is not None)


@dataclass(frozen=True, slots=True)
class CompartmentReadings:
    """The readings of one compartment now; ``None`` where the sensor is not fitted."""

    compartment: str
    door: DoorReading | None
    latch: LatchReading | None
    occupancy: OccupancyReading | None


class BoardHealth(StrEnum):
    """Poll health of one board; see the module docstring."""

    NEVER_POLLED = "never_polled"
    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"


class _Debounced:
    """One channel's debounced level."""

    __slots__ = ("candidate", "count", "stable")

    def __init__(self, level: bool) -> None:
        self.stable = level
        self.candidate: bool | None = None
        self.count = 0

    def sample(self, level: bool, needed: int) -> None:
        if level == self.stable:
            self.candidate, self.count = None, 0
            return
        if level == self.candidate:
            self.count += 1
        else:
            self.candidate, self.count = level, 1
        if self.count >= needed:
            self.stable, self.candidate, self.count = level, None, 0


class BoardInputs:
    """Poll health and (debounced) input levels of one board.

    ``poll_succeeded`` / ``poll_failed`` are called by the poller after each read;
    both return the alarm events the poll caused (``board_offline`` raised or cleared).
    """

    def __init__(
        self, board: str, *, offline_after: int = DEFAULT_OFFLINE_AFTER, debounce_samples: int = 1
    ) -> None:
        if offline_after < 1:
            raise DomainError(
                ErrorCode.INVALID_ARGUMENT, "offline_after must be >= 1", field="offline_after"
            )
        if debounce_samples < 1:
            raise DomainError(
                ErrorCode.INVALID_ARGUMENT,
                "debounce_samples must be >= 1",
                field="debounce_samples",
            )
        self.board = board
        self.offline_after = offline_after
        self.debounce_samples = debounce_samples
        self._channels: list[_Debounced] = []
        self._health = BoardHealth.NEVER_POLLED
        self._failures = 0
        self._last_good_at: float | None = None
        self._alarms = AlarmSet(None, base_details={"board": board})

    @property
    def health(self) -> BoardHealth:
        """NEVER_POLLED, ONLINE, DEGRADED or OFFLINE."""
        return self._health

    @property
    def consecutive_failures(self) -> int:
        """Failed polls since the last good one."""
        return self._failures

    @property
    def last_good_at(self) -> float | None:
        """Time of the last good poll, or None."""
        return self._last_good_at

    @property
    def active_alarms(self) -> frozenset[AlarmKind]:
        """``{BOARD_OFFLINE}`` while offline, else empty."""
        return self._alarms.active

    def level(self, channel: int) -> bool | None:
        """The trusted raw level of ``channel``; None when unknown (never polled, offline,
        or a channel the board did not report)."""
        if self._health in (BoardHealth.NEVER_POLLED, BoardHealth.OFFLINE):
            return None
        if not 0 <= channel < len(self._channels):
            return None
        return self._channels[channel].stable

    def poll_succeeded(self, levels: Sequence[bool], at: float) -> list[DomainEvent]:
        """Record a good poll (``levels`` as in :class:`drivers.base.InputSnapshot`)."""
        reseed = self._health in (BoardHealth.NEVER_POLLED, BoardHealth.OFFLINE) or len(
            levels
        ) != len(self._channels)
        if reseed:
            self._channels = [_Debounced(bool(level)) for level in levels]
        else:
            for channel, level in zip(self._channels, levels, strict=True):
                channel.sample(bool(level), self.debounce_samples)
        self._health = BoardHealth.ONLINE
        self._failures = 0
        self._last_good_at = at
        return self._alarms.clear(AlarmKind.BOARD_OFFLINE, at)

    def poll_failed(self, at: float, reason: str = "") -> list[DomainEvent]:
        """Record a failed poll; the ``offline_after``-th in a row raises ``board_offline``."""
        self._failures += 1
        if self._failures < self.offline_after and self._health is not BoardHealth.OFFLINE:
            if self._health is BoardHealth.ONLINE:
                self._health = BoardHealth.DEGRADED
            return []
        self._health = BoardHealth.OFFLINE
        return self._alarms.raise_(
            AlarmKind.BOARD_OFFLINE, at, {"failures": self._failures, "reason": reason}
        )


class CabinetSignals:
    """Readings of every compartment, from the boards' polls and the wiring in the config."""

    def __init__(
        self,
        wiring: Iterable[CompartmentWiring],
        *,
        offline_after: int = DEFAULT_OFFLINE_AFTER,
        debounce_samples: int = 1,
        extra_boards: Iterable[str] = (),
    ) -> None:
        self._wiring: dict[str, CompartmentWiring] = {}
        boards: dict[str, None] = {}
        for item in wiring:
            if item.compartment in self._wiring:
                raise DomainError(
                    ErrorCode.INVALID_ARGUMENT,
                    f"compartment {item.compartment} wired twice",
                    field="compartment",
                )
            self._wiring[item.compartment] = item
            for signal in item.signals():
                boards[signal.board] = None
        for name in extra_boards:
            boards[name] = None
        self._boards = {
            name: BoardInputs(name, offline_after=offline_after, debounce_samples=debounce_samples)
            for name in boards
        }

    @property
    def boards(self) -> tuple[str, ...]:
        """Names of the boards that carry at least one signal (plus ``extra_boards``)."""
        return tuple(self._boards)

    def board(self, name: str) -> BoardInputs:
        """The health tracker of board ``name``."""
        try:
            return self._boards[name]
        except KeyError:
            raise DomainError(
                ErrorCode.INVALID_ARGUMENT, f"no board named {name!r}", field="board"
            ) from None

    def poll_succeeded(self, board: str, levels: Sequence[bool], at: float) -> list[DomainEvent]:
        """Record a good poll of ``board``."""
        return self.board(board).poll_succeeded(levels, at)

    def poll_failed(self, board: str, at: float, reason: str = "") -> list[DomainEvent]:
        """Record a failed poll of ``board``."""
        return self.board(board).poll_failed(at, reason)

    def signal(self, wiring: SignalWiring) -> TriState:
        """The meaning of one wired signal now."""
        inputs = self._boards.get(wiring.board)
        level = inputs.level(wiring.channel) if inputs is not None else None
        return wiring.active.interpret(level)

    def readings(self, compartment: str) -> CompartmentReadings:
        """Door, latch and occupancy readings of ``compartment`` (None = not fitted)."""
        try:
            wiring = self._wiring[compartment]
        except KeyError:
            raise DomainError(
                ErrorCode.UNKNOWN_COMPARTMENT,
                f"no compartment {compartment!r}",
                field="compartment",
            ) from None
        return CompartmentReadings(
            compartment,
            door=None
            if wiring.door is None
            else DoorReading.from_tristate(self.signal(wiring.door)),
            latch=None
            if wiring.latch is None
            else LatchReading.from_tristate(self.signal(wiring.latch)),
            occupancy=None
            if wiring.occupancy is None
            else OccupancyReading.from_tristate(self.signal(wiring.occupancy)),
        )
