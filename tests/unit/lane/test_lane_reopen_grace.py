"""The reopen grace runs on the monotonic clock (decision 0009): a step of the wall clock,
forward or back, neither ends a grace that is running nor revives one that is over."""

from __future__ import annotations

import pytest

from controller.domain.errors import DomainError, ErrorCode
from controller.domain.tenants import code_use
from tests.unit.lane.harness import Lane

#: The parcel pool's grace in the harness.
GRACE_S = 30.0
HOUR = 3600.0


async def _collected(lane: Lane, order: str, n: int) -> tuple[str, str]:
    """A parcel deposited, collected with its code, the door closed on an empty
    compartment (freed): the code's grace is running."""
    collect = f"C{n:04d}GRACEQRCODE9"
    cid = await lane.deposit(order, "parcel", deposit_code=f"D{n:04d}GRACEQRCODE9",
                             collect_code=collect)
    first = await lane.lane.enter_code(collect)
    assert first.accepted, first
    assert not first.reopen
    await lane.take_out(cid)
    return cid, collect


@pytest.mark.parametrize("step", [HOUR, -HOUR, 86400.0 * 365])
async def test_a_wall_step_does_not_end_a_running_grace(lane: Lane, step: float) -> None:
    cid, collect = await _collected(lane, "o-g1", 1)
    lane.advance(5.0)
    lane.step_wall(step)
    again = await lane.lane.enter_code(collect)
    assert again.accepted, again
    assert again.reopen
    assert again.compartment == cid


@pytest.mark.parametrize("step", [-HOUR, -GRACE_S, HOUR])
async def test_a_wall_step_does_not_revive_a_grace_that_is_over(lane: Lane,
                                                                 step: float) -> None:
    _cid, collect = await _collected(lane, "o-g2", 2)
    pulses = len(lane.board.pulses())
    lane.advance(GRACE_S + 1.0)
    lane.step_wall(step)  # back: the wall says the first use was a moment ago
    late = await lane.lane.enter_code(collect)
    assert not late.accepted, late
    assert late.reason in ("code_used", "wrong_code")
    assert len(lane.board.pulses()) == pulses


async def test_a_restart_ends_the_grace(lane: Lane) -> None:
    """The monotonic instant of a first use is not kept across a restart: a used code
    has no grace left after it (staff open remotely), whatever the wall clock says."""
    _cid, collect = await _collected(lane, "o-g3", 3)
    await lane.close(keep_store=True)
    again = await Lane.create(store=lane.store, offset=lane.offset)
    try:
        refused = await again.lane.enter_code(collect)
        assert not refused.accepted
        assert refused.reason in ("code_used", "wrong_code")
    finally:
        await again.close()


def test_code_use_reads_only_the_monotonic_clock() -> None:
    first = code_use(False, None, 1000.0, GRACE_S)
    assert not first.reopen
    assert first.first_used_mono == 1000.0
    assert code_use(True, 1000.0, 1000.0 + GRACE_S, GRACE_S).reopen
    for now, known in ((1000.0 + GRACE_S + 0.001, 1000.0), (999.0, 1000.0), (1001.0, None)):
        with pytest.raises(DomainError) as caught:
            code_use(True, known, now, GRACE_S)
        assert caught.value.code is ErrorCode.CODE_USED
