"""A lane on fakes: fake boards (drivers.fake), mock GPIO, a Store on memory://, a clock
the test moves. Everything the daemon wires, built the same way, in one process."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from controller.domain.assignment import assign_order
from controller.domain.cabinet_model import CabinetModel, Emitted, Now
from controller.domain.compartment import Order, Size, ZoneKind
from controller.domain.unlock import UnlockPolicy
from controller.security.codes import CodeKey, seal_code
from controller.services.hardware import Hardware
from controller.services.lane import LaneService
from controller.services.poller import Poller
from controller.services.reporting import EventSink, PendingEvent
from controller.services.setup import compartment_setups, unlock_limits
from controller.services.unlock import PulseOutcome, UnlockService
from controller.settings import Settings, parse_settings
from controller.store import Store
from drivers.fake import FakeDoor, FakeLockBoard
from drivers.gpio.mock import MockGpio

PINS = {"vehicle": 5, "help": 6, "tamper": 13, "mains_fail": 19,
        "light_red": 20, "light_green": 21, "light_amber": 16, "buzzer": 26}


def _compartment(cid: str, channel: int, zone: str, pool: str, size: str = "M",
                 occupancy: bool = True) -> dict[str, Any]:
    c: dict[str, Any] = {
        "id": cid, "size": size, "zone": zone, "pool": pool,
        "lock": {"board": "locks", "channel": channel},
        "door": {"board": "locks", "channel": 2 * channel, "active": "high"},
    }
    if occupancy:
        c["occupancy"] = {"board": "locks", "channel": 2 * channel + 1, "active": "high"}
    return c


COMPARTMENTS = [
    ("A01", "chilled", "grocery", True),
    ("A02", "ambient", "grocery", True),
    ("B01", "ambient", "parcel", True),
    ("B02", "ambient", "parcel", False),
    ("C01", "ambient", "shop", True),
]


def config(**security: Any) -> dict[str, Any]:
    return {
        "cabinet": {"site": "t-site", "id": "cab-t"},
        "redis": {"url": "memory://"},
        "security": {"require_signed_commands": False, "code_max_attempts": 3,
                     "code_lockout_s": 10.0, **security},
        "timing": {"compartment_cooldown_s": 0, "pulse_gap_s": 0, "pulse_s": 0.3,
                   "compartment_max_pulses_per_minute": 60, "open_detect_timeout_s": 2.0},
        "tenants": {
            "grocery": {"expiry_s": 7200, "reopen_grace_s": 60},
            "parcel": {"expiry_s": 172800, "reopen_grace_s": 30},
            "shop": {"expiry_s": 172800, "reopen_grace_s": 0},
        },
        "buses": [{"name": "rs485-0", "kind": "rtu", "port": "/dev/ttyFAKE0"}],
        "boards": [{"name": "locks", "bus": "rs485-0", "address": 1,
                    "profile": "waveshare_relay", "outputs": 8, "inputs": 16},
                   {"name": "probes", "bus": "rs485-0", "address": 10,
                    "profile": "temperature_probe", "channels": 2}],
        "zones": [{"name": "ambient", "kind": "ambient"},
                  {"name": "chilled", "kind": "chilled", "min_c": 2.0, "max_c": 4.0,
                   "excursion_delay_s": 5, "probe": {"board": "probes", "channel": 1}}],
        "compartments": [_compartment(cid, i, zone, pool, occupancy=occ)
                         for i, (cid, zone, pool, occ) in enumerate(COMPARTMENTS)],
        "lane": {
            "backend": "mock",
            "inputs": {k: {"pin": PINS[k], "active_low": k != "tamper", "debounce_ms": 10}
                       for k in ("vehicle", "help", "tamper", "mains_fail")},
            "outputs": {k: {"pin": PINS[k]}
                        for k in ("light_red", "light_green", "light_amber", "buzzer")},
        },
    }


#: The cabinet's code key of every harness lane (a restart keeps it, as the key file
#: does); a light verifier cost, for in-memory tests only.
CODE_KEY = CodeKey.generate(scrypt_n=2**8)


def issued(code: str, purpose: str = "collect") -> dict[str, str]:
    """A code dispatch issues for an order: sealed to the cabinet by :meth:`Lane.assign`."""
    return {"purpose": purpose, "code": code}


class SpyUnlock(UnlockService):
    """The real unlock service, recording what the store said at each pulse."""

    def __init__(self, *args: Any, store: Store, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spy_store = store
        self.pulsed: list[tuple[str, dict[str, Any]]] = []
        self.watch: list[tuple[str, str]] = []

    async def pulse(self, compartment: str, *, deadline_mono: float | None = None,
                    before: Callable[[], Awaitable[object]] | None = None,
                    ack_with_caller: bool = False) -> PulseOutcome:
        async def spy() -> None:
            if before is not None:
                await before()
            used = {f"{o}/{c}": await self.spy_store.code_used_at(o, c) for o, c in self.watch}
            self.pulsed.append((compartment, used))

        return await super().pulse(compartment, deadline_mono=deadline_mono, before=spy,
                                   ack_with_caller=ack_with_caller)


async def until(check: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    """Until ``check()`` holds (the lane's tasks, the GPIO debounce and the buzzer run on
    their own); an AssertionError naming ``what`` after ``timeout_s``."""
    import asyncio

    deadline = time.monotonic() + timeout_s
    while not check():  # bounded by the deadline
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s")
        await asyncio.sleep(0.005)


class Lane:
    """Build with ``await Lane.create()``; ``close()`` at the end."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.wall_step = 0.0
        self.events: list[PendingEvent] = []
        #: Awaited before each emit reaches the store (a test holds a write there).
        self.emit_gate: Callable[[], Awaitable[None]] | None = None

    def now(self) -> Now:
        return Now(time.monotonic() + self.offset, self.wall())

    def wall(self) -> float:
        return time.time() + self.offset + self.wall_step

    def advance(self, seconds: float) -> None:
        """Time passes: both clocks move."""
        self.offset += seconds

    def step_wall(self, seconds: float) -> None:
        """The wall clock alone jumps (NTP answering after a power cut, an operator's
        ``date -s``): the monotonic clock does not move."""
        self.wall_step += seconds

    @classmethod
    async def create(cls, *, store: Store | None = None, gpio: MockGpio | None = None,
                     settings: Settings | None = None, with_io: bool = True,
                     offset: float = 0.0) -> Lane:
        """``offset``: where the test clock stands (a restart keeps the clock going)."""
        self = cls()
        self.offset = offset
        self.settings = settings or parse_settings(config(), check_files=False)
        self.store = store or await Store.connect("memory://", "locker", "cab-t",
                                                  clock=self.wall)
        await self.store.new_boot()
        self.hardware = Hardware(self.settings, "fake")
        self.hardware.open()
        self.board: FakeLockBoard = self.hardware.lock_boards["locks"]  # type: ignore[assignment]
        self.doors: dict[str, FakeDoor] = {}
        for i, (cid, _zone, _pool, occ) in enumerate(COMPARTMENTS):
            self.doors[cid] = self.board.connect_door(
                i, door_input=2 * i, occupancy_input=2 * i + 1 if occ else None)
        self.model = CabinetModel(compartment_setups(self.settings),
                                  stored=await self.store.load_compartments())
        self.sink = EventSink(self.store)
        self.policy = UnlockPolicy(unlock_limits(self.settings))
        self.unlock = SpyUnlock(self.settings, self.model, self.hardware, self.policy, self.emit,
                                now=self.now, store=self.store)
        self.poller = Poller(self.model, self.hardware, self.emit, now=self.now,
                             interval_s=0.05)
        self.gpio = gpio
        if with_io and self.gpio is None:
            self.gpio = MockGpio(pins=32)
            # The world at rest: bay empty, button up, panel closed, mains on.
            for key in ("vehicle", "help", "mains_fail"):
                self.gpio.pin(PINS[key]).drive(True)  # active low: high is inactive
            self.gpio.pin(PINS["tamper"]).drive(False)
        self.lane = LaneService(self.settings, self.model, self.store, self.unlock, self.emit,
                                now=self.now, code_key=CODE_KEY, gpio=self.gpio, beep_s=0.05,
                                lockout_beep_s=0.1, tick_s=0.05, check_interval_s=0.0)
        await self.poller.poll_once()
        await self.lane.start()
        return self

    async def emit(self, events: Sequence[Emitted | PendingEvent]) -> object:
        for e in events:
            self.events.append(e if isinstance(e, PendingEvent) else PendingEvent.of(e))
        if self.emit_gate is not None:
            await self.emit_gate()
        return await self.sink.emit(events)

    async def close(self, *, keep_store: bool = False) -> None:
        await self.lane.close()
        if self.gpio is not None:
            await self.gpio.close()
        await self.sink.close()
        await self.hardware.close()
        if not keep_store:
            await self.store.close()

    def kinds(self, *kinds: str) -> list[PendingEvent]:
        return [e for e in self.events if not kinds or e.kind in kinds]

    def alarms(self, alarm: str) -> list[str]:
        return [e.kind for e in self.events
                if e.kind in ("alarm_raised", "alarm_cleared") and e.data.get("alarm") == alarm]

    # -- dispatch's side ----------------------------------------------------------------

    async def assign(self, order_id: str, pool: str, zone: str = "ambient", *,
                     codes: Sequence[dict[str, str]] = (), size: str = "S",
                     expires_in: float = 3600.0, compartment: str | None = None) -> str:
        sealed = [seal_code(CODE_KEY.public_bytes, self.settings.cabinet.id, order_id,
                            f"{c['purpose']}-{i}", c["purpose"], c["code"])
                  for i, c in enumerate(codes)]
        records = await self.lane.codes.prepare(order_id, sealed)
        now = self.now()
        kind = self.settings.zone(zone).kind
        order = Order(order_id, pool, Size(size), ZoneKind(kind), now.wall + expires_in)
        chosen, events = assign_order(self.model.compartments, order, now.wall,
                                      compartment_id=compartment)
        cid = chosen.compartment_id
        if records:
            await self.lane.codes.save(order_id, records)
        await self.store.save_order(order_id, {**order.to_dict(), "compartment": cid})
        await self.store.save_compartment(cid, self.model.stored_state(cid))
        await self.emit(self.model._wrap_wall(events, now))
        return cid

    # -- people at the cabinet -----------------------------------------------------------

    async def poll(self) -> None:
        await self.poller.poll_once()
        await self.emit(self.model.tick(self.now()))
        await self.lane.tick()

    async def take_out(self, cid: str, *, leave_goods: bool = False) -> None:
        """After an accepted collect code: pull, take the goods, close."""
        door = self.doors[cid]
        assert door.pull(), f"{cid} did not open"
        await self.poll()
        door.occupied = leave_goods
        door.close()
        await self.poll()

    async def put_in(self, cid: str) -> None:
        door = self.doors[cid]
        assert door.pull(), f"{cid} did not open"
        await self.poll()
        door.occupied = True
        door.close()
        await self.poll()

    async def deposit(self, order_id: str, pool: str, zone: str = "ambient", *,
                      deposit_code: str, collect_code: str) -> str:
        """Assign with both codes, open with the deposit code, put the goods in."""
        cid = await self.assign(order_id, pool, zone, codes=[
            issued(deposit_code, "deposit"), issued(collect_code, "collect")])
        result = await self.lane.enter_code(deposit_code)
        assert result.accepted, result
        assert result.reason is None, result
        await self.put_in(cid)
        assert self.model.compartments.get(cid).phase.value == "loaded"
        self.advance(0.5)  # the deposit's pulse is over for the power budget
        return cid
