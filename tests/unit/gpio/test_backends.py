"""Selecting backends by name, and what each real backend asks of its library (checked on
injected fake modules: RPi.GPIO and gpiod need hardware and are not installed here)."""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from datetime import timedelta
from types import ModuleType

import pytest

from drivers.errors import BackendUnavailable, BusError, ChannelError, DriverConfigError
from drivers.gpio import BACKENDS, InputSpec, OutputSpec, backend_class, open_backend
from drivers.gpio.libgpiod import GpiodGpio
from drivers.gpio.mock import MockGpio
from drivers.gpio.rpigpio import RPiGpio
from tests.unit.gpio.fakes import Bias, Direction, Edge, FakeGpiod, FakeRPiGPIO, importer_for


def test_registry_names() -> None:
    assert set(BACKENDS) == {"mock", "simulator", "rpigpio", "gpiod"}
    assert backend_class("mock") is MockGpio


def test_unknown_backend_name() -> None:
    with pytest.raises(BackendUnavailable, match=r"unknown gpio backend 'pigpio'.*gpiod"):
        open_backend("pigpio")


def test_unknown_option_is_named() -> None:
    with pytest.raises(DriverConfigError, match=r"no option 'chipp'.*chip"):
        open_backend("gpiod", {"chipp": "/dev/gpiochip0"}, importer=importer_for(gpiod=FakeGpiod()))


@pytest.mark.parametrize(
    ("name", "library", "hint"),
    [
        ("rpigpio", "RPi", "RPi.GPIO"),
        ("gpiod", "gpiod", "libgpiod v2"),
    ],
)
def test_missing_library_is_backend_unavailable(name: str, library: str, hint: str) -> None:
    with pytest.raises(BackendUnavailable, match=hint) as info:
        open_backend(name, importer=importer_for())
    assert isinstance(info.value.__cause__, ImportError)


@pytest.mark.skipif(importlib.util.find_spec("RPi") is not None, reason="RPi.GPIO is installed")
def test_rpigpio_really_missing_here() -> None:
    with pytest.raises(BackendUnavailable, match="pip install 'locker-controller\\[rpi\\]'"):
        open_backend("rpigpio")


@pytest.mark.skipif(importlib.util.find_spec("gpiod") is not None, reason="gpiod is installed")
def test_gpiod_really_missing_here() -> None:
    with pytest.raises(BackendUnavailable, match="locker-controller\\[gpiod\\]"):
        open_backend("gpiod")


def test_rpigpio_not_on_a_pi() -> None:
    def importer(name: str) -> ModuleType:
        raise RuntimeError("This module can only be run on a Raspberry Pi!")

    with pytest.raises(BackendUnavailable, match="Raspberry Pi"):
        RPiGpio(importer=importer)


def test_gpiod_1x_refused() -> None:
    old = ModuleType("gpiod")
    old.__version__ = "1.6.3"  # type: ignore[attr-defined]
    with pytest.raises(BackendUnavailable, match=r"1\.x API"):
        GpiodGpio(importer=lambda name: old)


# -- rpigpio wiring ----------------------------------------------------------------------


@pytest.fixture
def rpi() -> FakeRPiGPIO:
    fake = FakeRPiGPIO()
    yield fake  # type: ignore[misc]
    fake.shutdown()


async def test_rpigpio_sets_bcm_pull_bouncetime_and_cleans_up(rpi: FakeRPiGPIO) -> None:
    async with RPiGpio(importer=importer_for(RPi_GPIO=rpi)) as gpio:
        await gpio.open_input(InputSpec("help_button", 17, pull="up", debounce_s=0.03))
        await gpio.open_output(OutputSpec("buzzer", 22, initial=True))
        assert rpi.mode == rpi.BCM
        assert rpi.warnings is False
        assert rpi.setups[17] == (rpi.IN, rpi.PUD_UP)
        assert rpi.detect[17][1] == 30
        assert rpi.levels[22] == 1
    assert ("cleanup", 17) in rpi.calls
    assert ("cleanup", 22) in rpi.calls
    assert rpi.detect == {}


async def test_rpigpio_callback_thread_hands_off_to_loop(rpi: FakeRPiGPIO) -> None:
    async with RPiGpio(importer=importer_for(RPi_GPIO=rpi)) as gpio:
        line = await gpio.open_input(InputSpec("help_button", 17, debounce_s=0))
        seen: list[int] = []
        line.add_listener(lambda edge: seen.append(threading.get_ident()))
        async with line.edges() as stream:
            rpi.drive(17, True)
            async with asyncio.timeout(5):
                await anext(stream)
    assert rpi.callback_threads
    assert threading.get_ident() not in rpi.callback_threads
    assert seen == [threading.get_ident()]


async def test_rpigpio_board_mode_refused(rpi: FakeRPiGPIO) -> None:
    rpi.setmode(rpi.BOARD)
    with pytest.raises(DriverConfigError, match="BOARD"):
        await RPiGpio(importer=importer_for(RPi_GPIO=rpi)).start()


async def test_rpigpio_pin_off_header_and_library_errors(rpi: FakeRPiGPIO) -> None:
    async with RPiGpio(importer=importer_for(RPi_GPIO=rpi)) as gpio:
        with pytest.raises(ChannelError, match="BCM GPIO 40"):
            await gpio.open_input(InputSpec("tamper", 40))
        rpi.detect[5] = (print, None)  # someone else already watches GPIO5
        with pytest.raises(BusError, match="Conflicting edge detection"):
            await gpio.open_input(InputSpec("tamper", 5))
        assert "tamper" not in gpio.lines


# -- gpiod wiring ------------------------------------------------------------------------


async def test_gpiod_line_settings_and_consumer() -> None:
    fake = FakeGpiod()
    gpio = GpiodGpio(chip="/dev/gpiochip0", consumer="cab-01", importer=importer_for(gpiod=fake))
    async with gpio:
        await gpio.open_input(
            InputSpec("mains_fail", 5, pull="up", active_low=True, debounce_s=0.05)
        )
        await gpio.open_output(OutputSpec("light_red", 6, active_low=True))
        settings = fake.requests[5].settings
        assert settings.direction is Direction.INPUT
        assert settings.edge_detection is Edge.BOTH
        assert settings.bias is Bias.PULL_UP
        assert settings.debounce_period == timedelta(milliseconds=50)
        assert settings.active_low is False  # polarity is applied once, by the base class
        assert fake.requests[6].settings.direction is Direction.OUTPUT
        assert fake.levels[6] is True  # inactive, active-low
        assert fake.consumers == {5: "cab-01", 6: "cab-01"}
    assert fake.requests == {}


async def test_gpiod_errors_translated() -> None:
    fake = FakeGpiod(chip="/dev/gpiochip4")
    async with GpiodGpio(chip="/dev/gpiochip0", importer=importer_for(gpiod=fake)) as gpio:
        with pytest.raises(BusError, match="does not exist"):
            await gpio.open_input(InputSpec("tamper", 5))
    fake = FakeGpiod()
    async with GpiodGpio(importer=importer_for(gpiod=fake)) as gpio:
        fake.request_lines("/dev/gpiochip0", "other-process", {7: fake.LineSettings()})
        with pytest.raises(BusError, match="cannot request line 7"):
            await gpio.open_input(InputSpec("tamper", 7))
        with pytest.raises(ChannelError, match="line 99"):
            await gpio.open_output(OutputSpec("buzzer", 99))
        assert gpio.lines == {}
