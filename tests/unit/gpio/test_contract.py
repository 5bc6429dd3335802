"""The GPIO line contract, run against every backend (see conftest: mock, simulator over a
real lane I/O server on loopback, rpigpio and gpiod with injected fake libraries).

Waits are bounded by ``asyncio.timeout(WAIT)`` only so that a broken backend fails instead
of hanging; no assertion depends on how long anything took."""

from __future__ import annotations

import asyncio
import threading

import pytest

from drivers.errors import BusClosed, DriverConfigError
from drivers.gpio import Edge, InputSpec, OutputSpec
from tests.unit.gpio.conftest import PINS, Rig

WAIT = 5.0


def button(**kw: object) -> InputSpec:
    return InputSpec("help_button", PINS["help_button"], **kw)  # type: ignore[arg-type]


async def next_edge(stream: object) -> Edge:
    async with asyncio.timeout(WAIT):
        return await anext(stream)  # type: ignore[call-overload, no-any-return]


async def test_input_value_at_open_and_read(rig: Rig) -> None:
    rig.drive("help_button", True)
    rig.drive("vehicle_present", True)
    await rig.sync()
    async with rig.backend as gpio:
        plain = await gpio.open_input(button())
        inverted = await gpio.open_input(
            InputSpec("vehicle_present", PINS["vehicle_present"], active_low=True)
        )
        assert plain.value is True
        assert await plain.read() is True
        assert inverted.value is False
        assert await inverted.read() is False


async def test_edges_reach_the_loop_thread(rig: Rig) -> None:
    seen: list[tuple[Edge, int]] = []
    async with rig.backend as gpio:
        line = await gpio.open_input(button(debounce_s=0.005))
        line.add_listener(lambda edge: seen.append((edge, threading.get_ident())))
        stream = line.edges()
        rig.drive("help_button", True)
        edge = await next_edge(stream)
        assert (edge.line, edge.value, edge.rising) == ("help_button", True, True)
        rig.drive("help_button", False)
        assert (await next_edge(stream)).value is False
        assert [e.value for e, _ in seen] == [True, False]
        assert {ident for _, ident in seen} == {threading.get_ident()}
        assert line.value is False


async def test_active_low_input_reports_logical_edges(rig: Rig) -> None:
    rig.drive("help_button", True)  # pulled up, button released
    await rig.sync()
    async with rig.backend as gpio:
        line = await gpio.open_input(button(pull="up", active_low=True, debounce_s=0.005))
        assert line.value is False
        stream = line.edges()
        rig.drive("help_button", False)  # pressed: shorted to ground
        assert (await next_edge(stream)).value is True
        assert line.value is True


async def test_bounce_gives_one_edge(rig: Rig) -> None:
    async with rig.backend as gpio:
        line = await gpio.open_input(button(debounce_s=0.02))
        stream = line.edges()
        rig.bounce("help_button", True, 6)
        first = await next_edge(stream)
        assert first.value is True
        # The next edge is the release, not a leftover of the bounce.
        rig.drive("help_button", False)
        second = await next_edge(stream)
        assert second.value is False
        assert line.dropped == 0


async def test_zero_debounce_reports_each_change(rig: Rig) -> None:
    async with rig.backend as gpio:
        line = await gpio.open_input(button(debounce_s=0))
        stream = line.edges()
        rig.drive("help_button", True)
        assert (await next_edge(stream)).value is True
        rig.drive("help_button", False)
        assert (await next_edge(stream)).value is False


async def test_wait_for(rig: Rig) -> None:
    async with rig.backend as gpio:
        line = await gpio.open_input(button(debounce_s=0.005))
        assert await line.wait_for(False) is None
        waiter = asyncio.ensure_future(line.wait_for(True))
        await asyncio.sleep(0)
        rig.drive("help_button", True)
        async with asyncio.timeout(WAIT):
            edge = await waiter
        assert edge is not None
        assert edge.value is True


async def test_outputs(rig: Rig) -> None:
    async with rig.backend as gpio:
        buzzer = await gpio.open_output(OutputSpec("buzzer", PINS["buzzer"]))
        lamp = await gpio.open_output(
            OutputSpec("light_green", PINS["light_green"], active_low=True, initial=True)
        )
        assert rig.output_level("buzzer") is False
        assert rig.output_level("light_green") is False  # lit, active-low
        await buzzer.set(True)
        assert (buzzer.value, rig.output_level("buzzer")) == (True, True)
        await lamp.off()
        assert (lamp.value, rig.output_level("light_green")) == (False, True)
        await buzzer.pulse(0.01)
        assert (buzzer.value, rig.output_level("buzzer")) == (False, False)


async def test_close_switches_outputs_off_ends_streams_and_is_idempotent(rig: Rig) -> None:
    gpio = rig.backend
    await gpio.start()
    buzzer = await gpio.open_output(OutputSpec("buzzer", PINS["buzzer"], initial=True))
    line = await gpio.open_input(button())
    stream = line.edges()
    assert rig.output_level("buzzer") is True
    await gpio.close()
    await gpio.close()
    await line.close()
    assert rig.output_level("buzzer") is False
    assert [edge async for edge in stream] == []
    with pytest.raises(BusClosed):
        await line.read()
    with pytest.raises(BusClosed):
        await buzzer.set(True)
    with pytest.raises(BusClosed):
        await gpio.open_input(button())


async def test_duplicate_name_or_pin_refused_before_touching_hardware(rig: Rig) -> None:
    async with rig.backend as gpio:
        await gpio.open_input(button())
        with pytest.raises(DriverConfigError, match="already open"):
            await gpio.open_input(button())
        with pytest.raises(DriverConfigError, match="already used by 'help_button'"):
            await gpio.open_output(OutputSpec("buzzer", PINS["help_button"]))
        assert sorted(gpio.lines) == ["help_button"]


async def test_line_closed_alone_frees_its_pin(rig: Rig) -> None:
    async with rig.backend as gpio:
        line = await gpio.open_input(button())
        await line.close()
        again = await gpio.open_input(button(debounce_s=0))
        stream = again.edges()
        rig.drive("help_button", True)
        assert (await next_edge(stream)).value is True
