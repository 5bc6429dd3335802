"""The lane's promises under any sequence of people, codes, time and restarts
(Hypothesis stateful test, on fake boards, mock GPIO and a Store on memory://):

- no code opens a door twice, except a reopen within its tenant's grace;
- a code never opens another order's compartment, nor another tenant's;
- the wrong-code lockout is honoured, including across a restart of the service (rebuilt
  from the same store): a locked lane refuses every code and pulses nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, multiple, rule

from controller.domain.compartment import CompartmentState
from controller.settings import parse_settings
from tests.unit.lane.harness import COMPARTMENTS, Lane, code_hash, config

SETTINGS = parse_settings(config(), check_files=False)
GRACE = {pool: SETTINGS.tenant(pool).reopen_grace_s for pool in SETTINGS.tenants}
LIMITS = SETTINGS.security
WRONG = ("999999", "424242", "ZZZZ99")


@dataclass(frozen=True)
class Code:
    order: str
    pool: str
    purpose: str
    value: str


class RefLock:
    """The lockout rules of one key, written out plainly (the reference)."""

    def __init__(self) -> None:
        self.attempts = 0
        self.lockouts = 0
        self.until: float | None = None

    def locked(self, at: float) -> bool:
        return self.until is not None and at < self.until

    def near_edge(self, before: float, after: float) -> bool:
        return self.until is not None and before - 0.01 <= self.until <= after + 0.01

    def wrong(self, at: float) -> None:
        if self.until is not None and at >= self.until:
            self.until = None
        self.attempts += 1
        if self.attempts >= LIMITS.code_max_attempts:
            self.until = at + min(LIMITS.code_lockout_s * 2**self.lockouts,
                                  LIMITS.code_lockout_max_s)
            self.lockouts += 1
            self.attempts = 0

    def right(self) -> None:
        self.attempts = self.lockouts = 0
        self.until = None


class LaneRules(RuleBasedStateMachine):
    codes = Bundle("codes")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.lane = self.run(Lane.create())
        self.orders: dict[str, tuple[str, str]] = {}  # order -> (compartment, pool)
        self.first_use: dict[tuple[str, str], float] = {}
        self.counter = 0
        self.locks: dict[str, RefLock] = {}

    def ref(self, key: str) -> RefLock:
        return self.locks.setdefault(key, RefLock())

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.lane.close())
        self.loop.close()

    # -- dispatch -----------------------------------------------------------------------

    @rule(target=codes, which=st.integers(0, len(COMPARTMENTS) - 1))
    def assign(self, which: int):  # type: ignore[no-untyped-def]
        cid, zone, pool, _occ = COMPARTMENTS[which]
        if self.lane.model.compartments.get(cid).state is not CompartmentState.FREE:
            return multiple()
        self.counter += 1
        order = f"o-{self.counter}"
        dep, col = f"D{self.counter:04d}", f"C{self.counter:04d}"
        got = self.run(self.lane.assign(order, pool, zone, compartment=cid, codes=[
            code_hash(dep, "deposit"), code_hash(col, "collect")]))
        assert got == cid
        self.orders[order] = (cid, pool)
        return multiple(Code(order, pool, "deposit", dep), Code(order, pool, "collect", col))

    # -- people -------------------------------------------------------------------------

    def _enter(self, value: str, action: str, *, of_order: str | None = None,
               named: str | None = None) -> None:
        """Enter ``value`` (a code of ``of_order``, or a wrong one), naming ``named``."""
        lane_ref = self.ref("lane")
        keys = ["lane"] + ([f"order:{named}"] if named else [])
        before = self.lane.now().mono
        pulses = len(self.lane.board.pulses())
        raw = f"{named}:{value}" if named else value
        result = self.run(self.lane.lane.enter_code(raw))
        event(f"entry: {'reopen' if result.reopen else result.reason or 'accepted'}")
        after = self.lane.now().mono
        edge = any(self.ref(k).near_edge(before, after) for k in self.locks)
        if not result.accepted:
            assert len(self.lane.board.pulses()) == pulses, "a refused code pulsed"
        if edge:
            # Too close to the end of a lock to tell which side the service saw: resync.
            return self._resync(result.reason, keys, before, of_order)
        if lane_ref.locked(after):
            assert result.reason == "locked_out", result
        if result.reason == "locked_out":
            suspects = keys + ([f"order:{of_order}"] if of_order else [])
            assert any(self.ref(k).locked(before) for k in suspects), "locked out for no reason"
        if result.reason == "wrong_code":
            for key in keys:
                self.ref(key).wrong(before)
        if result.accepted:
            assert named in (None, result.order_id)
            for key in ("lane", f"order:{result.order_id}"):
                self.ref(key).right()
            self._check_accepted(result.order_id or "", result.compartment or "",
                                 result.purpose or "", result.reopen)
            self._act(result.compartment or "", action)
        return None

    def _resync(self, reason: str | None, keys: list[str], at: float,
                of_order: str | None) -> None:
        service = self.lane.lane
        for key in {*keys, *([f"order:{of_order}"] if of_order else [])}:
            real = "lane:lane-1" if key == "lane" else key
            lock = service._lockout(real)
            state = lock.to_dict(at).get(real, {})
            ref = self.ref(key)
            ref.attempts = int(state.get("attempts", 0))
            ref.lockouts = int(state.get("lockouts", 0))
            left = float(state.get("remaining_s", 0.0))
            ref.until = at + left if left > 0 else None

    def _check_accepted(self, order: str, cid: str, purpose: str, reopen: bool) -> None:
        assigned, pool = self.orders[order]
        assert cid == assigned, "a code opened another order's compartment"
        assert self.lane.model.compartments.get(cid).spec.pool == pool, "another tenant's"
        key = (order, purpose)
        wall = self.lane.now().wall
        if key in self.first_use:
            assert reopen
            assert wall - self.first_use[key] <= GRACE[pool] + 1.0, "opened twice"
        else:
            assert not reopen
            self.first_use[key] = wall

    def _act(self, cid: str, action: str) -> None:
        door = self.lane.doors[cid]
        if action == "walk_away" or not door.pull():
            self.lane.advance(3.0)  # the open is not detected
            self.run(self.lane.poll())
            return
        self.run(self.lane.poll())
        door.occupied = action == "put_or_leave"
        door.close()
        self.run(self.lane.poll())
        self.lane.advance(0.5)  # the pulse is over for the power budget

    @rule(code=codes, action=st.sampled_from(["take", "put_or_leave", "walk_away"]))
    def enter_known(self, code: Code, action: str) -> None:
        self._enter(code.value, action, of_order=code.order)

    @rule(value=st.sampled_from(WRONG))
    def enter_wrong(self, value: str) -> None:
        self._enter(value, "walk_away")

    @rule(code=codes, data=st.data())
    def enter_with_another_order(self, code: Code, data: st.DataObject) -> None:
        # A QR naming another order: that order's hashes only; never opens.
        others = sorted(o for o in self.orders if o != code.order)
        if not others:
            return
        named = data.draw(st.sampled_from(others))
        pulses = len(self.lane.board.pulses())
        self._enter(code.value, "walk_away", named=named)
        assert len(self.lane.board.pulses()) == pulses

    # -- time and restarts ----------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.5, 4.0, 11.0, 25.0, 45.0, 130.0]))
    def wait(self, seconds: float) -> None:
        self.lane.advance(seconds)
        self.run(self.lane.poll())

    @rule()
    def restart(self) -> None:
        old = self.lane
        occupied = {cid: door.occupied for cid, door in old.doors.items()}
        self.run(old.close(keep_store=True))
        self.lane = self.run(_rebuild(old, occupied))

    @invariant()
    def the_service_agrees_the_lane_is_locked(self) -> None:
        now = self.lane.now().mono
        ref = self.ref("lane")
        if ref.until is not None and now < ref.until - 0.5:
            key = self.lane.lane.lane_key
            assert self.lane.lane._lockout(key).remaining(key, now) > 0


async def _rebuild(old: Lane, occupied: dict[str, bool]) -> Lane:
    """The service restarted: everything rebuilt from the same store, the clock going on,
    the goods where they were."""
    built = await Lane.create(store=old.store, offset=old.offset)
    for cid, value in occupied.items():
        built.doors[cid].occupied = value
    return built


TestLaneRules = LaneRules.TestCase
TestLaneRules.settings = settings(
    max_examples=50, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
pytestmark = pytest.mark.timeout(280)
