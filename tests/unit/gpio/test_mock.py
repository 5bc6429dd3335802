"""The mock backend's own tools: history, wiring, pulls, faults."""

from __future__ import annotations

import asyncio

import pytest

from drivers.errors import BusError, ChannelError, DriverConfigError
from drivers.gpio import InputSpec, OutputSpec
from drivers.gpio.mock import MockGpio, MockPin, PinChange


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_history_is_time_stamped_with_the_injected_clock() -> None:
    clock = FakeClock()
    gpio = MockGpio(clock=clock)
    async with gpio:
        buzzer = await gpio.open_output(OutputSpec("buzzer", 22))
        clock.now = 101.0
        await buzzer.on()
        clock.now = 101.5
        await buzzer.off()
        pin = gpio.pin(22)
        assert pin.history == [
            PinChange(100.0, False),
            PinChange(101.0, True),
            PinChange(101.5, False),
        ]
        pin.assert_levels([False, True, False])
        with pytest.raises(AssertionError):
            pin.assert_levels([False, True])
        pin.clear_history()
        assert pin.levels == [False]


async def test_output_wired_to_input_like_a_feedback_contact() -> None:
    gpio = MockGpio()
    gpio.connect(23, 24)
    async with gpio:
        lamp = await gpio.open_output(OutputSpec("light_green", 23))
        sense = await gpio.open_input(InputSpec("lamp_sense", 24, debounce_s=0))
        async with sense.edges() as stream:
            await lamp.on()
            async with asyncio.timeout(5):
                assert (await anext(stream)).value is True
        assert await sense.read() is True


async def test_pull_sets_an_undriven_input() -> None:
    gpio = MockGpio()
    async with gpio:
        up = await gpio.open_input(InputSpec("help_button", 17, pull="up", active_low=True))
        down = await gpio.open_input(InputSpec("tamper", 18, pull="down"))
        assert (up.value, down.value) == (False, False)
        assert (gpio.pin(17).level, gpio.pin(18).level) == (True, False)
        gpio.pin(17).drive_low()
        gpio.pin(17).release()
        assert gpio.pin(17).level is True


async def test_bounce_history_and_fault_injection() -> None:
    gpio = MockGpio()
    async with gpio:
        line = await gpio.open_input(InputSpec("help_button", 17))
        gpio.pin(17).bounce(True, transitions=4)
        assert gpio.pin(17).levels == [False, True, False, True, False, True]
        gpio.pin(17).fail = BusError("expander gone")
        with pytest.raises(BusError, match="expander gone"):
            await line.read()
        gpio.pin(17).mode = "output"
        with pytest.raises(DriverConfigError):
            gpio.pin(17).drive(True)


def test_pins_outside_range() -> None:
    with pytest.raises(ChannelError):
        MockGpio(pins=8).pin(8)


async def test_failed_open_releases_the_pin() -> None:
    class ReadFailsOnce(MockGpio):
        failures = 1

        async def _read(self, handle: MockPin) -> bool:
            if self.failures:
                self.failures -= 1
                raise BusError("read after configure failed")
            return await super()._read(handle)

    gpio = ReadFailsOnce()
    async with gpio:
        with pytest.raises(BusError):
            await gpio.open_input(InputSpec("help_button", 17))
        pin = gpio.pin(17)
        assert (pin.mode, pin._notify, gpio.lines) == ("unused", None, {})
        assert (await gpio.open_input(InputSpec("help_button", 17))).value is False
