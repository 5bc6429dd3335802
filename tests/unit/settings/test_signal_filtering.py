"""The debounce and flapping keys of ``[timing]``: defaults, ranges, and what the domain gets."""

from __future__ import annotations

from typing import Any

import pytest

from controller.domain.signals import SignalFiltering
from controller.services.setup import signal_filtering
from controller.settings import ConfigError, parse_settings


def issues_of(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_settings(data, source="cabinet.toml")
    return {issue.key: issue.message for issue in info.value.issues}


def test_defaults_reach_the_domain(valid_data: dict[str, Any]) -> None:
    settings = parse_settings(valid_data, source="cabinet.toml")
    assert signal_filtering(settings) == SignalFiltering(
        door_debounce_s=0.25,
        latch_debounce_s=0.1,
        occupancy_debounce_s=0.2,
        flapping_changes=8,
        flapping_window_s=3.0,
        flapping_clear_s=5.0,
    )


def test_values_with_units_and_zero_to_switch_off(valid_data: dict[str, Any]) -> None:
    valid_data["timing"].update(door_debounce_s="250ms", occupancy_debounce_s=0,
                                flapping_changes=0, flapping_window_s="10s",
                                flapping_clear_s="1m")
    f = signal_filtering(parse_settings(valid_data, source="cabinet.toml"))
    assert (f.door_debounce_s, f.occupancy_debounce_s, f.flapping_changes) == (0.25, 0.0, 0)
    assert (f.flapping_window_s, f.flapping_clear_s) == (10.0, 60.0)


@pytest.mark.parametrize(
    ("key", "value"),
    [("door_debounce_s", -0.1), ("door_debounce_s", 6), ("occupancy_debounce_s", "1h"),
     ("flapping_changes", -1), ("flapping_changes", True), ("flapping_changes", 1.5),
     ("flapping_window_s", 0), ("flapping_clear_s", "2h")],
)
def test_out_of_range_or_wrong_type_is_named(
    valid_data: dict[str, Any], key: str, value: object
) -> None:
    valid_data["timing"][key] = value
    assert list(issues_of(valid_data)) == [f"timing.{key}"]

