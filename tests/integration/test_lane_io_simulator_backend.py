"""The daemon's side and the simulator's side in one test: the `simulator` GPIO backend,
configured with the lane's real polarities, against a LaneIOServer on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from drivers.errors import BusError, ChannelError
from drivers.gpio import GpioBackend, InputSpec, OutputSpec, open_backend
from simulator.lane import LaneIOServer, LaneWorld

WAIT = 5.0

#: As the cabinet config would declare them (see the wiring table in simulator.lane).
INPUTS = [
    InputSpec("vehicle_present", 4, pull="up", active_low=True, debounce_s=0.05),
    InputSpec("help_button", 17, pull="up", active_low=True, debounce_s=0.02),
    InputSpec("tamper", 27, pull="up", active_low=False, debounce_s=0.02),
    InputSpec("mains_fail", 5, pull="up", active_low=True, debounce_s=0.1),
]
OUTPUTS = [
    OutputSpec("light_red", 22),
    OutputSpec("light_green", 23, initial=True),
    OutputSpec("light_amber", 24),
    OutputSpec("buzzer", 25),
]


@pytest.fixture
async def lane() -> AsyncIterator[tuple[LaneWorld, LaneIOServer, GpioBackend]]:
    world = LaneWorld()
    async with LaneIOServer(world) as server:
        gpio = open_backend("simulator", {"port": server.port})
        async with gpio:
            yield world, server, gpio


async def test_lane_day_in_miniature(lane: tuple[LaneWorld, LaneIOServer, GpioBackend]) -> None:
    world, _, gpio = lane
    inputs = {spec.name: await gpio.open_input(spec) for spec in INPUTS}
    outputs = {spec.name: await gpio.open_output(spec) for spec in OUTPUTS}
    assert not any(line.value for line in inputs.values())
    assert world.lane_light() == "idle"

    async with inputs["vehicle_present"].edges() as cars, inputs["help_button"].edges() as presses:
        world.vehicle_arrives()
        async with asyncio.timeout(WAIT):
            assert (await anext(cars)).value is True
        await outputs["light_green"].off()
        await outputs["light_amber"].on()
        assert world.lane_light() == "busy"

        world.press_button(bounce=5)
        async with asyncio.timeout(WAIT):
            assert (await anext(presses)).value is True
        world.release_button(bounce=3)
        async with asyncio.timeout(WAIT):
            assert (await anext(presses)).value is False  # one edge per press, not six
        await outputs["buzzer"].pulse(0.01)

    async with asyncio.timeout(WAIT):
        world.open_tamper()
        await inputs["tamper"].wait_for(True)
        world.lose_mains()
        await inputs["mains_fail"].wait_for(True)
    await outputs["light_amber"].off()
    await outputs["light_red"].on()
    assert world.lane_light() == "fault"
    buzzer = [(c.level) for c in world.changes(kind="output", line="buzzer")]
    assert buzzer == [True, False]


async def test_unknown_line_name_is_a_channel_error(
    lane: tuple[LaneWorld, LaneIOServer, GpioBackend],
) -> None:
    world, _, gpio = lane
    with pytest.raises(ChannelError, match="no input 'doorbell'"):
        await gpio.open_input(InputSpec("doorbell", 9))
    with pytest.raises(ChannelError, match="no output 'siren'"):
        await gpio.open_output(OutputSpec("siren", 10))
    assert world.log == []


async def test_simulator_gone_is_a_bus_error(
    lane: tuple[LaneWorld, LaneIOServer, GpioBackend],
) -> None:
    _, server, gpio = lane
    buzzer = await gpio.open_output(OutputSpec("buzzer", 25))
    button = await gpio.open_input(INPUTS[1])
    await server.close()
    async with asyncio.timeout(WAIT):
        while True:  # bounded by the timeout: until the backend has seen the EOF
            try:
                await button.read()
            except BusError:
                break
            await asyncio.sleep(0.01)
    with pytest.raises(BusError):
        await buzzer.set(True)


async def test_nothing_listens() -> None:
    from tests.support.services import free_port

    gpio = open_backend("simulator", {"port": free_port(), "timeout_s": 1.0})
    with pytest.raises(BusError, match="cannot reach the lane simulator"):
        await gpio.start()
    await gpio.close()
