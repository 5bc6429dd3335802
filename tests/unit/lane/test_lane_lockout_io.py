"""Wrong-code lockout (per lane and per order, escalating, surviving restarts, one alarm
per lock) and the lane's I/O (alarms once per incident, events, light, buzzer)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from tests.unit.lane.harness import PINS, Lane

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


async def test_wrong_codes_lock_the_lane_escalating_with_one_alarm_each(lane: Lane) -> None:
    cid = await lane.deposit("o-1", "grocery", deposit_code="D1111", collect_code="C1111")
    for _ in range(2):
        assert (await lane.lane.enter_code("999999")).reason == "wrong_code"
    third = await lane.lane.enter_code("999998")
    assert third.reason == "wrong_code"
    assert third.locked_for_s == pytest.approx(10, abs=0.5)
    assert lane.alarms("code_lockout") == ["alarm_raised"]
    # Locked: even the right code is refused, nothing is pulsed.
    pulses = len(lane.board.pulses())
    locked = await lane.lane.enter_code("C1111")
    assert locked.reason == "locked_out"
    assert locked.locked_for_s > 0
    assert len(lane.board.pulses()) == pulses
    await lane.lane.tick()
    assert lane.lane.light == "fault"
    lane.advance(10.5)
    await lane.lane.tick()
    assert lane.alarms("code_lockout") == ["alarm_raised", "alarm_cleared"]
    assert lane.lane.light == "idle"
    # A second lockout lasts twice as long.
    for _ in range(3):
        result = await lane.lane.enter_code("999999")
    assert result.locked_for_s == pytest.approx(20, abs=0.5)
    assert lane.alarms("code_lockout") == ["alarm_raised", "alarm_cleared", "alarm_raised"]
    lane.advance(21)
    await lane.lane.tick()
    ok = await lane.lane.enter_code("C1111")
    assert ok.accepted
    assert ok.compartment == cid
    audit = [a.action for a in await lane.store.audit_log(100)]
    assert audit.count("alarm_raised") == 2
    assert audit.count("alarm_cleared") >= 1


async def test_lockout_survives_a_restart() -> None:
    first = await Lane.create()
    for _ in range(3):
        await first.lane.enter_code("999999")
    store = first.store
    await first.close(keep_store=True)
    second = await Lane.create(store=store, offset=first.offset)
    try:
        refused = await second.lane.enter_code("123456")
        assert refused.reason == "locked_out"
        # The alarm raised before the restart is not raised again, and is cleared once.
        second.advance(11)
        await second.lane.tick()
        assert second.alarms("code_lockout") == ["alarm_cleared"]
    finally:
        await second.close()


async def test_wrong_codes_naming_an_order_count_against_the_order_too(lane: Lane) -> None:
    await lane.deposit("o-7", "parcel", deposit_code="D7777", collect_code="C7777")
    for _ in range(3):
        await lane.lane.enter_code("o-7:111111")
    lane.advance(11)  # the lane lock is over ...
    await lane.lane.tick()
    # ... but the order's own lock started at the same time and lasts as long;
    # count again: the order is locked while its lock runs.
    for _ in range(3):
        await lane.lane.enter_code("o-7:111111")
    refused = await lane.lane.enter_code("C7777")
    assert refused.reason == "locked_out"
    raised = [e for e in lane.kinds("alarm_raised") if e.data.get("alarm") == "code_lockout"]
    assert {e.data.get("order") for e in raised} == {None, "o-7"}


async def test_tamper_and_mains_raise_and_clear_once_per_incident(lane: Lane) -> None:
    assert lane.gpio is not None
    tamper, mains = lane.gpio.pin(PINS["tamper"]), lane.gpio.pin(PINS["mains_fail"])
    async with running(lane):
        tamper.bounce(True)
        mains.drive(False)  # active low: the UPS lost mains
        await asyncio.sleep(0.1)
        assert lane.lane.light == "fault"
        tamper.drive(False)
        mains.drive(True)
        await asyncio.sleep(0.1)
        tamper.drive(True)
        await asyncio.sleep(0.1)
        tamper.drive(False)
        await asyncio.sleep(0.1)
        assert lane.alarms("tamper") == ["alarm_raised", "alarm_cleared"] * 2
        assert lane.alarms("power_fail") == ["alarm_raised", "alarm_cleared"]
        assert lane.lane.light == "idle"
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
            await asyncio.sleep(0.1)
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
        await asyncio.sleep(0.1)
        assert [e.kind for e in lane.kinds("vehicle_arrived", "help_requested")] == [
            "vehicle_arrived", "help_requested"]
        buzzer.clear_history()
        await lane.lane.enter_code("000000")
        await asyncio.sleep(0.15)
        assert buzzer.levels == [False, True, False]  # one beep
        cid = await lane.deposit("o-8", "grocery", deposit_code="D8888", collect_code="C8888")
        amber.clear_history()
        result = await lane.lane.enter_code("C8888")
        assert result.accepted
        assert amber.level  # busy while the door it opened is not closed again
        await lane.take_out(cid)
        await asyncio.sleep(0.1)
        assert not amber.level
        assert green.level
