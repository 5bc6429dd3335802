"""The `busy` fault: the board answers every request with a Modbus exception and does
nothing, until cleared."""

from __future__ import annotations

from simulator.config import parse_config
from simulator.world import World


def _world() -> World:
    config = parse_config({
        "cabinet": {"site": "t", "id": "c"},
        "buses": [{"name": "b", "kind": "rtu", "port": "/dev/null", "baudrate": 19200}],
        "boards": [{"name": "locks", "bus": "b", "address": 1, "profile": "waveshare_relay",
                    "outputs": 4, "inputs": 4}],
    })
    return World(config)


def test_busy_fault_is_listed_with_its_code_and_clears() -> None:
    world = _world()
    fault = world.faults.set("busy", board="locks", code=4)
    assert fault.as_dict() == {"kind": "busy", "board": "locks", "code": 4}
    assert world.faults.clear("busy", board="locks")
    assert world.faults.active() == ()
