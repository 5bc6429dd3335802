"""The simulated lane world: wiring, facts, light states, the ground-truth log."""

from __future__ import annotations

import pytest

from simulator.lane import LaneRequestError, LaneWorld


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_facts_become_levels_through_the_wiring() -> None:
    world = LaneWorld()
    assert world.input_levels() == {
        "vehicle_present": True,
        "help_button": True,
        "tamper": False,
        "mains_fail": True,
    }
    world.vehicle_arrives()
    world.open_tamper()
    world.lose_mains()
    world.press_button()
    assert world.input_levels() == {
        "vehicle_present": False,
        "help_button": False,
        "tamper": True,
        "mains_fail": False,
    }
    assert all(world.input_active(name) for name in world.input_wiring)


def test_log_is_ground_truth_with_clock_and_seq() -> None:
    clock = FakeClock()
    world = LaneWorld(clock=clock)
    seen = []
    world.subscribe(seen.append)
    clock.now = 5.0
    world.press_button(bounce=2)
    clock.now = 6.0
    world.drive_output("buzzer", True)
    assert [(c.seq, c.kind, c.line, c.level) for c in world.log] == [
        (1, "input", "help_button", False),
        (2, "input", "help_button", True),
        (3, "input", "help_button", False),
        (4, "input", "help_button", True),
        (5, "input", "help_button", False),
        (6, "output", "buzzer", True),
    ]
    assert seen == world.log
    assert world.log[-1].at == 6.0
    assert world.buzzer_on
    assert len(world.changes(kind="output")) == 1


@pytest.mark.parametrize(
    ("lit", "state"),
    [
        ((), "off"),
        (("green",), "idle"),
        (("amber",), "busy"),
        (("red",), "fault"),
        (("red", "green"), "mixed"),
    ],
)
def test_lane_light(lit: tuple[str, ...], state: str) -> None:
    world = LaneWorld()
    for colour in lit:
        world.drive_output(f"light_{colour}", True)
    assert world.lane_light() == state


def test_bad_requests_change_nothing() -> None:
    world = LaneWorld()
    for call, code in [
        (lambda: world.set_input("doorbell", True), "unknown_line"),
        (lambda: world.set_input("buzzer", True), "not_an_input"),
        (lambda: world.drive_output("tamper", True), "not_an_output"),
        (lambda: world.drive_output("siren", True), "unknown_line"),
        (lambda: world.set_input("help_button", True, bounce=-1), "bad_value"),
    ]:
        with pytest.raises(LaneRequestError) as info:
            call()
        assert info.value.code == code
    assert world.log == []
