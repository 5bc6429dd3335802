"""The settings as ``apply_config`` would leave them: defaults < file < environment <
flags < the remote overlay; a refusal names the key and says it came from apply_config."""

from __future__ import annotations

from pathlib import Path

import pytest

import controller
from controller.services.config import OverlayRejected, settings_with_overlay

CABINET = Path(controller.__file__).parent / "data" / "sim-cabinet.toml"


def test_the_overlay_wins_over_the_flags_and_the_file() -> None:
    settings = settings_with_overlay(CABINET, {"timing.pulse_s": "0.4"},
                                     {"timing": {"pulse_s": 0.6}}, env={})
    assert settings.timing.pulse_s == 0.6
    assert settings_with_overlay(CABINET, {"timing.pulse_s": "0.4"}, {}, env={}
                                 ).timing.pulse_s == 0.4


@pytest.mark.parametrize(("overlay", "key", "words"), [
    ({"timing": {"pulse_s": -1}}, "timing.pulse_s", "must be greater than 0"),
    ({"timing": {"pulse_sx": 1}}, "timing.pulse_sx", "did you mean timing.pulse_s?"),
])
def test_a_bad_key_or_value_is_refused_as_apply_config_s(
    overlay: dict[str, dict[str, float]], key: str, words: str
) -> None:
    with pytest.raises(OverlayRejected) as caught:
        settings_with_overlay(CABINET, {}, overlay, env={})
    message = str(caught.value)
    assert message.startswith(f"apply_config: {key}: "), message
    assert words in message
    assert caught.value.key == key


def test_a_section_that_cannot_change_remotely_is_refused() -> None:
    with pytest.raises(OverlayRejected) as caught:
        settings_with_overlay(CABINET, {}, {"mqtt": {"host": "elsewhere"}}, env={})
    assert caught.value.key == "mqtt"
    assert "cannot be changed remotely" in str(caught.value)
