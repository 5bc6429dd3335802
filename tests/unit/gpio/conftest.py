"""One rig per GPIO backend: the backend under test plus a hand on the far side of its
wires (drive an input's raw level, read an output's raw level). Contract tests take the
``rig`` fixture and run once per backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

import pytest

from drivers.gpio import GpioBackend, open_backend
from drivers.gpio.mock import MockGpio
from drivers.gpio.simulator import SimulatorGpio
from simulator.lane import LaneIOServer, LaneWorld
from tests.unit.gpio.fakes import FakeGpiod, FakeRPiGPIO, importer_for

#: The lines the contract tests use: name -> pin.
PINS = {"help_button": 17, "vehicle_present": 27, "buzzer": 22, "light_green": 23}


class Rig(Protocol):
    backend: GpioBackend

    def drive(self, name: str, raw: bool) -> None: ...
    def bounce(self, name: str, raw: bool, transitions: int) -> None: ...
    def output_level(self, name: str) -> bool: ...
    async def sync(self) -> None: ...


class MockRig:
    def __init__(self) -> None:
        self.backend: MockGpio = MockGpio()

    def drive(self, name: str, raw: bool) -> None:
        self.backend.pin(PINS[name]).drive(raw)

    def bounce(self, name: str, raw: bool, transitions: int) -> None:
        self.backend.pin(PINS[name]).bounce(raw, transitions)

    def output_level(self, name: str) -> bool:
        return self.backend.pin(PINS[name]).level

    async def sync(self) -> None:
        await asyncio.sleep(0)


class SimulatorRig:
    def __init__(self, server: LaneIOServer) -> None:
        self.world = server.world
        self.backend: SimulatorGpio = SimulatorGpio(port=server.port)

    def drive(self, name: str, raw: bool) -> None:
        self.world.set_input(name, raw)  # the rig's world is wired active-high

    def bounce(self, name: str, raw: bool, transitions: int) -> None:
        self.world.set_input(name, raw, bounce=transitions)

    def output_level(self, name: str) -> bool:
        return self.world.output_level(name)

    async def sync(self) -> None:
        await self.backend.sync()


class RPiRig:
    def __init__(self) -> None:
        self.fake = FakeRPiGPIO()
        self.backend = open_backend("rpigpio", importer=importer_for(RPi_GPIO=self.fake))

    def drive(self, name: str, raw: bool) -> None:
        self.fake.drive(PINS[name], raw)

    def bounce(self, name: str, raw: bool, transitions: int) -> None:
        for _ in range(transitions):
            self.fake.drive(PINS[name], raw)
            self.fake.drive(PINS[name], not raw)
        self.fake.drive(PINS[name], raw)

    def output_level(self, name: str) -> bool:
        return bool(self.fake.levels[PINS[name]])

    async def sync(self) -> None:
        await asyncio.sleep(0)


class GpiodRig:
    def __init__(self) -> None:
        self.fake = FakeGpiod()
        self.backend = open_backend(
            "gpiod", {"chip": "/dev/gpiochip0"}, importer=importer_for(gpiod=self.fake)
        )

    def drive(self, name: str, raw: bool) -> None:
        self.fake.drive(PINS[name], raw)

    def bounce(self, name: str, raw: bool, transitions: int) -> None:
        self.fake.bounce(PINS[name], raw, transitions)

    def output_level(self, name: str) -> bool:
        return self.fake.levels[PINS[name]]

    async def sync(self) -> None:
        await asyncio.sleep(0)


@pytest.fixture(params=["mock", "simulator", "rpigpio", "gpiod"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    kind = request.param
    if kind == "simulator":
        world = LaneWorld(
            inputs={"help_button": False, "vehicle_present": False},
            outputs={"buzzer": False, "light_green": False},
        )
        async with LaneIOServer(world) as server:
            sim = SimulatorRig(server)
            try:
                yield sim
            finally:
                await sim.backend.close()
        return
    made: MockRig | RPiRig | GpiodRig = {"mock": MockRig, "rpigpio": RPiRig, "gpiod": GpiodRig}[
        kind
    ]()
    try:
        yield made
    finally:
        await made.backend.close()
        if isinstance(made, RPiRig):
            made.fake.shutdown()
