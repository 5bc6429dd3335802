"""Driver contracts: what a lock board and a sensor board backend must and may implement.

The controller depends on these classes and on :mod:`drivers.errors`, never on a backend.

Lock board
==========
A *lock board* has ``outputs`` channels that each drive one solenoid (through a relay or a
MOSFET), and ``inputs`` channels that each read one contact (door switch, latch feedback,
occupancy sensor). Which input means what, and with which polarity, is the controller's
business (the cabinet config); a board only reports raw levels.

Public methods hold the policy (validation, caps, the pulse safety net) and are written
once, here. Each backend implements a few small protected hooks (the mechanism):

``_pulse_timed(channel, duration_s)``  *may* implement
    Ask the board to energise ``channel`` and to end the pulse *itself* after
    ``duration_s``. Backends that implement it set ``board_times_pulse = True``. This is
    the preferred way: a crash of the daemon between "on" and "off" cannot leave a
    solenoid energised. It sends **one frame, never retried**: when the acknowledgement
    is lost, late or garbled the board may have acted, and a second frame could
    energise the solenoid again, beyond the cap.
``_set_output(channel, on)``  *must* implement
    Switch one output on or off, now. Switching *on* is a pulse frame: one frame, never
    retried. Switching *off* is safe to repeat: retried, and sent without delay (the
    energised-time cap depends on it).
``_read_output(channel)``  *may* implement
    Read back whether output ``channel`` is energised now (``None``: the board cannot
    tell). The pulse policy uses it to establish the outcome of a pulse whose
    acknowledgement did not come back.
``_acked_late(channel)``  *may* implement
    Whether the board acknowledged the last pulse frame of ``channel`` after the
    timeout (a late echo, waited for as long as a late reply can come): the board's
    own word that it acted.
``_all_off()``  *must* implement
    Switch every output off, in as few transactions as the board allows.
``_read_inputs()``  *must* implement
    Read *every* input of the board in *one* transaction and return raw levels, one per
    input channel, ``True`` for an energised/closed contact as the board reports it.
``_describe()``  *may* implement
    Return whatever identity the board can report (firmware version, address).

Every hook raises only :mod:`drivers.errors` types: :class:`~drivers.errors.BoardTimeout`
when the board does not answer, :class:`~drivers.errors.FrameError` when the answer is
garbled or belongs to another request, :class:`~drivers.errors.BoardRejected` on a
Modbus exception response, :class:`~drivers.errors.BusError` when the line itself is
gone. The public methods add :class:`~drivers.errors.ChannelError` for a bad channel.

A pulse accepted by the board is *not* a door opened: :meth:`LockBoard.pulse` returns
when the board acknowledged the command; whether the door opened is for the sensors to
tell.

One command, one pulse frame
----------------------------
:meth:`LockBoard.pulse` never sends a pulse frame twice. When its acknowledgement is
lost, late, garbled or cut short, it establishes the outcome instead:

* the output reads back *on*, or the board's late echo came in: pulsed
  (:class:`PulseReceipt` with ``confirmed_by="readback"`` or ``"ack"``);
* the output reads back *off* while the pulse, had it been carried out, would still be
  running (always, for a driver-timed pulse): not pulsed, an ordinary
  :class:`~drivers.errors.BoardError`;
* anything else (the read-back failed, the board cannot read outputs, or it read off
  after the pulse would have ended): :class:`~drivers.errors.PulseUnconfirmed`, with
  the evidence.

An exception response, or a line that failed before the frame left
(``BusError.frame_sent`` False), is an ordinary error: the board did not act. A
driver-timed pulse is switched off at ``sent + duration`` whatever happened to the "on"
frame's acknowledgement, and the "off" is retried: the energised time never exceeds the
capped duration by more than the "off" frame's own latency.

Sensor board
============
A *sensor board* reports ``channels`` numeric values (temperatures in °C) in one
transaction through ``_read_values()``; a channel the board flags as invalid (probe
disconnected) is ``None``.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.errors import (
    BoardError,
    BoardRejected,
    BusError,
    ChannelError,
    DriverConfigError,
    DriverError,
    FrameError,
    PulseUnconfirmed,
)

__all__ = [
    "BoardInfo",
    "InputSnapshot",
    "LockBoard",
    "PulseReceipt",
    "SensorBoard",
    "SensorSnapshot",
]

log = logging.getLogger(__name__)

#: The longest pulse any board will be asked for. A solenoid energised for longer than
#: this overheats; the cabinet config may lower it, never raise it.
HARD_PULSE_CAP_S = 10.0


@dataclass(frozen=True, slots=True)
class BoardInfo:
    """What a board says about itself, plus what the config says it is."""

    bus: str
    address: int
    profile: str
    outputs: int
    inputs: int
    board_times_pulse: bool
    firmware: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InputSnapshot:
    """Raw input levels of one board, read in one transaction.

    ``levels[i]`` is input channel ``i`` as the board reports it. ``at`` is the
    monotonic time at which the reply was received.
    """

    bus: str
    address: int
    levels: tuple[bool, ...]
    at: float


@dataclass(frozen=True, slots=True)
class SensorSnapshot:
    """Values of one sensor board, read in one transaction; ``None`` where the board
    flags a channel invalid."""

    bus: str
    address: int
    values: tuple[float | None, ...]
    at: float


@dataclass(frozen=True, slots=True)
class PulseReceipt:
    """The board accepted a pulse command. ``timed_by`` says who ends the pulse;
    ``confirmed_by`` how the driver knows it happened: ``"ack"`` (the board's reply to the
    pulse frame, possibly late) or ``"readback"`` (the reply was lost, the output read
    back as on); ``evidence`` says what went wrong with the reply, empty when nothing
    did."""

    bus: str
    address: int
    channel: int
    duration_s: float
    timed_by: str  # "board" or "driver"
    sent_at: float
    acked_at: float
    confirmed_by: str = "ack"
    evidence: str = ""


class LockBoard(abc.ABC):
    """A board with solenoid outputs and contact inputs. See the module docstring."""

    #: Whether the backend implements ``_pulse_timed`` (the board ends the pulse itself).
    board_times_pulse: bool = False
    #: Resolution of the board's pulse timer; durations are rounded up to a multiple.
    pulse_resolution_s: float = 0.1

    def __init__(
        self,
        *,
        bus: str,
        address: int,
        outputs: int,
        inputs: int,
        profile: str,
        max_pulse_s: float = HARD_PULSE_CAP_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if outputs < 0 or inputs < 0:
            raise DriverConfigError(f"{profile}: outputs and inputs must be >= 0")
        if not 0 < max_pulse_s <= HARD_PULSE_CAP_S:
            raise DriverConfigError(
                f"{profile}: max_pulse_s must be in (0, {HARD_PULSE_CAP_S}], got {max_pulse_s}"
            )
        self.bus = bus
        self.address = address
        self.outputs = outputs
        self.inputs = inputs
        self.profile = profile
        self.max_pulse_s = max_pulse_s
        self._clock = clock

    @property
    def name(self) -> str:
        return f"{self.bus}@{self.address}"

    # -- public policy ---------------------------------------------------------------

    async def pulse(self, channel: int, duration_s: float) -> PulseReceipt:
        """Energise ``channel`` for ``duration_s`` (capped at ``max_pulse_s``), with
        exactly one pulse frame (see "One command, one pulse frame" above).

        Returns when the board acknowledged the command or the outcome was read back.
        Raises :class:`~drivers.errors.PulseUnconfirmed` when the outcome could not be
        established, another :class:`~drivers.errors.DriverError` when the board did
        not pulse. When the board cannot time the pulse, the driver switches the output
        off itself, in a ``finally`` so that cancellation or an error while on still
        switches it off (best effort).
        """
        self._check_output(channel)
        if duration_s <= 0:
            raise ValueError(f"{self.name}: pulse duration must be > 0, got {duration_s}")
        duration = min(duration_s, self.max_pulse_s)
        sent = self._clock()
        if not self.board_times_pulse:
            return await self._pulse_driver_timed(channel, duration, sent)
        try:
            await self._pulse_timed(channel, duration)
        except DriverError as exc:
            if not _outcome_unknown(exc):
                raise
            return await self._establish(channel, duration, sent, exc)
        acked = self._clock()
        return PulseReceipt(self.bus, self.address, channel, duration, "board", sent, acked)

    async def _pulse_driver_timed(
        self, channel: int, duration: float, sent: float
    ) -> PulseReceipt:
        unconfirmed: PulseUnconfirmed | None = None
        receipt: PulseReceipt | None = None
        try:
            try:
                await self._set_output(channel, True)
            except DriverError as exc:
                if not _outcome_unknown(exc):
                    raise
                # Read back while the output would still be on: it stays on until we
                # switch it off, so "off" now means the frame did not act.
                try:
                    receipt = await self._establish(channel, duration, sent, exc, driver=True)
                except PulseUnconfirmed as unknown:
                    unconfirmed = unknown
            else:
                receipt = PulseReceipt(
                    self.bus, self.address, channel, duration, "driver", sent, self._clock()
                )
            await asyncio.sleep(max(0.0, sent + duration - self._clock()))
        finally:
            try:
                await asyncio.shield(self._switch_off(channel))
            except DriverError as off_exc:
                if receipt is None and unconfirmed is None:
                    # "On" was refused or known not to have acted: that error stands.
                    log.warning("%s: switching channel %d off failed too: %s",
                                self.name, channel, off_exc)
                else:
                    # Not a refusal: the output may have been (and still be) energised.
                    raise self._off_failed(channel, duration, sent, receipt, unconfirmed,
                                           off_exc) from off_exc
        if unconfirmed is not None:
            raise unconfirmed
        assert receipt is not None
        return receipt

    async def _switch_off(self, channel: int) -> None:
        """Switch a driver-timed output off (retried by the backend); when no "off"
        acknowledgement came back, read the output back: off is off."""
        try:
            await self._set_output(channel, False)
        except DriverError as exc:
            if isinstance(exc, BoardRejected):
                raise
            try:
                still_on = await self._read_output(channel)
            except DriverError:
                raise exc from None
            if still_on is not False:
                raise

    def _off_failed(
        self, channel: int, duration: float, sent: float, receipt: PulseReceipt | None,
        unconfirmed: PulseUnconfirmed | None, off_exc: DriverError,
    ) -> PulseUnconfirmed:
        before = (
            unconfirmed.evidence if unconfirmed is not None
            else f"switched on (confirmed by {receipt.confirmed_by if receipt else '?'})"
        )
        evidence = f"{before}; switching off failed, the output may still be on: {off_exc}"
        return PulseUnconfirmed(
            f"channel {channel}: pulse outcome unknown ({evidence})",
            bus=self.bus, address=self.address, channel=channel, duration_s=duration,
            sent_at=sent, evidence=evidence,
        )

    async def _establish(
        self, channel: int, duration: float, sent: float, exc: DriverError, *,
        driver: bool = False,
    ) -> PulseReceipt:
        """The pulse frame went out and its acknowledgement did not come back usable:
        find out what the board did, without sending the pulse again."""
        timed_by = "driver" if driver else "board"
        failure = f"pulse frame sent, reply unusable: {exc}"
        try:
            state = await self._read_output(channel)
            note = (
                "the board cannot read its outputs back" if state is None
                else f"output read back {'on' if state else 'off'}"
            )
        except DriverError as read_exc:
            state = None
            note = f"read-back failed: {read_exc}"
        read_at = self._clock()
        evidence = f"{failure}; {note} {read_at - sent:.3f} s after the frame"
        if state is True:
            return PulseReceipt(
                self.bus, self.address, channel, duration, timed_by, sent, read_at,
                confirmed_by="readback", evidence=evidence,
            )
        try:
            acked_late = await self._acked_late(channel)
        except DriverError:
            acked_late = False
        if acked_late:
            return PulseReceipt(
                self.bus, self.address, channel, duration, timed_by, sent, read_at,
                confirmed_by="ack", evidence=f"{evidence}; the board acknowledged late",
            )
        if state is False and (driver or read_at < sent + duration):
            raise BoardError(
                f"channel {channel} not pulsed: {evidence}, while the pulse would still "
                "have been on",
                bus=self.bus, address=self.address,
            ) from exc
        if state is False:
            evidence += f", after a {duration:.3f} s pulse would have ended"
        raise PulseUnconfirmed(
            f"channel {channel}: pulse outcome unknown ({evidence})",
            bus=self.bus, address=self.address, channel=channel, duration_s=duration,
            sent_at=sent, evidence=evidence,
        ) from exc

    async def all_off(self) -> None:
        """Switch every output off. Called at start-up and on the way out."""
        await self._all_off()

    async def read_inputs(self) -> InputSnapshot:
        """Read every input in one transaction."""
        levels = await self._read_inputs()
        if len(levels) != self.inputs:
            raise FrameError(
                f"expected {self.inputs} inputs, backend returned {len(levels)}",
                bus=self.bus,
                address=self.address,
            )
        return InputSnapshot(self.bus, self.address, tuple(levels), self._clock())

    async def describe(self) -> BoardInfo:
        """Identity of the board, as far as it can tell."""
        return await self._describe()

    async def close(self) -> None:
        """Release what the board holds (not the line: the line has its own owner).
        Safe to call twice."""

    # -- backend hooks ---------------------------------------------------------------

    async def _pulse_timed(self, channel: int, duration_s: float) -> None:
        raise NotImplementedError

    @abc.abstractmethod
    async def _set_output(self, channel: int, on: bool) -> None: ...

    @abc.abstractmethod
    async def _all_off(self) -> None: ...

    @abc.abstractmethod
    async def _read_inputs(self) -> tuple[bool, ...]: ...

    async def _read_output(self, channel: int) -> bool | None:
        return None

    async def _acked_late(self, channel: int) -> bool:
        return False

    async def _describe(self) -> BoardInfo:
        return BoardInfo(
            self.bus, self.address, self.profile, self.outputs, self.inputs, self.board_times_pulse
        )

    # -- helpers ---------------------------------------------------------------------

    def _check_output(self, channel: int) -> None:
        if not 0 <= channel < self.outputs:
            raise ChannelError(
                f"{self.name}: output channel {channel} outside 0..{self.outputs - 1}",
                board=self.name,
                channel=channel,
            )


def _outcome_unknown(exc: DriverError) -> bool:
    """Whether a failed pulse frame may have acted: no usable reply came back, and the
    frame may have reached the board."""
    if isinstance(exc, BoardRejected):
        return False  # an answer: the board refused, it did not act
    if isinstance(exc, BusError):
        return exc.frame_sent
    return isinstance(exc, BoardError)


class SensorBoard(abc.ABC):
    """A board that reports numeric values (temperature probes). See the module docstring."""

    def __init__(
        self,
        *,
        bus: str,
        address: int,
        channels: int,
        profile: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.address = address
        self.channels = channels
        self.profile = profile
        self._clock = clock

    @property
    def name(self) -> str:
        return f"{self.bus}@{self.address}"

    async def read_values(self) -> SensorSnapshot:
        """Read every channel in one transaction."""
        values = await self._read_values()
        if len(values) != self.channels:
            raise FrameError(
                f"expected {self.channels} values, backend returned {len(values)}",
                bus=self.bus,
                address=self.address,
            )
        return SensorSnapshot(self.bus, self.address, tuple(values), self._clock())

    async def close(self) -> None:
        """Safe to call twice."""

    @abc.abstractmethod
    async def _read_values(self) -> tuple[float | None, ...]: ...
