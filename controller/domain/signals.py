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

Each wired signal (a compartment's door, latch, occupancy) then goes through its own
:class:`SignalFilter`, in time from the caller's clock (rules in its docstring): a new
level counts only once it has been read for the signal's debounce time, and a signal that
changes more than ``flapping_changes`` times within ``flapping_window_s`` is *flapping*: it
reads ``UNKNOWN`` and the ``sensor_flapping`` alarm is raised (once) until it has been
steady for ``flapping_clear_s``. :class:`SignalFiltering` holds these times; its default
filters nothing (every poll is taken as it is), the daemon passes the configured ones.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
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
    "SignalFilter",
    "SignalFiltering",
    "SignalKind",
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
    flapping: frozenset[SignalKind] = field(default_factory=frozenset)


class SignalKind(StrEnum):
    """Which of a compartment's signals: named in the ``sensor_flapping`` alarm."""

    DOOR = "door"
    LATCH = "latch"
    OCCUPANCY = "occupancy"


@dataclass(frozen=True, slots=True)
class SignalFiltering:
    """Debounce per kind of signal and the flapping rule, in seconds of the caller's clock.

    A debounce of 0 takes every poll as it is; ``flapping_changes`` = 0 never calls a
    signal flapping. The defaults filter nothing: the configured values come from the
    cabinet's ``[timing]`` section.
    """

    door_debounce_s: float = 0.0
    latch_debounce_s: float = 0.0
    occupancy_debounce_s: float = 0.0
    flapping_changes: int = 0
    flapping_window_s: float = 1.0
    flapping_clear_s: float = 1.0

    def __post_init__(self) -> None:
        for name in ("door_debounce_s", "latch_debounce_s", "occupancy_debounce_s"):
            if not getattr(self, name) >= 0:
                raise DomainError(ErrorCode.INVALID_ARGUMENT, f"{name} must be >= 0", field=name)
        if self.flapping_changes < 0:
            raise DomainError(
                ErrorCode.INVALID_ARGUMENT,
                "flapping_changes must be >= 0",
                field="flapping_changes",
            )
        for name in ("flapping_window_s", "flapping_clear_s"):
            if not getattr(self, name) > 0:
                raise DomainError(ErrorCode.INVALID_ARGUMENT, f"{name} must be > 0", field=name)

    def debounce_s(self, kind: SignalKind) -> float:
        """The debounce time of one kind of signal."""
        if kind is SignalKind.DOOR:
            return self.door_debounce_s
        if kind is SignalKind.LATCH:
            return self.latch_debounce_s
        return self.occupancy_debounce_s


class SignalFilter:
    """One wired signal of one compartment: debounced in time, and flapping detected.

    :meth:`sample` takes the signal's raw meaning at each poll of its board (``UNKNOWN``
    when the board is offline or never answered) and returns the alarm events it caused.
    :attr:`value` is what the rest of the domain may believe:

    * ``UNKNOWN`` raw is ``UNKNOWN`` at once (the board's offline rule already waited), and
      the first known sample after it is taken as it is (one good poll restores a board).
    * Otherwise a new level replaces the current one only once it has been read, without
      a break, for the debounce time: at the first poll at least ``debounce_s`` after the
      poll that first saw it. A shorter excursion (a bounce) changes nothing, so a stable
      change is reported at most one poll interval after the debounce time.
    * Every change of the raw level between two polls is counted; more than
      ``flapping_changes`` of them within ``flapping_window_s`` make the signal flapping:
      it reads ``UNKNOWN`` and ``sensor_flapping`` is raised once, with the compartment,
      the signal, its board and channel. Once the raw level has not changed for
      ``flapping_clear_s`` (known polls only), the alarm is cleared once and the signal
      reads its level again.
    """

    def __init__(
        self,
        compartment: str,
        kind: SignalKind,
        wiring: SignalWiring,
        filtering: SignalFiltering,
    ) -> None:
        self.kind = kind
        self.wiring = wiring
        self._debounce_s = filtering.debounce_s(kind)
        self._max_changes = filtering.flapping_changes
        self._window_s = filtering.flapping_window_s
        self._clear_s = filtering.flapping_clear_s
        self._value = TriState.UNKNOWN
        self._raw = TriState.UNKNOWN
        self._candidate: TriState | None = None
        self._candidate_since = 0.0
        self._changes: deque[float] = deque()
        self._steady_since = 0.0
        self._alarms = AlarmSet(
            compartment,
            base_details={"signal": kind.value, "board": wiring.board, "channel": wiring.channel},
        )

    @property
    def value(self) -> TriState:
        """The filtered meaning: ``UNKNOWN`` while flapping."""
        return TriState.UNKNOWN if self.flapping else self._value

    @property
    def flapping(self) -> bool:
        """Whether ``sensor_flapping`` is raised for this signal."""
        return self._alarms.is_active(AlarmKind.SENSOR_FLAPPING)

    def sample(self, raw: TriState, at: float) -> list[DomainEvent]:
        """The raw meaning read at ``at``; returns ``sensor_flapping`` raised or cleared."""
        previous, self._raw = self._raw, raw
        if raw is TriState.UNKNOWN:
            self._value, self._candidate = TriState.UNKNOWN, None
            return []
        if previous is TriState.UNKNOWN:
            self._steady_since = at  # steadiness is judged on what could be read
        elif raw is not previous:
            self._steady_since = at
            if self._max_changes:
                self._changes.append(at)
        while self._changes and self._changes[0] <= at - self._window_s:
            self._changes.popleft()
        if self.flapping:
            if at - self._steady_since < self._clear_s:
                return []
            self._changes.clear()
            self._value, self._candidate = raw, None
            return self._alarms.clear(AlarmKind.SENSOR_FLAPPING, at)
        if self._max_changes and len(self._changes) > self._max_changes:
            self._candidate = None
            return self._alarms.raise_(
                AlarmKind.SENSOR_FLAPPING,
                at,
                {"changes": len(self._changes), "window_s": self._window_s},
            )
        self._debounce(raw, at)
        return []

    @property
    def settled(self) -> bool:
        """Whether another poll reading the same raw meaning can change nothing: no level
        waiting out its debounce, no flapping alarm waiting to clear, the value the raw
        meaning. (Changes older than the flapping window are forgotten at the next sample
        that runs; forgetting them later decides nothing differently.)"""
        return (self._candidate is None and self._value is self._raw
                and not self._alarms.is_active(AlarmKind.SENSOR_FLAPPING))

    def _debounce(self, raw: TriState, at: float) -> None:
        if self._value is TriState.UNKNOWN or raw is self._value:
            self._value, self._candidate = raw, None
            return
        if raw is not self._candidate:
            self._candidate, self._candidate_since = raw, at
        if at - self._candidate_since >= self._debounce_s:
            self._value, self._candidate = raw, None


class BoardHealth(StrEnum):
    """Poll health of one board; see the module docstring."""

    NEVER_POLLED = "never_polled"
    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"


class BoardInputs:
    """Poll health and raw input levels of one board.

    ``poll_succeeded`` / ``poll_failed`` are called by the poller after each read;
    both return the alarm events the poll caused (``board_offline`` raised or cleared).
    """

    def __init__(self, board: str, *, offline_after: int = DEFAULT_OFFLINE_AFTER) -> None:
        if offline_after < 1:
            raise DomainError(
                ErrorCode.INVALID_ARGUMENT, "offline_after must be >= 1", field="offline_after"
            )
        self.board = board
        self.offline_after = offline_after
        self._channels: tuple[bool, ...] = ()
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

    @property
    def channels(self) -> tuple[bool, ...]:
        """The raw levels of the last good poll (empty before the first)."""
        return self._channels

    def level(self, channel: int) -> bool | None:
        """The trusted raw level of ``channel``; None when unknown (never polled, offline,
        or a channel the board did not report)."""
        if self._health in (BoardHealth.NEVER_POLLED, BoardHealth.OFFLINE):
            return None
        if not 0 <= channel < len(self._channels):
            return None
        return self._channels[channel]

    def poll_succeeded(self, levels: Sequence[bool], at: float) -> list[DomainEvent]:
        """Record a good poll (``levels`` as in :class:`drivers.base.InputSnapshot`)."""
        self._channels = tuple([bool(level) for level in levels])
        self._health = BoardHealth.ONLINE
        self._failures = 0
        self._last_good_at = at
        return self._alarms.clear(AlarmKind.BOARD_OFFLINE, at)

    def poll_repeated(self, at: float) -> None:
        """Record a good poll that read the same levels as the last one, the board online:
        only its time is new."""
        self._last_good_at = at

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
    """Readings of every compartment, from the boards' polls and the wiring in the config,
    each signal through its own :class:`SignalFilter`."""

    def __init__(
        self,
        wiring: Iterable[CompartmentWiring],
        *,
        offline_after: int = DEFAULT_OFFLINE_AFTER,
        filtering: SignalFiltering | None = None,
        extra_boards: Iterable[str] = (),
    ) -> None:
        filtering = filtering or SignalFiltering()
        self._wiring: dict[str, CompartmentWiring] = {}
        self._filters: dict[str, dict[SignalKind, SignalFilter]] = {}
        self._on_board: dict[str, list[SignalFilter]] = {}
        boards: dict[str, None] = {}
        for item in wiring:
            if item.compartment in self._wiring:
                raise DomainError(
                    ErrorCode.INVALID_ARGUMENT,
                    f"compartment {item.compartment} wired twice",
                    field="compartment",
                )
            self._wiring[item.compartment] = item
            filters = self._filters[item.compartment] = {}
            for kind, signal in (
                (SignalKind.DOOR, item.door),
                (SignalKind.LATCH, item.latch),
                (SignalKind.OCCUPANCY, item.occupancy),
            ):
                if signal is None:
                    continue
                boards[signal.board] = None
                filters[kind] = SignalFilter(item.compartment, kind, signal, filtering)
                self._on_board.setdefault(signal.board, []).append(filters[kind])
        for name in extra_boards:
            boards[name] = None
        self._boards = {name: BoardInputs(name, offline_after=offline_after) for name in boards}
        #: Per board, the levels of its last good poll when every signal on it was settled
        #: then: a poll reading the same levels again changes nothing (poll_unchanged).
        self._settled: dict[str, tuple[bool, ...]] = {}

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
        """Record a good poll of ``board``; returns ``board_offline`` and ``sensor_flapping``
        raised or cleared."""
        inputs = self.board(board)
        events = inputs.poll_succeeded(levels, at)
        events += self._sample(board, at)
        self._note_settled(board, inputs)
        return events

    def poll_unchanged(self, board: str, levels: Sequence[bool], at: float) -> bool:
        """The common poll, made cheap: when ``board`` is online, reads exactly the levels
        of its last poll and every signal on it is settled (:attr:`SignalFilter.settled`),
        the poll is recorded as good and True is returned: no reading, alarm or filter can
        change, so there is nothing more to do. Otherwise nothing is recorded and False is
        returned: the caller takes the whole path (:meth:`poll_succeeded`)."""
        settled = self._settled.get(board)
        if settled is None:
            return False
        if levels.__class__ is not tuple:
            levels = tuple(levels)
        if levels != settled:
            return False
        inputs = self._boards[board]
        if inputs.health is not BoardHealth.ONLINE:
            return False
        inputs.poll_repeated(at)
        return True

    def settled_on(self, board: str, levels: Sequence[bool]) -> bool:
        """Whether :meth:`poll_unchanged` would take a poll of ``board`` reading ``levels``
        (nothing recorded here)."""
        settled = self._settled.get(board)
        return (settled is not None and tuple(levels) == settled
                and self._boards[board].health is BoardHealth.ONLINE)

    def poll_failed(self, board: str, at: float, reason: str = "") -> list[DomainEvent]:
        """Record a failed poll of ``board``."""
        self._settled.pop(board, None)
        events = self.board(board).poll_failed(at, reason)
        return events + self._sample(board, at)

    def _note_settled(self, board: str, inputs: BoardInputs) -> None:
        """Remember the levels at which every signal of ``board`` is settled, if it is."""
        if inputs.health is BoardHealth.ONLINE and all(
                f.settled for f in self._on_board.get(board, ())):
            self._settled[board] = inputs.channels
        else:
            self._settled.pop(board, None)

    def raw(self, wiring: SignalWiring) -> TriState:
        """The meaning of one wired signal in the last poll, unfiltered."""
        inputs = self._boards.get(wiring.board)
        level = inputs.level(wiring.channel) if inputs is not None else None
        return wiring.active.interpret(level)

    def readings(self, compartment: str) -> CompartmentReadings:
        """Door, latch and occupancy readings of ``compartment`` (None = not fitted),
        filtered: a flapping signal reads unknown and is named in ``flapping``."""
        try:
            filters = self._filters[compartment]
        except KeyError:
            raise DomainError(
                ErrorCode.UNKNOWN_COMPARTMENT,
                f"no compartment {compartment!r}",
                field="compartment",
            ) from None

        def value(kind: SignalKind) -> TriState | None:
            f = filters.get(kind)
            return None if f is None else f.value

        door, latch, occupancy = (
            value(SignalKind.DOOR),
            value(SignalKind.LATCH),
            value(SignalKind.OCCUPANCY),
        )
        return CompartmentReadings(
            compartment,
            door=None if door is None else DoorReading.from_tristate(door),
            latch=None if latch is None else LatchReading.from_tristate(latch),
            occupancy=None if occupancy is None else OccupancyReading.from_tristate(occupancy),
            flapping=frozenset(kind for kind, f in filters.items() if f.flapping),
        )

    def active_alarms(self, compartment: str) -> frozenset[AlarmKind]:
        """The signal alarms of ``compartment`` (``sensor_flapping``) raised now."""
        filters = self._filters.get(compartment, {})
        return frozenset(AlarmKind.SENSOR_FLAPPING for f in filters.values() if f.flapping)

    def _sample(self, board: str, at: float) -> list[DomainEvent]:
        events: list[DomainEvent] = []
        for f in self._on_board.get(board, ()):
            events.extend(f.sample(self.raw(f.wiring), at))
        return events
