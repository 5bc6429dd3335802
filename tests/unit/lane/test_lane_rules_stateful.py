"""The lane's promises under any sequence of people, codes, time and restarts
(Hypothesis stateful test, on fake boards, mock GPIO and a Store on memory://):

- no code opens a door twice, except a reopen within its tenant's grace;
- a code never opens another order's compartment, nor another tenant's;
- the wrong-code budget is honoured, including across a restart of the service (rebuilt
  from the same store): a spent budget checks no short code and pulses nothing; a long
  (QR) code is always checked; wrong codes naming an order never hold back that order.
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
from tests.unit.lane.harness import COMPARTMENTS, Lane, config, issued

SETTINGS = parse_settings(config(), check_files=False)
GRACE = {pool: SETTINGS.tenant(pool).reopen_grace_s for pool in SETTINGS.tenants}
LIMITS = SETTINGS.security
WRONG = ("9999999999", "4242424242", "ZZZZ99", "ZZZZZZZZZZZZZZZZ99")


@dataclass(frozen=True)
class Code:
    order: str
    pool: str
    purpose: str
    value: str


class RefBudget:
    """The wrong-code budget of the keypad, written out plainly (the reference)."""

    def __init__(self) -> None:
        self.tokens = float(LIMITS.code_max_attempts)
        self.at = 0.0

    def level(self, t: float) -> float:
        return min(self.tokens + max(t - self.at, 0.0) / LIMITS.code_lockout_s,
                   float(LIMITS.code_max_attempts))

    def spent(self, t: float) -> bool:
        return self.level(t) < 1.0

    def near_edge(self, before: float, after: float) -> bool:
        return self.spent(before) != self.spent(after) or abs(self.level(before) - 1.0) < 0.01

    def wrong(self, t: float) -> None:
        self.tokens = max(self.level(t) - 1.0, 0.0)
        self.at = t


class LaneRules(RuleBasedStateMachine):
    codes = Bundle("codes")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.lane = self.run(Lane.create())
        self.orders: dict[str, tuple[str, str]] = {}  # order -> (compartment, pool)
        self.first_use: dict[tuple[str, str], float] = {}
        self.counter = 0
        self.budget = RefBudget()
        self.budget.at = self.lane.now().mono

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
        # A QR deposit code and a keypad collect code.
        dep, col = f"D{self.counter:04d}QRCODE98765", f"{self.counter:04d}583917"
        got = self.run(self.lane.assign(order, pool, zone, compartment=cid, codes=[
            issued(dep, "deposit"), issued(col, "collect")]))
        assert got == cid
        self.orders[order] = (cid, pool)
        return multiple(Code(order, pool, "deposit", dep), Code(order, pool, "collect", col))

    # -- people -------------------------------------------------------------------------

    def _enter(self, value: str, action: str, *, of_order: str | None = None,
               named: str | None = None) -> None:
        """Enter ``value`` (a code of ``of_order``, or a wrong one), naming ``named``."""
        short = len(value) < 16
        before = self.lane.now().mono
        pulses = len(self.lane.board.pulses())
        raw = f"{named}:{value}" if named else value
        result = self.run(self.lane.lane.enter_code(raw))
        event(f"entry: {'reopen' if result.reopen else result.reason or 'accepted'}")
        after = self.lane.now().mono
        if not result.accepted:
            assert len(self.lane.board.pulses()) == pulses, "a refused code pulsed"
        if result.reason == "slow_down":
            assert short, "a long code was held back"
        if self.budget.near_edge(before, after):
            # Too close to the edge to tell which side the service saw: resync.
            self._resync(after)
        else:
            if short and self.budget.spent(before):
                assert result.reason == "slow_down", result
            if result.reason == "slow_down":
                assert self.budget.spent(after), "slowed down for no reason"
            if result.reason == "wrong_code":
                self.budget.wrong(before)
        if result.accepted:
            assert named in (None, result.order_id)
            self._check_accepted(result.order_id or "", result.compartment or "",
                                 result.purpose or "", result.reopen)
            self._act(result.compartment or "", action)
        return None

    def _resync(self, at: float) -> None:
        real = self.run(self.lane.lane.checker._budget("keypad"))
        self.budget.tokens = real.tokens(at)
        self.budget.at = at

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
        # A QR naming another order: the code must lead to that order; never opens.
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
    def the_service_agrees_on_the_budget(self) -> None:
        now = self.lane.now().mono
        real = self.run(self.lane.lane.checker._budget("keypad"))
        assert abs(real.tokens(now) - self.budget.level(now)) < 0.05


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
