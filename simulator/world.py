"""The physical world of one cabinet: locks, latches, doors, parcels, temperatures.

Pure: no I/O, no asyncio; time comes from an injected clock (``time.monotonic`` by
default, the same clock the daemon uses, so ground-truth times compare with the
daemon's). Every public method first brings the world up to "now" (board-timed pulses
that ended, temperatures that drifted), so the model needs no ticking task.

Physics of one compartment
--------------------------
* A lock output *energised* (coil on, or inside a board-timed flash pulse) releases the
  latch of every compartment wired to it, unless that latch has a ``stuck_latch`` fault.
* The door opens only when somebody *pulls* it while the latch is released. A pull on a
  latched door changes nothing (logged as ``pull_blocked``). :meth:`Door.pull_when_released`
  is a person waiting with a hand on the handle: the door opens the instant the latch
  releases. :meth:`Door.force_open` is a crowbar (opens whatever the latch).
* When the output de-energises the latch re-engages if the door is still closed; an open
  door keeps its latch released until it is closed, then it relatches (a spring latch).
* Parcels are placed and removed through an open door; occupancy is "at least one".
* Input levels follow the wiring polarity of the config; sensor faults override them.

Temperature (per zone, first order, exact between events)
---------------------------------------------------------
With a working compressor the zone is pulled toward its setpoint with ``tau_cooling_s``
(the thermostat compensates the insulation leak); each open door of the zone pulls it
toward ambient with ``tau_door_open_s``; a failed compressor leaves only the leak
(``tau_leak_s``) and the doors. Between two events the conditions are constant, so the
exponential solution is applied exactly, whatever the step.

Thread safety: one re-entrant lock around every public method, because the RTU transport
thread and the asyncio loop both touch the world.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from simulator.config import CabinetConfig, CompartmentConfig, SignalRef, ZoneConfig
from simulator.errors import InvalidRequest, UnknownTarget
from simulator.faults import (
    BOARD_FAULTS,
    CHANNEL_FAULTS,
    COUNTED_FAULTS,
    FAULT_KINDS,
    ZONE_FAULTS,
    Fault,
    FaultBook,
)

__all__ = ["Door", "Faults", "GroundTruth", "TruthEvent", "World", "Zone"]

Clock = Callable[[], float]
SIGNALS = ("door", "latch", "occupancy")
#: The ground-truth log keeps this many events (a long lane day fits easily).
TRUTH_CAPACITY = 200_000


@dataclass(frozen=True, slots=True)
class TruthEvent:
    """Something that physically happened, at world time ``at``.

    kinds: ``output_on``/``output_off`` (board, channel; ``output_off`` has detail
    ``energised_s``, how long the output was on), ``pulse_received`` (board, channel,
    detail ``duration_s``: a board-timed pulse frame carried out), ``write_acted``
    (board, detail ``function``, ``address``, ``pdu``: every write frame a board
    carried out, whatever happened to its reply), ``serial_settings_changed`` (board,
    detail ``value``), ``latch_released``/``latch_engaged``/``latch_stuck``,
    ``door_opened``/``door_closed``/``door_forced``/``pull_blocked``,
    ``parcel_placed``/``parcel_removed`` (compartment), ``address_changed`` (board,
    detail ``old``/``new``), ``fault_set``/``fault_cleared`` (detail: the fault).
    """

    at: float
    kind: str
    compartment: str | None = None
    board: str | None = None
    channel: int | None = None
    zone: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"at": self.at, "kind": self.kind}
        for name in ("compartment", "board", "channel", "zone"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.detail:
            out["detail"] = dict(self.detail)
        return out


class GroundTruth:
    """The time-stamped record of what physically happened; tests compare the daemon's
    reports against it. Thread-safe, bounded (oldest events drop first)."""

    def __init__(self, capacity: int = TRUTH_CAPACITY) -> None:
        self._events: deque[TruthEvent] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def record(self, event: TruthEvent) -> None:
        with self._lock:
            self._events.append(event)

    def events(
        self,
        kind: str | None = None,
        *,
        compartment: str | None = None,
        board: str | None = None,
        since: float | None = None,
    ) -> list[TruthEvent]:
        """Events matching every given filter, oldest first."""
        with self._lock:
            snapshot = list(self._events)
        return [
            e
            for e in snapshot
            if (kind is None or e.kind == kind)
            and (compartment is None or e.compartment == compartment)
            and (board is None or e.board == board)
            and (since is None or e.at >= since)
        ]

    def count(self, kind: str | None = None, *, compartment: str | None = None) -> int:
        return len(self.events(kind, compartment=compartment))

    def last(self, kind: str | None = None, *, compartment: str | None = None) -> TruthEvent | None:
        found = self.events(kind, compartment=compartment)
        return found[-1] if found else None

    def clear(self) -> None:
        with self._lock:
            self._events.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    def __iter__(self) -> Iterator[TruthEvent]:
        return iter(self.events())


@dataclass(slots=True)
class _CompartmentState:
    config: CompartmentConfig
    latched: bool = True
    door_open: bool = False
    parcels: int = 0
    waiting_pull: bool = False


@dataclass(slots=True)
class _ZoneState:
    config: ZoneConfig
    setpoint_c: float
    temp_c: float
    open_doors: int = 0


@dataclass(slots=True)
class _Output:
    on: bool = False
    #: A board-timed change pending: (world time, level it switches to).
    pending: tuple[float, bool] | None = None
    #: World time the output was last switched on.
    since: float = 0.0


class World:
    """The whole cabinet. See the module docstring for the physics."""

    def __init__(self, config: CabinetConfig, *, clock: Clock = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.truth = GroundTruth()
        self.fault_book = FaultBook()
        self._lock = threading.RLock()
        self._now = clock()
        self._rng = random.Random(config.simulator.seed)
        self._compartments = {c.id: _CompartmentState(c) for c in config.compartments}
        for cid, n in config.simulator.initial_parcels.items():
            self._compartments[cid].parcels = n
        self._outputs: dict[tuple[str, int], _Output] = {}
        self._locks: dict[tuple[str, int], list[str]] = {}
        self._inputs: dict[tuple[str, int], tuple[str, str, SignalRef]] = {}
        for c in config.compartments:
            self._locks.setdefault((c.lock.board, c.lock.channel), []).append(c.id)
            for name in SIGNALS:
                ref: SignalRef | None = getattr(c, name)
                if ref is not None:
                    self._inputs[(ref.board, ref.channel)] = (c.id, name, ref)
        thermal = config.simulator.thermal
        self._zones: dict[str, _ZoneState] = {}
        self._probes: dict[tuple[str, int], str] = {}
        for z in config.zones:
            setpoint = thermal.setpoint_c.get(z.name, _default_setpoint(z, thermal.ambient_c))
            start = thermal.initial_c.get(z.name, setpoint)
            self._zones[z.name] = _ZoneState(z, setpoint, start)
            if z.probe is not None:
                self._probes[(z.probe.board, z.probe.channel)] = z.name
        self.faults = Faults(self)

    # -- people and tests ------------------------------------------------------------

    def door(self, compartment_id: str) -> Door:
        """The door of a compartment, to act on as a person would."""
        self._compartment(compartment_id)
        return Door(self, compartment_id)

    def zone(self, name: str) -> Zone:
        if name not in self._zones:
            raise UnknownTarget("zone", name)
        return Zone(self, name)

    def compartment_ids(self) -> list[str]:
        return list(self._compartments)

    def snapshot(self) -> dict[str, Any]:
        """Everything physical, as plain data (for the control channel and displays)."""
        with self._lock:
            self._advance()
            return {
                "at": self._now,
                "compartments": {
                    cid: {
                        "door_open": s.door_open,
                        "latched": s.latched,
                        "parcels": s.parcels,
                        "lock_energised": self._energised(
                            s.config.lock.board, s.config.lock.channel
                        ),
                    }
                    for cid, s in self._compartments.items()
                },
                "zones": {
                    name: {
                        "temperature_c": round(z.temp_c, 3),
                        "setpoint_c": z.setpoint_c,
                        "compressor_ok": self.fault_book.zone("compressor_failure", name) is None,
                        "open_doors": z.open_doors,
                    }
                    for name, z in self._zones.items()
                },
                "faults": [f.as_dict() for f in self.fault_book.active()],
            }

    # -- what the boards see ---------------------------------------------------------

    def output_level(self, board: str, channel: int) -> bool:
        """Whether an output (relay coil) is energised now."""
        with self._lock:
            self._advance()
            return self._energised(board, channel)

    def set_output(self, board: str, channel: int, on: bool) -> None:
        """Switch an output now; cancels a board-timed pulse in progress on it."""
        with self._lock:
            self._advance()
            out = self._outputs.setdefault((board, channel), _Output())
            out.pending = None
            self._switch(board, channel, on, self._now)

    def pulse_output(
        self, board: str, channel: int, duration_s: float, *, level: bool = True
    ) -> None:
        """A board-timed pulse: switch to ``level`` now and back after ``duration_s``,
        ended by the board itself (``level=False`` is a "flash off")."""
        if duration_s < 0:
            raise InvalidRequest(f"pulse duration must be >= 0, got {duration_s}")
        with self._lock:
            self._advance()
            self.truth.record(
                TruthEvent(
                    self._now,
                    "pulse_received",
                    board=board,
                    channel=channel,
                    detail={"duration_s": duration_s, "level": level},
                )
            )
            out = self._outputs.setdefault((board, channel), _Output())
            self._switch(board, channel, level, self._now)
            out.pending = (self._now + duration_s, not level) if duration_s > 0 else None
            if duration_s == 0:
                self._switch(board, channel, not level, self._now)

    def input_level(self, board: str, channel: int) -> bool:
        """The raw level an input channel reads now: wiring polarity, then sensor faults.
        An unwired input reads ``False``."""
        with self._lock:
            self._advance()
            wired = self._inputs.get((board, channel))
            if wired is None:
                level = False
                polarity = "high"
            else:
                cid, signal, ref = wired
                level = ref.level_for(self._signal_active(self._compartments[cid], signal))
                polarity = ref.active
            cut = self.fault_book.channel("cut_wire", board, channel)
            if cut is not None:
                return (
                    cut.level
                    if cut.level is not None
                    else self.config.simulator.cut_wire_level[polarity]
                )
            flap = self.fault_book.channel("flapping", board, channel)
            flapped = flap is not None and int((self._now - flap.since) / flap.period_s) % 2 == 1
            if flapped:
                level = not level
            return level

    def probe_value(self, board: str, channel: int) -> float | None:
        """Temperature a probe channel measures, or ``None`` (no sensor: unwired channel
        or a ``cut_wire`` fault), which the board encodes as its invalid sentinel."""
        with self._lock:
            self._advance()
            zone = self._probes.get((board, channel))
            if zone is None or self.fault_book.channel("cut_wire", board, channel) is not None:
                return None
            noise = self.config.simulator.probe_noise_c
            jitter = self._rng.uniform(-noise, noise) if noise > 0 else 0.0
            return self._zones[zone].temp_c + jitter

    def record_write(self, board: str, function: int, address: int, pdu: bytes) -> None:
        """Ground truth: ``board`` carried out a write frame (its reply may be lost)."""
        with self._lock:
            self.truth.record(
                TruthEvent(
                    self.clock(), "write_acted", board=board,
                    detail={"function": function, "address": address, "pdu": pdu.hex()},
                )
            )

    def energised_periods(self, board: str, channel: int) -> list[tuple[float, float | None]]:
        """``(on, off)`` world times of every period output ``channel`` of ``board``
        was energised, oldest first (``off`` None while it still is)."""
        with self._lock:
            self._advance()
        periods: list[tuple[float, float | None]] = []
        for event in self.truth.events(board=board):
            if event.channel != channel:
                continue
            if event.kind == "output_on":
                periods.append((event.at, None))
            elif event.kind == "output_off" and periods and periods[-1][1] is None:
                periods[-1] = (periods[-1][0], event.at)
        return periods

    def record_serial_settings(self, board: str, value: int) -> None:
        with self._lock:
            self.truth.record(
                TruthEvent(
                    self.clock(), "serial_settings_changed", board=board,
                    detail={"value": value},
                )
            )

    def record_address_change(self, board: str, old: int, new: int) -> None:
        with self._lock:
            self.truth.record(
                TruthEvent(
                    self.clock(), "address_changed", board=board, detail={"old": old, "new": new}
                )
            )

    # -- internals -------------------------------------------------------------------

    def _compartment(self, compartment_id: str) -> _CompartmentState:
        try:
            return self._compartments[compartment_id]
        except KeyError:
            raise UnknownTarget("compartment", compartment_id) from None

    def _energised(self, board: str, channel: int) -> bool:
        out = self._outputs.get((board, channel))
        return out is not None and out.on

    def _signal_active(self, state: _CompartmentState, signal: str) -> bool:
        if signal == "door":
            return state.door_open
        if signal == "latch":
            return not state.latched
        return state.parcels > 0

    def _log(self, kind: str, at: float, **kw: Any) -> None:
        self.truth.record(TruthEvent(at, kind, **kw))

    def _advance(self) -> None:
        """Bring the world to the clock's now: due board-timed switches in time order,
        temperatures integrated between them. Bounded: one pass per pending switch."""
        now = max(self.clock(), self._now)
        for _ in range(len(self._outputs) + 1):
            due = [
                (out.pending[0], key)
                for key, out in self._outputs.items()
                if out.pending is not None and out.pending[0] <= now
            ]
            if not due:
                break
            at, key = min(due)
            self._integrate(at)
            out = self._outputs[key]
            assert out.pending is not None
            level = out.pending[1]
            out.pending = None
            self._switch(key[0], key[1], level, at)
        self._integrate(now)

    def _switch(self, board: str, channel: int, on: bool, at: float) -> None:
        out = self._outputs.setdefault((board, channel), _Output())
        if out.on == on:
            return
        out.on = on
        if on:
            out.since = at
            self._log("output_on", at, board=board, channel=channel)
        else:
            self._log("output_off", at, board=board, channel=channel,
                      detail={"energised_s": at - out.since})
        self._lock_changed(board, channel, on, at)

    def _lock_changed(self, board: str, channel: int, on: bool, at: float) -> None:
        for cid in self._locks.get((board, channel), ()):
            state = self._compartments[cid]
            if on:
                if self.fault_book.channel("stuck_latch", board, channel) is not None:
                    self._log("latch_stuck", at, compartment=cid)
                    continue
                if state.latched:
                    state.latched = False
                    self._log("latch_released", at, compartment=cid)
                if state.waiting_pull and not state.door_open:
                    state.waiting_pull = False
                    self._open(state, at, "door_opened")
            elif not state.door_open and not state.latched:
                state.latched = True
                self._log("latch_engaged", at, compartment=cid)

    def _open(self, state: _CompartmentState, at: float, kind: str) -> None:
        state.door_open = True
        if state.config.zone is not None:
            self._zones[state.config.zone].open_doors += 1
        self._log(kind, at, compartment=state.config.id)

    def _integrate(self, until: float) -> None:
        dt = until - self._now
        if dt <= 0:
            return
        thermal = self.config.simulator.thermal
        ambient = thermal.ambient_c
        for name, z in self._zones.items():
            failed = self.fault_book.zone("compressor_failure", name) is not None
            rates: list[tuple[float, float]] = []  # (rate 1/s, temperature pulled toward)
            if z.config.kind == "ambient":
                rates.append((1.0 / thermal.tau_cooling_s, ambient))
            elif failed:
                rates.append((1.0 / thermal.tau_leak_s, ambient))
            else:
                rates.append((1.0 / thermal.tau_cooling_s, z.setpoint_c))
            if z.open_doors:
                rates.append((z.open_doors / thermal.tau_door_open_s, ambient))
            k = sum(r for r, _ in rates)
            equilibrium = sum(r * target for r, target in rates) / k
            z.temp_c = equilibrium + (z.temp_c - equilibrium) * math.exp(-k * dt)
        self._now = until

    # -- door actions (called through Door) --------------------------------------------

    def _pull(self, cid: str) -> bool:
        with self._lock:
            self._advance()
            state = self._compartment(cid)
            if state.door_open:
                return True
            if state.latched:
                self._log("pull_blocked", self._now, compartment=cid)
                return False
            self._open(state, self._now, "door_opened")
            return True

    def _pull_when_released(self, cid: str, wait: bool) -> bool:
        with self._lock:
            self._advance()
            state = self._compartment(cid)
            if not wait:
                state.waiting_pull = False
                return state.door_open
            if state.door_open:
                return True
            if not state.latched:
                self._open(state, self._now, "door_opened")
                return True
            state.waiting_pull = True
            return False

    def _force_open(self, cid: str) -> None:
        with self._lock:
            self._advance()
            state = self._compartment(cid)
            if not state.door_open:
                self._open(state, self._now, "door_forced")

    def _close(self, cid: str) -> None:
        with self._lock:
            self._advance()
            state = self._compartment(cid)
            state.waiting_pull = False
            if not state.door_open:
                return
            state.door_open = False
            if state.config.zone is not None:
                self._zones[state.config.zone].open_doors -= 1
            self._log("door_closed", self._now, compartment=cid)
            lock = state.config.lock
            if not state.latched and not self._energised(lock.board, lock.channel):
                state.latched = True
                self._log("latch_engaged", self._now, compartment=cid)

    def _parcels(self, cid: str, delta: int) -> int:
        with self._lock:
            self._advance()
            state = self._compartment(cid)
            if not state.door_open:
                raise InvalidRequest(
                    f"compartment {cid!r}: the door is closed",
                    field="compartment",
                    code="door_closed",
                )
            if delta < 0 and state.parcels == 0:
                raise InvalidRequest(
                    f"compartment {cid!r} is empty", field="compartment", code="empty"
                )
            state.parcels += delta
            self._log(
                "parcel_placed" if delta > 0 else "parcel_removed",
                self._now,
                compartment=cid,
                detail={"parcels": state.parcels},
            )
            return state.parcels

    # -- faults (called through Faults) --------------------------------------------------

    def _set_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self._advance()  # temperatures integrate up to the change under the old regime
            fault = FaultBook.restamp(fault, self._now)
            self.fault_book.put(fault)
            self._log(
                "fault_set",
                self._now,
                board=fault.board,
                channel=fault.channel,
                zone=fault.zone,
                detail=fault.as_dict(),
            )
            return fault

    def _clear_faults(
        self, kind: str | None, board: str | None, channel: int | None, zone: str | None
    ) -> list[Fault]:
        with self._lock:
            self._advance()
            gone = self.fault_book.remove(kind, board=board, channel=channel, zone=zone)
            for f in gone:
                freed_while_energised = (
                    f.kind == "stuck_latch"
                    and f.board is not None
                    and f.channel is not None
                    and self._energised(f.board, f.channel)
                )
                if freed_while_energised:  # the latch releases now
                    assert f.board is not None
                    assert f.channel is not None
                    self._lock_changed(f.board, f.channel, True, self._now)
                self._log(
                    "fault_cleared",
                    self._now,
                    board=f.board,
                    channel=f.channel,
                    zone=f.zone,
                    detail=f.as_dict(),
                )
            return gone

    def _set_temperature(self, zone: str, value: float) -> None:
        with self._lock:
            self._advance()
            self._zones[zone].temp_c = value

    def _temperature(self, zone: str) -> float:
        with self._lock:
            self._advance()
            return self._zones[zone].temp_c


def _default_setpoint(zone: ZoneConfig, ambient: float) -> float:
    if zone.min_c is not None and zone.max_c is not None:
        return (zone.min_c + zone.max_c) / 2
    return {"chilled": 3.0, "frozen": -18.0}.get(zone.kind, ambient)


class Door:
    """One compartment's door, as a person (or a test) acts on it."""

    def __init__(self, world: World, compartment_id: str) -> None:
        self._world = world
        self.compartment_id = compartment_id

    def pull(self) -> bool:
        """Pull the handle once. Opens the door if the latch is released; returns
        whether the door is open afterwards."""
        return self._world._pull(self.compartment_id)

    def pull_when_released(self, wait: bool = True) -> bool:
        """Keep a hand on the handle: the door opens the instant the latch releases.
        Returns whether it is open already. ``wait=False`` lets go."""
        return self._world._pull_when_released(self.compartment_id, wait)

    def force_open(self) -> None:
        """Open the door whatever the latch (a crowbar, a broken lock)."""
        self._world._force_open(self.compartment_id)

    def close(self) -> None:
        """Push the door shut; the latch re-engages unless the lock is still energised."""
        self._world._close(self.compartment_id)

    def place_parcel(self) -> int:
        """Put one parcel in through the open door; returns the count. Raises
        :class:`~simulator.errors.InvalidRequest` if the door is closed."""
        return self._world._parcels(self.compartment_id, +1)

    def remove_parcel(self) -> int:
        """Take one parcel out through the open door; returns the count left."""
        return self._world._parcels(self.compartment_id, -1)

    def _state(self) -> _CompartmentState:
        with self._world._lock:
            self._world._advance()
            return self._world._compartments[self.compartment_id]

    @property
    def is_open(self) -> bool:
        return self._state().door_open

    @property
    def is_latched(self) -> bool:
        return self._state().latched

    @property
    def parcels(self) -> int:
        return self._state().parcels


