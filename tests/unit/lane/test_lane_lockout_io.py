"""The wrong-code budget (per input of the lane, slowing a guesser, surviving restarts, one
alarm per incident, cleared by staff) and the lane's I/O (alarms once per incident, events,
light, buzzer)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from controller.domain.errors import DomainError
from controller.domain.lockout import BudgetLimits
from tests.unit.lane.harness import PINS, Lane, until

pytestmark = pytest.mark.timeout(30)


@contextlib.asynccontextmanager
async def running(lane: Lane) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(lane.lane.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_guesser_is_slowed_and_reported_once(lane: Lane) -> None:
    cid = await lane.deposit("o-1", "grocery", deposit_code="D1111QRCODE9876X",
                             collect_code="1111222293")
    for _ in range(2):
        assert (await lane.lane.enter_code("9999999999")).reason == "wrong_code"
    third = await lane.lane.enter_code("9999999998")
    assert third.reason == "wrong_code"
    assert lane.alarms("code_guessing") == ["alarm_raised"]
    raised = lane.kinds("alarm_raised")[-1]
    assert raised.data["source"] == "keypad"
    assert raised.data["wrong_codes"] == 3
    # Spent: a short code is not checked (nothing pulsed, nothing counted), with the wait.
    pulses = len(lane.board.pulses())
    slowed = await lane.lane.enter_code("1111222293")
    assert slowed.reason == "slow_down"
    assert slowed.retry_after_s == pytest.approx(10, abs=0.5)
    assert len(lane.board.pulses()) == pulses
    await lane.lane.tick()
    assert lane.lane.light == "fault"
    # One attempt back per refill period (10 s here), not a lockout that escalates.
    lane.advance(10.5)
    ok = await lane.lane.enter_code("1111222293")
    assert ok.accepted, ok
    assert ok.compartment == cid
    # The alarm ends when the budget is whole again; a right code does not refill it.
    assert lane.alarms("code_guessing") == ["alarm_raised"]
    lane.advance(30.0)
    await lane.lane.tick()
    assert lane.alarms("code_guessing") == ["alarm_raised", "alarm_cleared"]
    audit = [a.action for a in await lane.store.audit_log(100)]
    assert audit.count("alarm_raised") == 1


async def test_a_right_qr_code_opens_while_the_keypad_budget_is_spent(lane: Lane) -> None:
    cid = await lane.deposit("o-2", "parcel", deposit_code="D2222QRCODE9876X",
                             collect_code="C2222QRCODE9876X")
    for _ in range(3):
        await lane.lane.enter_code("9999999999")
    assert (await lane.lane.enter_code("8888888888")).reason == "slow_down"
    ok = await lane.lane.enter_code("C2222QRCODE9876X")
    assert ok.accepted, ok
    assert ok.compartment == cid
    # And another input (the scanner) has its own budget.
    scanned = await lane.lane.enter_code("7777777777", source="scanner")
    assert scanned.reason == "wrong_code"


async def test_wrong_codes_naming_an_order_never_lock_its_customer_out(lane: Lane) -> None:
    cid = await lane.deposit("o-7", "parcel", deposit_code="D7777QRCODE9876X",
                             collect_code="C7777QRCODE9876X")
    for _ in range(3):
        await lane.lane.enter_code("o-7:1111111111", source="scanner")
    ok = await lane.lane.enter_code("C7777QRCODE9876X")
    assert ok.accepted, ok
    assert ok.compartment == cid


async def test_the_budget_survives_a_restart() -> None:
    first = await Lane.create()
    for _ in range(3):
        await first.lane.enter_code("9999999999")
    store = first.store
    await first.close(keep_store=True)
    second = await Lane.create(store=store, offset=first.offset)
    try:
        refused = await second.lane.enter_code("1234567890")
        assert refused.reason == "slow_down"
        # The alarm raised before the restart is not raised again, and is cleared once.
        second.advance(31)
        await second.lane.tick()
        assert second.alarms("code_guessing") == ["alarm_cleared"]
    finally:
        await second.close()


async def test_staff_clear_gives_the_budget_back_and_ends_the_alarm(lane: Lane) -> None:
    await lane.deposit("o-9", "grocery", deposit_code="D9999QRCODE9876X",
                       collect_code="9999000061")
    for _ in range(3):
        await lane.lane.enter_code("1212121212")
    assert (await lane.lane.enter_code("9999000061")).reason == "slow_down"
    with pytest.raises(DomainError):
        await lane.lane.clear_lockout("lane-9", "command:c-1")
    result = await lane.lane.clear_lockout("lane-1", "command:c-1")
    assert result == {"lane": "lane-1", "cleared": True}
    assert lane.alarms("code_guessing") == ["alarm_raised", "alarm_cleared"]
    assert lane.kinds("alarm_cleared")[-1].data["cleared_by"] == "command:c-1"
    assert await lane.store.load_lockout("lane:lane-1:keypad") is None
    assert (await lane.lane.enter_code("9999000061")).accepted
    assert (await lane.lane.clear_lockout("lane-1", "command:c-2"))["cleared"] is False


async def test_a_flood_of_refusals_is_reported_as_a_trickle(lane: Lane) -> None:
    for i in range(200):
        await lane.lane.enter_code(f"ZZ{i:04d}ZZZZZZZZZZZZ", source="scanner")
    rejected = lane.kinds("code_rejected")
    assert 1 <= len(rejected) <= 5, len(rejected)
    lane.advance(0)
    # Past the one-second report window, which reads the monotonic clock itself: the
    # product's own timer.
    await asyncio.sleep(1.05)
    await lane.lane.tick()
    coalesced = lane.kinds("code_rejections_coalesced")
    assert len(coalesced) == 1
    assert sum(e.data["count"] for e in coalesced) + len(rejected) == 200
    assert coalesced[0].data["reasons"] == {"wrong_code": 200 - len(rejected)}


async def test_a_scanner_is_checked_at_most_four_times_a_second() -> None:
    lane = await Lane.create()
    lane.lane.checker._limits = BudgetLimits(burst=3, refill_s=10.0, min_interval_s=0.25)
    lane.lane.checker._budgets.clear()
    cid = await lane.deposit("o-p", "parcel", deposit_code="D1212QRCODE9876X",
                             collect_code="C1212QRCODE9876X")
    try:
        started = time.monotonic()
        first = await lane.lane.enter_code("ZZZZZZZZZZZZZZZZ01", source="scanner")
        second = await lane.lane.enter_code("C1212QRCODE9876X", source="scanner")
        assert first.reason == "wrong_code"
        assert second.accepted, second  # held, not refused
        assert second.compartment == cid
        assert time.monotonic() - started >= 0.25
    finally:
        await lane.close()


async def test_tamper_and_mains_raise_and_clear_once_per_incident(lane: Lane) -> None:
    assert lane.gpio is not None
    tamper, mains = lane.gpio.pin(PINS["tamper"]), lane.gpio.pin(PINS["mains_fail"])
    async with running(lane):
        raised, both = ["alarm_raised"], ["alarm_raised", "alarm_cleared"]
        tamper.bounce(True)
        mains.drive(False)  # active low: the UPS lost mains
        await until(lambda: lane.alarms("tamper") == raised
                    and lane.alarms("power_fail") == raised, "both raised")
        await until(lambda: lane.lane.light == "fault", "light fault")
        tamper.drive(False)
        mains.drive(True)
        await until(lambda: lane.alarms("tamper") == both
                    and lane.alarms("power_fail") == both, "both cleared")
        tamper.drive(True)
        await until(lambda: len(lane.alarms("tamper")) == 3, "tamper raised again")
        tamper.drive(False)
        await until(lambda: len(lane.alarms("tamper")) == 4, "tamper cleared again")
        assert lane.alarms("tamper") == both * 2
        assert lane.alarms("power_fail") == both
        await until(lambda: lane.lane.light == "idle", "light idle")
    audit = await lane.store.audit_log(100)
    assert sum(1 for a in audit if a.details.get("alarm") == "tamper") == 4


async def test_an_input_active_at_start_is_an_incident() -> None:
    from drivers.gpio.mock import MockGpio

    gpio = MockGpio(pins=32)
    for key in ("vehicle", "help", "mains_fail"):
        gpio.pin(PINS[key]).drive(True)
    gpio.pin(PINS["tamper"]).drive(True)  # the panel is open already
    built = await Lane.create(gpio=gpio)
    try:
        async with running(built):
            await until(lambda: built.alarms("tamper") == ["alarm_raised"], "tamper raised")
    finally:
        await built.close()


def swallowing_write(lane: Lane) -> asyncio.Event:
    """The next store writes of ``lane`` hang until cancelled, then return normally: what
    Python 3.11's ``asyncio.wait_for`` (inside redis-py) does when the cancellation and
    the answer arrive together. Returns the event set once a write is held."""
    held = asyncio.Event()

    async def gate() -> None:
        held.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()

    lane.emit_gate = gate
    return held


async def stops_when_cancelled(lane: Lane, held: asyncio.Event) -> None:
    task = asyncio.get_running_loop().create_task(lane.lane.run())
    try:
        await until(held.is_set, "a store write held")
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2.0)
        assert done, "the lane kept running after it was cancelled"
        assert task.cancelled()
    finally:
        lane.emit_gate = None
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)


async def test_a_lane_cancelled_while_raising_an_alarm_stops() -> None:
    """The edge loop: the tamper alarm of an input active at start is being written."""
    from drivers.gpio.mock import MockGpio

    gpio = MockGpio(pins=32)
    for key in ("vehicle", "help", "mains_fail", "tamper"):
        gpio.pin(PINS[key]).drive(True)  # the panel is open already
    built = await Lane.create(gpio=gpio)
    try:
        held = swallowing_write(built)
        await stops_when_cancelled(built, held)
        assert built.alarms("tamper") == ["alarm_raised"]
    finally:
        await built.close()


async def test_help_button_vehicle_light_and_buzzer(lane: Lane) -> None:
    async with running(lane):
        green = lane.gpio.pin(PINS["light_green"])  # type: ignore[union-attr]
        amber = lane.gpio.pin(PINS["light_amber"])  # type: ignore[union-attr]
        buzzer = lane.gpio.pin(PINS["buzzer"])  # type: ignore[union-attr]
        assert green.level
        assert not amber.level
        lane.gpio.pin(PINS["vehicle"]).drive(False)  # type: ignore[union-attr]
        lane.gpio.pin(PINS["help"]).bounce(False)  # type: ignore[union-attr]
        await until(lambda: [e.kind for e in lane.kinds("vehicle_arrived", "help_requested")]
                    == ["vehicle_arrived", "help_requested"], "vehicle and help")
        buzzer.clear_history()
        await lane.lane.enter_code("0000000000")
        await until(lambda: buzzer.levels == [False, True, False], "one beep")
        cid = await lane.deposit("o-8", "grocery", deposit_code="D8888QRCODE9876X",
                                 collect_code="C8888QRCODE9876X")
        amber.clear_history()
        result = await lane.lane.enter_code("C8888QRCODE9876X")
        assert result.accepted
        assert amber.level  # busy while the door it opened is not closed again
        await lane.take_out(cid)
        await until(lambda: not amber.level, "amber off")
        assert green.level