class Zone:
    """One temperature zone."""

    def __init__(self, world: World, name: str) -> None:
        self._world = world
        self.name = name

    @property
    def temperature_c(self) -> float:
        return self._world._temperature(self.name)

    def set_temperature(self, value_c: float) -> None:
        """Put the zone at a temperature now (test set-up); physics continues from it."""
        self._world._set_temperature(self.name, value_c)

    def fail_compressor(self) -> Fault:
        return self._world.faults.set("compressor_failure", zone=self.name)

    def repair_compressor(self) -> None:
        self._world.faults.clear("compressor_failure", zone=self.name)


class Faults:
    """Set and clear faults by name, at run time. See :mod:`simulator.faults` for the
    kinds. Targets are checked against the config; ``compartment`` (+ ``signal`` for
    input faults) is resolved to its board and channel."""

    def __init__(self, world: World) -> None:
        self._world = world

    def set(
        self,
        kind: str,
        *,
        board: str | None = None,
        channel: int | None = None,
        compartment: str | None = None,
        signal: str | None = None,
        zone: str | None = None,
        latency_s: float = 0.0,
        period_s: float = 0.5,
        level: bool | None = None,
        code: int = 6,
        delay_s: float = 0.0,
        writes_only: bool = False,
        count: int | None = None,
    ) -> Fault:
        """Activate a fault (replacing one of the same kind on the same target)."""
        board, channel, zone = self._target(kind, board, channel, compartment, signal, zone)
        if kind == "slow" and latency_s <= 0:
            raise InvalidRequest("slow needs latency_s > 0", field="latency_s")
        if kind == "late" and not 0 < delay_s <= 60:
            raise InvalidRequest("late needs 0 < delay_s <= 60", field="delay_s")
        if count is not None and (kind not in COUNTED_FAULTS or count < 1):
            raise InvalidRequest(
                f"count (>= 1) applies to {', '.join(COUNTED_FAULTS)} only", field="count"
            )
        if kind == "flapping" and period_s <= 0:
            raise InvalidRequest("flapping needs period_s > 0", field="period_s")
        if kind == "busy" and not 1 <= code <= 255:
            raise InvalidRequest("busy needs an exception code 1..255", field="code")
        fault = Fault(
            kind, board, channel, zone, latency_s=latency_s, period_s=period_s, level=level,
            code=code, delay_s=delay_s, writes_only=writes_only, count=count,
        )
        return self._world._set_fault(fault)

    def clear(
        self,
        kind: str | None = None,
        *,
        board: str | None = None,
        channel: int | None = None,
        compartment: str | None = None,
        signal: str | None = None,
        zone: str | None = None,
    ) -> list[Fault]:
        """Clear every fault matching the given fields (all of them with no argument)."""
        if kind is not None and kind not in FAULT_KINDS:
            raise InvalidRequest(f"unknown fault kind {kind!r}", field="kind", code="unknown_fault")
        if compartment is not None:
            if kind is None:
                raise InvalidRequest("clearing by compartment needs a kind", field="kind")
            board, channel, zone = self._target(kind, board, channel, compartment, signal, zone)
        return self._world._clear_faults(kind, board, channel, zone)

    def active(self) -> tuple[Fault, ...]:
        return self._world.fault_book.active()

    def _target(
        self,
        kind: str,
        board: str | None,
        channel: int | None,
        compartment: str | None,
        signal: str | None,
        zone: str | None,
    ) -> tuple[str | None, int | None, str | None]:
        cfg = self._world.config
        if kind not in FAULT_KINDS:
            raise InvalidRequest(f"unknown fault kind {kind!r}", field="kind", code="unknown_fault")
        if kind in ZONE_FAULTS:
            if zone is None or zone not in self._world._zones:
                raise UnknownTarget("zone", zone)
            return None, None, zone
        if compartment is not None:
            c = self._world._compartment(compartment).config
            if kind == "stuck_latch":
                return c.lock.board, c.lock.channel, None
            if kind in CHANNEL_FAULTS:
                if signal not in SIGNALS:
                    raise InvalidRequest(
                        f"{kind} on a compartment needs signal door|latch|occupancy", field="signal"
                    )
                ref: SignalRef | None = getattr(c, signal)
                if ref is None:
                    raise InvalidRequest(
                        f"compartment {compartment!r} has no {signal} sensor", field="signal"
                    )
                return ref.board, ref.channel, None
            return c.lock.board, None, None
        names = {b.name: b for b in cfg.boards}
        if board is None or board not in names:
            raise UnknownTarget("board", board)
        if kind in BOARD_FAULTS:
            return board, None, None
        b = names[board]
        limit = b.channels if b.profile == "temperature_probe" else max(b.outputs, b.inputs)
        if channel is None or not 0 <= channel < limit:
            raise InvalidRequest(
                f"{kind} needs a channel in 0..{limit - 1} of board {board!r}", field="channel"
            )
        return board, channel, None
